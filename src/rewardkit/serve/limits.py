"""The server's guards, as plain ASGI middleware so they run before any parsing: an API key and a body limit.

They answer with the same JSON error shape as the routes ({"detail": reason}).
"""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Paths a load balancer or orchestrator probes without credentials.
OPEN_PATHS = frozenset({"/health", "/ready"})

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class ApiKeyGuard:
    """Every path except OPEN_PATHS needs `Authorization: Bearer KEY` or `X-API-Key: KEY`.

    The key is compared in constant time (hmac.compare_digest), so response timing does not reveal how much
    of a guess was right.
    """

    def __init__(self, app: ASGIApp, api_key: str):
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = self._presented(scope)
        if given is None:
            reason = "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
        elif not hmac.compare_digest(given, self.key):
            reason = "wrong API key"
        else:
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"detail": reason}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    @staticmethod
    def _presented(scope: Scope) -> bytes | None:
        auth = _header(scope, b"authorization")
        if auth is not None:
            scheme, _, token = auth.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        key = _header(scope, b"x-api-key")
        return key.strip() if key is not None and key.strip() else None


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413: at once when Content-Length says so, and while
    reading when it does not (chunked uploads, or a Content-Length that lies). The body is read here, up to
    the limit, and handed on whole."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        if max_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._refuse(scope, receive, send, 400, "Content-Length is not a number")
                return
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, 413, self._too_large(f"{size} bytes"))
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, 413, self._too_large(f"over {self.max_bytes} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, what: str) -> str:
        return (f"request body is {what}, over the limit of {self.max_bytes} bytes; "
                f"split the request into smaller ones")

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, reason: str) -> None:
        await JSONResponse({"detail": reason}, status_code=status, headers={"Connection": "close"})(
            scope, receive, send)
