"""`rewardkit overopt` end to end on the planted task, through `python:` specs: the report, the score cache
(a rerun with one more proxy scores only that one), resumption after an interruption, and bad input."""

import json

import pytest
from typer.testing import CliRunner

import overopt_task as task
from rewardkit.cli import app
from rewardkit.data import write_canonical_jsonl
from rewardkit.overopt.pool import Pool, cached_scores, slug

runner = CliRunner()
GOLD = "python:overopt_task:gold"


@pytest.fixture
def pool_file(tmp_path):
    path = tmp_path / "pool.jsonl"
    write_canonical_jsonl(task.pool_records(prompts=40, samples=32), path)
    return path


def run(*args):
    result = runner.invoke(app, ["overopt", *args])
    return result.exit_code, " ".join(result.output.split())


def test_overopt_writes_the_report_and_a_rerun_scores_only_the_new_proxy(pool_file, tmp_path):
    out = tmp_path / "study"
    base = ["--gold", GOLD, "--proxy", "a=python:overopt_task:proxy_a", "--samples", str(pool_file),
            "--n-max", "32", "--out", str(out), "--resamples", "100"]
    code, output = run(*base)
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    assert list(report["objectives"]) == ["a"] and report["objectives"]["a"]["overoptimized"]
    assert report["gold_model"] == GOLD and report["n"] == [1, 2, 4, 8, 16, 32]
    assert all((out / name).is_file() for name in ("report.md", "bon_curves.png", "mitigation.png"))
    assert "a: peak gold" in output
    cached = {p.name: p.stat().st_mtime_ns for p in (out / "scores").glob("*.jsonl")}
    assert len(cached) == 2

    code, output = run(*base, "--proxy", "ens=python:overopt_task:ensemble")
    assert code == 0, output
    again = {p.name: p.stat().st_mtime_ns for p in (out / "scores").glob("*.jsonl")}
    assert len(again) == 3 and all(again[name] == mtime for name, mtime in cached.items())  # not rescored
    report = json.loads((out / "report.json").read_text())
    assert list(report["objectives"]) == ["a", "ens mean", "ens wco", "ens uwo"]


def test_an_interrupted_scoring_resumes_without_rescoring(tmp_path):
    pool = Pool(task.pool_records(prompts=100, samples=4), "p")
    calls = []

    class Flaky:
        def __init__(self, fail_after):
            self.inner, self.fail_after = task.gold(), fail_after

        def score(self, items):
            calls.append(len(items))
            if len(calls) > self.fail_after:
                raise KeyboardInterrupt
            return self.inner.score(items)

        def describe(self):
            return self.inner.describe()

    with pytest.raises(KeyboardInterrupt):
        cached_scores(Flaky(1), "gold", pool, tmp_path)  # the first chunk of 64 prompts is kept
    calls.clear()
    results = cached_scores(Flaky(10), "gold", pool, tmp_path)
    assert calls == [36] and len(results) == 100
    assert [r.rewards for r in results] == [r.rewards for r in task.gold().score(pool.records)]
    assert (tmp_path / f"{slug('gold')}.jsonl").is_file()


def test_bad_input(pool_file, tmp_path):
    base = ["--gold", GOLD, "--proxy", "python:overopt_task:proxy_a", "--out", str(tmp_path / "o")]
    code, output = run(*base, "--samples", str(pool_file), "--n-max", "33")
    assert code == 2 and "--n-max 33 is above the pool size: the smallest prompt has 32 samples" in output
    assert not (tmp_path / "o" / "scores").exists()  # refused before anything was scored

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, output = run(*base, "--policy", "smollm2", "--prompts", str(empty), "--n-max", "4")
    assert code == 2 and "Traceback" not in output and "prompt" in output.lower()

    code, output = run(*base, "--n-max", "4")
    assert code == 2 and "no pool" in output

    code, output = run(*base, "--samples", str(pool_file), "--n-max", "4", "--aggregators", "mean,median")
    assert code == 2 and "unknown ensemble aggregator 'median'" in output


def test_a_proxy_that_is_the_gold_is_warned_about(pool_file, tmp_path):
    code, output = run("--gold", GOLD, "--proxy", f"same={GOLD}", "--samples", str(pool_file), "--n-max", "8",
                       "--out", str(tmp_path / "o"), "--resamples", "50")
    assert code == 0 and "warning: proxy same is the gold model" in output


def test_a_length_calibrated_proxy_is_one_more_objective(tmp_path):
    from rewardkit.data.record import Response
    from rewardkit.eval.length import LengthCalibratedScorer
    from rewardkit.models.scorer import ScoreItem

    records = task.pool_records(prompts=16, samples=16)
    for r in records:  # lengths that vary, so that there is a length trend to fit
        r.responses = [Response(resp.content + " filler" * (k % 7)) for k, resp in enumerate(r.responses)]
    pool_file = tmp_path / "pool.jsonl"
    write_canonical_jsonl(records, pool_file)
    calibration = tmp_path / "length.json"
    LengthCalibratedScorer.fit(task.proxy_a(), [ScoreItem(r.prompt, r.responses) for r in records],
                               unit="words", method="linear").save(calibration)
    out = tmp_path / "o"
    code, output = run("--gold", GOLD, "--proxy", "a=python:overopt_task:proxy_a",
                       "--proxy", "a_lc=python:overopt_task:proxy_a", "--length-calibration", f"a_lc={calibration}",
                       "--samples", str(pool_file), "--n-max", "16", "--out", str(out), "--resamples", "50")
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    assert list(report["objectives"]) == ["a", "a_lc"]
    assert report["objectives"]["a"]["proxy"] != report["objectives"]["a_lc"]["proxy"]
    assert len(list((out / "scores").glob("*.jsonl"))) == 3  # gold, a, a_lc: the calibrated one cached apart

    code, output = run("--gold", GOLD, "--proxy", "a=python:overopt_task:proxy_a", "--length-calibration",
                       f"b={calibration}", "--samples", str(pool_file), "--n-max", "4", "--out", str(out))
    assert code == 2 and "is not one of the proxies (a)" in output


def test_a_bad_proxy_fails_before_any_sampling(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello?\n")
    out = tmp_path / "o"
    code, output = run("--gold", GOLD, "--proxy", str(tmp_path / "no_such_model"), "--policy", "smollm2",
                       "--prompts", str(prompts), "--n-max", "4", "--out", str(out))
    assert code == 2 and "no_such_model" in output and "Traceback" not in output
    assert not (out / "samples.jsonl.partial").exists() and not (out / "samples.jsonl").exists()
