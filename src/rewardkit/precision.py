"""Which precision to compute in: bf16 where the hardware makes it fast, fp32 elsewhere.

On a CPU with AMX a bf16 matrix product runs several times faster than fp32; GPUs from Ampere on have bf16
tensor cores. Weights stay fp32 (what the optimizer updates and checkpoints hold); "bf16" computes with bf16
copies of them (`RewardModel.compute_dtype`), under autocast for anything that still meets fp32.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from rewardkit.errors import RewardkitError

Precision = Literal["auto", "fp32", "bf16"]


def bf16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return bool(amx and amx())
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
