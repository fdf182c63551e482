"""Ensemble members in one command: K train() runs that differ by seed, order or bootstrap, a manifest with
stats on the eval data, and a rerun that skips finished members."""

import json

import pytest
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.models.ensemble import EnsembleScorer
from rewardkit.models.spec import load_scorer
from rewardkit.train import load_config, train
from rewardkit.errors import RewardkitError
from rewardkit.train.members import bootstrap_sample, member_config, train_members
from tiny import toy_pairs as pairs
from tiny import write_jsonl as write


@pytest.fixture
def toy(tmp_path):
    return write(tmp_path / "train.jsonl", pairs(24)), write(tmp_path / "test.jsonl", pairs(8, offset=100))


def config(backbone, data, out, *overrides):
    base = ["lr=2e-3", "batch_size=8", "precision=fp32", "progress=false", "warmup_ratio=0", "max_steps=2"]
    return load_config(None, base + list(overrides), model=str(backbone), data=[str(data[0])],
                       eval_data=[str(data[1])], output=str(out))


def test_member_configs_differ_only_by_what_vary_names(llama_dir, toy, tmp_path):
    seed = config(llama_dir, toy, tmp_path / "e", "ensemble.members=3", "seed=7")
    assert [member_config(seed, i).seed for i in range(3)] == [7, 8, 9]
    assert member_config(seed, 2).output == str(tmp_path / "e" / "member2")
    assert member_config(seed, 1).ensemble is None
    order = config(llama_dir, toy, tmp_path / "e", "ensemble.vary=order", "seed=7")
    assert [(member_config(order, i).seed, member_config(order, i).data_seed) for i in range(2)] == [(7, 7), (7, 8)]
    boot = config(llama_dir, toy, tmp_path / "e", "ensemble.vary=bootstrap")
    assert member_config(boot, 0, tmp_path / "b.jsonl").data == [str(tmp_path / "b.jsonl")]


def test_bootstrap_sample_is_seeded_and_with_replacement():
    a = bootstrap_sample(50, 3)
    assert a == bootstrap_sample(50, 3) and a != bootstrap_sample(50, 4)
    assert len(a) == 50 and len(set(a)) < 50 and all(0 <= i < 50 for i in a)


def test_train_members_writes_members_and_a_manifest_then_skips_them(llama_dir, toy, tmp_path):
    out = tmp_path / "ens"
    cfg = config(llama_dir, toy, out, "ensemble.members=2", "ensemble.aggregator=uwo")
    result = train_members(cfg)
    assert [m["skipped"] for m in result.members] == [False, False]
    assert all((out / f"member{i}" / "best").is_dir() for i in range(2))
    manifest = json.loads(result.manifest.read_text())
    assert manifest["aggregator"] == "uwo"
    assert [m["spec"] for m in manifest["members"]] == ["member0/best", "member1/best"]
    assert all(m["stats"]["std"] > 0 for m in manifest["members"])

    ensemble = load_scorer(str(out), precision="fp32")
    assert isinstance(ensemble, EnsembleScorer) and ensemble.names == ["member0", "member1"]
    # the stats are the members' mean and population std over the eval data's responses
    from rewardkit.data import load_records
    from rewardkit.models.scorer import ScoreItem
    import statistics

    items = [ScoreItem(r.prompt, r.responses) for r in load_records(toy[1]).records]
    values = [r for res in ensemble.members[0].score(items) for r in res.rewards]
    assert manifest["members"][0]["stats"]["mean"] == pytest.approx(statistics.fmean(values), abs=1e-6)
    assert manifest["members"][0]["stats"]["std"] == pytest.approx(statistics.pstdev(values), abs=1e-6)

    weights = (out / "member0" / "best" / "model.safetensors").stat().st_mtime_ns
    again = train_members(cfg)
    assert [m["skipped"] for m in again.members] == [True, True]
    assert (out / "member0" / "best" / "model.safetensors").stat().st_mtime_ns == weights


def test_bootstrap_members_train_on_their_own_resample(llama_dir, toy, tmp_path):
    out = tmp_path / "boot"
    train_members(config(llama_dir, toy, out, "ensemble.members=2", "ensemble.vary=bootstrap"))
    a, b = ((out / f"member{i}" / "bootstrap.jsonl").read_text().splitlines() for i in range(2))
    assert len(a) == len(b) == 24 and a != b


def test_cli_members_flag(llama_dir, toy, tmp_path):
    out = tmp_path / "cli"
    args = ["train", "-m", str(llama_dir), "-d", str(toy[0]), "--eval-data", str(toy[1]), "-o", str(out),
            "--members", "2", "--vary", "order", "--set", "max_steps=1", "--set", "precision=fp32",
            "--set", "progress=false", "--set", "batch_size=8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ensemble.json (2 members)" in " ".join(result.output.split())
    again = CliRunner().invoke(app, args)
    assert "member 1: already trained, skipped" in again.output


def test_train_refuses_an_ensemble_config(llama_dir, toy, tmp_path):
    with pytest.raises(RewardkitError, match="train_members"):
        train(config(llama_dir, toy, tmp_path / "x", "ensemble.members=2"))
