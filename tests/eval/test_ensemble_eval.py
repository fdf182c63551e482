"""The ensemble section of an evaluation: member accuracies and the AUROC of the spread against errors."""

import pytest

from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.eval.ensemble import accuracy_by_uncertainty, diversity, ensemble_report, uncertainty_auroc
from rewardkit.eval.evaluate import evaluate
from rewardkit.eval.report import render_markdown
from rewardkit.models.scorer import ScoreResult


def pair(i):
    return PreferenceRecord(f"p{i}", user_prompt("q"), [Response("a"), Response("b")], chosen=0)


# Four pairs, response 0 preferred. The ensemble is right on p0, p1 and wrong on p2, p3 (a tie counts as wrong).
# Member 0 is right on p0, p1, p2; member 1 on p0 only.
RESULTS = [
    ScoreResult(rewards=[1.0, 0.0], members=[[1.0, 0.0], [1.0, 0.0]], uncertainty=[0.1, 0.1]),
    ScoreResult(rewards=[0.5, 0.0], members=[[2.0, 0.0], [0.0, 1.0]], uncertainty=[0.3, 0.1]),
    ScoreResult(rewards=[0.0, 0.2], members=[[1.0, 0.0], [0.0, 3.0]], uncertainty=[0.9, 0.5]),
    ScoreResult(rewards=[0.4, 0.4], members=[[0.0, 0.0], [0.0, 2.0]], uncertainty=[0.6, 0.6]),
]
RECORDS = [pair(i) for i in range(4)]
DESCRIBE = {"kind": "ensemble", "members": [{"member": "a"}, {"member": "b"}]}


def test_member_and_ensemble_accuracies():
    report = ensemble_report(RECORDS, RESULTS, DESCRIBE)
    assert [(m["name"], m["accuracy"]) for m in report["members"]] == [("a", 0.75), ("b", 0.25)]
    assert report["accuracy"] == 0.5
    assert report["best_member_accuracy"] == 0.75
    assert report["mean_member_accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert report["n_comparisons"] == 4


def test_uncertainty_auroc_is_one_when_every_wrong_pair_is_more_uncertain():
    # pair spreads 0.1, 0.2 (right) and 0.7, 0.6 (wrong)
    assert ensemble_report(RECORDS, RESULTS, DESCRIBE)["uncertainty_auroc"] == 1.0
    assert uncertainty_auroc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5
    assert uncertainty_auroc([0.1, 0.2], [False, False]) is None


def test_evaluate_adds_the_ensemble_section_and_the_report_shows_it():
    report = evaluate(RECORDS, RESULTS, DESCRIBE)
    assert report["ensemble"]["accuracy"] == report["accuracy"] == 0.5
    markdown = render_markdown(report, image=None)
    assert "## Ensemble" in markdown and "| a | 75.00% |" in markdown


def test_results_without_members_add_nothing():
    plain = [ScoreResult(rewards=r.rewards) for r in RESULTS]
    assert ensemble_report(RECORDS, plain) is None
    assert "ensemble" not in evaluate(RECORDS, plain)


def test_accuracy_by_uncertainty_bins_pairs_by_spread():
    bins = ensemble_report(RECORDS, RESULTS, DESCRIBE)["by_uncertainty"]
    assert [(b["count"], b["accuracy"]) for b in bins] == [(1, 1.0), (1, 1.0), (1, 0.0), (1, 0.0)]
    assert accuracy_by_uncertainty([0.1, 0.2, 0.7, 0.6], [True, True, False, False], bins=2) == [
        {"lo": 0.1, "hi": 0.2, "count": 2, "accuracy": 1.0}, {"lo": 0.6, "hi": 0.7, "count": 2, "accuracy": 0.0}]


def test_diversity_is_pairwise_correlation_and_disagreement():
    import statistics

    div = ensemble_report(RECORDS, RESULTS, DESCRIBE)["diversity"]
    m0 = [v for r in RESULTS for v in r.members[0]]
    m1 = [v for r in RESULTS for v in r.members[1]]
    # NumPy's corrcoef against the standard library's: one formula, two summation orders
    assert div["reward_correlation"] == pytest.approx(statistics.correlation(m0, m1), abs=1e-12)
    assert div["pair_disagreement"] == 0.5  # member 1 flips p1 and p2; both are wrong on the tie p3
    assert diversity([[1.0, 2.0]], [[1.0]]) is None  # one member has no one to differ from


def test_the_written_report_has_the_ensemble_picture_and_tables(tmp_path):
    from rewardkit.eval.report import write_report

    paths = write_report(evaluate(RECORDS, RESULTS, DESCRIBE), tmp_path)
    assert paths["ensemble"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["markdown"].read_text()
    assert "prefer different responses on 50.00% of the pairs" in markdown
    assert "| 0.100-0.100 | 1 | 100.00% |" in markdown and "ensemble.png" in markdown
