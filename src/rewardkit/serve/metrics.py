"""What an operator sees: Prometheus metrics and one structured (JSON) log line per request.

Each app gets its own registry, so several apps in one process (tests, replicas behind one supervisor) never
collide on metric names.
"""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("rewardkit.serve")

#: Paths that get their own metric label; anything else is "other", so random URLs cannot blow up cardinality.
KNOWN_PATHS = frozenset({"/score", "/get_reward", "/health", "/ready", "/metrics", "/docs", "/openapi.json", "/info"})

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


class Metrics:
    """The server's Prometheus metrics; also the batcher's observer (see batcher.BatchObserver)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rewardkit_requests", "HTTP requests by path and status code.",
                                ["path", "status"], registry=r)
        self.latency = Histogram("rewardkit_request_latency_seconds", "Request latency, end to end.", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.scored = Counter("rewardkit_scored_responses", "Responses scored.", registry=r)
        self.depth = Gauge("rewardkit_queue_depth", "Requests waiting for a batch.", registry=r)
        self.wait = Histogram("rewardkit_queue_wait_seconds", "Time a request waits before its batch runs.",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.batch_requests = Histogram("rewardkit_batch_requests", "Requests per scorer call (batch size).",
                                        buckets=SIZE_BUCKETS, registry=r)
        self.batch_sequences = Histogram("rewardkit_batch_sequences", "Sequences (responses) per scorer call.",
                                         buckets=SIZE_BUCKETS + (1024, 2048), registry=r)
        self.batch_tokens = Histogram("rewardkit_batch_tokens", "Tokens per scorer call (shared prefixes "
                                      "counted once).", buckets=TOKEN_BUCKETS, registry=r)
        self.batch_seconds = Histogram("rewardkit_batch_latency_seconds", "Time of one scorer call.",
                                       buckets=LATENCY_BUCKETS, registry=r)

    # -- batcher observer ------------------------------------------------------------------------------------
    def queue_depth(self, depth: int) -> None:
        self.depth.set(depth)

    def queue_wait(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def batch(self, requests: int, sequences: int, tokens: int, seconds: float) -> None:
        self.batch_requests.observe(requests)
        self.batch_sequences.observe(sequences)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        self.scored.inc(sequences)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestObserver:
    """ASGI middleware (outermost): times every request, counts it by status and logs one JSON line.

    Handlers add `items` and `responses` to `request.state`; they appear in the log line.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        scope.setdefault("state", {})

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            label = path if path in KNOWN_PATHS else "other"
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.latency.labels(label).observe(seconds)
            state = scope.get("state") or {}
            line = {"event": "request", "method": scope.get("method"), "path": path, "status": status,
                    "latency_ms": round(seconds * 1000, 2), "items": state.get("items"),
                    "responses": state.get("responses")}
            client = scope.get("client")
            if client:
                line["client"] = client[0]
            if "error" in state:
                line["error"] = state["error"]
            log.info(json.dumps(line))
