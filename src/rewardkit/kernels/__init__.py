"""Native CPU kernels for bf16 training, compiled on first use with the C++ compiler PyTorch uses for its
extensions:

- `attention_forward.cpp`, `attention_backward.cpp`: attention for bf16 training and scoring
  (rewardkit.attention), the forward in AMX tiles;
- `fused_layers.cpp`: Llama-style RMSNorm and SiLU-gated MLP products, forward and backward (rewardkit.fused);
- `linear.cpp`: linear layers' weight gradients, fp32 from bf16 operands (rewardkit.fused).

`load()` returns the module, or None where it cannot run: no AMX (the kernels' bf16 products need it to pay),
a PyTorch build without MKL, no compiler, or `REWARDKIT_KERNELS=off`. Callers fall back to plain PyTorch, so a
missing kernel costs speed, never a result. The build takes ~40 s once per machine and PyTorch version; it
lands in PyTorch's extension cache (`$TORCH_EXTENSIONS_DIR`, default `~/.cache/torch_extensions`), under a
name that changes with the sources.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

KERNELS_ENV = "REWARDKIT_KERNELS"
_SOURCES = [Path(__file__).with_name(name) for name in
            ("bindings.cpp", "attention_forward.cpp", "attention_backward.cpp", "fused_layers.cpp", "linear.cpp")]
_HEADERS = [Path(__file__).with_name(name) for name in ("vec.h", "attention_mask.h")]
# at::vec's AVX-512 code path (every AMX CPU has AVX-512), AMX tile instructions; OpenMP so at::parallel_for
# runs on all threads.
_CFLAGS = ["-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mamx-tile", "-mamx-bf16",
           "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"]

_lock = threading.Lock()
_loaded: dict[str, ModuleType | None] = {}


def kernels_enabled() -> bool:
    return os.environ.get(KERNELS_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def unavailable_reason() -> str | None:
    """Why `load()` gives None on this machine before trying to build, or None when it will try."""
    if not kernels_enabled():
        return f"switched off ({KERNELS_ENV}=off)"
    if not _cpu_can_run():
        return "they need a CPU with AMX and a PyTorch build with MKL"
    return None


def _cpu_can_run() -> bool:
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(amx and amx()) and torch.backends.mkl.is_available()


def load() -> ModuleType | None:
    """The compiled module (see bindings.cpp for its functions), or None (see the module docstring)."""
    if unavailable_reason() is not None:
        return None
    with _lock:
        if "cpu" not in _loaded:
            _loaded["cpu"] = _build()
        return _loaded["cpu"]


def _build() -> ModuleType | None:
    from torch.utils.cpp_extension import load as build

    _put_ninja_on_path()
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in _SOURCES + _HEADERS) + " ".join(_CFLAGS).encode())
    try:
        return build(name=f"rewardkit_cpu_{digest.hexdigest()[:12]}", sources=[str(p) for p in _SOURCES],
                     extra_cflags=_CFLAGS, extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # no compiler, no ninja, missing symbols: the PyTorch path still works
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        warnings.warn(f"rewardkit: the CPU kernels could not be built ({type(exc).__name__}: {reason}); "
                      f"training falls back to slower PyTorch code. Set {KERNELS_ENV}=off to silence this.",
                      RuntimeWarning, stacklevel=3)
        return None


def _put_ninja_on_path() -> None:
    """PyTorch runs `ninja` from PATH; a virtual environment used without activation has it only in its bin."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
