"""The reward server: a FastAPI app that serves any Scorer to many concurrent clients.

    POST /score       rewards for one prompt's responses, or for `items` (text, chat messages or token ids)
    POST /get_reward  OpenRLHF's remote reward model protocol (openrlhf.py): texts the policy rendered itself
    GET  /health      liveness: 200 while the process runs
    GET  /ready       readiness: 200 once the model is loaded, 503 while loading or shutting down
    GET  /metrics     Prometheus metrics
    GET  /info        what is served: the scorer's description and the server's limits
    GET  /docs, /openapi.json

Requests are validated (schemas.py), tokenized off the event loop (backend.py), then batched with other
requests into one scorer call (batcher.py). Guards (limits.py) and observability (metrics.py) wrap it all
as ASGI middleware. Every bad request is a 4xx with {"detail": reason}.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from rewardkit.errors import RewardkitError, first_line
from rewardkit.models.scorer import Scorer
from rewardkit.serve import openrlhf
from rewardkit.serve.backend import Backend, Job, Overlength, RequestError
from rewardkit.serve.batcher import BatcherClosed, DynamicBatcher, QueueFull, check_options
from rewardkit.serve.limits import DEFAULT_MAX_BODY_BYTES, ApiKeyGuard, BodyLimit
from rewardkit.serve.metrics import Metrics, RequestObserver
from rewardkit.serve.schemas import BatchScores, ErrorDetail, ItemScores, ScoreRequest, validation_detail, \
    validation_errors

log = logging.getLogger("rewardkit.serve")

ERRORS = {code: {"model": ErrorDetail, "description": why} for code, why in {
    400: "The model cannot do what was asked (token ids, normalization).",
    401: "Missing or wrong API key.",
    413: "Request body over the limit.",
    422: "Malformed request, a token id outside the vocabulary, a query that does not start with its prompt, or "
         "(with overlength=reject) a sequence over max_length.",
    429: "The queue is full; retry after the Retry-After header's seconds.",
    503: "The model is loading or the server is shutting down.",
    504: "Not scored within the request timeout.",
}.items()}


@dataclass
class ServerState:
    """Everything a request handler needs, kept on `app.state.server`."""

    backend_options: dict[str, Any]
    batcher_options: dict[str, Any]
    request_timeout_s: float
    openrlhf_normalize: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    backend: Backend | None = None
    batcher: DynamicBatcher | None = None
    load_error: str | None = None
    shutting_down: bool = False
    encoder: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewardkit-encode"))

    def run_batch(self, payloads: list) -> list:
        return self.backend.run(payloads)


def create_app(scorer: Scorer | Callable[[], Scorer], *, api_key: str | None = None,
               max_batch_tokens: int = 16384, max_delay_ms: float = 5.0, max_queue: int = 256,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_length: int | None = None,
               overlength: Overlength = "truncate", request_timeout_s: float = 30.0,
               openrlhf_normalize: bool = False, batch_workers: int = 1) -> FastAPI:
    """The reward server for `scorer`.

    scorer: a Scorer, or a function that loads one; a function runs in the background when the app starts,
      so /health answers at once and /ready turns 200 when the model is loaded.
    api_key: when set, every path but /health and /ready needs it (Bearer token or X-API-Key).
    max_batch_tokens, max_delay_ms: a batch is gathered until this many tokens wait or the oldest request
      has waited this long, then scored in one call.
    max_queue: requests that may wait; more get 429 with Retry-After.
    max_body_bytes: larger request bodies get 413.
    overlength, max_length: see backend.Backend (default: truncate sequences over the model's max length as
      the library and `rewardkit score` do, and report the cut in `truncated`; "reject" answers 422).
    request_timeout_s: a request not answered in this time gets 504.
    batch_workers: batches scored at once, each in its own thread (the scorer must then be thread-safe; see
      server.auto_batch_workers, which `rewardkit serve` uses).
    openrlhf_normalize: /get_reward answers (reward - mean) / std with the model's stored stats, as OpenRLHF's
      serve_rm does with --reward.normalize_enable (a request may still say "normalize": false).
    """
    state = ServerState(
        backend_options={"max_length": max_length, "overlength": overlength},
        batcher_options={"max_batch_tokens": max_batch_tokens, "max_delay_ms": max_delay_ms,
                         "max_queue": max_queue, "workers": batch_workers},
        request_timeout_s=request_timeout_s, openrlhf_normalize=openrlhf_normalize)
    check_options(**state.batcher_options)  # now, not at startup
    loader = scorer if callable(scorer) and not hasattr(scorer, "score") else None
    if loader is None:
        if not callable(getattr(scorer, "score", None)):
            raise TypeError("scorer must be a Scorer or a function that returns one")
        state.backend = _backend(scorer, state)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher = DynamicBatcher(state.run_batch, observer=state.metrics, **state.batcher_options)
        state.batcher.start()
        loading = asyncio.create_task(_load(state, loader)) if loader is not None else None
        try:
            yield
        finally:
            state.shutting_down = True
            if loading is not None and not loading.done():
                loading.cancel()
            await state.batcher.close()  # in-flight and queued requests finish first
            state.encoder.shutdown(wait=True)

    app = FastAPI(title="rewardkit reward server", version=_version(), lifespan=lifespan,
                  description="Rewards for (prompt, responses) from a reward model, with dynamic batching.")
    app.state.server = state
    _add_routes(app, state)
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if api_key:
        app.add_middleware(ApiKeyGuard, api_key=api_key)
    app.add_middleware(RequestObserver, metrics=state.metrics)  # outermost: sees every answer, 401/413 too
    return app


async def _load(state: ServerState, loader: Callable[[], Scorer]) -> None:
    try:
        scorer = await asyncio.to_thread(loader)
        state.backend = _backend(scorer, state)
        log.info('{"event": "ready"}')
    except asyncio.CancelledError:
        raise
    except Exception as e:
        state.load_error = first_line(e)
        log.exception("loading the model failed")


def _backend(scorer: Scorer, state: ServerState) -> Backend:
    backend = Backend(scorer, **state.backend_options)
    if state.openrlhf_normalize and backend.normalization is None:
        raise RewardkitError("--openrlhf-normalize: this model has no stored normalization stats (mean and std "
                             "in rewardkit.json's 'normalization')")
    return backend


def _add_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: 200 once the model is loaded", responses={503: {"model": ErrorDetail}})
    async def ready() -> JSONResponse:
        if state.shutting_down:
            return JSONResponse({"status": "shutting down", "detail": "the server is shutting down"}, 503)
        if state.load_error:
            return JSONResponse({"status": "failed", "detail": f"loading the model failed: {state.load_error}"},
                                503)
        if state.backend is None:
            return JSONResponse({"status": "loading", "detail": "the model is loading"}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/info", summary="What is served and the server's limits", responses={503: {"model": ErrorDetail}})
    async def info() -> dict[str, Any]:
        backend = _backend_or_503(state)
        return {"scorer": backend.describe(), "request_timeout_s": state.request_timeout_s,
                **state.batcher_options}

    @app.post("/score", summary="Score responses", response_model=Union[ItemScores, BatchScores],
              responses=ERRORS)
    async def score(body: ScoreRequest, request: Request) -> JSONResponse:
        """Rewards for one prompt's responses, or `{"items": [...]}` for several prompts (answered in order).

        Concurrent requests are batched into one model call; each gets exactly its own scores.
        """
        items = body.item_list()
        request.state.items = len(items)
        request.state.responses = sum(it.n_responses for it in items)
        try:
            results = await _score(state, items, batched=body.batched, normalize=body.normalize,
                                   aggregation=body.aggregation, aggregator=body.aggregator)
        except RequestError as e:
            request.state.error = e.detail
            return JSONResponse({"detail": e.detail}, e.status, headers=e.response_headers())
        return JSONResponse({"items": results} if body.batched else results[0])

    @app.post("/get_reward", summary="OpenRLHF's remote reward model protocol",
              response_model=openrlhf.GetRewardResponse, responses=ERRORS)
    async def get_reward(body: openrlhf.GetRewardRequest, request: Request) -> JSONResponse:
        """One reward per query, each the full text the policy produced in its own chat template (the prompt
        included): OpenRLHF's `--reward.remote_url`. The query is not rendered again; see rewardkit.serve.openrlhf.

        Same batching, limits, key and metrics as /score.
        """
        request.state.items = request.state.responses = len(body.query)
        normalize = state.openrlhf_normalize if body.normalize is None else body.normalize
        try:
            backend = _backend_or_503(state)
            _check_normalize(backend, normalize)
            job, results = await _run(state, partial(openrlhf.prepare, backend, body))
            answer = openrlhf.answer(backend, job, results, normalize=normalize)
        except RequestError as e:
            request.state.error = e.detail
            return JSONResponse({"detail": e.detail}, e.status, headers=e.response_headers())
        return JSONResponse(answer)


def _check_normalize(backend: Backend, normalize: bool) -> None:
    if normalize and backend.normalization is None:
        raise RequestError(400, "normalize: this model has no stored normalization stats (mean and std in "
                                "rewardkit.json's 'normalization'); ask without normalize")


async def _score(state: ServerState, items, *, batched: bool, normalize: bool,
                 aggregation: str | None = None, aggregator: str | None = None) -> list[dict[str, Any]]:
    """Prepare, queue and await one /score request, and render its results."""
    from rewardkit.models.ensemble import EnsembleScorer

    backend = _backend_or_503(state)
    if aggregation is not None and not backend.is_process:
        raise RequestError(400, "aggregation: this model is not a process reward model (it gives one reward per "
                                "response, no step scores); ask without aggregation")
    if aggregator is not None and not isinstance(backend.scorer, EnsembleScorer):
        raise RequestError(400, "aggregator: this model is not an ensemble; ask without aggregator")
    _check_normalize(backend, normalize)
    _, results = await _run(state, partial(backend.prepare, items, batched=batched))
    if aggregator is not None:
        try:
            results = [backend.scorer.reaggregate(r, aggregator) for r in results]
        except RewardkitError as e:
            raise RequestError(400, f"aggregator: {e}") from None
    return backend.render(results, normalize=normalize, aggregation=aggregation)


async def _run(state: ServerState, prepare: Callable[[], Job]) -> tuple[Job, list]:
    """Prepare a job off the event loop (tokenization is CPU work), queue it and await its results; every failure
    becomes a RequestError with its status."""
    loop = asyncio.get_running_loop()
    job = None

    async def prepare_and_submit():
        nonlocal job
        job = await loop.run_in_executor(state.encoder, prepare)
        try:
            return await state.batcher.submit(job.payload, tokens=job.tokens, sequences=job.sequences)
        except asyncio.TimeoutError as e:  # the scorer's own timeout (a remote judge), not the request's
            raise RequestError(500, f"the scorer timed out: {first_line(e)}") from None

    try:
        results = await asyncio.wait_for(prepare_and_submit(), state.request_timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(504, f"not scored within the request timeout ({state.request_timeout_s:g} s); "
                                f"the server is overloaded or the request is too large") from None
    except QueueFull as e:
        raise RequestError(429, f"the queue is full ({state.batcher.max_queue} requests waiting); retry after "
                                f"{e.retry_after} s", retry_after=e.retry_after) from None
    except BatcherClosed:
        raise RequestError(503, "the server is shutting down", retry_after=1) from None
    except RequestError:
        raise
    except RewardkitError as e:
        raise RequestError(422, first_line(e)) from None
    except Exception as e:
        log.exception("scoring failed")
        raise RequestError(500, f"the scorer failed: {first_line(e)}") from None
    return job, results


def _backend_or_503(state: ServerState) -> Backend:
    if state.backend is None:
        why = f": {state.load_error}" if state.load_error else " yet"
        raise RequestError(503, f"the model is not loaded{why}", retry_after=5)
    return state.backend


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        detail = validation_detail(errors)
        request.state.error = detail
        return JSONResponse({"detail": detail, "errors": validation_errors(errors)}, 422)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        request.state.error = exc.detail
        return JSONResponse({"detail": exc.detail}, exc.status, headers=exc.response_headers())

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"detail": f"internal error: {first_line(exc)}"}, 500)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rewardkit")
    except Exception:
        return "0"
