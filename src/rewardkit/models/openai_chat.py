"""One OpenAI-compatible `/chat/completions` endpoint, with retries: what the HTTP judge and policy sampling share.

Any server that speaks the OpenAI chat API fits (OpenAI, vLLM, SGLang, llama.cpp server, ...). A request is one
POST of a JSON body; rate limits, timeouts and server-side failures (RETRY_STATUSES, refused or dropped
connections) are retried with exponential backoff, `backoff * 2**attempt` seconds capped at `max_backoff`, or
the server's Retry-After when it sends one. Other HTTP errors, and retries that run out, raise the caller's
error class with the status and the start of the body. The API key comes from `api_key` or OPENAI_API_KEY and
appears only in the Authorization header (never in a message or `describe()`).
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from rewardkit.errors import RewardkitError

#: Statuses worth retrying: rate limits, timeouts and server-side failures.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointError(RewardkitError):
    """An OpenAI-compatible endpoint that fails, or answers in a form rewardkit cannot read."""


class ChatEndpoint:
    """POSTs to {base_url}/chat/completions and returns the decoded JSON reply.

    what: how errors name the endpoint ("judge endpoint", "policy endpoint"); error: the EndpointError subclass
    they raise. `requests` and `retries` count every attempt and every retry made so far.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0, max_retries: int = 4,
                 backoff: float = 1.0, max_backoff: float = 30.0, what: str = "endpoint",
                 error: type[EndpointError] = EndpointError):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise RewardkitError(f"{what} base_url must start with http:// or https://, got {base_url!r}")
        if max_retries < 0 or backoff < 0 or max_backoff < 0:
            raise RewardkitError(f"{what}: max_retries, backoff and max_backoff must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or None
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.what, self.error = what, error
        self.requests = 0
        self.retries = 0

    def __repr__(self) -> str:  # never show the key
        return f"ChatEndpoint(url={self.url!r})"

    @property
    def has_api_key(self) -> bool:
        return bool(self._api_key)

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The decoded JSON reply, after up to `max_retries` retries of retryable failures."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        failure = ""
        for attempt in range(self.max_retries + 1):
            self.requests += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    payload = reply.read()
            except urllib.error.HTTPError as e:
                snippet = self.snippet(e.read())
                if e.code not in RETRY_STATUSES:
                    raise self.error(f"{self.what} {self.url} returned HTTP {e.code}: {snippet}") from None
                failure = f"HTTP {e.code}: {snippet}"
                delay = retry_after(e.headers)
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
                failure = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                delay = None
            else:
                try:
                    return json.loads(payload)
                except json.JSONDecodeError:
                    raise self.error(f"{self.what} {self.url} returned a body that is not JSON: "
                                     f"{self.snippet(payload)}") from None
            if attempt < self.max_retries:
                self.retries += 1
                time.sleep(backoff_seconds(attempt, self.backoff, self.max_backoff, delay))
        raise self.error(f"{self.what} {self.url} failed after {self.max_retries + 1} attempt(s); last: {failure}")

    def snippet(self, raw: bytes, limit: int = 300) -> str:
        """The start of a reply body on one line, the API key masked."""
        text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:limit] + ("..." if len(text) > limit else "")

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "api_key": "set" if self._api_key else "unset", "timeout": self.timeout,
                "max_retries": self.max_retries, "requests": self.requests, "retries": self.retries}


def backoff_seconds(attempt: int, backoff: float, max_backoff: float, retry_after: float | None = None) -> float:
    """Seconds before retry number `attempt` (0 for the first): the server's Retry-After when given, else
    `backoff * 2**attempt`; never more than `max_backoff`."""
    return min(max_backoff, retry_after if retry_after is not None else backoff * 2.0 ** min(attempt, 60))


def retry_after(headers) -> float | None:
    """A Retry-After header in seconds; None when absent or an HTTP date (the backoff schedule applies)."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
