"""The real server (a subprocess on a loopback port) on a tiny reward model: text, chat messages and token
ids give the library's scores; concurrent requests each get their own; bad input gets the right 4xx; the
API key, health, readiness, metrics and request log work."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rewardkit.data.record import Response
from rewardkit.models import ScoreItem
from serve_helpers import API_KEY, MAX_BODY, MAX_LENGTH, NORMALIZATION

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TOL = 1e-5

FRANCE = "What is the capital of France?"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there!"},
        {"role": "assistant", "content": "Hi. How can I help?"}, {"role": "user", "content": "Why is the sky blue?"}]


def post(server, body, headers=AUTH, **kwargs):
    return httpx.post(f"{server.url}/score", json=body, headers=headers, timeout=30, **kwargs)


def library(scorer, prompt, responses):
    return scorer.score([ScoreItem(prompt, [Response(r) for r in responses])])[0]


def as_ids(scorer, prompt, responses):
    """Token ids exactly as the library encodes the text: the prompt part and each response part."""
    encoded = scorer.encode([ScoreItem(prompt, [Response(r) for r in responses])])[0]
    prompt_ids = encoded[0].input_ids[: encoded[0].response_start]
    assert all(e.input_ids[: e.response_start] == prompt_ids for e in encoded)
    return prompt_ids, [e.input_ids[e.response_start:] for e in encoded]


def assert_close(got, want):
    assert len(got) == len(want)
    assert max(abs(a - b) for a, b in zip(got, want)) < TOL, (got, want)


# -- same scores as the library -------------------------------------------------------------------------------
def test_text_prompt_gives_library_scores(rm_server, rm_scorer):
    responses = ["Paris.", "The capital of France is Paris.", "London, I think.", ""]
    r = post(rm_server, {"prompt": FRANCE, "responses": responses})
    assert r.status_code == 200, r.text
    want = library(rm_scorer, [{"role": "user", "content": FRANCE}], responses)
    body = r.json()
    assert_close(body["rewards"], want.rewards)
    assert body["response_tokens"] == want.response_tokens
    assert body["truncated"] == [0, 0, 0, 0]
    assert "normalized_rewards" not in body


def test_chat_messages_give_library_scores(rm_server, rm_scorer):
    responses = ["Sunlight scatters off molecules in the air.", "No idea."]
    r = post(rm_server, {"prompt": CHAT, "responses": responses})
    assert r.status_code == 200, r.text
    assert_close(r.json()["rewards"], library(rm_scorer, CHAT, responses).rewards)


def test_token_ids_give_the_same_scores_as_text(rm_server, rm_scorer):
    responses = ["Sunlight scatters off molecules in the air.", "No idea."]
    prompt_ids, response_ids = as_ids(rm_scorer, CHAT, responses)
    r = post(rm_server, {"prompt_ids": prompt_ids, "response_ids": response_ids})
    assert r.status_code == 200, r.text
    assert_close(r.json()["rewards"], library(rm_scorer, CHAT, responses).rewards)
    assert r.json()["response_tokens"] == [len(ids) for ids in response_ids]


def test_items_mix_text_chat_and_ids_in_order(rm_server, rm_scorer):
    user = [{"role": "user", "content": FRANCE}]
    prompt_ids, response_ids = as_ids(rm_scorer, user, ["Paris.", "Lyon."])
    body = {"items": [{"prompt": CHAT, "responses": ["Blue light scatters more."]},
                      {"prompt_ids": prompt_ids, "response_ids": response_ids},
                      {"prompt": FRANCE, "responses": ["Marseille.", "Paris, of course.", "Nice."]}]}
    r = post(rm_server, body)
    assert r.status_code == 200, r.text
    got = r.json()["items"]
    assert [len(it["rewards"]) for it in got] == [1, 2, 3]
    assert_close(got[0]["rewards"], library(rm_scorer, CHAT, ["Blue light scatters more."]).rewards)
    assert_close(got[1]["rewards"], library(rm_scorer, user, ["Paris.", "Lyon."]).rewards)
    assert_close(got[2]["rewards"], library(rm_scorer, user, ["Marseille.", "Paris, of course.", "Nice."]).rewards)


def test_normalized_rewards_use_the_stored_stats(rm_server):
    r = post(rm_server, {"prompt": FRANCE, "responses": ["Paris.", "Rome."], "normalize": True})
    assert r.status_code == 200, r.text
    body = r.json()
    want = [(x - NORMALIZATION["mean"]) / NORMALIZATION["std"] for x in body["rewards"]]
    assert_close(body["normalized_rewards"], want)


def test_concurrent_requests_each_get_their_own_scores(rm_server, rm_scorer):
    """Many clients at once are batched together; every answer must be its own request's scores."""
    prompts = [f"Tell me about topic number {i}, please." for i in range(24)]
    responses = [[f"Answer {i}.", f"A longer answer about topic {i} with more words."][: 1 + i % 2]
                 for i in range(24)]

    def one(i):
        if i % 3 == 2:  # token ids for some, text for the others
            ids, rids = as_ids(rm_scorer, [{"role": "user", "content": prompts[i]}], responses[i])
            return post(rm_server, {"prompt_ids": ids, "response_ids": rids})
        return post(rm_server, {"prompt": prompts[i], "responses": responses[i]})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(24)))
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        want = library(rm_scorer, [{"role": "user", "content": prompts[i]}], responses[i]).rewards
        assert_close(r.json()["rewards"], want)


# -- bad input: the right 4xx with a reason, never a 500 ---------------------------------------------------------
LONG = " ".join(["word"] * 200)


@pytest.mark.parametrize("body, status, where", [
    ({"prompt": 42, "responses": ["a"]}, 422, "prompt"),
    ({"prompt": "q", "responses": "a"}, 422, "responses"),
    ({"prompt": "q", "responses": [1, 2]}, 422, "responses[0]"),
    ({"prompt": [{"role": "robot", "content": "hi"}], "responses": ["a"]}, 422, "prompt[0].role"),
    ({"prompt": [{"role": "user"}], "responses": ["a"]}, 422, "prompt[0].content"),
    ({"prompt": "q", "responses": ["a"], "normalize": "yes"}, 422, "normalize"),
    ({"prompt": "q", "responses": []}, 422, "responses"),
    ({"prompt": [], "responses": ["a"]}, 422, "prompt"),
    ({"items": []}, 422, "items"),
    ({"items": [{"prompt": "q", "responses": []}]}, 422, "items[0].responses"),
    ({"prompt_ids": [1, 2], "response_ids": [[]]}, 422, "response_ids[0]"),
    ({"prompt_ids": [1, 2], "response_ids": []}, 422, "response_ids"),
    ({"prompt": "q"}, 422, "responses"),
    ({}, 422, "missing"),
    ({"prompt": "q", "responses": ["a"], "prompt_ids": [1], "response_ids": [[2]]}, 422, "not both"),
    ({"items": [{"prompt": "q", "responses": ["a"]}], "prompt": "q"}, 422, "not both"),
    ({"prompt": "q", "responses": ["a"], "respones": ["typo"]}, 422, "respones"),
    ([1, 2, 3], 422, "body"),
    ({"prompt_ids": [5, 6], "response_ids": [[7, -1]]}, 422, "response_ids[0][1]"),
    ({"prompt_ids": [5, 6, 400], "response_ids": [[7]]}, 422, "prompt_ids[2]"),
    ({"items": [{"prompt_ids": [5], "response_ids": [[7], [8, 9, 10 ** 30]]}]}, 422, "items[0].response_ids[1][2]"),
    ({"prompt_ids": [5, 6.5], "response_ids": [[7]]}, 422, "prompt_ids[1]"),
    ({"prompt_ids": [5, True], "response_ids": [[7]]}, 422, "prompt_ids[1]"),
    ({"prompt_ids": ["5"], "response_ids": [[7]]}, 422, "prompt_ids[0]"),
])
def test_bad_requests_get_a_4xx_that_names_the_problem(rm_server, body, status, where):
    r = post(rm_server, body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and where in detail, detail


# -- over-long sequences: truncated as `rewardkit score` does by default, refused with overlength=reject --------
def test_over_long_sequences_are_truncated_as_the_library_does(rm_server, rm_scorer):
    r = post(rm_server, {"items": [{"prompt": "q", "responses": ["short", LONG]},
                                   {"prompt": LONG, "responses": ["a", "b"]}]})
    assert r.status_code == 200, r.text
    for got, (prompt, responses) in zip(r.json()["items"], [("q", ["short", LONG]), (LONG, ["a", "b"])]):
        want = library(rm_scorer, [{"role": "user", "content": prompt}], responses)
        assert_close(got["rewards"], want.rewards)
        assert got["truncated"] == want.truncated
    assert r.json()["items"][0]["truncated"][0] == 0 and r.json()["items"][0]["truncated"][1] > 0
    assert min(r.json()["items"][1]["truncated"]) > 0  # the prompt's tokens go first


def test_over_long_token_ids_lose_prompt_tokens_from_the_left(rm_server, rm_scorer):
    prompt_ids, response_ids = [5] * (MAX_LENGTH - 4), [[6], [7] * 10]
    r = post(rm_server, {"prompt_ids": prompt_ids, "response_ids": response_ids})
    assert r.status_code == 200, r.text
    want = rm_scorer.score_token_ids([(prompt_ids, response_ids)])[0]
    assert r.json()["truncated"] == want.truncated == [0, 6]
    assert_close(r.json()["rewards"], want.rewards)


@pytest.fixture(scope="module")
def rejecting_url(rm_scorer):
    """The app with overlength="reject", on a real socket in this process."""
    from rewardkit.serve import create_app
    from serve_helpers import server_in_thread

    with server_in_thread(create_app(rm_scorer, overlength="reject")) as url:
        yield url


@pytest.mark.parametrize("body, where", [
    ({"prompt": "q", "responses": [LONG]}, "responses[0]"),
    ({"prompt": "q", "responses": ["short", LONG]}, "responses[1]"),
    ({"items": [{"prompt": "q", "responses": ["ok"]}, {"prompt": LONG, "responses": ["a", "b"]}]},
     "items[1].responses[0]"),
    ({"prompt_ids": [5] * (MAX_LENGTH - 4), "response_ids": [[6], [7] * 10]}, "response_ids[1]"),
])
def test_with_overlength_reject_over_long_sequences_get_422_naming_them(rejecting_url, body, where):
    r = httpx.post(f"{rejecting_url}/score", json=body, timeout=30)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert where in detail and f"over max_length {MAX_LENGTH}" in detail and "overlength=reject" in detail, detail


def test_invalid_json_and_non_json_bodies(rm_server):
    bad_json = httpx.post(f"{rm_server.url}/score", content=b'{"prompt": "q", "responses": [',
                          headers={**AUTH, "Content-Type": "application/json"})
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.json()["detail"]
    text = httpx.post(f"{rm_server.url}/score", content=b"hello", headers={**AUTH, "Content-Type": "text/plain"})
    assert 400 <= text.status_code < 500 and isinstance(text.json()["detail"], str)


def test_huge_bodies_get_413(rm_server):
    huge = {"prompt": "q", "responses": ["x" * 1000] * (MAX_BODY // 1000 + 5)}
    r = post(rm_server, huge)
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced on the bytes actually read
        yield b'{"prompt": "q", "responses": ["'
        for _ in range(MAX_BODY // 4096 + 2):
            yield b"x" * 4096
        yield b'"]}'

    r = httpx.post(f"{rm_server.url}/score", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text


def test_unknown_path_and_method(rm_server):
    assert httpx.get(f"{rm_server.url}/nope", headers=AUTH).status_code == 404
    assert httpx.get(f"{rm_server.url}/score", headers=AUTH).status_code == 405


# -- API key ----------------------------------------------------------------------------------------------------
def test_api_key_is_required_except_for_health_and_ready(rm_server):
    ok = {"prompt": "q", "responses": ["a"]}
    missing = post(rm_server, ok, headers={})
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    wrong = post(rm_server, ok, headers={"Authorization": "Bearer not-the-key"})
    assert wrong.status_code == 401 and "wrong API key" in wrong.json()["detail"]
    assert post(rm_server, ok, headers={"Authorization": f"Basic {API_KEY}"}).status_code == 401
    assert post(rm_server, ok, headers={"X-API-Key": API_KEY}).status_code == 200
    assert post(rm_server, ok, headers={"Authorization": f"bearer {API_KEY}"}).status_code == 200
    for path in ("/metrics", "/info", "/openapi.json", "/docs"):
        assert httpx.get(f"{rm_server.url}{path}").status_code == 401, path
        assert httpx.get(f"{rm_server.url}{path}", headers=AUTH).status_code == 200, path
    assert httpx.get(f"{rm_server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{rm_server.url}/ready").status_code == 200


# -- operations ------------------------------------------------------------------------------------------------
def test_metrics_count_requests_batches_and_latency(rm_server):
    assert post(rm_server, {"prompt": "q", "responses": ["a", "b"]}).status_code == 200
    assert post(rm_server, {"prompt": 1, "responses": ["a"]}).status_code == 422
    # A request is counted after its response has gone out: read the metrics until the last one shows.
    deadline = time.monotonic() + 15
    while True:
        text = httpx.get(f"{rm_server.url}/metrics", headers=AUTH).text
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line and not line.startswith("#")}
        if samples.get('rewardkit_requests_total{path="/score",status="422"}', 0) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert samples['rewardkit_requests_total{path="/score",status="200"}'] >= 1
    assert samples['rewardkit_requests_total{path="/score",status="422"}'] >= 1
    assert samples["rewardkit_batch_requests_count"] >= 1
    assert samples["rewardkit_batch_tokens_sum"] > 0
    assert samples["rewardkit_batch_sequences_sum"] >= 2
    assert 'rewardkit_request_latency_seconds_bucket{le="+Inf",path="/score"}' in samples
    assert "rewardkit_queue_depth" in samples
    assert "rewardkit_queue_wait_seconds_count" in samples


def test_one_json_log_line_per_request(rm_server):
    assert post(rm_server, {"items": [{"prompt": "log me", "responses": ["a", "b", "c"]},
                                      {"prompt": "and me", "responses": ["d"]}]}).status_code == 200
    def scored_in(lines):
        return [x for x in lines if x["path"] == "/score" and x["status"] == 200 and x["items"] == 2]

    lines = rm_server.request_log(until=scored_in)
    scored = scored_in(lines)
    assert scored and scored[-1]["responses"] == 4 and scored[-1]["method"] == "POST"
    assert isinstance(scored[-1]["latency_ms"], float)
    assert any(x["status"] == 401 for x in lines)


def test_info_and_openapi(rm_server):
    info = httpx.get(f"{rm_server.url}/info", headers=AUTH).json()
    assert info["scorer"]["kind"] == "reward_model" and info["scorer"]["token_ids"] is True
    assert info["scorer"]["server_max_length"] == MAX_LENGTH and info["scorer"]["normalization"] is True
    schema = httpx.get(f"{rm_server.url}/openapi.json", headers=AUTH).json()
    assert "/score" in schema["paths"] and "ScoreRequest" in schema["components"]["schemas"]
