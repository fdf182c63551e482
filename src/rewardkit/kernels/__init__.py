"""Native CPU kernels, compiled on first use with the C++ compiler PyTorch uses for its extensions.

`attention_backward()` returns the fused bf16 attention backward (`attention_backward.cpp`) or None where it
cannot run: no AMX (the kernel's bf16 products need it to pay), a PyTorch build without MKL, no compiler, or
`REWARDKIT_KERNELS=off`. Callers fall back to the plain PyTorch path, so a missing kernel costs speed, never a
result. The build takes ~30 s once per machine and PyTorch version; it lands in PyTorch's extension cache
(`$TORCH_EXTENSIONS_DIR`, default `~/.cache/torch_extensions`), under a name that changes with the source.
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
_SOURCE = Path(__file__).with_name("attention_backward.cpp")
# at::vec's AVX-512 code path (every AMX CPU has AVX-512); OpenMP so at::parallel_for runs on all threads.
_CFLAGS = ["-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
           "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"]

_lock = threading.Lock()
_loaded: dict[str, ModuleType | None] = {}


def kernels_enabled() -> bool:
    return os.environ.get(KERNELS_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def _cpu_can_run() -> bool:
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(amx and amx()) and torch.backends.mkl.is_available()


def attention_backward() -> ModuleType | None:
    """The compiled module with `attention_backward(...)`, or None (see the module docstring)."""
    if not kernels_enabled() or not _cpu_can_run():
        return None
    with _lock:
        if "attention" not in _loaded:
            _loaded["attention"] = _build()
        return _loaded["attention"]


def _build() -> ModuleType | None:
    from torch.utils.cpp_extension import load

    _put_ninja_on_path()
    digest = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_CFLAGS).encode()).hexdigest()[:12]
    try:
        return load(name=f"rewardkit_attention_{digest}", sources=[str(_SOURCE)], extra_cflags=_CFLAGS,
                    extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # no compiler, no ninja, missing symbols: the PyTorch path still works
        warnings.warn(f"rewardkit: the fused CPU attention kernel could not be built ({type(exc).__name__}: "
                      f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}); training attention "
                      f"falls back to the slower PyTorch backward. Set {KERNELS_ENV}=off to silence this.",
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
