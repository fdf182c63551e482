"""An OpenAI-compatible endpoint as the policy, against a real loopback server (sampling_helpers.FakePolicyServer):
the request, the token ids kept, retries with backoff, and an endpoint that goes down or is never up."""

import pytest

from rewardkit.data import load_records
from rewardkit.data.prompts import load_prompts
from rewardkit.models.rm_scorer import RewardModelScorer
from rewardkit.sampling import SamplingError, SamplingSettings, prompt_seed, sample_to_file
from rewardkit.sampling.endpoint import EndpointPolicy, PolicyEndpointError
from rewardkit.scoring import partial_path

from sampling_helpers import FakePolicyServer, free_port, read_rows

SETTINGS = SamplingSettings(n=3, temperature=0.7, top_p=0.9, max_new_tokens=20, seed=4)


def endpoint_policy(server, **kwargs):
    kwargs.setdefault("backoff", 0.01)
    return EndpointPolicy(server.base_url, "served-policy", **kwargs)


def test_requests_carry_the_settings_and_each_prompts_seed(bpe_tokenizer, prompts_file, tmp_path):
    with FakePolicyServer(bpe_tokenizer) as server:
        out = tmp_path / "s.jsonl"
        summary = sample_to_file(endpoint_policy(server, concurrency=3), load_prompts(prompts_file), out, SETTINGS,
                                 batch_size=4)
    assert summary.samples == 30 and len(server.requests) == 10
    body = next(b for b in server.requests if b["messages"][-1]["content"] == "Tell me about the sea.")
    assert {k: body[k] for k in ("model", "n", "temperature", "top_p", "max_tokens", "seed", "logprobs",
                                 "return_token_ids", "return_tokens_as_token_ids")} == {
        "model": "served-policy", "n": 3, "temperature": 0.7, "top_p": 0.9, "max_tokens": 20,
        "seed": prompt_seed(4, "q1"), "logprobs": True, "return_token_ids": True, "return_tokens_as_token_ids": True}
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(10)]  # prompt order, whatever the concurrency
    row = rows[1]
    assert row["responses"] == [FakePolicyServer.text_for(body, k) for k in range(3)]
    meta = row["meta"]
    assert meta["sampling"] == {"policy": "served-policy", "backend": "endpoint", "n": 3, "temperature": 0.7,
                                "top_p": 0.9, "max_new_tokens": 20, "seed": 4, "score": None}
    assert meta["response_ids"][0] == bpe_tokenizer(row["responses"][0], add_special_tokens=False)["input_ids"] + [
        bpe_tokenizer.eos_token_id]
    assert meta["prompt_ids"] == bpe_tokenizer.apply_chat_template(
        row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert meta["finish_reasons"] == ["stop"] * 3 and len(meta["response_logprobs"][0]) == len(meta["response_ids"][0])
    assert meta["policy"]["chat_template"] == "server-side" and "api_key" in meta["policy"]
    assert all(len(r.responses) == 3 for r in load_records(out).records)


def test_ids_from_token_id_logprobs_and_a_server_without_vllm_fields(bpe_tokenizer, prompts_file, tmp_path):
    # An older vLLM: no return_token_ids, but "token_id:ID" log-prob tokens: the generated ids still come back.
    reply = FakePolicyServer(bpe_tokenizer).completion(
        {"model": "m", "n": 1, "messages": [{"role": "user", "content": "hi"}], "logprobs": True,
         "return_tokens_as_token_ids": True})
    from rewardkit.sampling.endpoint import parse_reply

    got = parse_reply(reply, 1, "here")
    text = reply["choices"][0]["message"]["content"]
    assert got.response_ids == [bpe_tokenizer(text, add_special_tokens=False)["input_ids"] + [bpe_tokenizer.eos_token_id]]
    assert got.prompt_ids is None and got.logprobs is not None

    # OpenAI proper rejects the vLLM fields: asked again without them, then plain requests; text and log-probs.
    with FakePolicyServer(bpe_tokenizer, openai_only=True) as server:
        policy = endpoint_policy(server, concurrency=1)
        sample_to_file(policy, load_prompts(prompts_file, limit=3), tmp_path / "s.jsonl", SETTINGS)
    assert len(server.requests) == 4 and "return_token_ids" not in server.requests[-1]
    meta = read_rows(tmp_path / "s.jsonl")[0]["meta"]
    assert "response_ids" not in meta and "prompt_ids" not in meta and len(meta["response_logprobs"]) == 3
    assert policy.describe()["token_ids_requested"] is False


def test_score_as_it_goes_reads_endpoint_token_ids_with_the_tokenizer(bpe_tokenizer, policy_dir, same_tok_rm,
                                                                       prompts_file, tmp_path):
    from rewardkit.models.reward_model import load_tokenizer

    scorer = RewardModelScorer.from_pretrained(same_tok_rm, precision="fp32")
    with FakePolicyServer(bpe_tokenizer) as server:
        with_tok = endpoint_policy(server, tokenizer=load_tokenizer(policy_dir))
        sample_to_file(with_tok, load_prompts(prompts_file, limit=3), tmp_path / "ids.jsonl", SETTINGS,
                       scorer=scorer, score_name="rm")
        sample_to_file(endpoint_policy(server), load_prompts(prompts_file, limit=3), tmp_path / "text.jsonl",
                       SETTINGS, scorer=scorer, score_name="rm")
    rows = read_rows(tmp_path / "ids.jsonl")
    assert {r["meta"]["score"]["input"] for r in rows} == {"token_ids"}
    again = scorer.score_token_ids([(r["meta"]["prompt_ids"], r["meta"]["response_ids"]) for r in rows])
    assert [x for r in rows for x in r["rewards"]] == pytest.approx([x for r in again for x in r.rewards], abs=1e-5)
    text = read_rows(tmp_path / "text.jsonl")
    assert text[0]["meta"]["score"] == {"model": "rm", "input": "text",
                                        "why": "the policy's tokenizer is not known here"}


def test_a_few_503s_are_retried_with_backoff(bpe_tokenizer, prompts_file, tmp_path):
    with FakePolicyServer(bpe_tokenizer) as server:
        clean = tmp_path / "clean.jsonl"
        sample_to_file(endpoint_policy(server, concurrency=1, max_retries=3), load_prompts(prompts_file, limit=4),
                       clean, SETTINGS)
        server.fail = [503, 503, 429]
        policy = endpoint_policy(server, concurrency=1, max_retries=3)
        flaky = tmp_path / "flaky.jsonl"
        sample_to_file(policy, load_prompts(prompts_file, limit=4), flaky, SETTINGS)
    assert policy.endpoint.retries == 3 and policy.endpoint.requests == 7
    assert flaky.read_bytes() == clean.read_bytes()


def test_an_endpoint_that_goes_down_keeps_what_was_sampled(bpe_tokenizer, prompts_file, tmp_path):
    prompts = load_prompts(prompts_file)
    out = tmp_path / "s.jsonl"
    with FakePolicyServer(bpe_tokenizer) as server:
        whole = tmp_path / "whole.jsonl"
        one_at_a_time = dict(concurrency=1, max_retries=2)  # so exactly the first 5 prompts get answers
        sample_to_file(endpoint_policy(server, **one_at_a_time), prompts, whole, SETTINGS)
        server.answered, server.down_after = 0, 5
        with pytest.raises(SamplingError, match=r"after 3 attempt\(s\); last: HTTP 503.*5 of 10 prompts are sampled and kept"):
            sample_to_file(endpoint_policy(server, **one_at_a_time), prompts, out, SETTINGS, batch_size=4)
        assert [r["id"] for r in read_rows(partial_path(out))] == [f"q{i}" for i in range(5)]
        server.down_after = None  # back up: the same call continues
        summary = sample_to_file(endpoint_policy(server, **one_at_a_time), prompts, out, SETTINGS, batch_size=4)
    assert (summary.sampled, summary.resumed) == (5, 5)
    assert out.read_bytes() == whole.read_bytes()


def test_an_endpoint_that_is_never_up(prompts_file, tmp_path):
    policy = EndpointPolicy(f"http://127.0.0.1:{free_port()}/v1", "m", max_retries=2, backoff=0.01, timeout=5,
                            concurrency=1)
    out = tmp_path / "s.jsonl"
    with pytest.raises(SamplingError, match=r"policy endpoint .* failed after 3 attempt\(s\); last: URLError.*0 of 10 "
                                            r"prompts are sampled"):
        sample_to_file(policy, load_prompts(prompts_file), out, SETTINGS)
    assert policy.endpoint.requests == 3 and read_rows(partial_path(out)) == []


def test_bad_replies_and_arguments_are_clear_errors(bpe_tokenizer):
    from rewardkit.sampling.endpoint import parse_reply

    with pytest.raises(PolicyEndpointError, match="asked for n=2 responses, got 1"):
        parse_reply({"choices": [{"index": 0, "message": {"content": "x"}}]}, 2, "here")
    with pytest.raises(PolicyEndpointError, match="not a chat completion"):
        parse_reply({"error": "no"}, 1, "here")
    with pytest.raises(Exception, match="must start with http"):
        EndpointPolicy("localhost:8000/v1", "m")
    with FakePolicyServer(bpe_tokenizer) as server:
        wrong = EndpointPolicy(server.base_url.removesuffix("/v1") + "/v2", "m", backoff=0.01)
        with pytest.raises(PolicyEndpointError, match="HTTP 404.*no route"):
            list(wrong.generate(load_prompts_of(["hi"]), SETTINGS))


def load_prompts_of(texts):
    from rewardkit.data.prompts import Prompt
    from rewardkit.data.record import user_prompt

    return [Prompt(f"t{i}", user_prompt(t)) for i, t in enumerate(texts)]
