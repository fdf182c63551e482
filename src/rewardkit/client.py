"""A Python client for `rewardkit serve`: timeouts, retries with backoff, and batching of its own.

    from rewardkit.client import RewardClient

    with RewardClient("http://127.0.0.1:8000") as rm:          # api_key=... or $REWARDKIT_API_KEY
        rm.score_one("Say hi", ["Hi!", "Go away."]).rewards      # one prompt, its responses
        rm.score(records)                                       # any Scorer input: one result per item
        rm.score_token_ids([1, 2, 3], [[4, 5], [6]])            # the policy's own tokens

Naming, and why. The client *is* a Scorer (rewardkit.models.scorer.Scorer): `score(items)` takes a sequence of
ScoreItems (or PreferenceRecords, or dicts) and returns one ScoreResult per item, in order, so a remote model can
be passed to anything that takes a Scorer (evaluation, probes, `score_records_to_file`) without an adapter. The
one-prompt convenience is therefore `score_one(prompt, responses)`, not `score`. `score_items` is an alias of
`score`. `describe()` returns {"kind": "remote", "url": ..., "model": <the served scorer's own describe(), from
GET /info>, "server": <the server's limits from /info>} ("model" is None when the server does not say).
`AsyncRewardClient` has the same methods as coroutines (so it is not itself a Scorer, whose methods are
synchronous).

How requests are made. Every method is written once, as a generator that yields what it needs done (an HTTP
call, a sleep) and receives the outcome; the sync client runs it with httpx.Client and time.sleep, the async one
with httpx.AsyncClient and asyncio.sleep. Retry decisions, backoff arithmetic, request building and reply
validation are pure functions below, shared by both. `score` sends items in requests of at most `batch_items`
(the server batches across requests anyway; this bounds body size and per-request latency) and puts the results
back in input order; items with no responses get an empty result without a request, as the library's scorer
gives them.

Retries: connection failures (refused, reset, dropped before an answer) and HTTP 429/502/503/504 are retried up
to `retries` times, waiting `backoff * 2**attempt` with jitter, or the server's Retry-After when it sends one,
never longer than `max_backoff`. Other 4xx are the request's fault and raise ClientError at once, with the
server's reason. A request that gets no answer within `timeout` raises ServerError without a retry: the server
has it and is computing, and sending it again would only add load to a server that is already slow.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import math
import os
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from rewardkit.errors import RewardkitError
from rewardkit.models.scorer import ScoreItem, ScoreResult

__all__ = ["AsyncRewardClient", "ClientError", "RemoteError", "RemoteScoreResult", "RetryPolicy",
           "RewardClient", "ServerError", "backoff_delay", "parse_retry_after"]

log = logging.getLogger("rewardkit.client")

API_KEY_ENV = "REWARDKIT_API_KEY"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Failures before the server could have started on the request, or connections it dropped (a restart): safe to
# send again. A read timeout is not among them (see the module docstring).
RETRY_EXCEPTIONS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ReadError,
                    httpx.WriteError, httpx.RemoteProtocolError)
DESCRIPTION_KEYS = ("scorer", "model", "describe", "description")  # where a server may put its scorer's describe()
RESULT_FIELDS = ("rewards", "objectives", "weights", "step_rewards", "members", "uncertainty", "response_tokens",
                 "truncated", "normalized_rewards")


# -- errors ----------------------------------------------------------------------------------------------------

class RemoteError(RewardkitError):
    """A request the server did not answer with scores. status: the HTTP status (None when there was no answer);
    detail: the server's reason (its {"detail": ...}) or what went wrong on the way."""

    def __init__(self, message: str, *, status: int | None = None, detail: str | None = None,
                 url: str | None = None, attempts: int = 1):
        super().__init__(message)
        self.status, self.detail, self.url, self.attempts = status, detail, url, attempts


class ClientError(RemoteError):
    """The request is wrong (a 4xx other than 429, or input the client rejects before sending): fix it; sending
    it again will not help."""


class ServerError(RemoteError):
    """The server failed, stayed busy (429/503 after every retry), timed out, or could not be reached."""


# -- results ---------------------------------------------------------------------------------------------------

@dataclass
class RemoteScoreResult(ScoreResult):
    """A ScoreResult as the server sends it; `normalized_rewards` (rewards standardised with the stats stored
    with the model) is present when the request asked for normalisation."""

    normalized_rewards: list[float] | None = None


# -- pure functions: retries -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0

    def __post_init__(self):
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must be >= 0")


NO_RETRY = RetryPolicy(retries=0)


def backoff_delay(attempt: int, *, backoff: float, max_backoff: float, retry_after: float | None = None,
                  jitter: float = 0.0) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first), never more than max_backoff.

    Without a hint: `backoff * 2**attempt`, half of it fixed and half scaled by `jitter` (in [0, 1)), so that
    workers turned away together do not all come back together. With the server's Retry-After: that (the server
    knows its queue) plus up to one `backoff` of jitter, for the same reason.
    """
    if retry_after is not None:
        delay = retry_after + backoff * jitter
    else:
        base = backoff * 2.0 ** min(attempt, 60)
        delay = base / 2 + base / 2 * jitter
    return max(0.0, min(delay, max_backoff))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds ("3"; fractions accepted) or an HTTP date. None when absent
    or unreadable, so that a bad header falls back to plain backoff instead of failing the request."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class Reply:
    """What the server answered: the status, the headers that matter and the body (parsed JSON, else text)."""

    status: int
    body: Any
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


Outcome = Reply | Exception


def is_retryable(outcome: Outcome) -> bool:
    if isinstance(outcome, Reply):
        return outcome.status in RETRY_STATUSES
    return isinstance(outcome, RETRY_EXCEPTIONS)


def format_detail(body: Any) -> str:
    """The server's reason, as one line: FastAPI's {"detail": "..."} or its validation list of {"loc", "msg"}."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for d in detail:
            if isinstance(d, dict) and "msg" in d:
                loc = ".".join(str(p) for p in d.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {d['msg']}" if loc else str(d["msg"]))
            else:
                parts.append(str(d))
        detail = "; ".join(parts)
    text = str(detail).strip() if detail is not None else ""
    return " ".join(text.split())[:500]


def error_for(call: Call, outcome: Outcome, *, url: str, attempts: int, timeout: float | None) -> RemoteError:
    """The exception a failed call raises: ClientError for the request's own faults, ServerError otherwise."""
    where = f"{call.method} {url}{call.path}"
    tried = f" (after {attempts} attempts)" if attempts > 1 else ""
    if isinstance(outcome, httpx.TimeoutException) and not isinstance(outcome, RETRY_EXCEPTIONS):
        return ServerError(f"{where}: no answer within {timeout} s{tried}", detail="timeout", url=url,
                           attempts=attempts)
    if isinstance(outcome, Exception):
        reason = str(outcome) or type(outcome).__name__
        return ServerError(f"{where}: cannot reach the server: {reason}{tried}", detail=reason, url=url,
                           attempts=attempts)
    detail = format_detail(outcome.body)
    cls = ClientError if 400 <= outcome.status < 500 and outcome.status != 429 else ServerError
    message = f"{where}: HTTP {outcome.status}" + (f": {detail}" if detail else "") + tried
    return cls(message, status=outcome.status, detail=detail, url=url, attempts=attempts)


# -- pure functions: requests and replies ----------------------------------------------------------------------

def _bad_input(where: str, message: str) -> ClientError:
    return ClientError(f"{where}: {message}", detail=message)


def prompt_payload(prompt: Any, where: str = "prompt") -> str | list[dict[str, str]]:
    """A prompt as the server takes it: a string, or chat messages [{"role", "content"}]."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence) and prompt and all(isinstance(m, Mapping) for m in prompt):
        out = []
        for k, m in enumerate(prompt):
            role, content = m.get("role"), m.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise _bad_input(f"{where}[{k}]", "a message needs string 'role' and 'content'")
            out.append({"role": role, "content": content})
        return out
    raise _bad_input(where, "must be a string or a non-empty list of {role, content} messages")


def response_text(response: Any, where: str = "response") -> str:
    """A response's text: a string, a Response, or a {"content": ...} dict."""
    content = response.get("content") if isinstance(response, Mapping) else getattr(response, "content", response)
    if not isinstance(content, str):
        raise _bad_input(where, "must be a string (or a Response / {'content': str})")
    return content


def _token_ids(value: Any, where: str) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise _bad_input(where, "must be a list of non-negative integer token ids")
    return [int(t) for t in value]


def token_item_payload(prompt_ids: Any, response_ids: Any, where: str = "item") -> dict[str, Any]:
    if isinstance(response_ids, (str, bytes)) or not isinstance(response_ids, Sequence):
        raise _bad_input(f"{where}.response_ids", "must be a list of token-id lists")
    return {"prompt_ids": _token_ids(prompt_ids, f"{where}.prompt_ids"),
            "response_ids": [_token_ids(r, f"{where}.response_ids[{k}]") for k, r in enumerate(response_ids)]}


def item_payload(item: Any, where: str = "item") -> dict[str, Any]:
    """One item as the server takes it. Accepts a ScoreItem or PreferenceRecord (anything with .prompt and
    .responses), a {"prompt", "responses"} dict, or a {"prompt_ids", "response_ids"} dict."""
    if isinstance(item, Mapping):
        if "prompt_ids" in item or "response_ids" in item:
            return token_item_payload(item.get("prompt_ids"), item.get("response_ids"), where)
        prompt, responses = item.get("prompt"), item.get("responses")
    else:
        prompt, responses = getattr(item, "prompt", None), getattr(item, "responses", None)
    if isinstance(responses, (str, bytes)) or not isinstance(responses, Sequence):
        raise _bad_input(f"{where}.responses", "must be a list of responses")
    return {"prompt": prompt_payload(prompt, f"{where}.prompt"),
            "responses": [response_text(r, f"{where}.responses[{k}]") for k, r in enumerate(responses)]}


def response_count(payload: Mapping[str, Any]) -> int:
    return len(payload["responses"] if "responses" in payload else payload["response_ids"])


def request_chunks(payloads: Sequence[Mapping[str, Any]], batch_items: int) -> list[list[int]]:
    """Indices of the items to send, in requests of at most batch_items; items without responses are left out
    (they need no model, and the server rejects empty lists)."""
    todo = [i for i, p in enumerate(payloads) if response_count(p)]
    return [todo[k:k + batch_items] for k in range(0, len(todo), batch_items)]


def score_body(payloads: Sequence[Mapping[str, Any]], normalize: bool) -> dict[str, Any]:
    return {"items": list(payloads), "normalize": bool(normalize)}


def _numbers(value: Any, n: int | None) -> bool:
    return (isinstance(value, list) and (n is None or len(value) == n)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def parse_result(obj: Any, n_responses: int, normalize: bool, where: str) -> RemoteScoreResult:
    """One result object of the server's reply, checked against what was asked: a reward per response (so a
    reply that lost or mixed up responses fails loudly instead of shifting scores between them)."""
    if not isinstance(obj, dict) or not _numbers(obj.get("rewards"), n_responses):
        raise ServerError(f"{where}: the server's reply has no list of {n_responses} rewards",
                          detail="malformed reply")
    if normalize and not _numbers(obj.get("normalized_rewards"), n_responses):
        raise ServerError(f"{where}: normalisation was asked for but the reply has no normalized_rewards",
                          detail="malformed reply")
    return RemoteScoreResult(**{k: obj[k] for k in RESULT_FIELDS if obj.get(k) is not None})


def reply_items(body: Any, n: int, where: str) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list) or len(body["items"]) != n:
        raise ServerError(f"{where}: expected {n} results in the reply's 'items'", detail="malformed reply")
    return body["items"]


def server_description(body: Any) -> dict[str, Any] | None:
    """The model description in an /info (or /ready) answer, under whichever key the server uses for it."""
    if isinstance(body, dict):
        for key in DESCRIPTION_KEYS:
            if isinstance(body.get(key), dict):
                return body[key]
    return None


# -- the request flows, written once -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """An HTTP call for the driver to make."""

    method: str
    path: str
    body: Any = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Flow = Generator["Call | Sleep", "Outcome | None", Any]


class _ClientBase:
    """Configuration and the request flows. Subclasses supply `_run(flow)`, which performs what a flow yields."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float | None = 30.0,
                 retries: int = 3, backoff: float = 0.5, max_backoff: float = 8.0, batch_items: int = 64):
        if batch_items < 1:
            raise ValueError("batch_items must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.policy = RetryPolicy(retries, backoff, max_backoff)
        self.batch_items = batch_items
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._random = random.Random()
        self._description: dict[str, Any] | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}({self.base_url!r})"

    # -- public API (sync results here; coroutines on AsyncRewardClient) --------------------------------------
    def score(self, items: Sequence[ScoreItem | Mapping[str, Any]], *, normalize: bool = False
              ) -> list[RemoteScoreResult]:
        """The Scorer method: one result per item, in order (sent in requests of at most batch_items)."""
        return self._run(self._score_flow(items, normalize))

    score_items = score

    def score_one(self, prompt: str | Sequence[Mapping[str, str]], responses: Sequence[Any], *,
                  normalize: bool = False) -> RemoteScoreResult:
        """Scores for one prompt's responses; the prompt is a string or chat messages."""
        return self._run(self._first(self._score_flow([{"prompt": prompt, "responses": responses}], normalize)))

    def score_token_ids(self, prompt_ids: Sequence[int], response_ids: Sequence[Sequence[int]], *,
                        normalize: bool = False) -> RemoteScoreResult:
        """Scores for token ids in the reward model's vocabulary, so the policy's tokenization is used as is."""
        item = {"prompt_ids": prompt_ids, "response_ids": response_ids}
        return self._run(self._first(self._score_flow([item], normalize)))

    def health(self) -> dict[str, Any]:
        """The liveness answer (raises when the server cannot be reached)."""
        return self._run(self._get_flow("/health"))

    def ready(self) -> bool:
        """Whether the server has its model loaded and takes requests (False while it loads or is down)."""
        return self._run(self._ready_flow())

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.25) -> None:
        """Poll /ready until the server is ready; ServerError after `timeout` seconds."""
        return self._run(self._wait_ready_flow(timeout, interval))

    def describe(self) -> dict[str, Any]:
        """{"kind": "remote", "url", "model": the served scorer's describe() (None when the server does not say),
        "server": the server's limits}; asked once, then kept."""
        return self._run(self._describe_flow())

    # -- flows ----------------------------------------------------------------------------------------------
    def _exchange(self, call: Call, policy: RetryPolicy | None = None) -> Flow:
        """One call with retries; returns the successful Reply or raises the call's RemoteError."""
        policy = policy or self.policy
        for attempt in itertools.count():
            outcome = yield call
            if isinstance(outcome, Reply) and outcome.ok:
                return outcome
            if attempt < policy.retries and is_retryable(outcome):
                retry_after = parse_retry_after(outcome.retry_after) if isinstance(outcome, Reply) else None
                delay = backoff_delay(attempt, backoff=policy.backoff, max_backoff=policy.max_backoff,
                                      retry_after=retry_after, jitter=self._random.random())
                log.warning("%s %s%s: %s; retry %d/%d in %.2f s", call.method, self.base_url, call.path,
                            _short(outcome), attempt + 1, policy.retries, delay)
                yield Sleep(delay)
                continue
            raise error_for(call, outcome, url=self.base_url, attempts=attempt + 1, timeout=self.timeout)

    def _score_flow(self, items: Sequence[Any], normalize: bool) -> Flow:
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
            raise _bad_input("items", "must be a list of items (use score_one for a single prompt)")
        payloads = [item_payload(it, f"item {i}") for i, it in enumerate(items)]
        results: list[RemoteScoreResult] = [RemoteScoreResult(rewards=[]) for _ in payloads]
        for chunk in request_chunks(payloads, self.batch_items):
            where = f"POST {self.base_url}/score"
            reply = yield from self._exchange(Call("POST", "/score", score_body([payloads[i] for i in chunk],
                                                                                normalize)))
            for i, obj in zip(chunk, reply_items(reply.body, len(chunk), where)):
                results[i] = parse_result(obj, response_count(payloads[i]), normalize, f"{where}, item {i}")
        return results

    @staticmethod
    def _first(flow: Flow) -> Flow:
        return (yield from flow)[0]

    def _get_flow(self, path: str) -> Flow:
        return (yield from self._exchange(Call("GET", path), NO_RETRY)).body

    def _ready_flow(self) -> Flow:
        outcome = yield Call("GET", "/ready")
        if isinstance(outcome, Reply) and (outcome.ok or outcome.status == 503):
            return outcome.ok
        if isinstance(outcome, RETRY_EXCEPTIONS):
            return False
        raise error_for(Call("GET", "/ready"), outcome, url=self.base_url, attempts=1, timeout=self.timeout)

    def _wait_ready_flow(self, timeout: float, interval: float) -> Flow:
        deadline = time.monotonic() + timeout
        while not (yield from self._ready_flow()):
            if time.monotonic() >= deadline:
                raise ServerError(f"{self.base_url} was not ready within {timeout} s", detail="not ready",
                                  url=self.base_url)
            yield Sleep(interval)

    def _describe_flow(self) -> Flow:
        if self._description is None:
            body = None
            for path in ("/info", "/ready"):  # /info describes the scorer; /ready of other servers may
                try:
                    body = yield from self._get_flow(path)
                except RemoteError as e:
                    log.debug("describe: %s", e)
                    continue
                if server_description(body) is not None:
                    break
            model = server_description(body)
            if model is None:  # asked again next time
                return {"kind": "remote", "url": self.base_url, "model": None, "server": None}
            server = {k: v for k, v in body.items() if k not in DESCRIPTION_KEYS + ("status",)}
            self._description = {"kind": "remote", "url": self.base_url, "model": model, "server": server}
        return dict(self._description)


def _short(outcome: Outcome) -> str:
    if isinstance(outcome, Reply):
        return f"HTTP {outcome.status}"
    return f"{type(outcome).__name__}: {outcome}"


def _reply(response: httpx.Response) -> Reply:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Reply(response.status_code, body, response.headers.get("retry-after"))


def _http_kwargs(call: Call) -> dict[str, Any]:
    return {"json": call.body} if call.body is not None else {}


class RewardClient(_ClientBase):
    """A synchronous client for `rewardkit serve`, and a Scorer (see the module docstring). Safe to share between
    threads (one connection pool)."""

    def __init__(self, base_url: str, **kwargs):
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout, headers=self._headers)

    def _run(self, flow: Flow) -> Any:
        return _drive(flow, self._perform, time.sleep)

    def _perform(self, call: Call) -> Outcome:
        try:
            return _reply(self._http.request(call.method, call.path, **_http_kwargs(call)))
        except httpx.TransportError as e:
            return e

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drive(flow: Flow, perform: Callable[[Call], Outcome], sleep: Callable[[float], Any]) -> Any:
    """Run a flow to its result with blocking IO."""
    outcome: Outcome | None = None
    try:
        while True:
            action = flow.send(outcome)
            if isinstance(action, Sleep):
                sleep(action.seconds)
                outcome = None
            else:
                outcome = perform(action)
    except StopIteration as done:
        return done.value


async def _adrive(flow: Flow, perform: Callable[[Call], Any], sleep: Callable[[float], Any]) -> Any:
    """Run a flow to its result with asyncio IO (the same loop as _drive, awaiting)."""
    outcome: Outcome | None = None
    try:
        while True:
            action = flow.send(outcome)
            if isinstance(action, Sleep):
                await sleep(action.seconds)
                outcome = None
            else:
                outcome = await perform(action)
    except StopIteration as done:
        return done.value


class AsyncRewardClient(_ClientBase):
    """The same client for asyncio: every method of RewardClient, awaited (`await client.score(items)`)."""

    def __init__(self, base_url: str, **kwargs):
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, headers=self._headers)

    async def _run(self, flow: Flow) -> Any:
        return await _adrive(flow, self._perform, asyncio.sleep)

    async def _perform(self, call: Call) -> Outcome:
        try:
            return _reply(await self._http.request(call.method, call.path, **_http_kwargs(call)))
        except httpx.TransportError as e:
            return e

    async def close(self) -> None:
        await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
