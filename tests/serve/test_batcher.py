"""The dynamic batcher on its own: waiting requests become one call, the token budget splits batches, each
request gets exactly its own result, one bad request cannot fail the others, and the queue is bounded."""

import asyncio
import threading

import pytest

from rewardkit.serve.batcher import BatcherClosed, DynamicBatcher, QueueFull


class Recorder:
    """run_batch that records each call's payloads and answers each payload with its own transformation."""

    def __init__(self, fail_on=None, gate: threading.Event | None = None):
        self.calls: list[list] = []
        self.fail_on = fail_on
        self.gate = gate

    def __call__(self, payloads):
        self.calls.append(list(payloads))
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_on is not None and self.fail_on in payloads:
            raise ValueError(f"bad payload {self.fail_on}")
        return [p * 10 for p in payloads]


def run(coro):
    return asyncio.run(coro)


def test_requests_that_wait_together_are_one_call_and_get_their_own_results():
    async def main():
        rec = Recorder()
        b = DynamicBatcher(rec, max_delay_ms=50, max_batch_tokens=1000)
        b.start()
        results = await asyncio.gather(*(b.submit(i, tokens=10) for i in range(20)))
        await b.close()
        return rec, results

    rec, results = run(main())
    assert results == [i * 10 for i in range(20)]
    assert rec.calls == [list(range(20))]


def test_token_budget_cuts_batches_in_arrival_order():
    async def main():
        rec = Recorder()
        b = DynamicBatcher(rec, max_delay_ms=50, max_batch_tokens=100)
        b.start()
        results = await asyncio.gather(*(b.submit(i, tokens=30) for i in range(7)),
                                       b.submit(99, tokens=500))  # over the budget alone: a batch of its own
        await b.close()
        return rec, results

    rec, results = run(main())
    assert results == [i * 10 for i in range(7)] + [990]
    assert rec.calls == [[0, 1, 2], [3, 4, 5], [6], [99]]


def test_a_failing_request_fails_alone():
    async def main():
        rec = Recorder(fail_on=3)
        b = DynamicBatcher(rec, max_delay_ms=50)
        b.start()
        results = await asyncio.gather(*(b.submit(i, tokens=1) for i in range(6)), return_exceptions=True)
        await b.close()
        return results

    results = run(main())
    assert isinstance(results[3], ValueError) and "bad payload 3" in str(results[3])
    assert [r for i, r in enumerate(results) if i != 3] == [0, 10, 20, 40, 50]


def test_full_queue_raises_with_retry_after_and_cancelled_requests_leave_it():
    async def main():
        gate = threading.Event()
        rec = Recorder(gate=gate)
        b = DynamicBatcher(rec, max_delay_ms=0, max_queue=2)
        b.start()
        first = asyncio.create_task(b.submit("a", tokens=1))
        while not rec.calls:  # "a" is being scored, held by the gate
            await asyncio.sleep(0.005)
        waiting = [asyncio.create_task(b.submit(x, tokens=1)) for x in ("b", "c")]
        await asyncio.sleep(0.01)
        assert b.depth == 2
        with pytest.raises(QueueFull) as full:
            await b.submit("d", tokens=1)
        assert full.value.retry_after >= 1
        waiting[0].cancel()  # a client that gave up: out of the queue, never scored
        await asyncio.sleep(0.01)
        assert b.depth == 1
        gate.set()
        results = await asyncio.gather(first, waiting[1])
        await b.close()
        with pytest.raises(BatcherClosed):
            await b.submit("e", tokens=1)
        return rec, results

    rec, results = run(main())
    assert results == ["a" * 10, "c" * 10]
    assert rec.calls == [["a"], ["c"]]


def test_close_finishes_queued_work():
    async def main():
        rec = Recorder()
        b = DynamicBatcher(rec, max_delay_ms=10_000)  # would wait 10 s, but closing does not wait
        b.start()
        tasks = [asyncio.create_task(b.submit(i, tokens=1)) for i in range(3)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(b.close(), 5)
        return [t.result() for t in tasks]

    assert run(main()) == [0, 10, 20]


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        DynamicBatcher(lambda p: p, max_queue=0)
    with pytest.raises(ValueError):
        DynamicBatcher(lambda p: p, max_batch_tokens=0)


def test_with_two_workers_two_batches_run_at_once_and_each_request_gets_its_own():
    """A gated run_batch holds the first batch; the second still starts (in the other worker), and the third
    waits for a free worker: no timing assumptions, only who has entered."""
    entered = threading.Semaphore(0)
    gate = threading.Event()
    calls = []

    def run_batch(payloads):
        calls.append(list(payloads))
        entered.release()
        gate.wait(10)
        return [p * 10 for p in payloads]

    async def main():
        b = DynamicBatcher(run_batch, max_delay_ms=0, max_batch_tokens=10, workers=2)
        b.start()
        tasks = [asyncio.ensure_future(b.submit(i, tokens=10)) for i in range(3)]  # one batch each (budget)
        for _ in range(2):
            while not entered.acquire(blocking=False):
                await asyncio.sleep(0.01)
        running, waiting = len(calls), b.depth
        gate.set()
        results = await asyncio.gather(*tasks)
        await b.close()
        return running, waiting, results

    running, waiting, results = run(main())
    assert running == 2 and waiting == 1
    assert results == [0, 10, 20] and sorted(map(tuple, calls)) == [(0,), (1,), (2,)]


def test_workers_must_be_positive():
    with pytest.raises(ValueError):
        DynamicBatcher(lambda p: p, workers=0)


def test_auto_batch_workers(rm_scorer, llama_dir):
    import torch

    from rewardkit.models import FunctionScorer, RewardModelScorer
    from rewardkit.serve.server import auto_batch_workers

    assert auto_batch_workers(rm_scorer) == (2 if torch.get_num_threads() >= 2 else 1)  # fp32 on a CPU
    assert auto_batch_workers(RewardModelScorer.from_pretrained(llama_dir, precision="bf16")) == 1
    assert auto_batch_workers(FunctionScorer(lambda prompt, response: 0.0, name="zero")) == 1
