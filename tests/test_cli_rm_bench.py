"""`eval --benchmark rm_bench` (or rm-bench) end to end on a tiny random model, on RM-Bench files in both
published layouts without --format: the hub's total_dataset.json and the repository's per-domain files. The
benchmark's numbers are recomputed from the scores.jsonl the command wrote. Also at the command line: the
format fallback, the error that lists the formats tried, and names written with '-' or '_'."""

import json

import pytest
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data import load_records
from rewardkit.eval.benchmarks import score_benchmark, score_rm_bench
from rewardkit.models.reward_model import RewardModel
from rewardkit.models.scorer import ScoreResult

runner = CliRunner()
DOMAIN_FILES = {"chat_filtered.json": "chat", "code_filtered.json": "code", "math_filtered.json": "math",
                "safety-refuse_filtered.json": "safety", "safety-response_filtered.json": "safety"}


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, llama_dir):
    path = tmp_path_factory.mktemp("rm") / "rm"
    RewardModel.from_pretrained(llama_dir).save_pretrained(path)
    return path


def rows(prefix: str, n: int, **extra) -> list[dict]:
    return [{"id": f"{prefix}{i}", "prompt": f"{prefix} prompt {i}?", **extra,
             "chosen": [f"Right {i}.", f"A longer right answer {i}.", f"## Answer\n\n- right {i}"],
             "rejected": [f"Wrong {i}.", f"A longer wrong answer {i}.", f"## Answer\n\n- wrong {i}"]}
            for i in range(n)]


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def check_report(rep, data_path, domains: dict[str, int]):
    """The rm_bench section is score_rm_bench of the records the file loads as, on the scores written."""
    report = json.loads((rep / "report.json").read_text())
    bench = report["rm_bench"]
    assert {d: v["n"] for d, v in bench["by_domain"].items()} == domains
    assert report["data"]["format"] == "rm-bench"
    records = load_records(data_path).records
    scores = [json.loads(x) for x in (rep / "scores.jsonl").read_text().splitlines()]
    assert [s["id"] for s in scores] == [r.id for r in records]
    results = [ScoreResult(rewards=s["rewards"]) for s in scores]
    assert bench == json.loads(json.dumps(score_rm_bench(records, results)))
    return bench


@pytest.mark.parametrize("name", ["rm_bench", "rm-bench"])
@pytest.mark.parametrize("file", sorted(DOMAIN_FILES))
def test_eval_on_each_repository_file(rm_dir, tmp_path, file, name):
    data = write_json(tmp_path / file, rows("r", 3, subset="from-the-repo"))
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", data, "-r", rep, "--benchmark", name, "--precision", "fp32")
    assert code == 0, output
    assert "rm_bench" in output and "overall" in output
    bench = check_report(rep, data, {DOMAIN_FILES[file]: 3})
    assert bench["unknown_domains"] == []


def test_eval_on_the_hub_layout_without_format(rm_dir, tmp_path):
    data = write_json(tmp_path / "total_dataset.json",
                      rows("c", 2, domain="chat") + rows("m", 1, domain="math") + rows("s", 2, domain="safety-refuse")
                      + rows("t", 1, domain="safety-response") + rows("k", 1, domain="code"))
    rep = tmp_path / "rep"
    code, output = run("eval", "-m", rm_dir, "-d", data, "-r", rep, "--benchmark", "RM-Bench", "--precision", "fp32")
    assert code == 0, output
    check_report(rep, data, {"chat": 2, "math": 1, "safety": 3, "code": 1})


def test_plain_eval_detects_the_repository_layout(rm_dir, tmp_path):
    data = write_json(tmp_path / "math_filtered.json", rows("m", 2, subset="x"))
    code, output = run("eval", "-m", rm_dir, "-d", data, "-r", tmp_path / "rep", "--precision", "fp32")
    assert code == 0, output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["data"]["format"] == "rm-bench" and set(report["subsets"]) == {"math"}
    assert report["n_comparisons"] == 18


def test_benchmark_implies_its_format_and_format_still_wins(rm_dir, tmp_path):
    # RewardBench 2 rows without num_correct: no detector takes them for rewardbench2 (trl's does, and trl
    # rejects them), but --benchmark rewardbench2 reads them in its format; an explicit --format wins.
    best_of_4 = [{"id": f"f{i}", "prompt": f"Q{i}", "chosen": [f"right {i}"], "rejected": ["x", "y z", "w"],
                  "subset": "Factuality"} for i in range(2)]
    data = write_json(tmp_path / "rb2.json", best_of_4)
    code, output = run("eval", "-m", rm_dir, "-d", data, "-r", tmp_path / "a", "--precision", "fp32")
    assert code == 2 and "field 'chosen[0]'" in one_line(output) and "(as trl, detected)" in one_line(output)
    code, output = run("eval", "-m", rm_dir, "-d", data, "-r", tmp_path / "b", "--benchmark", "rewardbench2",
                       "--precision", "fp32")
    assert code == 0, output
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["data"]["format"] == "rewardbench2" and report["rewardbench2"]["subsets"]["Factuality"]
    code, output = run("eval", "-m", rm_dir, "-d", data, "-r", tmp_path / "c", "--benchmark", "rewardbench2",
                       "--format", "trl")
    assert code == 2 and "(given)" not in output and "field 'chosen[0]'" in one_line(output)


def test_an_rm_bench_file_without_a_domain_fails_before_scoring(rm_dir, tmp_path):
    data = write_json(tmp_path / "mine.json", rows("r", 2))
    code, output = run("eval", "-m", rm_dir, "-d", data, "-r", tmp_path / "rep", "--benchmark", "rm_bench")
    assert code == 2 and "Traceback" not in output
    message = one_line(output)
    assert "record 'r0' has no domain" in message and "chat_filtered.json" in message
    assert not (tmp_path / "rep").exists()


def test_the_fallback_is_reported_and_used(tmp_path):
    rows_ = [{"prompt": f"Q{i}", "chosen": "a", "rejected": "b", "responses": 2} for i in range(3)]
    data = write_json(tmp_path / "d.json", rows_)
    code, output = run("data", "inspect", data, "--json")
    assert code == 0, output
    message = one_line(output[: output.index("{")])
    assert "read as trl; not as generic: rejected every row (3), first item 1: field 'responses'" in message
    assert json.loads(output[output.index("{"):])["format"] == "trl"


def test_no_format_fits_is_one_line_naming_the_formats_tried(tmp_path):
    bad = write_json(tmp_path / "bad.json", [{"prompt": "Q", "chosen": ["a", "b"], "rejected": ["c", "d"],
                                               "domain": "chat"}])
    code, output = run("data", "convert", bad, tmp_path / "out.jsonl")
    assert code == 2 and "Traceback" not in output and output.count("error:") == 1
    message = one_line(output)
    assert "bad.json:1: field 'chosen': expected 3 responses" in message
    assert "as rm-bench, detected" in message and "also tried trl" in message and "field 'chosen[0]'" in message
    code, output = run("data", "inspect", bad)  # skip_bad by default: every row rejected, said so
    assert code == 2
    message = one_line(output)
    assert "every one of its 1 row was rejected by each of the 2 formats tried" in message
    assert "rm-bench (detected): item 1: field 'chosen'" in message and "trl (its keys fit too)" in message


def test_format_names_with_dash_or_underscore(tmp_path):
    data = write_json(tmp_path / "code_filtered.json", rows("k", 2))
    for name in ("rm_bench", "rm-bench"):
        out = tmp_path / f"{name}.jsonl"
        code, output = run("data", "convert", data, out, "--format", name)
        assert code == 0, output
        assert [json.loads(x)["meta"]["subset"] for x in out.read_text().splitlines()] == ["code", "code"]
    code, output = run("data", "convert", data, tmp_path / "x.jsonl", "--format", "rmbench")
    assert code == 2 and "unknown format 'rmbench'; known formats:" in one_line(output)


def test_unknown_benchmark_is_refused_before_loading(rm_dir, tmp_path):
    code, output = run("eval", "-m", rm_dir, "-d", tmp_path / "missing.json", "-r", tmp_path / "rep",
                       "--benchmark", "rm-bench-2")
    assert code == 2 and "unknown benchmark 'rm-bench-2'; known benchmarks: rewardbench" in one_line(output)


def test_library_benchmark_names_either_way():
    from rewardkit.data.record import PreferenceRecord, Response

    rec = PreferenceRecord(id="a", prompt=[{"role": "user", "content": "Q"}],
                           responses=[Response(t) for t in "abcdef"], scores=[1, 1, 1, 0, 0, 0],
                           meta={"subset": "chat", "styles": [0, 1, 2, 0, 1, 2]})
    res = [ScoreResult(rewards=[3, 2, 1, 0, 0, 0])]
    assert score_benchmark("rm-bench", [rec], res) == score_benchmark("rm_bench", [rec], res)
