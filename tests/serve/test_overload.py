"""Overload on a real socket: a full queue answers 429 with Retry-After, nothing is lost or mixed up, and a
request that waits too long gets 504. The scorer is held shut by a gate, so the queue's state is known
exactly when the requests arrive (no timing assumptions)."""

import asyncio
import time

import httpx

from rewardkit.serve import create_app
from serve_helpers import GatedScorer, echo_request, server_in_thread

MAX_QUEUE = 5
N_REQUESTS = 48


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_full_queue_answers_429_and_every_other_request_gets_its_own_scores():
    scorer = GatedScorer()
    app = create_app(scorer, max_queue=MAX_QUEUE, max_delay_ms=1)
    batcher = lambda: app.state.server.batcher  # noqa: E731
    with server_in_thread(app) as url:
        async def storm():
            async with httpx.AsyncClient(base_url=url, timeout=30,
                                         limits=httpx.Limits(max_connections=N_REQUESTS)) as client:
                tasks = [asyncio.create_task(client.post("/score", json=echo_request(i)[0]))
                         for i in range(N_REQUESTS)]
                # The first batch is stuck in the scorer and `waiting` requests sit in the queue; every other
                # request was refused. (How many made the first batch depends on how fast they arrived: the
                # queue may fill before the worker takes its first batch.)
                await asyncio.to_thread(scorer.entered.wait, 20)
                first_batch = scorer.calls[0]

                def settled():
                    waiting = batcher().depth
                    return sum(t.done() for t in tasks) == N_REQUESTS - first_batch - waiting

                await asyncio.to_thread(wait_until, settled)
                waiting = batcher().depth
                scorer.gate.set()
                return first_batch, waiting, await asyncio.gather(*tasks)

        first_batch, waiting, answers = asyncio.run(storm())

    assert waiting <= MAX_QUEUE  # never more waiting than the queue holds
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) == first_batch + waiting
    assert statuses.count(429) == N_REQUESTS - first_batch - waiting > 0
    for i, r in enumerate(answers):
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert "queue is full" in r.json()["detail"]
        else:
            assert r.json()["rewards"] == echo_request(i)[1], f"request {i} got another request's scores"
    assert sum(scorer.calls) == first_batch + waiting  # nothing scored twice, nothing lost


def test_many_concurrent_requests_are_batched_and_answered_correctly():
    """With the gate open and a queue big enough, every request is answered with its own scores, and the
    requests that waited together were scored in shared calls."""
    scorer = GatedScorer()
    app = create_app(scorer, max_queue=256, max_delay_ms=2)
    with server_in_thread(app) as url:
        async def storm():
            async with httpx.AsyncClient(base_url=url, timeout=30,
                                         limits=httpx.Limits(max_connections=64)) as client:
                tasks = [asyncio.create_task(client.post("/score", json=echo_request(i, n=1 + i % 4)[0]))
                         for i in range(64)]
                await asyncio.to_thread(scorer.entered.wait, 20)
                await asyncio.to_thread(wait_until, lambda: sum(scorer.calls) + app.state.server.batcher.depth
                                        == 64)
                scorer.gate.set()
                return await asyncio.gather(*tasks)

        answers = asyncio.run(storm())
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        assert r.json()["rewards"] == echo_request(i, n=1 + i % 4)[1]
    assert sum(scorer.calls) == 64
    assert len(scorer.calls) < 64  # requests that queued behind the gate shared scorer calls


def test_request_timeout_answers_504_and_leaves_the_queue():
    scorer = GatedScorer()
    app = create_app(scorer, request_timeout_s=0.3, max_delay_ms=1)
    with server_in_thread(app) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            first = client.post("/score", json=echo_request(0)[0])  # stuck in the scorer
            assert first.status_code == 504 and "request timeout" in first.json()["detail"]
            queued = client.post("/score", json=echo_request(1)[0])  # stuck in the queue
            assert queued.status_code == 504
            assert app.state.server.batcher.depth == 0  # the timed-out request left the queue
            scorer.gate.set()
            ok = client.post("/score", json=echo_request(2)[0])
            assert ok.status_code == 200 and ok.json()["rewards"] == echo_request(2)[1]
    assert scorer.calls == [1, 1]  # the request that timed out in the queue was never scored
