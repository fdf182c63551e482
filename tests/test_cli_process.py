"""The process reward model (PRM) commands end to end on a tiny Llama backbone: `train` on step-labelled data
makes a PRM; `score` writes step rewards and `--aggregation` changes the rewards; `eval --benchmark
processbench` reports F1 and step AUROC that scores.jsonl recomputes; `rerank --group-by-prompt` writes the
rankings and the best-of-N numbers the library gives; and bad input is one clear line with exit code 2."""

import json
import math

import pytest
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data import load_records
from rewardkit.data.record import Response
from rewardkit.eval.benchmarks import score_processbench
from rewardkit.eval.rerank import best_of_n_report, group_by_prompt
from rewardkit.models import RewardModel, RewardModelScorer
from rewardkit.models.scorer import ScoreResult
from rewardkit.steps import aggregate
from tiny import assert_nested_close, write_jsonl

runner = CliRunner()
TOL = 1e-5


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def one_error(output: str) -> str:
    """The error message of a failed command, checked to be a user error and not a crash (re-joined, since
    rich wraps long lines)."""
    assert "Traceback" not in output and "Usage:" not in output, output
    assert output.count("error:") == 1, output
    return " ".join(output[output.index("error:"):].split())


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def json_roundtrip(obj):
    return json.loads(json.dumps(obj))


# -- data -----------------------------------------------------------------------------------------------------------
def solution(i: int, n: int, error: int) -> list[str]:
    return [f"Step {s + 1}: {i + s} + 1 = {i + s + (4 if s == error else 1)}." for s in range(n)]


def processbench_rows(prefix: str, count: int) -> list[dict]:
    """Rows with and without an error, some errors before the last step."""
    rows = []
    for i in range(count):
        n = 2 + i % 3
        label = -1 if i % 3 == 0 else (i % n)
        rows.append({"id": f"{prefix}-{i}", "problem": f"Count up from {i}.", "steps": solution(i, n, label),
                     "label": label, "final_answer_correct": label == -1})
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("prm-data")
    stepwise = write_jsonl(root / "steps.jsonl", [
        {"prompt": f"Count up from {i}.", "completions": solution(i, 3, i % 4 if i % 4 < 3 else -1),
         "labels": [s != i % 4 for s in range(3)]} for i in range(12)])
    gsm8k = root / "gsm8k.json"
    gsm8k.write_text(json.dumps(processbench_rows("gsm8k", 9)))
    # best-of-N candidates: four problems, three solutions each, one row a solution
    candidates = []
    for p in range(4):
        for c in range(3):
            label = -1 if (p + c) % 3 == 0 else c % 2
            candidates.append({"id": f"c{p}-{c}", "problem": f"Problem {p}: count up from {p}.",
                               "steps": solution(p + 10 * c, 2, label), "label": label})
    rerank_file = root / "candidates.json"
    rerank_file.write_text(json.dumps(candidates))
    prm800k = write_jsonl(root / "prm800k.jsonl", [{
        "question": {"problem": "What is 1 + 1?"},
        "label": {"steps": [{"completions": [{"text": "1 + 1 = 2.", "rating": 0}], "chosen_completion": 0,
                             "human_completion": None}], "finish_reason": "solution"}}])
    return {"stepwise": stepwise, "gsm8k": gsm8k, "candidates": rerank_file, "prm800k": prm800k}


@pytest.fixture(scope="module")
def prm(llama_dir, files, tmp_path_factory):
    """`rewardkit train` on the stepwise file, with no process settings: the data makes it a PRM."""
    out = tmp_path_factory.mktemp("cli-prm") / "run"
    code, output = run("train", "--model", llama_dir, "--data", files["stepwise"], "--output", out,
                       "--batch-size", 4, "--lr", "3e-3", "--set", "max_steps=3", "--set", "progress=false",
                       "--set", "precision=fp32", "--set", "warmup_ratio=0")
    assert code == 0, output
    assert "process reward model" in output and "trained 3 steps" in output
    return out / "last"


@pytest.fixture(scope="module")
def prm_scorer(prm):
    return RewardModelScorer.from_pretrained(prm, precision="fp32")


@pytest.fixture(scope="module")
def outcome_dir(llama_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("orm") / "rm"
    RewardModel.from_pretrained(llama_dir).save_pretrained(path)
    return path


def assert_close(got, want):
    assert_nested_close(got, want, TOL)


# -- train ------------------------------------------------------------------------------------------------------------
def test_train_on_step_labels_makes_a_prm(prm):
    saved = json.loads((prm / "rewardkit.json").read_text())
    assert saved["step_separator"] == "\n" and saved["step_aggregation"] == "min"
    assert saved["training"]["process"] == {"separator": "auto", "aggregation": "min", "last_step_only": False}
    assert RewardModel.from_pretrained(prm).meta.is_process


def test_train_with_a_bad_process_setting_is_one_clear_line(llama_dir, files, tmp_path):
    code, output = run("train", "--model", llama_dir, "--data", files["stepwise"], "--output", tmp_path / "run",
                       "--set", "process.aggregation=bogus")
    assert code == 2
    assert "process.aggregation" in one_error(output)
    assert not (tmp_path / "run").exists()


def test_train_format_options_reach_the_data(llama_dir, files, tmp_path):
    code, output = run("train", "--model", llama_dir, "--data", files["prm800k"], "--output", tmp_path / "run",
                       "--set", "format_options.neutral=2")
    assert code == 2
    assert "neutral must be a number in [0, 1] or None, got 2" in one_error(output)
    assert not (tmp_path / "run").exists()


# -- score --------------------------------------------------------------------------------------------------------------
def test_score_writes_step_rewards_and_aggregation_changes_the_rewards(prm, prm_scorer, files, tmp_path):
    records = load_records(files["gsm8k"]).records
    default, product = tmp_path / "min.jsonl", tmp_path / "product.jsonl"
    code, output = run("score", "-m", prm, "-i", files["gsm8k"], "-o", default, "--precision", "fp32")
    assert code == 0, output
    code, output = run("score", "-m", prm, "-i", files["gsm8k"], "-o", product, "--precision", "fp32",
                       "--aggregation", "product")
    assert code == 0, output
    rows, prod_rows = read_jsonl(default), read_jsonl(product)
    assert [r["id"] for r in rows] == [rec.id for rec in records] == [r["id"] for r in prod_rows]
    want = prm_scorer.score(records)
    for rec, row, prow, lib in zip(records, rows, prod_rows, want):
        assert len(row["step_rewards"]) == len(rec.responses) == 1  # one list per response
        assert len(row["step_rewards"][0]) == len(rec.responses[0].steps)  # one score per step
        assert_close(row["step_rewards"], lib.step_rewards)
        assert_close(prow["step_rewards"], row["step_rewards"])
        assert_close(row["rewards"], [min(s) for s in row["step_rewards"]])
        assert_close(prow["rewards"], [math.prod(s) for s in prow["step_rewards"]])
    multi = [r for r in rows if len(r["step_rewards"][0]) > 1]
    assert multi and all(p["rewards"][0] < r["rewards"][0] - 1e-6
                         for r, p in zip(rows, prod_rows) if len(r["step_rewards"][0]) > 1)


def test_score_plain_text_responses_are_split_into_paragraphs(prm, prm_scorer, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "t", "prompt": "Count up from 3.", "responses": ["3 + 1 = 4.\n\n4 + 1 = 5.", "3 + 1 = 9."],
         "chosen": 0}])
    out = tmp_path / "s.jsonl"
    code, output = run("score", "-m", prm, "-i", data, "-o", out, "--precision", "fp32", "--aggregation", "last")
    assert code == 0, output
    (row,) = read_jsonl(out)
    assert [len(s) for s in row["step_rewards"]] == [2, 1]
    lib = prm_scorer.score(load_records(data).records)[0]
    assert_close(row["step_rewards"], lib.step_rewards)
    assert_close(row["rewards"], [s[-1] for s in row["step_rewards"]])


# -- eval --benchmark processbench ----------------------------------------------------------------------------------------
def test_eval_processbench_reports_f1_and_step_auroc_recomputable_from_scores(prm, prm_scorer, files, tmp_path):
    rep = tmp_path / "report"
    code, output = run("eval", "-m", prm, "-d", files["gsm8k"], "-r", rep, "--benchmark", "processbench",
                       "--threshold", "0.5", "--precision", "fp32")
    assert code == 0, output
    report = json.loads((rep / "report.json").read_text())
    bench = report["processbench"]
    assert set(bench["f1"]) == {"gsm8k"} and set(bench["step_auroc"]) == {"gsm8k"}
    assert bench["threshold"] == 0.5 and bench["threshold_source"] == "given"
    assert bench["step_auroc"]["gsm8k"] is not None and 0.0 <= bench["step_auroc"]["gsm8k"] <= 1.0
    assert report["scorer"]["kind"] == "process_reward_model"

    records = load_records(files["gsm8k"]).records
    rows = read_jsonl(rep / "scores.jsonl")
    assert [r["id"] for r in rows] == [rec.id for rec in records]
    results = [ScoreResult(rewards=r["rewards"], step_rewards=r["step_rewards"]) for r in rows]
    assert bench == json_roundtrip(score_processbench(records, results, threshold=0.5))
    assert_close([r.step_rewards for r in results], [r.step_rewards for r in prm_scorer.score(records)])
    # the step-level report rides along
    assert report["steps"]["steps"] == sum(1 for rec in records for v in rec.step_labels[0] if v is not None)


# -- rerank -------------------------------------------------------------------------------------------------------------
def test_rerank_group_by_prompt_writes_rankings_and_best_of_n(prm, prm_scorer, files, tmp_path):
    out = tmp_path / "rerank"
    code, output = run("rerank", "-m", prm, "-d", files["candidates"], "-o", out, "--group-by-prompt",
                       "--precision", "fp32")
    assert code == 0, output
    assert "best-of-N" in output and "4 problems" in output
    merged = group_by_prompt(load_records(files["candidates"]).records)
    rows = read_jsonl(out / "reranked.jsonl")
    assert [r["id"] for r in rows] == [m.id for m in merged] and len(rows) == 4
    lib = prm_scorer.score(merged)
    for row, res in zip(rows, lib):
        assert row["n"] == 3
        assert_close(row["step_rewards"], res.step_rewards)
        for rule, scores in row["scores"].items():
            assert_close(scores, [aggregate(s, rule) for s in row["step_rewards"]])
            assert sorted(row["ranking"][rule]) == [0, 1, 2]
            assert [scores[i] for i in row["ranking"][rule]] == sorted(scores, reverse=True)
    report = json.loads((out / "best_of_n.json").read_text())
    assert report.pop("scorer")["kind"] == "process_reward_model"
    results = [ScoreResult(rewards=r["scores"]["min"], step_rewards=r["step_rewards"]) for r in rows]
    assert report == json_roundtrip(best_of_n_report(merged, results))
    assert report["problems"] == 4 and report["candidates_mean"] == 3.0
    assert set(report["accuracy"]) == {"product", "min", "mean", "last"}


def test_rerank_with_an_outcome_model_ranks_by_its_reward(outcome_dir, files, tmp_path):
    out = tmp_path / "rerank"
    code, output = run("rerank", "-m", outcome_dir, "-d", files["candidates"], "-o", out, "--group-by-prompt",
                       "--precision", "fp32")
    assert code == 0, output
    rows = read_jsonl(out / "reranked.jsonl")
    assert all(set(r["ranking"]) == {"reward"} and "step_rewards" not in r for r in rows)
    report = json.loads((out / "best_of_n.json").read_text())
    assert report.pop("scorer")["kind"] == "reward_model"
    merged = group_by_prompt(load_records(files["candidates"]).records)
    results = [ScoreResult(rewards=r["scores"]["reward"]) for r in rows]
    assert report == json_roundtrip(best_of_n_report(merged, results))


def test_rerank_without_grouping_one_solution_rows_has_no_best_of_n(prm, files, tmp_path):
    out = tmp_path / "rerank"
    code, output = run("rerank", "-m", prm, "-d", files["candidates"], "-o", out, "--precision", "fp32")
    assert code == 0, output
    assert "no best-of-N accuracy" in " ".join(output.split())
    assert len(read_jsonl(out / "reranked.jsonl")) == 12
    assert not (out / "best_of_n.json").exists()


# -- bad input: one clear line, exit code 2 ---------------------------------------------------------------------------------
def test_unknown_aggregation(prm, files, tmp_path):
    code, output = run("score", "-m", prm, "-i", files["gsm8k"], "-o", tmp_path / "s.jsonl", "--aggregation", "bogus")
    assert code == 2
    message = one_error(output)
    assert "unknown step aggregation 'bogus'" in message and "product, min, mean, last" in message
    assert not (tmp_path / "s.jsonl").exists()


def test_aggregation_with_an_outcome_model(outcome_dir, files, tmp_path):
    code, output = run("score", "-m", outcome_dir, "-i", files["gsm8k"], "-o", tmp_path / "s.jsonl",
                       "--aggregation", "min")
    assert code == 2
    assert "aggregation applies to process reward models only" in one_error(output)
    code, output = run("eval", "-m", outcome_dir, "-d", files["gsm8k"], "-r", tmp_path / "rep",
                       "--aggregation", "mean")
    assert code == 2
    assert "aggregation applies to process reward models" in one_error(output)


@pytest.mark.parametrize("spec, kind", [("dpo:some/policy", "dpo"), ("judge:some-model", "judge")])
def test_aggregation_with_a_dpo_or_judge_spec(spec, kind, files, tmp_path):
    code, output = run("score", "-m", spec, "-i", files["gsm8k"], "-o", tmp_path / "s.jsonl", "--aggregation", "min")
    assert code == 2
    assert f"aggregation applies to process reward models, not to {kind}: scorers" in one_error(output)


@pytest.mark.parametrize("option", ["neutral", "=1", "  =0"])
def test_format_option_without_a_key_value(prm, files, tmp_path, option):
    code, output = run("score", "-m", prm, "-i", files["prm800k"], "-o", tmp_path / "s.jsonl",
                       "--format-option", option)
    assert code == 2
    assert "--format-option: expected KEY=VALUE" in one_error(output)


@pytest.mark.parametrize("fmt", [[], ["--format", "prm800k"]])
def test_prm800k_neutral_out_of_range(prm, files, tmp_path, fmt):
    code, output = run("score", "-m", prm, "-i", files["prm800k"], "-o", tmp_path / "s.jsonl", *fmt,
                       "--format-option", "neutral=2")
    assert code == 2
    message = one_error(output)
    assert "prm800k.jsonl" in message and "format_options.neutral" in message
    assert "neutral must be a number in [0, 1] or None, got 2" in message


def test_unknown_format_option(prm, files, tmp_path):
    code, output = run("score", "-m", prm, "-i", files["prm800k"], "-o", tmp_path / "s.jsonl",
                       "--format-option", "neutrall=0")
    assert code == 2
    assert "format 'prm800k' has no option 'neutrall' (it takes: neutral)" in one_error(output)


def test_prm800k_neutral_option_changes_the_labels(prm, files, tmp_path):
    """The option reaches the converter: neutral=0 makes the neutral step wrong (outcome 0), null masks it."""
    for value, want in (("0", [[0.0]]), ("null", [[None]]), ("1", [[1.0]])):
        out = tmp_path / f"conv-{value}.jsonl"
        code, output = run("data", "convert", files["prm800k"], out, "--format-option", f"neutral={value}")
        assert code == 0, output
        assert read_jsonl(out)[0]["step_labels"] == want, value


def test_rerank_min_candidates_keeps_only_sets_that_large(prm, files, tmp_path):
    out = tmp_path / "rerank"
    code, output = run("rerank", "-m", prm, "-d", files["candidates"], "-o", out, "--group-by-prompt",
                       "--min-candidates", "3", "--precision", "fp32")
    assert code == 0, output
    assert len(read_jsonl(out / "reranked.jsonl")) == 4  # every merged set has 3 candidates
    code, output = run("rerank", "-m", prm, "-d", files["candidates"], "-o", tmp_path / "none",
                       "--min-candidates", "2", "--precision", "fp32")
    assert code == 2 and "--group-by-prompt" in one_error(output)
    assert not (tmp_path / "none" / "reranked.jsonl").exists()
