"""Step-level evaluation of process reward models: AUROC against a brute-force pair count, `evaluate_steps`
on hand-made records with exact expected numbers, ProcessBench's step AUROC (labelled steps only, unscored
steps left out) and its handling of unscored (None) steps, and an oracle on a few real ProcessBench rows."""

import itertools
import json
import math
import random
from typing import Any

import pytest

from rewardkit.data import load_records, shared_data_dir
from rewardkit.data.record import PreferenceRecord, Response
from rewardkit.errors import DataError
from rewardkit.eval import evaluate
from rewardkit.eval.benchmarks import processbench_step_auroc, run_benchmark, score_processbench
from rewardkit.eval.steps import auroc, evaluate_steps, labelled_steps
from rewardkit.models.scorer import ScoreResult
from rewardkit.steps import aggregate


# -- AUROC ------------------------------------------------------------------------------------------------------
def brute_auroc(scores, labels):
    """P(a random positive outscores a random negative), ties 1/2, by counting every pair."""
    pos = [s for s, y in zip(scores, labels) if y >= 0.5]
    neg = [s for s, y in zip(scores, labels) if y < 0.5]
    if not pos or not neg:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(40))
def test_auroc_is_the_pairwise_win_rate_with_ties_one_half(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 40)
    if seed % 2:  # heavy ties: a few distinct values
        scores = [float(rng.randint(0, 3)) for _ in range(n)]
    else:
        scores = [rng.random() for _ in range(n)]
    labels = [rng.choice([0.0, 1.0, 0.3, 0.7, 0.5]) if seed % 4 == 3 else float(rng.random() < 0.4)
              for _ in range(n)]  # soft labels count as correct at >= 0.5
    want = brute_auroc(scores, labels)
    got = auroc(scores, labels)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want, abs=1e-12)


def test_auroc_small_cases():
    assert auroc([0.1, 0.9], [0, 1]) == 1.0
    assert auroc([0.9, 0.1], [0, 1]) == 0.0
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    assert auroc([0.2, 0.4, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(brute_auroc([0.2, 0.4, 0.4, 0.1], [1, 0, 1, 0]))
    assert auroc([0.2, 0.4, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(0.625)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], [0.2, 0.49], [0.5, 1.0], []])
def test_auroc_is_none_without_both_classes(labels):
    assert auroc([0.3 * i for i in range(len(labels))], labels) is None


# -- evaluate_steps on hand-made records ------------------------------------------------------------------------
def record(rid, labels, meta=None):
    responses = [Response("\n\n".join(f"s{k}" for k in range(len(row))), [f"s{k}" for k in range(len(row))])
                 for row in labels]
    return PreferenceRecord(id=rid, prompt=[{"role": "user", "content": f"q {rid}"}], responses=responses,
                            step_labels=labels, meta=meta or {})


def result(step_rewards):
    return ScoreResult(rewards=[aggregate(s, "min") for s in step_rewards], step_rewards=step_rewards)


@pytest.fixture
def hand_made():
    records = [
        record("r1", [[1.0, 1.0, 0.0]], {"split": "a"}),
        record("r2", [[1.0, None], [0.0, None]]),  # outcome of the first: unknown; of the second: wrong
        record("r3", [[1.0, 1.0]], {"subset": "b"}),
    ]
    results = [result([[0.9, 0.25, 0.2]]), result([[0.8, 0.7], [0.3, 0.9]]), result([[0.7, 0.35]])]
    return records, results


def test_labelled_steps_are_the_labelled_scored_steps_in_order(hand_made):
    scores, labels, splits = labelled_steps(*hand_made)
    assert scores == [0.9, 0.25, 0.2, 0.8, 0.3, 0.7, 0.35]
    assert labels == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert splits == ["a", "a", "a", "", "", "b", "b"]


def test_evaluate_steps_exact_numbers(hand_made):
    report = evaluate_steps(*hand_made)
    assert report["steps"] == 7 and report["correct_steps"] == 5
    # positives 0.9 0.25 0.8 0.7 0.35 vs negatives 0.2 0.3: only 0.25 < 0.3 loses -> 9 / 10
    assert report["step_auroc"] == pytest.approx(0.9)
    # >= 0.5 read as correct: 0.25 and 0.35 (both correct) are misread -> 5 / 7
    assert report["step_accuracy"] == pytest.approx(5 / 7) and report["threshold"] == 0.5
    assert report["by_split"] == {"a": {"steps": 3, "step_auroc": 1.0}, "b": {"steps": 2, "step_auroc": None}}
    # solutions with a known outcome: r1 (0), r2's second (0), r3 (1); r2's first is unknown
    assert report["solutions"] == 3
    # product 0.045, 0.27, 0.245; min 0.2, 0.3, 0.35; mean 0.45, 0.6, 0.525; last 0.2, 0.9, 0.35
    assert report["outcome_auroc"] == pytest.approx({"product": 0.5, "min": 1.0, "mean": 0.5, "last": 0.5})


def test_evaluate_steps_threshold(hand_made):
    report = evaluate_steps(*hand_made, threshold=0.22)
    assert report["step_accuracy"] == pytest.approx(6 / 7)  # only 0.3 (wrong) is read as correct
    assert report["threshold"] == 0.22


def test_unscored_steps_are_left_out(hand_made):
    records, results = hand_made
    results[0] = result([[0.9, None, 0.2]])  # the middle step cut by truncation
    report = evaluate_steps(records, results)
    assert report["steps"] == 6 and report["correct_steps"] == 4
    assert report["step_auroc"] == pytest.approx(brute_auroc([0.9, 0.2, 0.8, 0.3, 0.7, 0.35], [1, 0, 1, 0, 1, 1]))


def test_evaluate_adds_the_step_report_for_process_results(hand_made):
    report = evaluate(*hand_made)
    assert report["steps"] == evaluate_steps(*hand_made)
    plain = evaluate(hand_made[0], [ScoreResult(rewards=r.rewards) for r in hand_made[1]])
    assert "steps" not in plain


def test_step_labels_without_step_scores_are_a_clear_error(hand_made):
    records, results = hand_made
    results[1] = ScoreResult(rewards=[0.1, 0.2])
    with pytest.raises(DataError, match=r"record 'r2' has step labels but .* no step_rewards"):
        evaluate_steps(records, results)
    results[1] = result([[0.8, 0.7, 0.1], [0.3, 0.9]])
    with pytest.raises(DataError, match=r"record 'r2': 3 step scores for 2 step labels"):
        evaluate_steps(records, results)


# -- ProcessBench: labelled steps only, unscored steps never judged wrong ------------------------------------------
def test_processbench_step_auroc_reads_only_labelled_steps_and_skips_unscored_ones():
    inf = math.inf
    rows = [[0.9, 0.2, 0.99],  # error at 1: the 0.99 after it carries no label
            [0.8, inf, 0.7],  # no error: the unscored step is left out
            [0.3, 0.01],  # error at 0: the 0.01 after it carries no label
            [0.85, inf]]  # error at 1, unscored: left out, not counted as a wrong step scored +inf
    labels = [1, -1, 0, 1]
    assert processbench_step_auroc(rows, labels) == 1.0
    # the same steps, listed by hand
    assert processbench_step_auroc(rows, labels) == brute_auroc([0.9, 0.2, 0.8, 0.7, 0.3, 0.85], [1, 0, 1, 1, 0, 1])
    # where it is not perfect: the wrong step at 0.75 outscores two correct ones
    assert processbench_step_auroc([[0.9, 0.75], [0.7, 0.6]], [1, -1]) == pytest.approx(1 / 3)
    assert processbench_step_auroc([[0.9, 0.8], [0.7]], [-1, -1]) is None  # no wrong step at all


def pb_record(rid, steps, label, split="s"):
    labels = [1.0] * len(steps) if label < 0 else [1.0] * label + [0.0] + [None] * (len(steps) - label - 1)
    return PreferenceRecord(id=rid, prompt=[{"role": "user", "content": "p"}],
                            responses=[Response("\n\n".join(steps), list(steps))], step_labels=[labels],
                            meta={"split": split, "earliest_error": label})


def test_score_processbench_never_flags_unscored_steps():
    records = [pb_record("ok", ["a", "b", "c"], -1), pb_record("late", ["a", "b", "c"], 2),
               pb_record("high", ["a", "b"], -1)]
    results = [result([[0.9, None, None]]), result([[0.9, None, 0.1]]), result([[0.995, None]])]
    report = score_processbench(records, results, threshold=0.99)
    split = report["per_split"]["s"]
    # at 0.99 the scored 0.9s are flagged; the unscored steps never are, even at such a high threshold
    assert split["acc_err"] == 0.0  # 0.9 at step 0 of "late" is below 0.99: predicted 0, label 2
    assert split["acc_cor"] == 0.5  # "ok" is flagged at its 0.9; "high" (0.995, None) is not
    assert split["unscored_steps"] == 4
    again = score_processbench(records, results, threshold=0.5)["per_split"]["s"]
    assert again["acc_err"] == 1.0 and again["acc_cor"] == 1.0 and again["f1"] == 1.0
    assert again["unscored_steps"] == 4
    # step AUROC over the scored labelled steps: 0.9, 0.995, 0.9 (correct) vs 0.1 (wrong)
    assert report["step_auroc"] == {"s": 1.0}


def test_score_processbench_step_auroc_per_split():
    records = [pb_record("a1", ["x", "y"], 1, "one"), pb_record("a2", ["x", "y"], -1, "one"),
               pb_record("b1", ["x", "y"], 0, "two"), pb_record("b2", ["x"], -1, "two")]
    results = [result([[0.8, 0.4]]), result([[0.3, 0.9]]), result([[0.6, 0.9]]), result([[0.5]])]
    report = score_processbench(records, results, threshold=0.5)
    # one: correct 0.8 0.3 0.9 vs wrong 0.4 -> 2/3; two: correct 0.5 vs wrong 0.6 (the 0.9 after it unlabeled)
    assert report["step_auroc"] == pytest.approx({"one": 2 / 3, "two": 0.0})
    assert report["per_split"]["one"]["step_auroc"] == report["step_auroc"]["one"]


# -- a few real ProcessBench rows ---------------------------------------------------------------------------------
class RowOracle:
    """A process reward model that knows the raw file's labels, by row id: 0.95 for steps before the earliest
    error (and every step of a correct solution), 0.05 for the error, and misleading scores after it (0.99,
    or None as if truncation cut them), which ProcessBench must not read."""

    def __init__(self, rows: list[dict]):
        self.label = {r["id"]: r["label"] for r in rows}

    def step_scores(self, rid: str, n: int) -> list[float | None]:
        label = self.label[rid]
        if label < 0:
            return [0.95] * n
        after = [0.99 if k % 2 else None for k in range(n - label - 1)]
        return [0.95] * label + [0.05] + after

    def score(self, items) -> list[ScoreResult]:
        out = []
        for rec in items:
            steps = self.step_scores(rec.id, len(rec.responses[0].steps))
            out.append(ScoreResult(rewards=[min(s for s in steps if s is not None)], step_rewards=[steps]))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": "row-oracle", "kind": "process_reward_model"}


def real_rows(name: str, per_kind: int = 4) -> tuple[list[dict], list[PreferenceRecord]]:
    data = shared_data_dir()
    path = None if data is None else data / "processbench" / f"{name}.json"
    if path is None or not path.is_file():
        pytest.skip(f"real data absent: processbench/{name}.json not found under ../shared/data or $REWARDKIT_DATA")
    raw = json.loads(path.read_text())
    chosen = [r for r in raw if r["label"] == -1][:per_kind] + [r for r in raw if r["label"] >= 0][:per_kind]
    late = [r for r in raw if 0 <= r["label"] < len(r["steps"]) - 2]
    chosen += [r for r in late if r not in chosen][:2]  # errors followed by several unlabeled steps
    ids = {r["id"] for r in chosen}
    records = [rec for rec in load_records(path).records if rec.id in ids]
    assert len(records) == len(chosen)
    return chosen, records


def test_an_oracle_on_real_processbench_rows_gets_step_auroc_and_f1_one():
    rows, records = [], []
    for name in ("gsm8k", "math"):
        r, recs = real_rows(name)
        rows += r
        records += recs
    oracle = RowOracle(rows)
    results, report = run_benchmark("processbench", oracle, records, threshold=0.5)
    assert sorted(report["f1"]) == ["gsm8k", "math"]
    for split in ("gsm8k", "math"):
        assert report["f1"][split] == 1.0
        assert report["step_auroc"][split] == 1.0
        assert report["per_split"][split]["n"] == 10
        assert report["per_split"][split]["unscored_steps"] > 0
    assert report["f1_mean"] == 1.0
    assert results[0].step_rewards == [oracle.step_scores(records[0].id, len(records[0].responses[0].steps))]

    # tuned on the gsm8k rows instead of given: still perfect
    _, tuned = run_benchmark("processbench", oracle, records)
    assert tuned["f1"] == {"gsm8k": 1.0, "math": 1.0} and tuned["threshold_source"] == "tuned on gsm8k"

    # the library's step report agrees: every labelled step is told apart at 0.5
    steps = evaluate(records, results)["steps"]
    assert steps["step_auroc"] == 1.0 and steps["step_accuracy"] == 1.0
    assert steps["by_split"]["gsm8k"]["step_auroc"] == 1.0 and steps["by_split"]["math"]["step_auroc"] == 1.0
