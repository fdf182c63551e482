"""What the benchmarks share: the data they run on, and the measured compute ceiling of this machine."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from rewardkit.data import shared_data_dir  # noqa: E402

HARMLESS = ("hh-rlhf", "harmless-base", "test.jsonl.gz")


def harmless_path() -> Path:
    """HH-RLHF harmless-base from ../shared/data (or $REWARDKIT_DATA); exits with a reason when absent."""
    shared = shared_data_dir()
    path = shared.joinpath(*HARMLESS) if shared else None
    if path is None or not path.is_file():
        print("needs ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz (or $REWARDKIT_DATA)", file=sys.stderr)
        sys.exit(2)
    return path


def bench_device() -> torch.device:
    """The GPU when there is one (the benchmarks then time the GPU paths), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
    """What the timings were measured on, for the table's caption."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(dtype: torch.dtype = torch.bfloat16, repeats: int = 6, device: torch.device | None = None
                       ) -> float:
    """Best measured TFLOP/s of square matrix products on the device: the ceiling that utilisation refers to.
    (On the 2-core AMX CPU this varied from 0.65 to 1.05 for bf16 between sizes and runs, so it is measured in
    the same run as what it is compared with.) The GPU gets larger sizes, which it needs to reach its peak."""
    device = device or torch.device("cpu")
    best = 0.0
    for n in (1024, 2048, 4096) if device.type == "cpu" else (4096, 8192):
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)  # warm-up
        synchronize(device)
        if time.perf_counter() - t0 > 1.0:  # an emulated dtype (bf16 without AVX-512 BF16): seconds a product
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e12)
            break
        for _ in range(repeats):
            synchronize(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e12)
    return best


def training_flops_per_token(model: torch.nn.Module) -> float:
    """6 x the parameters a token passes through (embeddings are lookups, not products): the usual model-FLOPs
    count of one forward and backward. Attention score FLOPs are left out, so utilisation is a lower bound."""
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return 6.0 * (sum(p.numel() for p in model.parameters()) - embedding)
