"""The cheap ensemble: K heads on one shared (trained) or frozen backbone, trained in one pass, scored in one
forward pass, each head a member of the manifest. Bootstrap heads weigh each record Poisson(1) times."""

import json
import statistics
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data import load_records
from rewardkit.errors import RewardkitError
from rewardkit.losses import LossInputs, bradley_terry
from rewardkit.models.ensemble import EnsembleScorer, aggregate, standardize
from rewardkit.models.reward_model import RewardModel
from rewardkit.models.scorer import ScoreItem
from rewardkit.models.spec import load_scorer
from rewardkit.train import load_config, train
from rewardkit.train.batches import Example, Labels, collate_examples
from rewardkit.train.loop import _pass_loss
from rewardkit.train.members import poisson_counts, train_members
from tiny import assert_nested_close
from tiny import toy_pairs as pairs
from tiny import write_jsonl as write


@pytest.fixture
def toy(tmp_path):
    return write(tmp_path / "train.jsonl", pairs(24)), write(tmp_path / "test.jsonl", pairs(8, offset=100))


def config(backbone_dir, data, out, *overrides):
    base = ["lr=2e-3", "batch_size=8", "precision=fp32", "progress=false", "warmup_ratio=0", "max_steps=3"]
    return load_config(None, base + list(overrides), model=str(backbone_dir), data=[str(data[0])],
                       eval_data=[str(data[1])], output=str(out))


def heads(backbone="shared", vary="bootstrap", k=3):
    return [f"ensemble.members={k}", f"ensemble.backbone={backbone}", f"ensemble.vary={vary}"]


def test_poisson_counts_are_a_pure_function_with_poisson_moments():
    assert poisson_counts("r1", 0, 5) == poisson_counts("r1", 0, 5)
    draws = [c for i in range(4000) for c in poisson_counts(f"r{i}", 3, 5)]
    assert all(isinstance(c, int) and c >= 0 for c in draws)
    # 20000 Poisson(1) draws: mean and variance 1, standard errors ~0.007 and ~0.01; 0.05 is ~5 of them
    assert statistics.fmean(draws) == pytest.approx(1.0, abs=0.05)
    assert statistics.pvariance(draws) == pytest.approx(1.0, abs=0.05)
    assert draws.count(0) / len(draws) == pytest.approx(0.3679, abs=0.02)  # P(0) = 1/e
    assert [poisson_counts(f"r{i}", 3, 5) for i in range(50)] != [poisson_counts(f"r{i}", 4, 5) for i in range(50)]


class OneRowPlanner:
    """collate_examples only needs a plan; the loss test below feeds rewards by hand."""

    def plan(self, encoded):
        return None


def example(rid, weights, winner=0):
    enc = SimpleNamespace(response_tokens=3)
    return Example(encoded=[enc, enc], winner=[winner], loser=[1 - winner], p=[1.0], margin=[0.0], ranking=None,
                   record_id=rid, objective=None, head_weights=weights)


def test_bootstrap_heads_loss_is_the_count_weighted_sum_over_records_however_a_batch_is_cut():
    k = 3
    examples = [example("a", [2.0, 0.0, 1.0]), example("b", [0.0, 0.0, 0.0], winner=1), example("c", [1, 3, 0])]
    torch.manual_seed(0)
    r_obj = torch.randn(2 * len(examples), k)  # (responses, heads)
    cfg = SimpleNamespace(loss="bt", attribute_weight=1.0)
    core = SimpleNamespace(combiner=None)

    def pass_loss(part, rewards):
        _, labels = collate_examples(part, OneRowPlanner(), n_objectives=k)
        local, _, _ = _pass_loss(core, cfg, {}, labels, rewards, None, len(examples), 0, None)
        return local

    whole = pass_loss(examples, r_obj)
    cut = pass_loss(examples[:2], r_obj[:4]) + pass_loss(examples[2:], r_obj[4:])
    # by hand: (1/n_records) * sum_records sum_heads count / K * softplus(-(r_winner - r_loser))
    want = 0.0
    for i, ex in enumerate(examples):
        w, lo = 2 * i + ex.winner[0], 2 * i + ex.loser[0]
        for j, c in enumerate(ex.head_weights):
            want += c / k * float(torch.nn.functional.softplus(-(r_obj[w, j] - r_obj[lo, j])))
    want /= len(examples)
    assert float(whole) == pytest.approx(want, abs=1e-6)
    assert float(cut) == pytest.approx(want, abs=1e-6)
    # a pass whose records all weigh zero adds nothing (and no NaN)
    alone = pass_loss(examples[1:2], r_obj[2:4])
    assert float(alone) == 0.0


def test_seed_heads_train_every_head_on_every_pair_with_weights_summing_to_one():
    k = 4
    ex = example("a", [1.0] * k)
    _, labels = collate_examples([ex], OneRowPlanner(), n_objectives=k)
    assert labels.pair_mass is None  # the weights are a mean, as for any record
    assert labels.pairs.winner.tolist() == [0 * k + j for j in range(k)]
    assert labels.pairs.loser.tolist() == [1 * k + j for j in range(k)]
    assert float(labels.pairs.weight.sum()) == pytest.approx(1.0, abs=1e-6)


def test_frozen_backbone_trains_the_heads_only(llama_dir, toy, tmp_path):
    out = tmp_path / "frozen"
    result = train_members(config(llama_dir, toy, out, *heads("frozen", "seed")))
    before = RewardModel.from_pretrained(llama_dir, objectives=["head0", "head1", "head2"], seed=0)
    after = RewardModel.from_pretrained(out / "last")
    b, a = before.hf_model.state_dict(), after.hf_model.state_dict()
    head = {n for n in a if n.startswith("score.")}
    assert head and all(torch.equal(a[n], b[n]) for n in a if n not in head)  # the backbone, bit for bit
    assert all(not torch.equal(a[n], b[n]) for n in head)
    assert result.run.steps == 3 and after.meta.objectives == ["head0", "head1", "head2"]


def test_shared_heads_manifest_scores_in_one_pass_and_matches_the_checkpoints_columns(llama_dir, toy, tmp_path):
    out = tmp_path / "shared"
    cfg = config(llama_dir, toy, out, *heads("shared", "bootstrap"), "ensemble.aggregator=uwo")
    result = train_members(cfg)
    manifest = json.loads(result.manifest.read_text())
    checkpoint = "best" if result.run.best_accuracy is not None else "last"
    assert [(m["name"], m["spec"], m["objective"]) for m in manifest["members"]] == [
        (f"head{i}", checkpoint, f"head{i}") for i in range(3)]

    ensemble = load_scorer(str(out), precision="fp32")
    assert isinstance(ensemble, EnsembleScorer) and len({id(m) for m in ensemble.members}) == 1
    calls = []
    model = ensemble.members[0]
    original = model.score
    model.score = lambda items: calls.append(len(items)) or original(items)
    items = [ScoreItem(r.prompt, r.responses) for r in load_records(toy[1]).records]
    got = ensemble.score(items)
    assert calls == [len(items)]  # one forward pass for all three heads

    # recomputed from the checkpoint alone: its objective columns, standardised with the manifest's stats
    alone = load_scorer(str(out / checkpoint), precision="fp32").score(items)
    stats = ensemble.stats
    for res, own in zip(got, alone):
        columns = [own.objectives[f"head{i}"] for i in range(3)]
        assert_nested_close(res.members, columns, 1e-5)
        want = aggregate([standardize(c, s) for c, s in zip(columns, stats)], "uwo")
        assert res.rewards == pytest.approx(want, abs=1e-4)
    # the heads differ (different initialisations and resamples), so the spread is not zero
    assert max(u for res in got for u in res.uncertainty) > 0


def test_bootstrap_heads_resume_on_the_uninterrupted_trajectory(llama_dir, toy, tmp_path):
    settings = [*heads("shared", "bootstrap"), "epochs=2", "max_steps=6", "save_every=2", "eval_every=100"]
    full = train(config(llama_dir, toy, tmp_path / "full", *settings))
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(config(llama_dir, toy, cut, *settings),
              on_step=lambda step, _: step == 3 and (_ for _ in ()).throw(KeyboardInterrupt))
    resumed = train(config(llama_dir, toy, cut, *settings))
    assert resumed.resumed_from == 2 and resumed.steps == 6
    # fp32 losses ~0.7 computed from weights read back from disk: 1e-6 (as for any resumed run)
    assert [m["loss"] for m in resumed.history] == pytest.approx([m["loss"] for m in full.history[2:]], abs=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (heads("shared", "order"), "vary 'order' needs separate members"),
    (heads("frozen", "seed") + ["lora.r=4"], "LoRA adapters need backbone: shared"),
    (heads("shared", "bootstrap") + ["loss=kwise"], "does not weight its rankings"),
    (heads("shared", "seed") + ["objectives=[a, b]"], "objectives are its heads"),
])
def test_shared_backbone_config_errors(llama_dir, toy, tmp_path, overrides, message):
    with pytest.raises(RewardkitError, match=message):
        config(llama_dir, toy, tmp_path / "x", *overrides)


def test_a_member_reading_an_objective_its_model_lacks_is_a_clear_error(llama_dir, toy, tmp_path):
    out = tmp_path / "shared"
    train_members(config(llama_dir, toy, out, *heads("frozen", "seed", k=2), "max_steps=1"))
    manifest = json.loads((out / "ensemble.json").read_text())
    manifest["members"][1]["objective"] = "head7"
    (out / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(RewardkitError, match="reads objective 'head7', but its model scores"):
        load_scorer(str(out), precision="fp32")


def test_cli_backbone_flag(llama_dir, toy, tmp_path):
    out = tmp_path / "cli"
    args = ["train", "-m", str(llama_dir), "-d", str(toy[0]), "--eval-data", str(toy[1]), "-o", str(out),
            "--members", "3", "--backbone", "frozen", "--set", "max_steps=1", "--set", "precision=fp32",
            "--set", "progress=false", "--set", "batch_size=8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 heads on one frozen backbone" in " ".join(result.output.split())
    bad = CliRunner().invoke(app, args[:-8] + ["--backbone", "twisted"])
    assert bad.exit_code != 0 and "backbone" in bad.output and "Traceback" not in bad.output
