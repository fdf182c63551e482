"""Two processes (DDP, gloo on CPU) follow one process on a multi-objective run with every extra term: preferences
for one head, masked ratings for the other, learned combination weights (a parameter used outside the forward
pass) and the ODIN length head (Pearson over the micro-batch gathered from both processes, with gradients)."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rewardkit.train import load_config, train
from tiny import toy_pairs as pairs
from tiny import write_jsonl as write


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_with_every_multi_objective_term(llama_dir, tmp_path):
    rng = random.Random(0)
    prefs = write(tmp_path / "a.jsonl", pairs(23))  # odd count: the processes' shards differ in size
    rated = [{k: v for k, v in r.items() if k != "chosen"} | {"attributes": [{"b": rng.random()}, {"b": None}]}
             for r in pairs(16, offset=40)]
    data = json.dumps([{"path": str(prefs), "objective": "a"}, str(write(tmp_path / "b.jsonl", rated))])
    settings = ["lr=2e-3", "batch_size=8", "grad_accum=2", "precision=fp32", "progress=false", "warmup_ratio=0",
                "max_steps=4", "eval_every=100", "objectives=[a, b]", "combination=learned", "length_head=true",
                f"data={data}"]
    single = tmp_path / "single"
    train(load_config(None, settings, model=str(llama_dir), output=str(single)))

    double = tmp_path / "double"
    launch_config = Path(__file__).parents[2] / "examples" / "accelerate" / "ddp_cpu_2proc.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_config),
           "-m", "rewardkit.cli", "train", "--model", str(llama_dir), "--output", str(double)]
    for s in settings:
        cmd += ["--set", s]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "2 process(es)" in proc.stderr

    one, two = metrics(single), metrics(double)
    assert len(two) == 4
    keys = ["loss", "loss_pref", "loss_attr", "loss_combination", "loss_length", "loss_orth", "weight_a", "weight_b"]
    for a, b in zip(one, two):
        assert [b[k] for k in keys] == pytest.approx([a[k] for k in keys], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert one[-1]["weight_a"] != one[0]["weight_a"] and one[-1]["loss_length"] < one[0]["loss_length"]
