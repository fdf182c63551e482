"""The evaluation commands end to end on tiny random models: eval --benchmark (RewardBench, RewardBench 2,
RM-Bench, ProcessBench), probe, compare, calibrate-length (and --length-calibration on score and eval), the
DPO implicit reward through a model spec, and the clear one-line errors of each (exit code 2, no traceback).

Every benchmark number the CLI reports is recomputed here from the scores.jsonl it wrote, with the library's
own benchmark function, and those scores are checked against the library scoring the same records: so the
command both scores the right records and hands the right scores to the right benchmark."""

import json
import math

import pytest
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data import load_records
from rewardkit.eval.benchmarks import (
    prefix_step_results,
    score_processbench,
    score_rewardbench,
    score_rewardbench2,
    score_rm_bench,
    tune_processbench_threshold,
)
from rewardkit.eval.length import LengthCalibration
from rewardkit.eval.probes import transform_names
from rewardkit.models.reward_model import RewardModel
from rewardkit.models.rm_scorer import RewardModelScorer
from rewardkit.models.scorer import ScoreResult
from tiny import write_jsonl

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def one_error(output: str) -> str:
    """The error message of a failed command, checked to be a user error and not a crash.

    Rich wraps long lines at the console width (80 columns when stderr is not a terminal), so the message is
    re-joined before it is matched."""
    assert "Traceback" not in output and "Usage:" not in output, output  # neither a crash nor a usage error
    assert output.count("error:") == 1, output
    return " ".join(output[output.index("error:"):].split())


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def results_from_scores(path, records) -> list[ScoreResult]:
    """ScoreResults rebuilt from the scores.jsonl `eval` wrote, matched to the records by id and order."""
    rows = read_jsonl(path)
    assert [r["id"] for r in rows] == [rec.id for rec in records]
    return [ScoreResult(rewards=r["rewards"], step_rewards=r.get("step_rewards")) for r in rows]


def json_roundtrip(obj):
    return json.loads(json.dumps(obj))


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, llama_dir):
    """A tiny random reward model saved to disk (so every load gets the same value head)."""
    path = tmp_path_factory.mktemp("rm") / "rm"
    RewardModel.from_pretrained(llama_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lib_scorer(rm_dir):
    return RewardModelScorer.from_pretrained(rm_dir, precision="fp32")


def assert_scores_match_library(scores_path, records, lib_scorer):
    rows = read_jsonl(scores_path)
    expected = lib_scorer.score(records)
    for row, exp in zip(rows, expected, strict=True):
        assert row["rewards"] == pytest.approx(exp.rewards, abs=1e-5)


# ================================================================================ eval --benchmark

REWARDBENCH_SUBSETS = ["alpacaeval-easy", "mt-bench-med", "llmbar-natural", "mt-bench-hard",
                       "donotanswer", "xstest-should-respond", "hep-python", "math-prm", "my-own-subset"]


@pytest.fixture
def rewardbench_file(tmp_path):
    rows = []
    for i in range(18):
        subset = REWARDBENCH_SUBSETS[i % len(REWARDBENCH_SUBSETS)]
        rows.append({"id": f"rb{i}", "prompt": f"Question {i}: tell me about topic {i}.",
                     "chosen": f"Here is a careful answer about topic {i}. " * (1 + i % 3),
                     "rejected": f"No {i}." + " meh" * (i % 4),
                     "chosen_model": "a", "rejected_model": "b", "subset": subset})
    return write_jsonl(tmp_path / "rewardbench.jsonl", rows)


def test_eval_rewardbench_report_is_recomputed_from_the_scores(rm_dir, lib_scorer, rewardbench_file, tmp_path):
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", rewardbench_file, "-r", rep, "--benchmark", "rewardbench",
                       "--precision", "fp32")
    assert code == 0, output
    assert "rewardbench" in output and "Chat Hard" in output
    report = json.loads((rep / "report.json").read_text())
    bench = report["rewardbench"]
    assert set(bench["sections"]) == {"Chat", "Chat Hard", "Safety", "Reasoning"}
    assert all(0.0 <= v <= 1.0 for v in bench["sections"].values())
    assert 0.0 <= bench["overall"] <= 1.0
    assert bench["unknown_subsets"] == ["my-own-subset"]
    assert sum(s["n"] for s in bench["subsets"].values()) == 18

    loaded = load_records(rewardbench_file)
    assert loaded.format == "rewardbench"
    results = results_from_scores(rep / "scores.jsonl", loaded.records)
    expected = json_roundtrip(score_rewardbench(loaded.records, results))
    assert bench == expected
    assert_scores_match_library(rep / "scores.jsonl", loaded.records, lib_scorer)
    # The plain evaluation rides along: its accuracy is the same strict rule on the same scores.
    assert report["accuracy"] == pytest.approx(sum(r.rewards[0] > r.rewards[1] for r in results) / 18)


def test_eval_rm_bench(rm_dir, lib_scorer, tmp_path):
    rows = []
    for i, domain in enumerate(["chat", "math", "code", "safety-refuse", "safety-response", "chat", "math"]):
        rows.append({"id": f"rmb{i}", "prompt": f"Prompt {i} about {domain}?", "domain": domain,
                     "chosen": [f"Short right {i}.", f"A longer right answer {i} with detail.",
                                f"## Answer\n\n- right {i}\n- **detail**"],
                     "rejected": [f"Wrong {i}.", f"A longer wrong answer {i} with detail.",
                                  f"## Answer\n\n- wrong {i}\n- **detail**"]})
    data = write_jsonl(tmp_path / "rm_bench.jsonl", rows)
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", data, "-r", rep, "--benchmark", "rm_bench", "--precision", "fp32")
    assert code == 0, output
    bench = json.loads((rep / "report.json").read_text())["rm_bench"]
    for key in ("easy", "normal", "hard"):
        assert 0.0 <= bench[key] <= 1.0
    assert set(bench["by_domain"]) == {"chat", "math", "code", "safety"}
    assert bench["by_domain"]["safety"]["n"] == 2 and bench["by_domain"]["chat"]["n"] == 2

    loaded = load_records(data)
    assert loaded.format == "rm-bench"
    results = results_from_scores(rep / "scores.jsonl", loaded.records)
    assert all(len(r.rewards) == 6 for r in results)
    assert bench == json_roundtrip(score_rm_bench(loaded.records, results))
    assert_scores_match_library(rep / "scores.jsonl", loaded.records, lib_scorer)


def test_eval_rewardbench2(rm_dir, lib_scorer, tmp_path):
    def row(row_id, subset, chosen, rejected):
        return {"id": row_id, "prompt": f"prompt {row_id}", "chosen": chosen, "rejected": rejected,
                "num_correct": len(chosen), "subset": subset, "models": []}

    rows = [row(f"f{i}", "Factuality", [f"correct fact {i}"], [f"wrong {i}", f"bad {i} x", f"nope {i} y z"])
            for i in range(4)]
    rows += [row(f"m{i}", "Math", [f"The answer is {2 * i}."], [f"{i}", f"maybe {i + 1}", "unknown"])
             for i in range(3)]
    rows += [row("ref:1", "Ties", ["Paris is the capital."], ["Lyon.", "Rome is.", "Berlin"]),
             row("tied:1", "Ties", ["Paris.", "It is Paris."], ["Lyon.", "Rome is the capital."])]
    data = write_jsonl(tmp_path / "rb2.jsonl", rows)
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", data, "-r", rep, "--benchmark", "rewardbench2",
                       "--precision", "fp32")
    assert code == 0, output
    bench = json.loads((rep / "report.json").read_text())["rewardbench2"]
    assert set(bench["subsets"]) == {"Factuality", "Math", "Ties"}
    assert bench["subsets"]["Factuality"]["n"] == 4 and bench["subsets"]["Ties"]["n"] == 2
    assert math.isfinite(bench["overall"]) and bench["ties"]["n_paired"] == 1

    loaded = load_records(data)
    assert loaded.format == "rewardbench2"
    results = results_from_scores(rep / "scores.jsonl", loaded.records)
    assert bench == json_roundtrip(score_rewardbench2(loaded.records, results))
    assert_scores_match_library(rep / "scores.jsonl", loaded.records, lib_scorer)


def processbench_rows(prefix: str, labels: list[int], topic: str) -> list[dict]:
    rows = []
    for i, label in enumerate(labels):
        steps = [f"We read the {topic} problem {i} carefully.", f"Then {i} times {i + 2} gives {i * (i + 2)}.",
                 f"Adding {i} more gives {i * (i + 2) + i}.", f"So the answer is {i * (i + 3)}."][: 2 + i % 3]
        label = min(label, len(steps) - 1)
        rows.append({"id": f"{prefix}-{i}", "generator": "tiny", "problem": f"{topic} problem {i}: compute it.",
                     "steps": steps, "label": label, "final_answer_correct": label == -1})
    return rows


GSM8K_LABELS = [-1, 0, 1, -1, 2, -1, 0, -1, 1, -1, 3, 0]
MATH_LABELS = [1, -1, 0, -1, 2, -1, 0, 1, -1, -1]


@pytest.fixture
def processbench_dir(tmp_path):
    (tmp_path / "gsm8k.json").write_text(json.dumps(processbench_rows("gsm8k", GSM8K_LABELS, "grade school")))
    (tmp_path / "math.json").write_text(json.dumps(processbench_rows("math", MATH_LABELS, "competition")))
    return tmp_path


def test_eval_processbench_tunes_on_gsm8k(rm_dir, lib_scorer, processbench_dir, tmp_path):
    gsm8k = processbench_dir / "gsm8k.json"
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", gsm8k, "-r", rep, "--benchmark", "processbench",
                       "--precision", "fp32")
    assert code == 0, output
    assert "processbench" in output and "tuned on gsm8k" in output
    bench = json.loads((rep / "report.json").read_text())["processbench"]
    assert set(bench["f1"]) == {"gsm8k"} and 0.0 <= bench["f1"]["gsm8k"] <= 1.0
    assert bench["threshold_source"] == "tuned on gsm8k" and math.isfinite(bench["threshold"])
    assert bench["per_split"]["gsm8k"]["n"] == len(GSM8K_LABELS)

    records = load_records(gsm8k).records
    assert sorted({r.meta["earliest_error"] for r in records}) == [-1, 0, 1, 2]
    results = results_from_scores(rep / "scores.jsonl", records)
    for rec, res in zip(records, results):  # one score per step; the record's reward is its last step's
        assert len(res.step_rewards[0]) == len(rec.responses[0].steps)
        assert res.rewards == [res.step_rewards[0][-1]]
    assert bench == json_roundtrip(score_processbench(records, results))
    # The step scores are the reward model read on every solution prefix.
    lib = prefix_step_results(lib_scorer, records)
    for res, exp in zip(results, lib):
        assert res.step_rewards[0] == pytest.approx(exp.step_rewards[0], abs=1e-5)


def test_eval_processbench_separate_tuning_data(rm_dir, lib_scorer, processbench_dir, tmp_path):
    math_file, gsm8k = processbench_dir / "math.json", processbench_dir / "gsm8k.json"
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", math_file, "-r", rep, "--benchmark", "processbench",
                       "--tune-data", gsm8k, "--precision", "fp32")
    assert code == 0, output
    bench = json.loads((rep / "report.json").read_text())["processbench"]
    assert set(bench["f1"]) == {"math"}
    assert bench["threshold_source"] == "tuned on the separate tuning data"
    tune = load_records(gsm8k).records
    expected = tune_processbench_threshold(tune, prefix_step_results(lib_scorer, tune), split=None)
    assert bench["threshold"] == pytest.approx(expected, abs=1e-5)
    records = load_records(math_file).records
    results = results_from_scores(rep / "scores.jsonl", records)
    again = score_processbench(records, results, threshold=bench["threshold"])
    assert bench["f1"] == json_roundtrip(again["f1"]) and bench["per_split"] == json_roundtrip(again["per_split"])


def test_eval_processbench_without_a_tuning_split_is_a_clear_error(rm_dir, processbench_dir, tmp_path):
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", processbench_dir / "math.json", "-r", rep,
                       "--benchmark", "processbench")
    assert code == 2, output
    message = one_error(output)
    assert "gsm8k" in message and "math" in message and "threshold" in message
    assert not (rep / "report.json").exists()


def test_eval_processbench_with_a_given_threshold(rm_dir, processbench_dir, tmp_path):
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", processbench_dir / "math.json", "-r", rep,
                       "--benchmark", "processbench", "--threshold", "0.0", "--precision", "fp32")
    assert code == 0, output
    bench = json.loads((rep / "report.json").read_text())["processbench"]
    assert bench["threshold"] == 0.0 and bench["threshold_source"] == "given"
    records = load_records(processbench_dir / "math.json").records
    results = results_from_scores(rep / "scores.jsonl", records)
    assert bench == json_roundtrip(score_processbench(records, results, threshold=0.0))


def test_eval_unknown_benchmark(rm_dir, rewardbench_file, tmp_path):
    code, output = run("eval", "-m", rm_dir, "-d", rewardbench_file, "-r", tmp_path / "rep",
                       "--benchmark", "rewardbench3")
    assert code == 2, output
    message = one_error(output)
    assert "unknown benchmark 'rewardbench3'" in message
    for known in ("rewardbench", "rewardbench2", "rm_bench", "processbench"):
        assert known in message
    assert not (tmp_path / "rep" / "report.json").exists()


# ================================================================================ probe

PAIRS = [
    {"id": f"p{i}", "prompt": f"Please explain topic {i}. It matters to me.",
     "responses": [f"Topic {i} is explained here. It has two parts. The first is simple, the second is not.",
                   f"No idea about {i}."], "chosen": 0, "subset": "a" if i % 2 else "b"}
    for i in range(8)
]


@pytest.fixture
def pairs_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS)


def test_probe_writes_the_report_and_identity_is_an_exact_tie(rm_dir, pairs_file, tmp_path):
    out = tmp_path / "probe"
    code, output = run("probe", "-m", rm_dir, "-d", pairs_file, "-o", out, "--bootstrap", "20",
                       "--precision", "fp32")
    assert code == 0, output
    report = json.loads((out / "probe.json").read_text())
    assert list(report["transforms"]) == transform_names()
    assert (out / "probe.png").read_bytes()[:8] == PNG
    assert "identity" in (out / "probe.md").read_text()
    assert report["n_items"] == 8 and report["n_responses"] == 8  # the chosen response of each record
    identity = report["transforms"]["identity"]
    assert identity["win_rate"] == 0.0 and identity["tie_rate"] == 1.0 and identity["mean_delta"] == 0.0
    assert identity["n_changed"] == 0 and identity["exploitable"] is False
    # Transforms that change every probed response give no exact ties on a random model.
    assert report["transforms"]["word_shuffle"]["n_changed"] == 8
    assert report["transforms"]["truncation"]["class"] == "degrading"


def test_probe_transform_selection_and_errors(rm_dir, pairs_file, tmp_path):
    out = tmp_path / "probe"
    code, output = run("probe", "-m", rm_dir, "-d", pairs_file, "-o", out, "--transforms", "identity,truncation",
                       "--bootstrap", "0")
    assert code == 0, output
    report = json.loads((out / "probe.json").read_text())
    assert list(report["transforms"]) == ["identity", "truncation"]
    assert report["transforms"]["truncation"]["n_changed"] == 8

    code, output = run("probe", "-m", rm_dir, "-d", pairs_file, "-o", tmp_path / "p2",
                       "--transforms", "identity,flatery")
    assert code == 2, output
    message = one_error(output)
    assert "--transforms" in message and "'flatery'" in message and "flattery_prefix" in message
    assert not (tmp_path / "p2").exists()


def test_probe_list_transforms_needs_no_model():
    code, output = run("probe", "--list-transforms")
    assert code == 0, output
    listed = [line.split()[0] for line in output.splitlines() if line.strip()]
    assert listed == transform_names()
    assert "degrading" in output and "neutral" in output


def test_probe_without_model_is_a_clear_error(tmp_path):
    code, output = run("probe", "-d", tmp_path / "x.jsonl")
    assert code == 2, output
    assert "--model" in one_error(output) and "--out" in one_error(output)


def test_threshold_without_processbench_is_a_clear_error(rm_dir, rewardbench_file, tmp_path):
    code, output = run("eval", "-m", rm_dir, "-d", rewardbench_file, "-r", tmp_path / "rep", "--threshold", "0.5")
    assert code == 2, output
    assert "processbench" in one_error(output)


def test_probe_bad_responses_value_is_a_clear_error(rm_dir, pairs_file, tmp_path):
    code, output = run("probe", "-m", rm_dir, "-d", pairs_file, "-o", tmp_path / "p", "--responses", "best")
    assert code == 2, output
    assert "best" in one_error(output)


def test_error_message_with_brackets_is_printed_as_it_is(rm_dir, pairs_file, tmp_path):
    code, output = run("probe", "-m", rm_dir, "-d", pairs_file, "-o", tmp_path / "p", "--transforms", "[/x]")
    assert code == 2, output
    assert "'[/x]'" in one_error(output)


# ================================================================================ compare


def test_compare_two_models(rm_dir, llama_dir, pairs_file, tmp_path):
    out = tmp_path / "cmp"
    code, output = run("compare", "-m", f"a={rm_dir}", "-m", f"b=dpo:{llama_dir}@{llama_dir}", "-d", pairs_file,
                       "-o", out, "--precision", "fp32")
    assert code == 0, output
    report = json.loads((out / "compare.json").read_text())
    assert report["scorers"] == ["a", "b"] and set(report["summary"]) == {"a", "b"}
    assert len(report["agreement"]) == 1
    row = report["agreement"][0]
    assert (row["a"], row["b"], row["n_pairs"]) == ("a", "b", 8)
    # b is a policy against itself: every pair is a tie, so it agrees with nothing and is never right.
    assert report["summary"]["b"]["accuracy"] == 0.0 and report["summary"]["b"]["tie_rate"] == 1.0
    assert row["agreement"] == 0.0
    assert report["reports"]["b"]["scorer"]["kind"] != report["reports"]["a"]["scorer"]["kind"]
    assert 0.0 <= report["summary"]["a"]["accuracy"] <= 1.0


def test_compare_needs_two_distinctly_named_models(rm_dir, pairs_file, tmp_path):
    code, output = run("compare", "-m", rm_dir, "-d", pairs_file, "-o", tmp_path / "c1")
    assert code == 2 and "at least two" in one_error(output)
    code, output = run("compare", "-m", f"x={rm_dir}", "-m", f"x=dpo:{rm_dir}", "-d", pairs_file,
                       "-o", tmp_path / "c2")
    assert code == 2 and "two models are named 'x'" in one_error(output)
    code, output = run("compare", "-m", rm_dir, "-m", rm_dir, "-d", pairs_file, "-o", tmp_path / "c3")
    assert code == 2 and "two models are named" in one_error(output)
    assert not any((tmp_path / c).exists() for c in ("c1", "c2", "c3"))


# ================================================================================ implicit reward via eval


def test_eval_dpo_policy_against_itself_is_all_ties(llama_dir, pairs_file, tmp_path):
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", f"dpo:{llama_dir}@{llama_dir}", "-d", pairs_file, "-r", rep,
                       "--precision", "fp32")
    assert code == 0, output
    scores = read_jsonl(rep / "scores.jsonl")
    assert len(scores) == 8
    # exact: the same path loads one model, so one computation serves policy and reference
    assert [r for s in scores for r in s["rewards"]] == [0.0] * 16
    report = json.loads((rep / "report.json").read_text())
    assert report["accuracy"] == 0.0 and report["tie_rate"] == 1.0
    assert report["scorer"]["mode"] == "ratio"


def test_bad_model_spec_option(llama_dir, pairs_file, tmp_path):
    code, output = run("eval", "-m", f"dpo:{llama_dir}?bogus=1", "-d", pairs_file, "-r", tmp_path / "rep")
    assert code == 2, output
    message = one_error(output)
    assert "'bogus'" in message and "beta" in message and "mode" in message
    assert "dpo:" in message  # the whole spec the user typed is quoted
    code, output = run("eval", "-m", f"dpo:{llama_dir}?beta=high", "-d", pairs_file, "-r", tmp_path / "rep")
    assert code == 2 and "beta" in one_error(output)
    assert not (tmp_path / "rep").exists()


# ================================================================================ length calibration


def reference_rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"Describe thing {i}.",
             "responses": [("It is a thing. " * (1 + i % 7)).strip(), f"Thing {i}" + " and more" * (i % 5)],
             "chosen": i % 2} for i in range(n)]


def test_calibrate_length_then_score_and_eval_with_it(rm_dir, pairs_file, tmp_path):
    ref = write_jsonl(tmp_path / "ref.jsonl", reference_rows(12))  # 24 reference responses
    cal = tmp_path / "cal.json"
    code, output = run("calibrate-length", "-m", rm_dir, "-d", ref, "-o", cal, "--precision", "fp32")
    assert code == 0, output
    calibration = LengthCalibration.load(cal)
    assert calibration.n_reference == 24 and calibration.unit == "tokens" and calibration.method == "lowess"

    base, calibrated = tmp_path / "base.jsonl", tmp_path / "calibrated.jsonl"
    code, output = run("score", "-m", rm_dir, "-i", pairs_file, "-o", base, "--precision", "fp32")
    assert code == 0, output
    code, output = run("score", "-m", rm_dir, "-i", pairs_file, "-o", calibrated, "--precision", "fp32",
                       "--length-calibration", cal)
    assert code == 0, output
    for b, c in zip(read_jsonl(base), read_jsonl(calibrated), strict=True):
        effect = calibration.predict(b["response_tokens"])
        assert c["rewards"] == pytest.approx([r - e for r, e in zip(b["rewards"], effect)], abs=1e-6)
    assert any(abs(e) > 1e-9 for e in calibration.bias)  # the calibration really moves rewards

    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", pairs_file, "-r", rep, "--precision", "fp32",
                       "--length-calibration", cal)
    assert code == 0, output
    scorer = json.loads((rep / "report.json").read_text())["scorer"]
    assert scorer["kind"] == "length_calibrated"
    assert scorer["length_calibration"]["n_reference"] == 24
    assert scorer["length_calibration"]["fingerprint"] == calibration.fingerprint()
    assert scorer["base"]["precision"] == "fp32"
    assert [r for s in read_jsonl(rep / "scores.jsonl") for r in s["rewards"]] == \
        pytest.approx([r for c in read_jsonl(calibrated) for r in c["rewards"]], abs=1e-6)


def test_calibrate_length_unknown_method_is_a_clear_error(rm_dir, tmp_path):
    ref = write_jsonl(tmp_path / "ref.jsonl", reference_rows(12))
    code, output = run("calibrate-length", "-m", rm_dir, "-d", ref, "-o", tmp_path / "cal.json",
                       "--method", "spline")
    assert code == 2, output
    assert "spline" in one_error(output)


def test_calibrate_length_needs_enough_references(rm_dir, tmp_path):
    ref = write_jsonl(tmp_path / "ref.jsonl", reference_rows(5))  # 10 responses
    cal = tmp_path / "cal.json"
    code, output = run("calibrate-length", "-m", rm_dir, "-d", ref, "-o", cal)
    assert code == 2, output
    message = one_error(output)
    assert "at least 20 reference responses" in message and "10" in message
    assert not cal.exists()


def test_eval_objective_tags_give_per_objective_accuracy(llama_dir, pairs_file, tmp_path):
    model = tmp_path / "two"
    RewardModel.from_pretrained(llama_dir, objectives=["helpfulness", "harmlessness"]).save_pretrained(model)
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", model, "-d", pairs_file, "-r", rep, "--objective", "harmlessness",
                       "--precision", "fp32")
    assert code == 0, output
    report = json.loads((rep / "report.json").read_text())
    assert report["objectives"]["harmlessness"]["n_comparisons"] == report["n_comparisons"] > 0
    assert report["objectives"]["helpfulness"]["n_comparisons"] == 0  # no record speaks to it
    assert set(report["weights"]) == {"helpfulness", "harmlessness"}
    assert "## Objectives" in (rep / "report.md").read_text()
