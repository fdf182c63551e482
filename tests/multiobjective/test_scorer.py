"""FrozenHeadsScorer and fit_frozen_heads: end to end on a tiny llama, save/load, the cache, the report."""

import json

import pytest
import torch

from tiny import toy_pairs
from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.errors import DataError, ModelError
from rewardkit.models.reward_model import RewardModel
from rewardkit.models.scorer import ScoreItem
from rewardkit.multiobjective import FrozenHeadsScorer, GatingNetwork, fit_frozen_heads, head_parameters


def records(n=48):
    """Toy pairs (polite and on topic beats rude), half labelled 'help' (even) and half 'harm' (odd), plus
    attribute-rated records: 'verbosity' rated on every response, 'help' rated on some (the rest missing)."""
    out = [PreferenceRecord(r["id"], user_prompt(r["prompt"]), [Response(t) for t in r["responses"]],
                            chosen=r["chosen"], meta={"subset": r["subset"]}) for r in toy_pairs(n)]
    for i, r in enumerate(toy_pairs(12, offset=100)):
        responses = [Response(t) for t in r["responses"]]
        out.append(PreferenceRecord(f"a{i}", user_prompt(r["prompt"]), responses, attributes=[
            {"verbosity": len(resp.content) / 10, "help": (1.0 if "Thank" in resp.content else 0.0)
             if i % 3 else None} for resp in responses]))
    return out


OBJECTIVE = {"even": "help", "odd": "harm"}


def objective_of(rec):
    return OBJECTIVE.get(rec.subset)


ITEMS = [ScoreItem(user_prompt("Tell me about cats, please."),
                   [Response("Thank you for asking! Here is a clear answer about cats."), Response("No. cats?")]),
         ScoreItem(user_prompt("Tell me about the sea, please."),
                   [Response("No. the sea? whatever 3"), Response("Thank you for asking! The sea is big."),
                    Response("Here is a clear answer about the sea.")])]


@pytest.fixture(scope="module")
def llama(llama_dir):
    return RewardModel.from_pretrained(llama_dir)


def flat(results):
    return [x for r in results for x in r.rewards]


def check_result_invariants(results, names):
    for res in results:
        assert list(res.objectives) == names and list(res.weights) == names
        for k, reward in enumerate(res.rewards):
            combined = sum(res.weights[n] * res.objectives[n][k] for n in names)
            assert reward == pytest.approx(combined, abs=1e-5)


def test_fit_static_end_to_end(llama, tmp_path):
    scorer = fit_frozen_heads(llama, records(), objective_of, combination="learned", precision="fp32",
                              cache=tmp_path / "cache")
    report = scorer.fit_report
    assert scorer.objectives == ["help", "harm", "verbosity"]
    # 'help' has ratings, so it gets a ridge head (its pairs still feed the combination); 'harm' a BT head
    assert report.heads["help"]["kind"] == "ridge" and report.heads["help"]["n"] == 16
    assert report.heads["verbosity"]["kind"] == "ridge" and report.heads["verbosity"]["n"] == 24
    assert report.heads["harm"]["kind"] == "bt" and report.heads["harm"]["n"] == 24
    assert report.heads["harm"]["train_accuracy"] >= 0.9
    assert report.n_pairs == 48 and report.n_items == 60 and report.n_responses == 120
    assert not report.cache_hit and report.extract_seconds is not None  # extracted, not read from a cache
    # The fit time is the heads' plus the combination's (how long they take is for bench/, not a test).
    assert report.fit_seconds == pytest.approx(report.heads_seconds + report.combination_seconds)
    assert report.accuracy["all"] >= 0.9 and set(report.accuracy) == {"all", "help", "harm"}
    assert set(report.combination["weights"]) == {"help", "harm", "verbosity"}

    results = scorer.score(ITEMS)
    check_result_invariants(results, scorer.objectives)
    assert results[0].rewards[0] > results[0].rewards[1]  # polite beats rude on unseen prompts
    assert results[1].response_tokens and len(results[1].rewards) == 3
    assert scorer.describe()["kind"] == "frozen_heads" and scorer.describe()["combination"] == "learned"

    # the cache is reused: same heads, no extraction
    again = fit_frozen_heads(llama, records(), objective_of, combination="learned", precision="fp32",
                             cache=tmp_path / "cache")
    assert again.fit_report.cache_hit and again.fit_report.extract_seconds is None
    # bit-exact: the cache holds the extracted features bit for bit (no forward pass), and the heads are fitted
    # on fresh index copies of them: the same arithmetic on the same numbers in this process
    assert torch.equal(again.heads, scorer.heads)


def test_gate_with_decorrelation_saves_and_loads(llama, llama_dir, tmp_path):
    scorer = fit_frozen_heads(llama, records(), objective_of, combination="gate", verbosity="verbosity",
                              precision="fp32", gate_steps=30, gate_options={"hidden_dim": 16, "n_hidden": 1})
    dec = scorer.decorrelation
    assert dec is not None and dec.verbosity_index == 2 and dec.lambdas[2] == 1.0
    assert isinstance(scorer.gate, GatingNetwork) and scorer.fit_report.combination["steps"] == 30
    results = scorer.score(ITEMS)
    check_result_invariants(results, scorer.objectives)
    for res in results:  # the gate's weights, folded with λ: verbosity's is −Σ λ_j g_j
        g = [res.weights["help"], res.weights["harm"]]
        assert res.weights["verbosity"] == pytest.approx(-(dec.lambdas[0] * g[0] + dec.lambdas[1] * g[1]),
                                                         abs=1e-6)
    assert results[0].weights != results[1].weights  # per prompt

    scorer.save(tmp_path / "frozen")
    meta = json.loads((tmp_path / "frozen" / "frozen_heads.json").read_text())
    assert meta["backbone"] == str(llama_dir.resolve()) and meta["combination"] == "gate"
    saved = meta["fit_report"]  # the fit report travels with the scorer
    assert saved["fit_seconds"] == pytest.approx(saved["heads_seconds"] + saved["combination_seconds"])
    loaded = FrozenHeadsScorer.load(tmp_path / "frozen", precision="fp32")  # backbone from the reference
    assert flat(loaded.score(ITEMS)) == pytest.approx(flat(results), abs=1e-6)
    assert loaded.fit_report.fit_seconds == scorer.fit_report.fit_seconds

    # a saved directory is a model spec: score, eval and serve take the gated model by its path
    from rewardkit.models.spec import load_scorer

    by_spec = load_scorer(str(tmp_path / "frozen"), precision="fp32", batch_tokens=512)
    assert isinstance(by_spec, FrozenHeadsScorer)
    spec_results = by_spec.score(ITEMS)
    assert flat(spec_results) == pytest.approx(flat(results), abs=1e-6)
    assert spec_results[1].weights == pytest.approx(results[1].weights, abs=1e-6)
    with pytest.raises(Exception, match="process reward models"):
        load_scorer(str(tmp_path / "frozen"), aggregation="min")

    # the heads refuse a backbone they were not fitted on
    other = RewardModel.from_pretrained(llama_dir)
    with torch.no_grad():
        next(iter(other.hf_model.base_model.parameters())).add_(0.01)
    with pytest.raises(ModelError, match="different backbone"):
        FrozenHeadsScorer.load(tmp_path / "frozen", model=other)


def test_fixed_weights_and_a_copied_backbone(llama, tmp_path):
    W = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    scorer = FrozenHeadsScorer(llama, W, ["a", "b"], combination="fixed", weights={"a": 2.0}, precision="fp32")
    assert scorer.weights.tolist() == [2.0, 0.0]
    results = scorer.score(ITEMS)
    check_result_invariants(results, ["a", "b"])
    assert results[0].rewards == pytest.approx([2 * x for x in results[0].objectives["a"]], abs=1e-6)
    scorer.save(tmp_path / "copy", copy_backbone=True)
    assert (tmp_path / "copy" / "backbone" / "rewardkit.json").is_file()
    loaded = FrozenHeadsScorer.load(tmp_path / "copy", precision="fp32")
    assert flat(loaded.score(ITEMS)) == pytest.approx(flat(results), abs=1e-6)


def test_model_head_round_trip_matches(llama):
    W, b = head_parameters(llama)
    assert W.shape == (1, 32) and b.shape == (1,)
    frozen = FrozenHeadsScorer.from_model(llama, precision="fp32")
    assert frozen.objectives == ["reward"] and frozen.combination == "fixed"


def test_bad_inputs_get_clear_errors(llama):
    W = torch.zeros(2, 32)
    with pytest.raises(ModelError, match="shape"):
        FrozenHeadsScorer(llama, torch.zeros(2, 31), ["a", "b"])
    with pytest.raises(ModelError, match="unknown objective"):
        FrozenHeadsScorer(llama, W, ["a", "b"], weights={"c": 1.0})
    with pytest.raises(ModelError, match="GatingNetwork"):
        FrozenHeadsScorer(llama, W, ["a", "b"], combination="gate")
    with pytest.raises(ModelError, match="maps"):
        FrozenHeadsScorer(llama, W, ["a", "b"], combination="gate", gate=GatingNetwork(32, 3, hidden_dim=4))
    with pytest.raises(DataError, match="not in objectives"):
        fit_frozen_heads(llama, records(8), objective_of, objectives=["help"], precision="fp32")
    with pytest.raises(DataError, match="no labels"):
        fit_frozen_heads(llama, records(8)[:8], "help", objectives=["help", "honesty"], precision="fp32")
    with pytest.raises(ModelError, match="not a frozen-heads"):
        FrozenHeadsScorer.load("/nonexistent/frozen")
