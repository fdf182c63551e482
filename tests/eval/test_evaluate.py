"""evaluate(): every report number can be recomputed by hand from the records and scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.errors import DataError
from rewardkit.eval import evaluate
from rewardkit.eval.metrics import sigmoid
from rewardkit.models.scorer import ScoreResult


def pair(id: str, chosen: str, rejected: str, subset: str | None = None) -> PreferenceRecord:
    meta = {"subset": subset} if subset else {}
    return PreferenceRecord(id, user_prompt("q"), [Response(chosen), Response(rejected)], chosen=0, meta=meta)


def by_length(records: list[PreferenceRecord]) -> list[ScoreResult]:
    return [ScoreResult(rewards=[float(len(r.content.split())) for r in rec.responses]) for rec in records]


def constant(records: list[PreferenceRecord], value: float = 0.3) -> list[ScoreResult]:
    return [ScoreResult(rewards=[value] * len(rec.responses)) for rec in records]


RECORDS = [
    pair("a", "one two three four", "one two", "chat"),  # chosen longer
    pair("b", "one", "one two three", "chat"),  # chosen shorter
    pair("c", "x y", "z w", "safety"),  # equal length
    pair("d", "a b c d e f", "a", None),  # chosen longer, no subset
]


def test_length_scorer_report():
    report = evaluate(RECORDS, by_length(RECORDS), {"name": "len"})
    assert report["n"] == 4 and report["n_comparisons"] == 4 and report["n_unlabeled"] == 0
    assert report["accuracy"] == 0.5 and report["tie_rate"] == 0.25
    assert report["subsets"] == {
        "chat": {"accuracy": 0.5, "n": 2, "n_comparisons": 2},
        "safety": {"accuracy": 0.0, "n": 1, "n_comparisons": 1},
    }
    corr = report["length_correlation"]
    assert corr["unit"] == "words"
    assert corr["pearson"] == pytest.approx(1.0) and corr["spearman"] == pytest.approx(1.0)
    assert corr["pairwise_pearson"] == pytest.approx(1.0)
    split = report["length_split"]
    assert split["longer"] == {"accuracy": 1.0, "n": 2}
    assert split["shorter"] == {"accuracy": 0.0, "n": 1}
    assert split["equal"] == {"accuracy": 0.0, "n": 1}
    assert split["gap"] == 1.0
    assert report["longer_baseline_accuracy"] == 0.5
    assert report["scorer"] == {"name": "len"}

    # Recompute calibration and reward statistics independently.
    delta = np.array([2.0, -2.0, 0.0, 5.0])
    p = 1 / (1 + np.exp(-delta))
    assert report["brier"] == pytest.approx(np.mean((p - 1) ** 2))
    assert report["nll"] == pytest.approx(np.mean(-np.log(p)))
    rewards = np.array([4, 2, 1, 3, 2, 2, 6, 1], dtype=float)
    assert report["reward_stats"] == pytest.approx(
        {"mean": rewards.mean(), "std": rewards.std(), "min": 1.0, "max": 6.0})
    counts = [row["count"] for row in report["reliability"]]
    assert sum(counts) == 4 and counts[5] == 1  # the tie sits at conf 0.5
    conf = sigmoid(np.abs(delta))
    bins = np.minimum(np.floor(conf * 10).astype(int), 9)
    expected = sum(
        (bins == m).sum() / 4 * abs((delta[bins == m] > 0).mean() - conf[bins == m].mean())
        for m in set(bins.tolist())
    )
    assert report["ece"] == pytest.approx(expected)


def test_constant_scorer_report():
    report = evaluate(RECORDS, constant(RECORDS))
    assert report["accuracy"] == 0.0 and report["tie_rate"] == 1.0
    assert report["ece"] == pytest.approx(0.5) and report["brier"] == pytest.approx(0.25)
    assert report["nll"] == pytest.approx(math.log(2))
    assert report["fitted_temperature"] == 1.0
    # A constant series has no correlation: undefined becomes None, never NaN.
    assert report["length_correlation"]["pearson"] is None
    assert report["length_correlation"]["spearman"] is None
    assert report["reward_stats"]["std"] == 0.0
    assert report["scorer"] is None


def test_swapped_scores_give_one_minus_acc_minus_ties():
    results = by_length(RECORDS)
    swapped = [ScoreResult(rewards=r.rewards[::-1]) for r in results]
    a, b = evaluate(RECORDS, results), evaluate(RECORDS, swapped)
    assert b["accuracy"] == pytest.approx(1 - a["accuracy"] - a["tie_rate"])


def test_soft_labels_from_votes_set_brier_target():
    two = [Response("a"), Response("b")]
    records = [
        PreferenceRecord("v1", user_prompt("q"), two, votes=[0, 0, 0, 1]),  # 0 wins with p = 0.75
        PreferenceRecord("v2", user_prompt("q"), two, votes=[1, 1, None, 0]),  # 1 wins with p = 0.625
        PreferenceRecord("v3", user_prompt("q"), two, votes=[0, 1]),  # even split: no comparison
    ]
    results = [ScoreResult([1.0, 0.0]), ScoreResult([0.5, 0.0]), ScoreResult([0.0, 0.0])]
    report = evaluate(records, results)
    assert report["n"] == 3 and report["n_comparisons"] == 2 and report["n_unlabeled"] == 1
    delta, y = np.array([1.0, -0.5]), np.array([0.75, 0.625])
    assert report["accuracy"] == 0.5
    assert report["brier"] == pytest.approx(np.mean((sigmoid(delta) - y) ** 2))
    p = sigmoid(delta)
    assert report["nll"] == pytest.approx(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    assert report["subsets"] == {}


def test_best_of_k_tokens_truncation_and_skips():
    rec = PreferenceRecord("k", user_prompt("q"), [Response("w"), Response("x"), Response("y")], chosen=1)
    res = ScoreResult(rewards=[0.0, 2.0, 2.0], response_tokens=[5, 9, 1], truncated=[0, 3, 1])
    report = evaluate([rec], [res], {"max_length": 512}, skipped=2)
    assert report["n_comparisons"] == 2  # chosen vs each other response
    assert report["accuracy"] == 0.5  # beats response 0, ties response 2
    assert report["length_correlation"]["unit"] == "tokens"
    assert report["length_split"]["longer"]["n"] == 2
    assert report["truncated"] == 2 and report["truncated_records"] == 1 and report["skipped"] == 2


def test_words_used_unless_every_result_has_tokens():
    recs = RECORDS[:2]
    results = [ScoreResult([1.0, 0.0], response_tokens=[1, 1]), ScoreResult([1.0, 0.0])]
    assert evaluate(recs, results)["length_correlation"]["unit"] == "words"


def test_empty_input_is_json_clean():
    report = evaluate([], [])
    assert report["n"] == 0 and report["accuracy"] is None and report["ece"] is None
    assert all(row["count"] == 0 for row in report["reliability"])
    json.dumps(report, allow_nan=False)


def test_report_is_strict_json():
    class Dtype:
        def __str__(self):
            return "torch.bfloat16"

    report = evaluate(RECORDS, constant(RECORDS), {"dtype": Dtype(), "max_length": np.int64(512)})
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text)["scorer"] == {"dtype": "torch.bfloat16", "max_length": 512}


def test_mismatched_inputs_are_rejected():
    with pytest.raises(DataError):
        evaluate(RECORDS, constant(RECORDS)[:2])
    with pytest.raises(DataError, match="rewards"):
        evaluate(RECORDS[:1], [ScoreResult([1.0])])
    with pytest.raises(DataError, match="non-finite"):
        evaluate(RECORDS[:1], [ScoreResult([float("nan"), 0.0])])


def test_per_objective_accuracy_on_the_comparisons_tagged_for_each():
    def tagged(id, objective):
        return PreferenceRecord(id, user_prompt("q"), [Response("a"), Response("b")], chosen=0,
                                meta={"objective": objective} if objective else {})

    records = [tagged("h1", "help"), tagged("h2", "help"), tagged("s1", "safe"), tagged("u", None)]
    objectives = [{"help": [1.0, 0.0], "safe": [0.0, 1.0]}, {"help": [0.0, 1.0], "safe": [2.0, 0.0]},
                  {"help": [0.0, 1.0], "safe": [3.0, 0.0]}, {"help": [1.0, 0.0], "safe": [1.0, 0.0]}]
    weights = {"help": 0.5, "safe": 0.5}
    results = [ScoreResult(rewards=[0.5 * o["help"][i] + 0.5 * o["safe"][i] for i in range(2)], objectives=o,
                           weights=weights) for o in objectives]
    report = evaluate(records, results)
    assert report["objectives"] == {
        "help": {"accuracy": 0.5, "n_comparisons": 2, "combined_accuracy": 0.5, "accuracy_all": 0.5},
        "safe": {"accuracy": 1.0, "n_comparisons": 1, "combined_accuracy": 1.0, "accuracy_all": 0.75},
    }
    assert report["weights"] == weights and report["accuracy"] == 0.75  # combined, on every comparison
    assert "objectives" not in evaluate(records, constant(records))  # plain scorers: the report is unchanged
    with pytest.raises(DataError, match="objective 'safe' needs one finite score"):
        evaluate(records[:1], [ScoreResult([1.0, 0.0], objectives={"help": [1.0, 0.0], "safe": [1.0]})])
