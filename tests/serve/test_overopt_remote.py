"""`rewardkit overopt` with a served proxy (a remote client over a real socket) gives the curve the same model
gives in-process."""

import json

import numpy as np
import pytest
from serve_helpers import ServerProcess
from typer.testing import CliRunner

import overopt_task as task
from rewardkit.cli import app
from rewardkit.data import write_canonical_jsonl
from rewardkit.models import RewardModel
from rewardkit.models.spec import load_scorer
from rewardkit.overopt.bon import bon_estimate, n_values


def test_a_served_proxy_gives_the_in_process_curve(llama_dir, tmp_path):
    model = RewardModel.from_pretrained(llama_dir, seed=0).save_pretrained(tmp_path / "rm")
    records = task.pool_records(prompts=6, samples=8)
    pool = tmp_path / "pool.jsonl"
    write_canonical_jsonl(records, pool)
    server = ServerProcess(["--model", str(model), "--precision", "fp32"], tmp_path / "server.log")
    try:
        result = CliRunner().invoke(app, ["overopt", "--gold", "python:overopt_task:gold", "--proxy",
                                          f"served={server.url}", "--samples", str(pool), "--n-max", "8",
                                          "--out", str(tmp_path / "o"), "--resamples", "20"])
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    local = load_scorer(str(model), precision="fp32").score(records)
    gold = task.gold().score(records)
    for j, n in enumerate(n_values(8)):
        want = np.mean([bon_estimate(r.rewards, g.rewards, n) for r, g in zip(local, gold)])
        # fp32 forward passes batched differently by the server: rewards agree to ~1e-6, and a near-tie in
        # the sort could swap two samples, so the tolerance is on the curve, not on each reward
        assert report["objectives"]["served"]["gold"][j] + report["gold"]["mean"] == pytest.approx(want, abs=1e-4)
