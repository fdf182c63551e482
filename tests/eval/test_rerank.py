"""Best-of-N reranking (rewardkit.eval.rerank) on hand-made candidates: grouping one-solution rows by prompt,
where correctness comes from, the ranking order, the reranked rows, and the best-of-N report's exact numbers
for every step aggregation against the random pick and the oracle."""

import math

import pytest

from rewardkit.data.record import PreferenceRecord, Response
from rewardkit.errors import DataError
from rewardkit.eval.rerank import best_of_n_report, candidate_scores, correctness, group_by_prompt, ranking, rerank
from rewardkit.models.scorer import ScoreResult
from rewardkit.steps import AGGREGATIONS, aggregate

NAN = float("nan")


def steps_response(n: int, tag: str = "") -> Response:
    steps = [f"{tag} step {k}" for k in range(n)]
    return Response("\n\n".join(steps), steps)


def rec(rid, prompt, step_labels=None, n_steps=None, responses=None, **kwargs):
    """A record whose responses are step-split solutions (one per step-label row unless given)."""
    if responses is None:
        rows = step_labels or [[1.0] * (n_steps or 2)]
        responses = [steps_response(len(row), f"{rid}.{k}") for k, row in enumerate(rows)]
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return PreferenceRecord(id=rid, prompt=prompt, responses=responses, step_labels=step_labels, **kwargs)


def prm_result(step_rewards, rule="min"):
    return ScoreResult(rewards=[aggregate(s, rule) for s in step_rewards], step_rewards=step_rewards)


# -- group_by_prompt -----------------------------------------------------------------------------------------------
def test_group_by_prompt_merges_rows_of_one_prompt_in_order():
    rows = [rec("a1", "Problem A", [[1.0, 1.0]]), rec("b1", "Problem B", [[1.0, 0.0]]),
            rec("a2", "Problem A", [[0.0, None]]), rec("a3", "Problem A", [[1.0, 1.0, 1.0]]),
            rec("c1", [{"role": "system", "content": "Problem A"}], [[1.0]])]  # same text, another role
    merged = group_by_prompt(rows)
    assert [m.id for m in merged] == ["a1+2", "b1", "c1"]
    a, b, c = merged
    assert [r.content for r in a.responses] == [rows[0].responses[0].content, rows[2].responses[0].content,
                                               rows[3].responses[0].content]
    assert a.responses[1].steps == rows[2].responses[0].steps
    assert a.step_labels == [[1.0, 1.0], [0.0, None], [1.0, 1.0, 1.0]]
    assert a.meta["correct"] == [True, False, True] and a.meta["members"] == ["a1", "a2", "a3"]
    assert b.meta["correct"] == [False] and b.meta["members"] == ["b1"]
    assert c.meta["correct"] == [True]
    assert correctness(a) == [True, False, True]


def test_group_by_prompt_carries_final_answer_correct_when_steps_are_missing():
    rows = [rec("x1", "P", responses=[Response("one")], meta={"final_answer_correct": True}),
            rec("x2", "P", [[1.0, 0.0]], meta={"final_answer_correct": True}),  # a wrong step, the right answer
            rec("x3", "P", responses=[Response("three")], meta={"final_answer_correct": False}),
            rec("x4", "P", responses=[Response("four")])]
    (merged,) = group_by_prompt(rows)
    assert merged.meta["correct"] == [True, True, False, None]
    assert merged.step_labels is None  # not every member has step labels
    assert len(merged.responses) == 4


# -- correctness --------------------------------------------------------------------------------------------------
def test_correctness_from_step_labels():
    r = rec("s", "P", [[1.0, 1.0], [1.0, 0.0], [1.0, None], [0.0, None], [1.0, 0.7], [0.6, 0.4], [0.9, None, 0.2]])
    assert correctness(r) == [True, False, None, False, True, False, False]


def test_correctness_from_final_answer_correct_only_for_one_solution():
    assert correctness(rec("f", "P", responses=[Response("x")], meta={"final_answer_correct": True})) == [True]
    assert correctness(rec("f", "P", responses=[Response("x")], meta={"final_answer_correct": False})) == [False]
    two = rec("f", "P", responses=[Response("x"), Response("y")], meta={"final_answer_correct": True})
    assert correctness(two) == [None, None]
    # best-of-N asks whether the picked answer is right: the row's flag wins over its step labels
    assert correctness(rec("f", "P", [[1.0, 0.0]], meta={"final_answer_correct": True})) == [True]
    assert correctness(rec("f", "P", [[1.0, 1.0]], meta={"final_answer_correct": False})) == [False]
    assert correctness(rec("f", "P", [[1.0, 1.0]], meta={"final_answer_correct": None})) == [True]


def test_correctness_from_zero_one_scores():
    r = rec("z", "P", responses=[Response(t) for t in "abcd"], scores=[1, 0, 0.5, 1.0])
    assert correctness(r) == [True, False, None, True]
    assert correctness(rec("z", "P", responses=[Response("a"), Response("b")], scores=[3.0, 2.0])) == [None, None]


def test_correctness_unknown_without_labels():
    assert correctness(rec("u", "P", responses=[Response("a"), Response("b")])) == [None, None]


# -- ranking ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scores, want", [
    ([0.5, NAN, 0.9, 0.5], [2, 0, 3, 1]),
    ([NAN, 1.0, NAN], [1, 0, 2]),
    ([0.2, 0.2, 0.2], [0, 1, 2]),
    ([-math.inf, NAN, 0.0], [2, 0, 1]),
    ([3.0, 1.0, 2.0, 3.0, 1.0], [0, 3, 2, 1, 4]),
    ([], []),
])
def test_ranking_is_best_first_stable_with_nan_last(scores, want):
    assert ranking(scores) == want


def test_nan_ranks_below_minus_infinity():
    assert ranking([NAN, -math.inf]) == [1, 0]


def test_candidate_scores_per_aggregation_or_the_one_reward():
    res = prm_result([[0.9, 0.5], [0.6, None]])
    per_rule = candidate_scores(res)
    assert set(per_rule) == set(AGGREGATIONS)
    assert per_rule["product"] == pytest.approx([0.45, 0.6])
    assert per_rule["min"] == [0.5, 0.6] and per_rule["last"] == [0.5, 0.6]
    assert per_rule["mean"] == pytest.approx([0.7, 0.6])
    assert candidate_scores(ScoreResult(rewards=[1.5, -2.0])) == {"reward": [1.5, -2.0]}


def test_rerank_rows():
    records = [rec("p", "P", [[1.0, 1.0], [1.0, 0.0]]), rec("q", "Q", responses=[Response("a"), Response("b")])]
    results = [prm_result([[0.9, 0.5], [0.6, 0.6]]), ScoreResult(rewards=[0.1, 0.3])]
    rows = rerank(records, results)
    assert rows[0]["id"] == "p" and rows[0]["n"] == 2
    assert rows[0]["ranking"] == {"product": [0, 1], "min": [1, 0], "mean": [0, 1], "last": [1, 0]}
    assert rows[0]["step_rewards"] == [[0.9, 0.5], [0.6, 0.6]]
    assert rows[0]["scores"]["min"] == [0.5, 0.6]
    assert rows[1] == {"id": "q", "n": 2, "ranking": {"reward": [1, 0]}, "scores": {"reward": [0.1, 0.3]}}
    with pytest.raises(DataError, match="2 records but 1 score results"):
        rerank(records, results[:1])


# -- best-of-N ------------------------------------------------------------------------------------------------------
@pytest.fixture
def candidates():
    """Five problems: two or three candidates each, correctness from step labels.

    P1 [right, wrong, wrong]: product picks c0 (0.45), min c1 (0.6), mean c2 (0.7467), last c2 (0.99).
    P2 [wrong, right, unknown]: the unknown candidate (best on every rule) is left out; product and min pick
       c0 (0.8 > 0.665, 0.7), mean and last c1 (0.825, 0.95).
    P3 one known candidate: skipped.  P4 [right, right]: every pick right.  P5 [wrong, wrong]: every pick wrong.
    """
    records = [
        rec("P1", "p1", [[1.0, 1.0], [1.0, 0.0], [0.0, None, None]]),
        rec("P2", "p2", [[0.0], [1.0, 1.0], [1.0, None]]),
        rec("P3", "p3", [[1.0], [1.0, None]]),
        rec("P4", "p4", [[1.0], [1.0]]),
        rec("P5", "p5", [[0.0], [1.0, 0.0]]),
    ]
    results = [
        prm_result([[0.9, 0.5], [0.6, 0.6], [0.95, 0.3, 0.99]]),
        prm_result([[0.8], [0.7, 0.95], [1.0, 1.0]]),
        prm_result([[0.1], [0.9, 0.9]]),
        prm_result([[0.1], [0.2]]),
        prm_result([[0.5], [0.4, 0.3]]),
    ]
    return records, results


def test_best_of_n_exact_numbers_for_every_aggregation(candidates):
    report = best_of_n_report(*candidates)
    assert report["problems"] == 4
    assert report["candidates_mean"] == pytest.approx((3 + 2 + 2 + 2) / 4)
    assert report["accuracy"] == pytest.approx({"product": 2 / 4, "min": 1 / 4, "mean": 2 / 4, "last": 2 / 4})
    assert report["random"] == pytest.approx((1 / 3 + 1 / 2 + 1 + 0) / 4)  # the mean fraction correct
    assert report["oracle"] == pytest.approx(3 / 4)  # some candidate is right


def test_best_of_n_of_an_outcome_scorer(candidates):
    records, _ = candidates
    results = [ScoreResult(rewards=r) for r in ([0.1, 0.9, 0.5], [2.0, 1.0, 9.0], [0.0, 1.0], [1.0, 1.0],
                                                 [0.3, 0.2])]
    report = best_of_n_report(records, results)
    # P1 picks c1 (wrong), P2 c0 (wrong; c2 unknown is left out), P4 c0 on a tie (right), P5 wrong
    assert report["accuracy"] == {"reward": 0.25}
    assert report["problems"] == 4 and report["oracle"] == pytest.approx(0.75)


def test_best_of_n_after_grouping_one_solution_rows():
    rows = [rec("a1", "A", [[1.0, 0.0]]), rec("b1", "B", [[1.0]]), rec("a2", "A", [[1.0, 1.0]]),
            rec("b2", "B", [[0.0]]), rec("c1", "C", [[1.0]])]
    merged = group_by_prompt(rows)
    steps = {"a1": [0.9, 0.2], "a2": [0.6, 0.7], "b1": [0.4], "b2": [0.8], "c1": [0.5]}
    results = [prm_result([steps[m] for m in r.meta["members"]]) for r in merged]
    report = best_of_n_report(merged, results)
    assert report["problems"] == 2  # C has one candidate
    # A: min picks a2 (0.6 > 0.2: right), last a2 (0.7 > 0.2); B: every rule picks b2 (0.8: wrong)
    assert report["accuracy"] == pytest.approx({"product": 0.5, "min": 0.5, "mean": 0.5, "last": 0.5})
    assert report["random"] == pytest.approx(0.5) and report["oracle"] == 1.0


def test_best_of_n_needs_two_known_candidates(candidates):
    records, results = candidates
    with pytest.raises(DataError, match="two or more candidates of known correctness.*--group-by-prompt"):
        best_of_n_report(records[2:3], results[2:3])
    one_each = [rec(f"r{i}", f"p{i}", [[1.0]]) for i in range(3)]
    with pytest.raises(DataError, match="two or more candidates"):
        best_of_n_report(one_each, [prm_result([[0.5]]) for _ in one_each])
    with pytest.raises(DataError):
        best_of_n_report([], [])
