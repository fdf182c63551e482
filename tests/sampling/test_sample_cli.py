"""`rewardkit sample` end to end on the tiny policy: the file that score, rerank and eval read as it is, and clear
one-line errors (exit code 2, no traceback) for bad input."""

import json

import pytest
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.scoring import partial_path

from sampling_helpers import FakePolicyServer, free_port, read_rows

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def sampled(policy_dir, same_tok_rm, tmp_path_factory):
    """Ten prompts x 4 samples, scored as they come by a reward model on the policy's tokenizer."""
    from sampling_helpers import QUESTIONS

    root = tmp_path_factory.mktemp("cli")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(QUESTIONS) + "\n")
    out = root / "samples.jsonl"
    code, output = run("sample", "--policy", policy_dir, "--prompts", prompts, "--n", 4, "--max-new-tokens", 6,
                       "--seed", 3, "--batch-size", 4, "--score", same_tok_rm, "--precision", "fp32", "--out", out)
    assert code == 0, output
    return out, output


def test_sample_writes_n_scored_responses_per_prompt(sampled):
    out, output = sampled
    assert "wrote" in output and "10 prompts x 4 responses" in output and "samples/s" in output
    assert "scored from token_ids" in output
    rows = read_rows(out)
    assert len(rows) == 10 and all(len(r["responses"]) == 4 and len(r["rewards"]) == 4 for r in rows)
    assert rows[0]["id"] == "prompts:1" and rows[0]["meta"]["score"]["input"] == "token_ids"


def test_rerank_score_and_eval_read_the_samples_as_they_are(sampled, same_tok_rm, tmp_path):
    out, _ = sampled
    code, output = run("rerank", "-m", same_tok_rm, "-d", out, "-o", tmp_path / "rerank", "--precision", "fp32")
    assert code == 0, output
    ranked = read_rows(tmp_path / "rerank" / "reranked.jsonl")
    assert [r["id"] for r in ranked] == [r["id"] for r in read_rows(out)]
    assert all(r["n"] == 4 and sorted(r["ranking"]["reward"]) == [0, 1, 2, 3] for r in ranked)
    assert all(len(r["scores"]["reward"]) == 4 for r in ranked)  # from the text; --score read the exact ids

    code, output = run("score", "-m", same_tok_rm, "-i", out, "-o", tmp_path / "scores.jsonl", "--precision", "fp32")
    assert code == 0, output
    assert len(read_rows(tmp_path / "scores.jsonl")) == 10
    code, output = run("eval", "-m", same_tok_rm, "-d", out, "-r", tmp_path / "eval", "--precision", "fp32")
    assert code == 0 and "0 comparisons (10 records" in output, output


def test_an_endpoint_from_the_cli(bpe_tokenizer, policy_dir, prompts_file, tmp_path):
    with FakePolicyServer(bpe_tokenizer) as server:
        code, output = run("sample", "--endpoint", server.base_url, "--policy", "served", "--prompts", prompts_file,
                           "--n", 2, "--tokenizer", policy_dir, "--out", tmp_path / "s.jsonl")
    assert code == 0, output
    rows = read_rows(tmp_path / "s.jsonl")
    assert len(rows) == 10 and rows[0]["meta"]["policy"]["tokenizer_sha256"]
    assert server.requests[0]["max_tokens"] == 256 and server.requests[0]["temperature"] == 1.0


@pytest.mark.parametrize("make, args, match", [
    (lambda p: p.write_text("hi\n"), ["--policy", "{tmp}/no-such-model"], "cannot load .* as a causal language model"),
    (lambda p: p.write_text("\n"), [], "prompts.txt: no prompts: the file is empty"),
    (None, ["--prompts", "{tmp}/bad.jsonl"], r"bad.jsonl:2: field 'prompt': expected text or a list of \{role, "
                                             r"content\} messages, got dict"),
    (lambda p: p.write_text("hi\n"), ["--n", "0"], "n must be an integer >= 1, got 0"),
    (lambda p: p.write_text("hi\n"), ["--top-p", "0"], r"top_p must be in \(0, 1\]"),
    (lambda p: p.write_text("hi\n"), ["--tokenizer", "smollm2"], "--tokenizer applies with --endpoint"),
    (lambda p: p.write_text("hi\n"), ["--endpoint", "localhost:1/v1", "--policy", "m"], "must start with http"),
])
def test_bad_input_is_one_clear_line(policy_dir, tmp_path, make, args, match):
    prompts = tmp_path / "prompts.txt"
    if make is not None:
        make(prompts)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": {"a": 1}}) + "\n")
    base = {"--policy": str(policy_dir), "--prompts": str(prompts), "--out": str(tmp_path / "s.jsonl")}
    given = [a.replace("{tmp}", str(tmp_path)) for a in args]
    for flag, value in base.items():
        if flag not in given:
            given += [flag, value]
    code, output = run("sample", *given)
    assert code == 2, output
    assert "Traceback" not in output
    import re

    assert re.search(match, " ".join(output.split())), output


def test_an_endpoint_that_is_never_up_is_a_clear_error(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\nthere\n")
    out = tmp_path / "s.jsonl"
    code, output = run("sample", "--endpoint", f"http://127.0.0.1:{free_port()}/v1", "--policy", "m", "--prompts",
                       prompts, "--max-retries", 0, "--out", out)
    assert code == 2 and "Traceback" not in output
    text = " ".join(output.split())
    assert "policy endpoint" in text and "failed after 1 attempt(s)" in text and "0 of 2 prompts are sampled" in text
    assert partial_path(out).exists() and not out.exists()
