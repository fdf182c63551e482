"""POST /get_reward, OpenRLHF's remote reward model protocol, on the real server (a subprocess on a loopback port)
and on in-process apps: the keys and lengths OpenRLHF reads, /score's rewards for the same conversation and for
the same token ids, pad and EOS handling, prefix sharing, truncation, the limits and key of /score, and a clear
4xx naming the item for every bad body.

The JSON is OpenRLHF 0.11's, read from its source (openrlhf/utils/agent.py, `_fetch_rewards_via_http`: one
{"query", "prompts", "labels"} per sample; openrlhf/cli/serve_rm.py: {"rewards", "scores", "extra_logs"}).
OpenRLHF's own client is tested too where `openrlhf` imports (it is not a dependency of rewardkit: its declared
dependencies pull DeepSpeed, Ray and flash-attn; `pip install --no-deps openrlhf aiohttp pylatexenc` is enough
for its client), and skipped otherwise.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rewardkit.models import FunctionScorer, RewardModelScorer
from serve_helpers import API_KEY, MAX_LENGTH, NORMALIZATION, echo_reward, server_in_thread

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TOL = 1e-5  # fp32, the same tokens: only the batch layout (packed rows, shared prefixes) differs

CONVERSATIONS = [
    ([{"role": "user", "content": "What is the capital of France?"}],
     ["Paris.", "The capital of France is Paris.", "London, I think."]),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
     ["Sunlight scatters off molecules in the air.", ""]),
]


def policy_prompt(scorer, messages) -> str:
    """The prompt as the policy renders it for generation (here the policy shares the reward model's ChatML)."""
    return scorer.model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def query_of(scorer, messages, answer, *, stopped=True) -> str:
    """What OpenRLHF sends: the rendered prompt, the answer, and the policy's EOS text when it stopped on one."""
    return policy_prompt(scorer, messages) + answer + ("<|im_end|>" if stopped else "")


def get_reward(url, body, headers=AUTH):
    return httpx.post(f"{url}/get_reward", json=body, headers=headers, timeout=30)


def score(url, body, headers=AUTH):
    r = httpx.post(f"{url}/score", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def assert_close(got, want):
    assert len(got) == len(want)
    assert max(abs(a - b) for a, b in zip(got, want)) < TOL, (got, want)


def one_request(scorer):
    """Every conversation's every answer as one /get_reward body, and /score's bodies for the same."""
    queries, prompts = [], []
    for messages, answers in CONVERSATIONS:
        for a in answers:
            queries.append(query_of(scorer, messages, a))
            prompts.append(policy_prompt(scorer, messages))
    return {"query": queries, "prompts": prompts, "labels": [""] * len(queries)}


# -- the protocol ------------------------------------------------------------------------------------------------
def test_answers_the_keys_openrlhf_reads_one_per_query(rm_server, rm_scorer):
    body = one_request(rm_scorer)
    r = get_reward(rm_server.url, body)
    assert r.status_code == 200, r.text
    out = r.json()
    n = len(body["query"])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert len(out["rewards"]) == n and out["scores"] == out["rewards"]  # as OpenRLHF's serve_rm answers
    assert all(isinstance(x, float) for x in out["rewards"])
    # OpenRLHF logs every extra_logs value per sample as a tensor: numbers, one per query
    assert set(out["extra_logs"]) == {"truncated_tokens", "response_tokens"}
    for values in out["extra_logs"].values():
        assert len(values) == n and all(isinstance(v, float) for v in values)
    assert out["extra_logs"]["truncated_tokens"] == [0.0] * n


def test_rewards_equal_score_for_the_same_conversation(rm_server, rm_scorer):
    """The policy renders with the reward model's own template: /get_reward on its text gives /score's rewards on
    the conversation, with no second rendering."""
    got = get_reward(rm_server.url, one_request(rm_scorer)).json()["rewards"]
    want = [r for messages, answers in CONVERSATIONS
            for r in score(rm_server.url, {"prompt": messages, "responses": answers})["rewards"]]
    assert_close(got, want)
    assert len({round(r, 6) for r in got}) > 1  # the answers really differ


def test_rewards_equal_score_for_the_same_token_ids(rm_server, rm_scorer):
    """Each query laid out as the server lays it out, sent to /score as token ids, scores the same."""
    text = rm_scorer.model.text
    for messages, answers in CONVERSATIONS:
        prompt = policy_prompt(rm_scorer, messages)
        encoded = [text.encode_rendered(prompt, a, eos=True) for a in answers]
        start = encoded[0].response_start
        ids = {"prompt_ids": encoded[0].input_ids[:start], "response_ids": [e.input_ids[start:] for e in encoded]}
        assert all(e.input_ids[:start] == ids["prompt_ids"] for e in encoded)
        body = {"query": [query_of(rm_scorer, messages, a) for a in answers], "prompts": [prompt] * len(answers)}
        assert_close(get_reward(rm_server.url, body).json()["rewards"], score(rm_server.url, ids)["rewards"])


def test_the_reward_is_read_at_one_eos_whatever_padding_follows(rm_server, rm_scorer):
    """OpenRLHF's old serve_rm stripped pad and EOS runs from both ends and appended one EOS; rewardkit does the
    same, and appends the EOS to an answer cut before it (as /score and training read every response)."""
    messages, answers = CONVERSATIONS[0]
    prompt = policy_prompt(rm_scorer, messages)
    eos = rm_scorer.model.tokenizer.eos_token
    pad = rm_scorer.model.tokenizer.pad_token
    q = query_of(rm_scorer, messages, answers[1])
    variants = [q, q + eos * 3, q + pad * 2, eos + q, query_of(rm_scorer, messages, answers[1], stopped=False)]
    out = get_reward(rm_server.url, {"query": variants, "prompts": [prompt] * len(variants)}).json()
    want = score(rm_server.url, {"prompt": messages, "responses": [answers[1]]})["rewards"][0]
    assert_close(out["rewards"], [want] * len(variants))


def test_without_prompts_a_causal_model_scores_each_whole_query(rm_server, rm_scorer):
    body = one_request(rm_scorer)
    with_prompts = get_reward(rm_server.url, body).json()
    without = get_reward(rm_server.url, {"query": body["query"]}).json()
    assert_close(without["rewards"], with_prompts["rewards"])
    # the whole text counts as the response then
    assert all(a > b for a, b in zip(without["extra_logs"]["response_tokens"],
                                     with_prompts["extra_logs"]["response_tokens"]))


def test_queries_of_one_prompt_share_it_and_score_as_alone(rm_server, rm_scorer):
    body = one_request(rm_scorer)
    together = get_reward(rm_server.url, body).json()["rewards"]
    alone = [get_reward(rm_server.url, {"query": [q], "prompts": [p], "labels": [None]}).json()["rewards"][0]
             for q, p in zip(body["query"], body["prompts"])]
    assert_close(together, alone)


def test_concurrent_requests_are_batched_and_each_gets_its_own(rm_server, rm_scorer):
    """As OpenRLHF sends them: one sample a request, many at once, next to /score traffic."""
    body = one_request(rm_scorer)
    want = get_reward(rm_server.url, body).json()["rewards"]
    singles = [{"query": [q], "prompts": [p], "labels": [""]} for q, p in zip(body["query"], body["prompts"])] * 3

    def one(i):
        if i % 4 == 3:
            return "score", score(rm_server.url, {"prompt": "q", "responses": ["a"]})
        return i, get_reward(rm_server.url, singles[i])

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(len(singles))))
    for i, r in answers:
        if i != "score":
            assert r.status_code == 200, r.text
            assert_close(r.json()["rewards"], [want[i % len(want)]])


def test_over_long_queries_are_truncated_as_score_does(rm_server, rm_scorer):
    messages = [{"role": "user", "content": " ".join(["word"] * 200)}]
    answers = ["Paris.", " ".join(["long"] * 150)]
    body = {"query": [query_of(rm_scorer, messages, a) for a in answers],
            "prompts": [policy_prompt(rm_scorer, messages)] * 2}
    out = get_reward(rm_server.url, body).json()
    want = score(rm_server.url, {"prompt": messages, "responses": answers})
    assert_close(out["rewards"], want["rewards"])
    assert out["extra_logs"]["truncated_tokens"] == [float(t) for t in want["truncated"]]
    assert min(want["truncated"]) > 0


def test_normalize_uses_the_models_stats(rm_server, rm_scorer):
    body = one_request(rm_scorer)
    raw = get_reward(rm_server.url, body).json()["rewards"]
    normalized = get_reward(rm_server.url, {**body, "normalize": True}).json()
    mean, std = NORMALIZATION["mean"], NORMALIZATION["std"]
    assert_close(normalized["rewards"], [(r - mean) / std for r in raw])
    assert normalized["scores"] == normalized["rewards"]


# -- the same guards as /score -----------------------------------------------------------------------------------
def test_the_api_key_guards_it(rm_server, rm_scorer):
    body = {"query": [query_of(rm_scorer, *CONVERSATIONS[0][:1], "Paris.")]}
    missing = get_reward(rm_server.url, body, headers={})
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    assert get_reward(rm_server.url, body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert get_reward(rm_server.url, body, headers={"X-API-Key": API_KEY}).status_code == 200


def test_metrics_and_the_log_count_it(rm_server, rm_scorer):
    assert get_reward(rm_server.url, {"query": ["abc"], "prompts": ["abd"]}).status_code == 422
    assert get_reward(rm_server.url, one_request(rm_scorer)).status_code == 200
    deadline = time.monotonic() + 15  # counted after the response has gone out: read until it shows
    while True:
        text = httpx.get(f"{rm_server.url}/metrics", headers=AUTH).text
        ok = 'rewardkit_requests_total{path="/get_reward",status="200"}' in text
        refused = 'rewardkit_requests_total{path="/get_reward",status="422"}' in text
        if (ok and refused) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ok and refused, text
    lines = rm_server.request_log(until=lambda ls: any(x["path"] == "/get_reward" and x["status"] == 422
                                                       for x in ls))
    refusal = [x for x in lines if x["path"] == "/get_reward" and x["status"] == 422][-1]
    assert "query[0] does not start with prompts[0]" in refusal["error"]


def test_huge_bodies_get_413(rm_server):
    r = get_reward(rm_server.url, {"query": ["x" * 1000] * 100})
    assert r.status_code == 413, r.text


# -- bad input: a 4xx naming the item ------------------------------------------------------------------------------
@pytest.mark.parametrize("body, where", [
    ({"query": ["hello there", "abc"], "prompts": ["hello", "abd"]}, "query[1] does not start with prompts[1]"),
    ({"query": []}, "query"),
    ({}, "query"),
    ({"query": "one text"}, "query"),
    ({"query": [1, 2]}, "query[0]"),
    ({"query": ["a", None]}, "query[1]"),
    ({"query": ["a"], "prompts": "a"}, "prompts"),
    ({"query": ["a"], "prompts": [3]}, "prompts[0]"),
    ({"query": ["a", "b"], "prompts": ["a"]}, "prompts has 1 entries for 2 queries"),
    ({"query": ["a", "b"], "labels": ["x"]}, "labels has 1 entries for 2 queries"),
    ({"query": ["a"], "labels": "x"}, "labels"),
    ({"query": ["a"], "queries": ["typo"]}, "queries"),
    ({"query": ["a"], "normalize": "yes"}, "normalize"),
    ({"query": ["fine", ""]}, "query[1] is empty"),
    ({"query": ["<|im_end|><|im_end|>"]}, "query[0] is empty"),
    ([1, 2], "body"),
])
def test_bad_bodies_get_422_naming_the_item(rm_server, body, where):
    r = get_reward(rm_server.url, body)
    assert r.status_code == 422, r.text
    assert where in r.json()["detail"], r.json()["detail"]


def test_with_overlength_reject_a_long_query_is_refused_by_index(rm_scorer):
    from rewardkit.serve import create_app

    messages = [{"role": "user", "content": " ".join(["word"] * 200)}]
    body = {"query": [query_of(rm_scorer, CONVERSATIONS[0][0], "Paris."), query_of(rm_scorer, messages, "Paris.")]}
    with server_in_thread(create_app(rm_scorer, overlength="reject")) as url:
        r = get_reward(url, body)
    assert r.status_code == 422, r.text
    assert "query[1]" in r.json()["detail"] and f"over max_length {MAX_LENGTH}" in r.json()["detail"]


def test_a_scorer_without_a_tokenizer_says_why(rm_scorer):
    from fastapi.testclient import TestClient

    from rewardkit.serve import create_app

    with TestClient(create_app(FunctionScorer(echo_reward, name="echo"))) as client:
        r = client.post("/get_reward", json={"query": ["User: hi\n\nAssistant: 1"]})
        assert r.status_code == 400 and "/score" in r.json()["detail"]
        norm = client.post("/get_reward", json={"query": ["x"], "normalize": True})
        assert norm.status_code == 400 and "normalization" in norm.json()["detail"]


def test_openrlhf_normalize_needs_stats(llama_dir):
    from rewardkit.errors import RewardkitError
    from rewardkit.serve import create_app

    with pytest.raises(RewardkitError, match="normalization"):
        create_app(RewardModelScorer.from_pretrained(llama_dir, precision="fp32"), openrlhf_normalize=True)


# -- an encoder reads (prompt, response) as a pair ----------------------------------------------------------------
def test_an_encoder_splits_each_query_at_its_prompt(bert_dir):
    from rewardkit.serve import create_app

    scorer = RewardModelScorer.from_pretrained(bert_dir, precision="fp32")
    prompt, answers = "What is the capital of France?", ["Paris.", "The capital of France is Paris."]
    with server_in_thread(create_app(scorer)) as url:
        r = get_reward(url, {"query": [prompt + " " + a for a in answers], "prompts": [prompt + " "] * 2})
        assert r.status_code == 200, r.text
        assert_close(r.json()["rewards"], score(url, {"prompt": prompt, "responses": answers})["rewards"])
        no_prompts = get_reward(url, {"query": [prompt + " Paris."]})
        assert no_prompts.status_code == 422 and "prompts" in no_prompts.json()["detail"]


# -- the library rule beneath it -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["llama_dir", "qwen2_dir"])
def test_encode_rendered_lays_out_the_models_own_rendering_as_encode_does(backbone, request):
    """With and without a tokenizer-added BOS: the same ids, the same boundary."""
    scorer = RewardModelScorer.from_pretrained(request.getfixturevalue(backbone), precision="fp32")
    text = scorer.model.text
    for messages, answers in CONVERSATIONS:
        prompt = policy_prompt(scorer, messages)
        for a in answers:
            want = text.encode(messages, a)
            got = text.encode_rendered(prompt, a, eos=True)
            assert (got.input_ids, got.response_start, got.response_tokens) == \
                (want.input_ids, want.response_start, want.response_tokens)
            whole = text.encode_rendered("", prompt + a, eos=True)
            assert whole.input_ids == want.input_ids and whole.response_start in (0, 1)  # after a BOS, if any


# -- OpenRLHF's own client -------------------------------------------------------------------------------------------
def test_openrlhfs_own_client_gets_the_rewards(rm_scorer):
    """OpenRLHF's SingleTurnAgentExecutor posts to --reward.remote_url as it does in a PPO run (no API key: its
    client sends none)."""
    agent = pytest.importorskip("openrlhf.utils.agent", reason="openrlhf is not installed (pip install --no-deps "
                                                               "openrlhf aiohttp pylatexenc)")
    from rewardkit.serve import create_app

    messages, answers = CONVERSATIONS[0]
    with server_in_thread(create_app(rm_scorer)) as url:
        executor = agent.SingleTurnAgentExecutor(f"{url}/get_reward")
        queries = [query_of(rm_scorer, messages, a) for a in answers]
        prompts = [policy_prompt(rm_scorer, messages)] * len(answers)
        [answer] = asyncio.run(executor._fetch_rewards_via_http(queries, prompts, ["label"] * len(answers)))
        want = score(url, {"prompt": messages, "responses": answers})["rewards"]
    assert_close(answer["rewards"], want)
    assert answer["scores"] == answer["rewards"] and len(answer["extra_logs"]["truncated_tokens"]) == len(answers)

