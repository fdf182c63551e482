"""Run the reward server under uvicorn: load the model, serve, and shut down gracefully.

On SIGTERM or Ctrl-C uvicorn stops accepting connections, lets requests in flight finish (up to
`graceful_timeout_s`), and then the app's shutdown drains the batcher, so no accepted request is dropped.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from rewardkit.models.scorer import Scorer
from rewardkit.serve.app import create_app
from rewardkit.serve.backend import Overlength
from rewardkit.serve.limits import DEFAULT_MAX_BODY_BYTES


def serve(model: str | Scorer, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_batch_tokens: int = 16384, max_delay_ms: float = 5.0, max_queue: int = 256,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_length: int | None = None,
          overlength: Overlength = "truncate", request_timeout_s: float = 30.0, graceful_timeout_s: float = 30.0,
          log_level: str = "info", torch_threads: int | None = None, openrlhf_normalize: bool = False,
          batch_workers: int | None = None, **load_options: Any) -> None:
    """Serve `model` (a spec for rewardkit.models.load_scorer, or a Scorer) until SIGTERM / Ctrl-C.

    A spec is loaded before the server listens, so a bad model fails at once with a RewardkitError.
    `load_options` (precision, chat_template, batch_tokens, share_prefix, length_calibration) go to
    load_scorer, with `max_length`; the other options are create_app's. `torch_threads` caps PyTorch's CPU
    threads: the event loop and tokenizer need a core too, and on a busy CPU a model that claims every core
    stalls at each operation's thread barrier. `batch_workers`: batches scored at once (None:
    auto_batch_workers); with several and no `torch_threads`, PyTorch's threads are shared out between them.
    """
    import uvicorn

    if isinstance(model, str):
        from rewardkit.models.spec import load_scorer

        scorer = load_scorer(model, max_length=max_length, **load_options)
    elif load_options:
        raise TypeError(f"load options {sorted(load_options)} apply to a model spec, not to a Scorer")
    else:
        scorer = model
    if batch_workers is None:
        batch_workers = auto_batch_workers(scorer)
    if torch_threads or batch_workers > 1:
        import torch

        torch.set_num_threads(torch_threads or max(1, torch.get_num_threads() // batch_workers))
    configure_logging(log_level)
    app = create_app(scorer, api_key=api_key, max_batch_tokens=max_batch_tokens, max_delay_ms=max_delay_ms,
                     max_queue=max_queue, max_body_bytes=max_body_bytes, max_length=max_length,
                     overlength=overlength, request_timeout_s=request_timeout_s,
                     openrlhf_normalize=openrlhf_normalize, batch_workers=batch_workers)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=graceful_timeout_s)
    uvicorn.Server(config).run()


def auto_batch_workers(scorer: Scorer) -> int:
    """Batches to score at once: 2 for a reward model computing in fp32 on a CPU of 2 cores or more, else 1.

    On a CPU, two batches with half the PyTorch threads each beat one batch with all of them: every operation
    of a forward pass ends at a barrier where the threads wait for each other, and the small ones (GELU, layer
    norms, additions) cost more there than they compute; on a CPU shared with other work a descheduled thread
    stalls the whole batch. (bench/serve_load.py, MiniLM on a 2-core AVX2 EPYC: 1.27x, see docs/BENCHMARKS.md.)
    Only a model whose forward keeps no state can run in two threads: bf16 swaps cast weights in for each pass
    and a compiled backbone traces, so those run one batch at a time, as does a GPU, which runs one stream.
    """
    import torch

    from rewardkit.models.rm_scorer import RewardModelScorer

    if not isinstance(scorer, RewardModelScorer) or scorer.device.type != "cpu" or scorer.precision != "fp32":
        return 1
    if getattr(scorer.model.hf_model.base_model, "_compiled_call_impl", None) is not None:
        return 1
    return 2 if torch.get_num_threads() >= 2 else 1


def configure_logging(level: str = "info") -> None:
    """The per-request JSON lines go to stderr as they are (one JSON object per line)."""
    logger = logging.getLogger("rewardkit.serve")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
