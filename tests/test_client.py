"""rewardkit.client against real HTTP servers on loopback sockets.

Most tests talk to a small FastAPI app that implements the server's contract and does what each test needs
(turn requests away with 503 + Retry-After, answer 400 with a reason, answer slowly, mangle a reply), so retries,
backoff, timeouts, errors, batching and ordering are checked exactly. The last test starts the real server
(`python -m rewardkit.serve`) with a tiny random model and checks the client gets the library's scores.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rewardkit.client import (
    AsyncRewardClient,
    ClientError,
    RemoteScoreResult,
    RewardClient,
    ServerError,
    backoff_delay,
    format_detail,
    parse_retry_after,
    request_chunks,
)
from rewardkit.data.record import PreferenceRecord, Response
from rewardkit.models.scorer import ScoreItem, Scorer

# -- a server that keeps the contract and misbehaves on request -------------------------------------------------


def fake_reward(prompt, response) -> float:
    """Depends on both texts, so a result given to the wrong item or response is caught."""
    text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
    return len(response) + len(text) / 1000


def fake_result(item: dict, normalize: bool) -> dict:
    if "prompt_ids" in item:
        rewards = [sum(r) + len(item["prompt_ids"]) / 1000 for r in item["response_ids"]]
    else:
        rewards = [fake_reward(item["prompt"], r) for r in item["responses"]]
    out = {"rewards": rewards, "response_tokens": [len(r) for r in item.get("responses", item.get("response_ids"))]}
    if normalize:
        out["normalized_rewards"] = [(r - 10) / 2 for r in rewards]
    return out


class FakeState:
    def __init__(self):
        self.calls: list[dict] = []  # bodies of /score requests, in arrival order
        self.failures: list[tuple[int, dict, object]] = []  # answers to give before scoring: (status, headers, detail)
        self.delay = 0.0
        self.key: str | None = None
        self.mangle = False
        self.info_body: dict | None = None  # GET /info: 404 while None


def fake_app(state: FakeState) -> FastAPI:
    app = FastAPI()

    @app.post("/score")
    async def score(request: Request):
        body = await request.json()
        state.calls.append(body)
        if state.key and request.headers.get("authorization") != f"Bearer {state.key}":
            return JSONResponse({"detail": "missing or wrong API key"}, 401)
        if state.failures:
            status, headers, detail = state.failures.pop(0)
            return JSONResponse({"detail": detail}, status, headers)
        if state.delay:
            await asyncio.sleep(state.delay)
        if "items" in body:
            items = [fake_result(it, body.get("normalize", False)) for it in body["items"]]
            if state.mangle:
                items[-1]["rewards"] = items[-1]["rewards"][:-1]
            return {"items": items}
        return fake_result(body, body.get("normalize", False))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        return {"status": "ready"}

    @app.get("/info")
    async def info():
        if state.info_body is None:
            return JSONResponse({"detail": "Not Found"}, 404)
        return state.info_body

    return app


def free_socket() -> socket.socket:
    """A loopback socket bound to a free port, not yet listening (connections to it are refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadServer:
    """uvicorn serving an app on a real socket from a background thread."""

    def __init__(self, app, sock: socket.socket):
        self.sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def fake_server():
    state = FakeState()
    server = ThreadServer(fake_app(state), free_socket()).start()
    server.state = state
    yield server
    server.stop()


@pytest.fixture
def fake(fake_server, monkeypatch):
    """The module's fake server, with its behaviour reset for each test."""
    monkeypatch.delenv("REWARDKIT_API_KEY", raising=False)
    fake_server.state.__init__()
    return fake_server


def client_for(server, **kwargs) -> RewardClient:
    kwargs.setdefault("backoff", 0.01)
    return RewardClient(server.url, **kwargs)


# -- pure functions ------------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    no_jitter = [backoff_delay(a, backoff=0.5, max_backoff=100) for a in range(4)]
    assert no_jitter == [0.25, 0.5, 1.0, 2.0]  # half of backoff * 2**attempt fixed...
    full_jitter = [backoff_delay(a, backoff=0.5, max_backoff=100, jitter=0.999999) for a in range(4)]
    assert full_jitter == pytest.approx([0.5, 1.0, 2.0, 4.0])  # ...the other half scaled by jitter
    assert backoff_delay(10, backoff=0.5, max_backoff=8.0, jitter=0.5) == 8.0
    assert backoff_delay(10_000, backoff=0.5, max_backoff=8.0) == 8.0  # no float overflow


def test_backoff_honours_retry_after_up_to_the_cap():
    assert backoff_delay(0, backoff=0.5, max_backoff=8, retry_after=3.0) == 3.0
    assert backoff_delay(0, backoff=0.5, max_backoff=8, retry_after=3.0, jitter=0.5) == 3.25
    assert backoff_delay(5, backoff=0.5, max_backoff=8, retry_after=30.0) == 8.0
    assert backoff_delay(0, backoff=0.5, max_backoff=8, retry_after=0.0) == 0.0


def test_parse_retry_after():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    now = 1445412480.0  # 07:28:00 that day
    assert parse_retry_after(date, now=now) == pytest.approx(10.0)
    assert parse_retry_after(date, now=now + 60) == 0.0


def test_format_detail_reads_fastapi_validation_errors():
    assert format_detail({"detail": "responses must not be empty"}) == "responses must not be empty"
    detail = [{"loc": ["body", "items", 0, "responses"], "msg": "Field required", "type": "missing"},
              {"loc": ["body", "normalize"], "msg": "Input should be a valid boolean"}]
    assert format_detail({"detail": detail}) == ("items.0.responses: Field required; "
                                                 "normalize: Input should be a valid boolean")
    assert format_detail("<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"


def test_request_chunks_skip_empty_items_and_respect_the_size():
    payloads = [{"prompt": "p", "responses": ["a"] * (i % 3)} for i in range(10)]
    chunks = request_chunks(payloads, 3)
    assert chunks == [[1, 2, 4], [5, 7, 8]]


# -- scoring -------------------------------------------------------------------------------------------------


def test_score_one_text_and_messages(fake):
    with client_for(fake) as rm:
        result = rm.score_one("Say hi", ["Hi!", "Go away, please."])
        assert isinstance(result, RemoteScoreResult)
        assert result.rewards == [fake_reward("Say hi", "Hi!"), fake_reward("Say hi", "Go away, please.")]
        assert result.response_tokens == [3, 16] and result.normalized_rewards is None
        messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hi"}]
        assert rm.score_one(messages, [Response("Hi!")]).rewards == [fake_reward(messages, "Hi!")]
    assert fake.state.calls[1] == {"items": [{"prompt": messages, "responses": ["Hi!"]}], "normalize": False}


def test_normalize_returns_normalized_rewards(fake):
    with client_for(fake) as rm:
        result = rm.score_one("p", ["abc"], normalize=True)
    assert result.normalized_rewards == [(result.rewards[0] - 10) / 2]
    assert result.to_json()["normalized_rewards"] == result.normalized_rewards
    assert fake.state.calls[0]["normalize"] is True


def test_token_ids(fake):
    with client_for(fake) as rm:
        result = rm.score_token_ids([1, 2, 3], [[4, 5], [6]])
        assert result.rewards == [9.003, 6.003]
        mixed = rm.score([{"prompt_ids": [7], "response_ids": [[1]]}, ScoreItem([{"role": "user", "content": "q"}],
                                                                              [Response("ab")])])
        assert [r.rewards for r in mixed] == [[1.001], [fake_reward("q", "ab")]]


def test_score_splits_into_batches_and_keeps_the_order(fake):
    items = [ScoreItem([{"role": "user", "content": f"prompt {i}" * (i % 5)}],
                       [Response("x" * (i + k)) for k in range(i % 4)]) for i in range(150)]
    with client_for(fake, batch_items=64) as rm:
        results = rm.score(items)
    # items with no responses are answered locally; the rest go in requests of at most 64 items
    sent = [len(c["items"]) for c in fake.state.calls]
    n_nonempty = sum(1 for it in items if it.responses)
    assert sent == [64, n_nonempty - 64] and sum(sent) == n_nonempty
    assert [r.rewards for r in results] == [
        [fake_reward(it.prompt, r.content) for r in it.responses] for it in items]


def test_client_is_a_scorer_and_scores_records_to_a_file(fake, tmp_path):
    from rewardkit.scoring import score_records_to_file

    with client_for(fake) as rm:
        assert isinstance(rm, Scorer)
        records = [PreferenceRecord(f"r{i}", [{"role": "user", "content": "hi" * i}],
                                    [Response("a" * i), Response("bb")], chosen=0) for i in range(5)]
        score_records_to_file(rm, records, tmp_path / "out.jsonl", chunk_size=2)
        fake.state.info_body = {"scorer": {"kind": "reward_model", "name": "tiny"}, "max_queue": 256}
        assert rm.describe() == {"kind": "remote", "url": fake.url, "model": {"kind": "reward_model", "name": "tiny"},
                                 "server": {"max_queue": 256}}
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"r{i}" for i in range(5)]
    assert lines[3]["rewards"] == [fake_reward("hihihi", "aaa"), fake_reward("hihihi", "bb")]


def test_health_ready_and_describe_without_a_model_description(fake):
    with client_for(fake) as rm:
        assert rm.health() == {"status": "ok"}
        assert rm.ready() is True
        rm.wait_ready(timeout=5)
        assert rm.describe() == {"kind": "remote", "url": fake.url, "model": None, "server": None}
    with client_for(fake) as rm, RewardClient("http://127.0.0.1:9", timeout=2) as down:
        assert down.ready() is False
        with pytest.raises(ServerError, match="cannot reach"):
            down.health()
        with pytest.raises(ServerError, match="not ready within"):
            down.wait_ready(timeout=0.2, interval=0.05)


# -- retries and errors --------------------------------------------------------------------------------------


def test_retries_after_503_honouring_retry_after(fake):
    fake.state.failures = [(503, {"Retry-After": "0.3"}, "queue full")] * 2
    with client_for(fake, retries=3) as rm:
        t0 = time.monotonic()
        result = rm.score_one("p", ["abc"])
        waited = time.monotonic() - t0
    assert result.rewards == [fake_reward("p", "abc")]
    assert len(fake.state.calls) == 3
    assert waited >= 0.6  # it waited as long as the server asked, twice


def test_retry_after_is_capped_by_max_backoff(fake):
    fake.state.failures = [(429, {"Retry-After": "120"}, "busy")]
    with client_for(fake, max_backoff=0.05) as rm:
        t0 = time.monotonic()
        assert rm.score_one("p", ["a"]).rewards == [fake_reward("p", "a")]
        assert time.monotonic() - t0 < 60  # not the 120 s asked for


def test_retries_502_and_504_in_the_middle_of_a_batched_call(fake):
    items = [{"prompt": f"p{i}", "responses": ["r" * i, "s"]} for i in range(1, 6)]
    with client_for(fake, batch_items=2) as rm:
        rm.score(items[:2])  # first request succeeds
        fake.state.failures = [(502, {}, "bad gateway"), (504, {}, "timed out")]
        results = rm.score(items)
    assert len(fake.state.calls) == 1 + 2 + 3  # the failed first chunk was sent three times
    assert [r.rewards for r in results] == [[fake_reward(f"p{i}", "r" * i), fake_reward(f"p{i}", "s")]
                                            for i in range(1, 6)]


def test_gives_up_after_the_retries_with_the_servers_reason(fake):
    fake.state.failures = [(429, {"Retry-After": "0"}, "queue full (256 waiting)")] * 10
    with client_for(fake, retries=2) as rm, pytest.raises(ServerError) as e:
        rm.score_one("p", ["a"])
    assert e.value.status == 429 and e.value.detail == "queue full (256 waiting)"
    assert e.value.attempts == 3 and len(fake.state.calls) == 3
    assert "after 3 attempts" in str(e.value)


def test_4xx_is_not_retried_and_carries_the_detail(fake):
    fake.state.failures = [(400, {}, "response 1 is longer than max_length 1024")]
    with client_for(fake) as rm, pytest.raises(ClientError) as e:
        rm.score_one("p", ["a", "b"])
    assert e.value.status == 400 and e.value.detail == "response 1 is longer than max_length 1024"
    assert "HTTP 400: response 1 is longer than max_length 1024" in str(e.value)
    assert len(fake.state.calls) == 1
    fake.state.failures = [(422, {}, [{"loc": ["body", "items", 0, "responses"], "msg": "List should have at "
                                                                                      "least 1 item"}])]
    with client_for(fake) as rm, pytest.raises(ClientError, match="items.0.responses: List should have"):
        rm.score_one("p", ["a"])


def test_500_raises_server_error_without_retry(fake):
    fake.state.failures = [(500, {}, "boom")]
    with client_for(fake) as rm, pytest.raises(ServerError) as e:
        rm.score_one("p", ["a"])
    assert e.value.status == 500 and len(fake.state.calls) == 1


def test_api_key_from_argument_or_environment(fake, monkeypatch):
    fake.state.key = "s3cret"
    with client_for(fake) as rm, pytest.raises(ClientError) as e:
        rm.score_one("p", ["a"])
    assert e.value.status == 401 and "API key" in e.value.detail
    with client_for(fake, api_key="wrong") as rm, pytest.raises(ClientError):
        rm.score_one("p", ["a"])
    with client_for(fake, api_key="s3cret") as rm:
        assert rm.score_one("p", ["a"]).rewards
        assert "s3cret" not in repr(rm)
    monkeypatch.setenv("REWARDKIT_API_KEY", "s3cret")
    with client_for(fake) as rm:
        assert rm.score_one("p", ["a"]).rewards


def test_timeout_raises_without_resending(fake):
    fake.state.delay = 1.0
    with client_for(fake, timeout=0.2) as rm, pytest.raises(ServerError) as e:
        rm.score_one("p", ["a"])
    assert e.value.detail == "timeout" and "no answer within 0.2 s" in str(e.value)
    assert len(fake.state.calls) == 1


def test_a_reply_that_loses_a_response_is_an_error(fake):
    fake.state.mangle = True
    with client_for(fake) as rm, pytest.raises(ServerError, match="no list of 2 rewards"):
        rm.score([{"prompt": "p", "responses": ["a"]}, {"prompt": "q", "responses": ["a", "b"]}])


def test_bad_input_is_rejected_before_sending(fake):
    with client_for(fake) as rm:
        with pytest.raises(ClientError, match="item 1.prompt: must be a string"):
            rm.score([{"prompt": "p", "responses": ["a"]}, {"prompt": 3, "responses": ["a"]}])
        with pytest.raises(ClientError, match=r"item 0.responses\[1\]: must be a string"):
            rm.score_one("p", ["a", None])
        with pytest.raises(ClientError, match="'role' and 'content'"):
            rm.score_one([{"role": "user"}], ["a"])
        with pytest.raises(ClientError, match="non-negative integer token ids"):
            rm.score_token_ids([1, -2], [[3]])
        with pytest.raises(ClientError, match="use score_one"):
            rm.score({"prompt": "p", "responses": ["a"]})
        assert rm.score([]) == []
    assert fake.state.calls == []


def test_connection_refused_is_retried_until_the_server_comes_up():
    sock = free_socket()  # bound, not listening: connections are refused until the server starts
    state = FakeState()
    server = ThreadServer(fake_app(state), sock)
    timer = threading.Timer(0.3, server.start)
    timer.start()
    try:
        with RewardClient(server.url, retries=30, backoff=0.05, max_backoff=0.1) as rm:
            assert rm.score_one("p", ["abc"]).rewards == [fake_reward("p", "abc")]
    finally:
        timer.join()
        server.stop()


def test_connection_refused_gives_up_with_a_clear_error():
    sock = free_socket()
    try:
        with RewardClient(f"http://127.0.0.1:{sock.getsockname()[1]}", retries=2, backoff=0.01) as rm, \
                pytest.raises(ServerError, match="cannot reach the server") as e:
            rm.score_one("p", ["a"])
        assert e.value.status is None and e.value.attempts == 3
    finally:
        sock.close()


# -- the async client ------------------------------------------------------------------------------------------


def test_async_client_has_the_same_behaviour(fake):
    items = [{"prompt": f"p{i}", "responses": ["r" * i]} for i in range(1, 8)]

    async def run():
        async with AsyncRewardClient(fake.url, backoff=0.01, batch_items=3) as rm:
            assert await rm.ready() is True
            assert (await rm.health()) == {"status": "ok"}
            fake.state.failures = [(503, {"Retry-After": "0"}, "queue full")]
            results = await rm.score(items)
            one = await rm.score_one("p", ["abc"], normalize=True)
            tokens = await rm.score_token_ids([1], [[2, 3]])
            fake.state.failures = [(400, {}, "bad token id 99999")]
            with pytest.raises(ClientError, match="bad token id 99999"):
                await rm.score_token_ids([1], [[99999]])
            concurrent = await asyncio.gather(*(rm.score_one(f"c{i}", ["x" * i]) for i in range(8)))
            return results, one, tokens, concurrent

    results, one, tokens, concurrent = asyncio.run(run())
    assert [r.rewards for r in results] == [[fake_reward(f"p{i}", "r" * i)] for i in range(1, 8)]
    assert [len(c["items"]) for c in fake.state.calls[:4]] == [3, 3, 3, 1]  # first chunk retried once
    assert one.normalized_rewards == [(fake_reward("p", "abc") - 10) / 2]
    assert tokens.rewards == [5.001]
    assert [r.rewards for r in concurrent] == [[fake_reward(f"c{i}", "x" * i)] for i in range(8)]


# -- end to end, against the real server -------------------------------------------------------------------


@pytest.fixture(scope="session")
def serve_help() -> str:
    """`python -m rewardkit.serve --help`; skips when the server is not there (asked before building a model)."""
    try:
        import rewardkit.serve  # noqa: F401
    except ImportError:
        pytest.skip("rewardkit.serve is not available")
    out = subprocess.run([sys.executable, "-m", "rewardkit.serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        pytest.skip(f"python -m rewardkit.serve --help failed: {out.stderr[-500:]}")
    return out.stdout


def test_end_to_end_against_the_real_server(serve_help, llama_dir, tmp_path):
    from rewardkit.models import RewardModelScorer

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    precision = "fp32" if "--precision" in serve_help else "auto"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("REWARDKIT_API_KEY", None)
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "rewardkit.serve", "--model", str(llama_dir), "--host",
                                 "127.0.0.1", "--port", str(port), "--api-key", "k3y", "--log-level", "warning",
                                 *(["--precision", precision] if precision != "auto" else [])],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    items = [ScoreItem([{"role": "user", "content": "What is the capital of France?"}],
                       [Response("Paris."), Response("The capital of France is Paris, of course."),
                        Response("No idea")]),
             ScoreItem([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
                       [Response("Hi!")])]
    scorer = RewardModelScorer.from_pretrained(llama_dir, precision=precision)
    local = scorer.score(items)
    encoded = scorer.encode(items[:1])[0]
    try:
        with RewardClient(f"http://127.0.0.1:{port}", api_key="k3y", timeout=60, batch_items=1) as rm:
            deadline = time.monotonic() + 90
            while not rm.ready():
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the server was not ready within 90 s"
                time.sleep(0.2)
            remote = rm.score(items)  # two requests (batch_items=1)
            one = rm.score_one("What is the capital of France?", ["Paris."])
            by_ids = rm.score_token_ids(encoded[0].input_ids[: encoded[0].response_start],
                                        [e.input_ids[e.response_start:] for e in encoded])
            described = rm.describe()
            with RewardClient(rm.base_url, api_key="wrong") as bad, pytest.raises(ClientError) as e:
                bad.score_one("p", ["a"])
            with pytest.raises(ClientError) as no_stats:  # the tiny model has no normalisation stats
                rm.score_one("p", ["a"], normalize=True)
    finally:
        proc.terminate()
        proc.wait(30)
    assert e.value.status in (401, 403)
    assert no_stats.value.status == 400 and "normalization" in no_stats.value.detail
    for r, lo in zip(remote, local, strict=True):
        assert r.rewards == pytest.approx(lo.rewards, abs=1e-4)
        assert r.response_tokens == lo.response_tokens
    assert one.rewards == pytest.approx(local[0].rewards[:1], abs=1e-4)
    assert by_ids.rewards == pytest.approx(local[0].rewards, abs=1e-4)
    assert described["kind"] == "remote" and described["model"]["precision"] == scorer.precision
