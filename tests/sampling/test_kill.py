"""A sampling run killed for real (SIGKILL of a subprocess) resumes into the file an uninterrupted run writes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data.prompts import load_prompts
from rewardkit.sampling import SamplingSettings, sample_to_file
from rewardkit.scoring import partial_path

from sampling_helpers import read_rows

# The child samples with a progress hook that, once its second batch is on disk (advance() runs after the
# flush and fsync), drops a marker and stalls: the parent kills it there, mid-run, without racing a timer.
CHILD = """
import sys, time
from rewardkit.sampling import Progress, sample

policy, prompts, out, marker = sys.argv[1:5]

class StallAfterTwoBatches(Progress):
    batches = 0

    def advance(self, samples):
        self.batches += 1
        if self.batches == 2:
            open(marker, "w").close()
            time.sleep(600)

sample(policy, prompts, out, n=2, max_new_tokens=6, seed=11, batch_size=3, precision="fp32",
       progress=StallAfterTwoBatches())
"""


def test_a_killed_run_resumes_with_no_duplicates_or_losses(policy_dir, policy, prompts_file, tmp_path):
    out, marker = tmp_path / "s.jsonl", tmp_path / "two-batches-written"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                      os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(policy_dir), str(prompts_file), str(out), str(marker)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600  # a safety net for a child that never gets there, not a speed check
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child never wrote two batches"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists() and [r["id"] for r in read_rows(partial_path(out))] == [f"q{i}" for i in range(6)]

    # The same command again, from the CLI: it continues where the killed run stopped.
    result = CliRunner().invoke(app, ["sample", "--policy", str(policy_dir), "--prompts", str(prompts_file), "--n", "2",
                                      "--max-new-tokens", "6", "--seed", "11", "--batch-size", "3", "--precision",
                                      "fp32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output and "6 kept from the interrupted run" in result.output

    whole = tmp_path / "whole.jsonl"
    sample_to_file(policy, load_prompts(prompts_file), whole, SamplingSettings(n=2, max_new_tokens=6, seed=11),
                   batch_size=3)
    assert out.read_bytes() == whole.read_bytes()
