"""Dynamic batching: many concurrent requests, one Scorer call.

A reward model's cost is its forward passes, and one pass over many sequences costs far less than many
passes over one each. So requests wait in a bounded queue for a few milliseconds (`max_delay_ms`, counted
from the oldest waiting request) or until `max_batch_tokens` worth of sequences are waiting, and a single
worker hands them all to the scorer in ONE call, where the batch planner groups them by length, shares each
prompt between its responses and cuts forward passes by token budget. Each request's future then gets
exactly its own slice of the results.

The call runs in a dedicated thread, so the event loop keeps accepting, validating and answering requests
while the model computes. With `workers` > 1, that many batches run at once, each in its own thread (the next
one gathers while the others compute): on a small CPU two batches with one PyTorch thread each finish sooner
than one batch split over two threads, which wait for each other at every operation. The queue is bounded: when `max_queue` requests wait, `submit` raises QueueFull at
once (the server answers 429 with Retry-After) instead of letting latency and memory grow without bound.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol


class QueueFull(Exception):
    """The queue holds `max_queue` requests; try again in `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class BatcherClosed(Exception):
    """The server is shutting down and takes no new work."""


class BatchObserver(Protocol):
    """Where the batcher reports what it does (Prometheus metrics in the server)."""

    def queue_depth(self, depth: int) -> None: ...

    def batch(self, requests: int, sequences: int, tokens: int, seconds: float) -> None: ...

    def queue_wait(self, seconds: float) -> None: ...


@dataclass
class _Job:
    payload: Any
    tokens: int
    sequences: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


def check_options(*, max_batch_tokens: int, max_delay_ms: float, max_queue: int, workers: int = 1) -> None:
    if max_batch_tokens < 1 or max_queue < 1 or max_delay_ms < 0 or workers < 1:
        raise ValueError("max_batch_tokens, max_queue and workers must be >= 1 and max_delay_ms >= 0")


class DynamicBatcher:
    """Gathers submitted payloads into batches for `run_batch`.

    run_batch(payloads) -> results: called in the worker thread with the payloads of one batch (in arrival
      order) and must return one result per payload, in the same order. If it raises on a batch of several
      requests, each request is retried alone, so one bad request cannot fail the requests batched with it.
      With workers > 1 it is called from several threads at once, so it must be thread-safe.
    """

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch_tokens: int = 16384,
                 max_delay_ms: float = 5.0, max_queue: int = 256, workers: int = 1,
                 observer: BatchObserver | None = None):
        check_options(max_batch_tokens=max_batch_tokens, max_delay_ms=max_delay_ms, max_queue=max_queue,
                      workers=workers)
        self.run_batch = run_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_delay = max_delay_ms / 1000
        self.max_queue = max_queue
        self.workers = workers
        self.observer = observer
        self._queue: collections.deque[_Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rewardkit-score")
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()
        self._worker: asyncio.Task | None = None
        self._closing = False
        self._batch_seconds = 0.05  # running means, for Retry-After
        self._requests_per_batch = 1.0

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (call from the running event loop)."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="rewardkit-batcher")

    async def close(self) -> None:
        """Stop taking work, finish everything already queued or running, then stop the worker."""
        self._closing = True
        self._arrived.set()
        if self._worker is not None:
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch being computed)."""
        return len(self._queue)

    # -- submitting ------------------------------------------------------------------------------------------
    async def submit(self, payload: Any, *, tokens: int, sequences: int = 1) -> Any:
        """Queue one request's payload and wait for its own result. Cancelling the wait (a timeout, a client
        that went away) takes the request out of the queue if it has not started."""
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(self.retry_after())
        job = _Job(payload, max(1, tokens), sequences, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._report_depth()
        self._arrived.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            if job in self._queue:
                self._queue.remove(job)
                self._report_depth()
            raise

    def retry_after(self) -> int:
        """Whole seconds until the queue has likely drained: batches ahead x mean batch time / workers (at
        least 1)."""
        batches_ahead = len(self._queue) / max(self._requests_per_batch, 1.0) + 1
        return max(1, min(60, math.ceil(batches_ahead * self._batch_seconds / self.workers)))

    # -- the worker ------------------------------------------------------------------------------------------
    async def _work(self) -> None:
        """Gather a batch whenever a worker is free, and run it; on closing, finish what is queued and running."""
        self._slots = asyncio.Semaphore(self.workers)
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                await self._slots.acquire()  # while every worker computes, requests keep gathering
                if not self._queue:  # what waited timed out or was cancelled meanwhile
                    self._slots.release()
                    continue
                await self._wait_for_batch()
                batch = self._take_batch()
                if not batch:
                    self._slots.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._run_and_answer(batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)

    async def _run_and_answer(self, batch: list[_Job]) -> None:
        try:
            start = time.monotonic()
            for job in batch:
                self._observe("queue_wait", start - job.enqueued)
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run,
                                                                       [j.payload for j in batch])
            seconds = time.monotonic() - start
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
            self._requests_per_batch = 0.8 * self._requests_per_batch + 0.2 * len(batch)
            self._observe("batch", len(batch), sum(j.sequences for j in batch), sum(j.tokens for j in batch),
                          seconds)
            for job, result in zip(batch, results):
                if job.future.done():  # timed out or cancelled meanwhile
                    continue
                if isinstance(result, _Failed):
                    job.future.set_exception(result.error)
                else:
                    job.future.set_result(result)
        finally:
            self._slots.release()

    async def _wait_for_batch(self) -> None:
        """Wait until the oldest request has waited `max_delay`, the token budget is full, or we are closing."""
        deadline = self._queue[0].enqueued + self.max_delay
        while not self._closing and self._queue:
            if sum(j.tokens for j in self._queue) >= self.max_batch_tokens:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[_Job]:
        """Jobs from the front of the queue, in order, within the token budget (a larger job goes alone). With
        several workers a batch takes at most its share (1 / workers) of what waits, so a burst is split between
        them instead of one worker computing most of it while the others idle."""
        batch: list[_Job] = []
        tokens = 0
        budget = self.max_batch_tokens
        if self.workers > 1:
            waiting = sum(j.tokens for j in self._queue if not j.future.done())
            budget = min(budget, math.ceil(waiting / self.workers))
        while self._queue:
            job = self._queue[0]
            if job.future.done():
                self._queue.popleft()
                continue
            if batch and tokens + job.tokens > budget:
                break
            batch.append(self._queue.popleft())
            tokens += job.tokens
        self._report_depth()
        return batch

    def _run(self, payloads: list[Any]) -> list[Any]:
        """In the worker thread: one call for the whole batch; on failure, each payload alone."""
        try:
            results = list(self.run_batch(payloads))
            if len(results) != len(payloads):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(payloads)} requests")
            return results
        except Exception as e:
            if len(payloads) == 1:
                return [_Failed(e)]
        out = []
        for p in payloads:
            try:
                out.append(self.run_batch([p])[0])
            except Exception as e:
                out.append(_Failed(e))
        return out

    def _report_depth(self) -> None:
        self._observe("queue_depth", len(self._queue))

    def _observe(self, what: str, *args) -> None:
        if self.observer is not None:
            getattr(self.observer, what)(*args)


@dataclass
class _Failed:
    error: BaseException
