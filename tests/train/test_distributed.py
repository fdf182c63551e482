"""A real 2-process Accelerate run (gloo on CPU) follows the single-process run with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rewardkit.data.record import Response
from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem
from rewardkit.train import load_config, train

from tiny import toy_pairs as pairs
from tiny import write_jsonl as write

SETTINGS = ["lr=2e-3", "batch_size=8", "precision=fp32", "progress=false", "warmup_ratio=0", "max_steps=4",
            "eval_every=100"]


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one(llama_dir, tmp_path):
    data = write(tmp_path / "train.jsonl", pairs(32))
    single = tmp_path / "single"
    train(load_config(None, SETTINGS, model=str(llama_dir), data=[str(data)], output=str(single)))

    double = tmp_path / "double"
    launch_config = Path(__file__).parents[2] / "examples" / "accelerate" / "ddp_cpu_2proc.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_config),
           "-m", "rewardkit.cli", "train", "--model", str(llama_dir), "--data", str(data), "--output", str(double)]
    for s in SETTINGS:
        cmd += ["--set", s]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "2 process(es)" in proc.stderr

    # Same global batch, same order: the loss trajectories agree to float32 reduction-order noise.
    assert len(losses(double)) == 4
    assert losses(double) == pytest.approx(losses(single), abs=1e-5)
    items = [ScoreItem([{"role": "user", "content": "Tell me about cats, please."}],
                       [Response("Thank you for asking! Here is a clear answer about cats."), Response("No.")])]
    a = RewardModelScorer(RewardModel.from_pretrained(single / "last"), precision="fp32").score(items)[0].rewards
    b = RewardModelScorer(RewardModel.from_pretrained(double / "last"), precision="fp32").score(items)[0].rewards
    assert b == pytest.approx(a, abs=1e-4)
