"""WARM (METHODS §5.2): averaging identical weights is a no-op, the average is the mean, and members that are
not linearly connected are refused with the numbers, writing nothing."""

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data import load_records
from rewardkit.errors import RewardkitError
from rewardkit.eval.warm import dips, warm_average
from rewardkit.models import RewardModel
from rewardkit.models.warm import average, check_same_shapes, interpolate
from rewardkit.train import load_config, train
from tiny import toy_pairs as pairs
from tiny import write_jsonl as write


def test_averaging_identical_weights_is_a_no_op():
    state = {"w": torch.randn(3, 4), "b": torch.randn(4), "step": torch.tensor(7)}
    got = average([state, {k: v.clone() for k, v in state.items()}, state])
    for k in state:
        # float64 mean of three equal float32 values, cast back: exact
        assert torch.equal(got[k], state[k])


def test_average_and_interpolate_are_the_means():
    a, b = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, -2.0])}
    assert torch.equal(average([a, b])["w"], torch.tensor([2.0, 0.0]))
    assert torch.equal(interpolate(a, b, 0.25)["w"], torch.tensor([3.0, -1.0]))
    with pytest.raises(RewardkitError, match="shape"):
        check_same_shapes([a, {"w": torch.zeros(3)}], ["a", "b"])


def test_dips_are_interior_points_below_both_ends():
    assert dips([(0.0, 0.6), (0.5, 0.55), (1.0, 0.7)]) == [0.5]
    assert dips([(0.0, 0.6), (0.5, 0.6), (1.0, 0.7)]) == []


@pytest.fixture(scope="module")
def runs(llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    data = write(root / "train.jsonl", pairs(24)), write(root / "test.jsonl", pairs(16, offset=100))
    out = []
    for seed in (0, 1):  # same backbone init, different head seed and data order
        cfg = load_config(None, ["lr=2e-3", "batch_size=8", "precision=fp32", "progress=false", "warmup_ratio=0",
                                 "max_steps=3", f"seed={seed}"], model=str(llama_dir), data=[str(data[0])],
                          eval_data=[str(data[1])], output=str(root / f"m{seed}"))
        out.append(train(cfg).output / "last")
    return root, data, out


def test_connected_members_are_averaged_into_a_checkpoint_with_a_report(runs, tmp_path):
    root, data, (a, b) = runs
    records = load_records(data[1]).records
    report = warm_average([str(a), str(b)], records, tmp_path / "warm")
    assert [q["alpha"] for q in report["paths"][0]["path"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    merged = RewardModel.from_pretrained(tmp_path / "warm")
    sa, sb = (RewardModel.from_pretrained(p).model.state_dict() for p in (a, b))
    for k, v in merged.model.state_dict().items():
        if v.is_floating_point():
            # (a + b) / 2 in float64 then float32: within one float32 rounding of the float32 mean
            assert torch.allclose(v, (sa[k] + sb[k]) / 2, atol=1e-6, rtol=1e-6), k
    assert json.loads((tmp_path / "warm" / "warm_report.json").read_text())["average_accuracy"] == \
        report["average_accuracy"]
    assert (tmp_path / "warm" / "warm_paths.png").is_file() and (tmp_path / "warm" / "warm_report.md").is_file()
    assert merged.meta.training["warm"]["members"] == [str(a), str(b)]


def test_members_that_are_not_connected_are_refused_and_nothing_is_written(runs, tmp_path):
    root, data, (a, _) = runs
    flipped = RewardModel.from_pretrained(a)
    with torch.no_grad():  # the same model with its head negated: the midpoint scores every response alike
        flipped.head_layer.weight.neg_()
        if flipped.head_layer.bias is not None:
            flipped.head_layer.bias.neg_()
    flipped.save_pretrained(tmp_path / "flipped")
    # a quarter of the labels swapped, so neither end is perfect or hopeless and the tie at the midpoint (strict
    # accuracy 0) is below both
    records = [replace(r, chosen=1 - r.chosen) if i % 4 == 0 else r
               for i, r in enumerate(load_records(data[1]).records)]
    with pytest.raises(RewardkitError, match=r"not linearly connected.*0.5: 0.0%"):
        warm_average([str(a), str(tmp_path / "flipped")], records, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_average(runs, tmp_path):
    root, data, (a, b) = runs
    result = CliRunner().invoke(app, ["ensemble", "average", str(a), str(b), "-d", str(data[1]), "-o",
                                      str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (tmp_path / "w" / "rewardkit.json").is_file()
