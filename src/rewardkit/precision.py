"""Which precision to compute in: bf16 where this machine makes it fast, fp32 elsewhere.

Weights stay fp32 (what the optimizer updates and checkpoints hold); "bf16" computes with bf16 copies of them
(`RewardModel.compute_dtype`), under autocast for anything that still meets fp32, and the reward head's output
stays fp32.

"auto" picks bf16 on a CUDA device that supports it. On a CPU it is decided by measurement, not by a list of
instruction sets: the same bf16 product runs ~5x fp32 on a CPU with AMX, ~2x with AVX-512 BF16, and slower than
fp32 where bf16 is emulated (AVX2). `cpu_probe()` times one fp32 and one bf16 matrix product once per machine
(~1-2 s) and caches the figures in rewardkit's cache folder (`precision-probe.json`); auto takes bf16 when it is
at least `BF16_MIN_SPEEDUP` times faster. `REWARDKIT_AUTO_PRECISION=bf16|fp32` decides without a probe.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Literal

import torch

from rewardkit.cache import cache_root
from rewardkit.errors import RewardkitError
from rewardkit.io import atomic_write_json

Precision = Literal["auto", "fp32", "bf16"]

AUTO_ENV = "REWARDKIT_AUTO_PRECISION"
# bf16 rounds every product's inputs to an 8-bit mantissa and a training step adds casts the matrix product
# does not show, so auto takes it only where it is clearly faster, not at parity.
BF16_MIN_SPEEDUP = 1.5
PROBE_FILE = "precision-probe.json"
_PROBE_SIZE = 512  # (512 x 512) @ (512 x 512): large enough for AMX's and AVX-512's bf16 speed to show


@dataclass(frozen=True)
class ProbeResult:
    """One machine's measured matrix-product speed in fp32 and in bf16 (GFLOP/s, best of several runs)."""

    machine: str
    fp32_gflops: float
    bf16_gflops: float
    measured_at: str

    @property
    def bf16_speedup(self) -> float:
        return self.bf16_gflops / self.fp32_gflops

    @property
    def bf16_is_fast(self) -> bool:
        return self.bf16_speedup >= BF16_MIN_SPEEDUP


def machine_key() -> str:
    """What the probe's answer depends on: the CPU, PyTorch's build (its GEMM) and the thread count."""
    return (f"{cpu_name()} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def matmul_gflops(dtype: torch.dtype, size: int = _PROBE_SIZE, seconds: float = 0.2, repeats: int = 3) -> float:
    """Best-of-`repeats` speed of `size`-square products in `dtype` on the CPU, each repeat ~`seconds` long.

    Where bf16 is emulated one product can take a second: when the first call alone outlasts `seconds`, its
    time is the answer, so the probe stays short on the machines where bf16 is slowest.
    """
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    with torch.no_grad():
        start = time.perf_counter()
        torch.mm(a, b)  # also the warm-up: the first call picks (and may JIT) the kernel
        once = max(time.perf_counter() - start, 1e-9)
        if once >= seconds:
            return 2 * size**3 / once / 1e9
        calls = max(1, int(seconds / once))
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            best = min(best, (time.perf_counter() - start) / calls)
    return 2 * size**3 / best / 1e9


_probed: dict[str, ProbeResult] = {}


def cpu_probe(refresh: bool = False) -> ProbeResult:
    """This machine's fp32 and bf16 matrix-product speed: from the cache, else measured and cached.

    A missing, unreadable or unwritable cache costs one measurement per process, never an error.
    """
    key = machine_key()
    if not refresh and key in _probed:
        return _probed[key]
    root = cache_root()
    path = root / PROBE_FILE if root is not None else None
    cached = _read_probes(path)
    if not refresh and key in cached:
        try:
            result = ProbeResult(**cached[key])
        except TypeError:  # written by another version of this file
            result = None
        if result is not None and result.fp32_gflops > 0 and result.bf16_gflops > 0:
            _probed[key] = result
            return result
    result = ProbeResult(machine=key, fp32_gflops=round(matmul_gflops(torch.float32), 2),
                         bf16_gflops=round(matmul_gflops(torch.bfloat16), 2),
                         measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    _probed[key] = result
    if path is not None:
        try:
            atomic_write_json(path, {**cached, key: asdict(result)})
        except OSError:  # a read-only or full cache: the figure stays in this process
            pass
    return result


def _read_probes(path) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def auto_override() -> str | None:
    """`REWARDKIT_AUTO_PRECISION`'s value ('bf16' or 'fp32'), None when unset."""
    value = os.environ.get(AUTO_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("bf16", "fp32"):
        raise RewardkitError(f"{AUTO_ENV} must be bf16 or fp32, got {value!r}")
    return value


def bf16_is_fast(device: torch.device) -> bool:
    override = auto_override()
    if override is not None:
        return override == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_probe().bf16_is_fast
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' becomes 'bf16' where bf16 is fast on `device`, else 'fp32'."""
    if precision not in ("auto", "fp32", "bf16"):
        raise RewardkitError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def compute_context(precision: str, device: torch.device) -> contextlib.ExitStack:
    """The context every forward pass runs in: bf16 autocast when precision is 'bf16', and on CUDA the
    attention kernels that suit variable-length batches.

    cuDNN's fused attention (which PyTorch prefers for bf16 on Hopper) builds an execution plan per input
    shape; with length-grouped batches nearly every batch is a new shape, and a MiniLM-size model ran 4-5x
    slower in bf16 than in fp32 on an H100 until it was excluded.
    """
    stack = contextlib.ExitStack()
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        stack.enter_context(sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                         SDPBackend.MATH]))
    if precision == "bf16":
        stack.enter_context(torch.autocast(device_type=device.type, dtype=torch.bfloat16))
    return stack


def compute_dtype(precision: str) -> torch.dtype | None:
    """The dtype a RewardModel computes in for a resolved precision (None: its parameters' own)."""
    return torch.bfloat16 if precision == "bf16" else None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
