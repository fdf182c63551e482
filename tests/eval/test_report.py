"""write_report(): report.json round-trips, report.md reads well, reliability.png is a real image."""

from __future__ import annotations

import json

import pytest

from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.eval import evaluate, write_report
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


def test_writes_all_three_files(tmp_path, report):
    paths = write_report(report, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "reliability"}
    assert json.loads(paths["json"].read_text()) == report
    assert_png(paths["reliability"])
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
