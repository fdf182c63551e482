"""`rewardkit` commands: serve a Scorer over HTTP."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rewardkit.cli.common import (
    AggregationOpt, BatchTokensOpt, CompileOpt, ExampleCommand, LengthCalibrationOpt, MaxLenOpt, ModelOpt,
    PrecisionOpt, SharePrefixOpt, TemplateOpt, app, load_scorer, quiet_transformers, user_errors,
)
from rewardkit.errors import RewardkitError


@app.command(cls=ExampleCommand)
def serve(model: ModelOpt,
          host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port")] = 8000,
          api_key: Annotated[Optional[str], typer.Option(
              "--api-key", envvar="REWARDKIT_API_KEY", help="Require this key (Authorization: Bearer KEY); "
                                                            "also read from $REWARDKIT_API_KEY.")] = None,
          max_batch_tokens: Annotated[int, typer.Option(
              "--max-batch-tokens", help="Tokens gathered from concurrent requests into one batch.")] = 16384,
          max_delay_ms: Annotated[float, typer.Option(
              "--max-delay-ms", help="How long a request waits for others to join its batch.")] = 5.0,
          max_queue: Annotated[int, typer.Option(
              "--max-queue", help="Requests waiting at most; more get 429 with Retry-After.")] = 256,
          max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Larger bodies get 413.")]
          = 8 * 1024 * 1024,
          overlength: Annotated[str, typer.Option(
              "--overlength", help="Sequences over the max length (--max-length, else the model's): truncate "
                                   "them as `rewardkit score` does (prompt from the left first; the cut is "
                                   "reported in `truncated`), or reject them with 422.")] = "truncate",
          request_timeout: Annotated[float, typer.Option("--request-timeout", help="Seconds; then 504.")] = 30.0,
          graceful_timeout: Annotated[float, typer.Option(
              "--graceful-timeout", help="Seconds to finish requests in flight on SIGTERM.")] = 30.0,
          torch_threads: Annotated[Optional[int], typer.Option(
              "--torch-threads", help="Cap PyTorch's CPU threads (leave a core to the server).")] = None,
          batch_workers: Annotated[Optional[int], typer.Option(
              "--batch-workers", min=1, help="Batches scored at once, each in its own thread with its share of "
                                             "PyTorch's threads (default: 2 for an fp32 reward model on a CPU, "
                                             "else 1).")] = None,
          log_level: Annotated[str, typer.Option("--log-level")] = "info",
          openrlhf_normalize: Annotated[bool, typer.Option(
              "--openrlhf-normalize", help="POST /get_reward (OpenRLHF's remote reward model) answers (reward - "
                                           "mean) / std with the model's stored stats, as OpenRLHF's serve_rm "
                                           "--reward.normalize_enable does.")] = False,
          max_length: MaxLenOpt = None, precision: PrecisionOpt = "auto", batch_tokens: BatchTokensOpt = 16384,
          share_prefix: SharePrefixOpt = None, chat_template: TemplateOpt = None,
          length_calibration: LengthCalibrationOpt = None, aggregation: AggregationOpt = None,
          compile_: CompileOpt = False):
    """Serve any Scorer over HTTP for RL loops: POST /score with dynamic batching, POST /get_reward for OpenRLHF,
    /health, /ready, /metrics.

    Example: rewardkit serve -m runs/demo/train/best --port 8000
    """
    from rewardkit.serve import serve as run_server

    with user_errors():
        if overlength not in ("reject", "truncate"):
            raise RewardkitError(f"--overlength must be reject or truncate, got {overlength!r}")
        quiet_transformers()
        scorer = load_scorer(model, max_length, chat_template, precision, batch_tokens, share_prefix,
                             length_calibration, aggregation, compile_)
        run_server(scorer, host=host, port=port, api_key=api_key, max_batch_tokens=max_batch_tokens,
                   max_delay_ms=max_delay_ms, max_queue=max_queue, max_body_bytes=max_body_bytes,
                   max_length=max_length, overlength=overlength, request_timeout_s=request_timeout,
                   graceful_timeout_s=graceful_timeout, log_level=log_level, torch_threads=torch_threads,
                   openrlhf_normalize=openrlhf_normalize, batch_workers=batch_workers)
