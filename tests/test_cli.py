"""The CLI end to end on tiny models: score (and resume), eval, data inspect/convert, and clear errors."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.models.reward_model import RewardModel

runner = CliRunner()

PAIRS = [
    {"id": f"p{i}", "prompt": f"Question {i}: what is {i} plus {i}?",
     "responses": [f"It is {2 * i}.", f"No idea, maybe {i}? " * (i % 3 + 1)], "chosen": 0,
     "subset": "math" if i % 2 else "chat"}
    for i in range(12)
]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, llama_dir):
    path = tmp_path_factory.mktemp("rm") / "rm"
    RewardModel.from_pretrained(llama_dir).save_pretrained(path)
    return path


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return path


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_score_writes_rewards_and_resumes(rm_dir, pairs_file, tmp_path):
    out = tmp_path / "scores.jsonl"
    code, output = run("score", "--model", rm_dir, "--input", pairs_file, "--output", out, "--precision", "fp32")
    assert code == 0, output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [p["id"] for p in PAIRS]
    assert all(len(r["rewards"]) == 2 and len(r["response_tokens"]) == 2 for r in rows)

    # The same rewards come out of the library.
    from rewardkit.data import load_records
    from rewardkit.models.rm_scorer import RewardModelScorer

    lib = RewardModelScorer.from_pretrained(rm_dir, precision="fp32").score(load_records(pairs_file).records)
    assert [x for r in rows for x in r["rewards"]] == pytest.approx([x for r in lib for x in r.rewards], abs=1e-6)

    # A second run refuses to clobber; an interrupted run (partial file) resumes and completes.
    code, output = run("score", "--model", rm_dir, "--input", pairs_file, "--output", out)
    assert code == 2 and "already exists" in output
    out2 = tmp_path / "again.jsonl"
    (tmp_path / "again.jsonl.partial").write_text("\n".join(out.read_text().splitlines()[:5]) + "\n")
    code, output = run("score", "--model", rm_dir, "--input", pairs_file, "--output", out2, "--precision", "fp32")
    assert code == 0 and "resuming" in output and "5 kept" in output
    again = [json.loads(x) for x in out2.read_text().splitlines()]
    assert sorted(r["id"] for r in again) == sorted(p["id"] for p in PAIRS)


def test_eval_writes_report(rm_dir, pairs_file, tmp_path):
    code, output = run("eval", "--model", rm_dir, "--data", pairs_file, "--report", tmp_path / "rep",
                       "--precision", "fp32")
    assert code == 0, output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    for key in ("n", "accuracy", "subsets", "ece", "brier", "length_correlation"):
        assert key in report
    assert report["n"] == 12 and set(report["subsets"]) == {"math", "chat"}
    assert (tmp_path / "rep" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ccuracy" in (tmp_path / "rep" / "report.md").read_text()
    scores = [json.loads(x) for x in (tmp_path / "rep" / "scores.jsonl").read_text().splitlines()]
    acc = sum(s["rewards"][0] > s["rewards"][1] for s in scores) / len(scores)
    assert report["accuracy"] == pytest.approx(acc)
    assert report["scorer"]["precision"] == "fp32"


def test_bad_row_is_one_clear_line(rm_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps({**PAIRS[1], "chosen": 7}) + "\n")
    code, output = run("eval", "--model", rm_dir, "--data", bad, "--report", tmp_path / "rep")
    assert code == 2
    assert "bad.jsonl:2" in output and "chosen" in output and "Traceback" not in output
    assert not (tmp_path / "rep").exists()
    code, output = run("eval", "--model", rm_dir, "--data", bad, "--report", tmp_path / "rep", "--skip-bad",
                       "--precision", "fp32")
    assert code == 0 and "skipped 1 bad row" in output
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["skipped"] == 1


def test_missing_model_and_file_errors(pairs_file, tmp_path):
    code, output = run("eval", "--model", tmp_path / "nope", "--data", pairs_file, "--report", tmp_path / "r")
    assert code == 2 and "cannot load a model" in output
    code, output = run("score", "--model", "minilm", "--input", tmp_path / "missing.jsonl",
                       "--output", tmp_path / "o.jsonl")
    assert code == 2 and "missing.jsonl" in output and "Traceback" not in output
    code, output = run("data", "convert", pairs_file, tmp_path / "o.jsonl", "--map", "prompt")
    assert code == 2 and "--map" in output


def test_data_inspect_and_convert(pairs_file, tmp_path):
    code, output = run("data", "inspect", pairs_file, "--json")
    assert code == 0, output
    summary = json.loads(output)
    assert summary["n"] == 12
    code, output = run("data", "inspect", pairs_file)
    assert code == 0 and "12" in output
    mapped = tmp_path / "mapped.jsonl"
    mapped.write_text("".join(json.dumps({"q": p["prompt"], "good": p["responses"][0], "bad": p["responses"][1]})
                              + "\n" for p in PAIRS))
    out = tmp_path / "canonical.jsonl"
    code, output = run("data", "convert", mapped, out, "--map", "prompt=q,chosen=good,rejected=bad")
    assert code == 0, output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 12 and rows[3]["responses"][0] == PAIRS[3]["responses"][0] and rows[3]["chosen"] == 0


def test_entry_point_runs_as_a_real_process(rm_dir, pairs_file, tmp_path):
    """The installed console script, not just the in-process runner."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    exe = os.path.join(os.path.dirname(sys.executable), "rewardkit")
    proc = subprocess.run([exe, "score", "-m", str(rm_dir), "-i", str(pairs_file), "-o", str(tmp_path / "s.jsonl"),
                           "--limit", "3"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 3
