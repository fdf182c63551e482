"""write_report(): report.json round-trips, report.md reads well, reliability.png is a real image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.eval import evaluate, write_report
from rewardkit.eval.metrics import reward_by_length
from rewardkit.models.scorer import ScoreResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def scored(n: int) -> tuple[list[PreferenceRecord], list[ScoreResult]]:
    """n pairs with varied margins (some wrong, one tie) across two subsets."""
    records, results = [], []
    for i in range(n):
        responses = [Response("good " * (i % 5 + 1)), Response("bad " * (i % 3 + 1))]
        subset = "chat" if i % 2 else "safety"
        meta = {"subset": subset}
        records.append(PreferenceRecord(f"r{i}", user_prompt("q"), responses, chosen=0, meta=meta))
        results.append(ScoreResult(rewards=[(i % 7) - 2.0, 0.0], truncated=[0, int(i == 3)]))
    return records, results


@pytest.fixture
def report():
    records, results = scored(30)
    return evaluate(records, results, {"name": "toy", "max_length": 512, "dtype": "bfloat16"}, skipped=1)


def assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes  # axes, bars and labels, not a blank canvas


def test_writes_json_markdown_and_plots(tmp_path, report):
    paths = write_report(report, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "reliability", "reward_length"}  # no RM-Bench section here
    assert json.loads(paths["json"].read_text()) == report
    assert_png(paths["reliability"])
    assert_png(paths["reward_length"])
    md = paths["markdown"].read_text()
    assert "(reliability.png)" in md and "(reward_length.png)" in md
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_markdown_states_headline_numbers(tmp_path, report):
    md = write_report(report, tmp_path)["markdown"].read_text()
    assert f"Accuracy: {100 * report['accuracy']:.2f}%" in md
    assert "tie counts as wrong" in md
    assert f"{report['ece']:.4f}" in md and f"{report['brier']:.4f}" in md
    assert "| chat |" in md and "| safety |" in md
    assert "max_length" in md and "bfloat16" in md
    assert "skipped rows: 1" in md and "truncated responses: 1" in md
    assert "![Reliability diagram](reliability.png)" in md


def test_few_points_and_no_points_still_give_a_png(tmp_path):
    one = evaluate(*scored(1))
    assert_png(write_report(one, tmp_path / "one")["reliability"])
    empty = evaluate([], [])
    paths = write_report(empty, tmp_path / "empty")
    assert_png(paths["reliability"])
    md = paths["markdown"].read_text()
    assert "Accuracy: —" in md and "No scorer description" in md


def test_rewrite_replaces_files(tmp_path, report):
    write_report(report, tmp_path)
    changed = dict(report, accuracy=0.125)
    paths = write_report(changed, tmp_path)
    assert json.loads(paths["json"].read_text())["accuracy"] == 0.125
    assert "12.50%" in paths["markdown"].read_text()


def test_reward_by_length_bins_hold_every_response_once():
    lengths = np.array([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144] * 3)
    rewards = lengths * 0.5
    table = reward_by_length(rewards, lengths, bins=4)
    assert sum(row["n"] for row in table) == len(lengths)
    assert [row["lo"] for row in table] == sorted(row["lo"] for row in table)
    for row in table:
        inside = (lengths >= row["lo"]) & (lengths <= row["hi"])
        assert row["n"] == inside.sum()
        assert row["mean_reward"] == pytest.approx(rewards[inside].mean())
    means = [row["mean_reward"] for row in table]
    assert means == sorted(means)  # reward grows with length here, so the curve does too
    assert reward_by_length(np.ones(5), np.full(5, 7.0)) == [
        {"lo": 7.0, "hi": 7.0, "n": 5, "mean_reward": 1.0, "std_reward": 0.0}]
    assert reward_by_length([], []) == []


def test_evaluate_reports_the_length_curve(report):
    table = report["reward_by_length"]
    assert table and sum(row["n"] for row in table) == 2 * report["n"]


def test_benchmark_sections_are_rendered_and_rm_bench_is_plotted(tmp_path, report):
    rm_bench = {"easy": 1.0, "normal": 1.0, "hard": 0.0, "overall": 2 / 3,
                "by_domain": {"chat": {"easy": 1.0, "normal": 1.0, "hard": 0.0, "score": 2 / 3, "n": 4,
                                       "matrix": [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]}}}
    rewardbench = {"sections": {"Chat": 0.6089, "Chat Hard": None}, "overall": 0.6089,
                   "subsets": {"alpacaeval-easy": {"accuracy": 0.5, "n": 100, "section": "Chat",
                                                   "length_category": "T"}}}
    processbench = {"f1": {"math": 0.25}, "f1_mean": 0.25, "threshold": 0.5, "threshold_source": "given",
                    "per_split": {"math": {"acc_err": 0.2, "acc_cor": 1 / 3, "f1": 0.25, "n": 10}}}
    paths = write_report({**report, "rm_bench": rm_bench, "rewardbench": rewardbench,
                          "processbench": processbench}, tmp_path)
    assert_png(paths["rm_bench"])
    md = paths["markdown"].read_text()
    assert "## RM-Bench" in md and "hard 0.00%" in md and "(rm_bench.png)" in md
    assert "## RewardBench" in md and "| Chat | 60.89% |" in md and "| Chat Hard | — |" in md
    assert "## ProcessBench" in md and "| math | 25.00% | 20.00% | 33.33% | 10 |" in md


def test_objectives_section(tmp_path, report):
    objectives = {"helpfulness": {"accuracy": 0.75, "combined_accuracy": 0.5, "n_comparisons": 4,
                                  "accuracy_all": 0.6}}
    md = write_report({**report, "objectives": objectives, "weights": {"helpfulness": 1.0}},
                      tmp_path)["markdown"].read_text()
    assert "## Objectives" in md and "| helpfulness | 1.000 | 75.00% | 50.00% | 4 | 60.00% |" in md
