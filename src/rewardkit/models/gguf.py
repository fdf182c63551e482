"""GGUF backbones, dequantized once and cached as a plain checkpoint.

transformers reads a GGUF file by parsing it in Python (every tokenizer entry, every tensor) and dequantizing
it, and does so again for the config, the tokenizer and the weights: loading the packaged SmolLM2-135M took
~20 s of a 50 s training run on the 2-core CPU. The dequantized weights are exactly the float32 tensors that
load would produce, so the first load saves them (with the config and tokenizer) as a plain Hugging Face
checkpoint, and every later load reads that (0.2 s for SmolLM2 here).

The cache lives in `$REWARDKIT_CACHE/gguf` (default `$XDG_CACHE_HOME/rewardkit`, else `~/.cache/rewardkit`),
keyed by the GGUF file's path, size and modification time and the transformers version that converted it.
`REWARDKIT_CACHE=off` turns it off; where the cache cannot be written, models load from the GGUF file as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rewardkit.cache import cache_root
from rewardkit.io import atomic_directory


def cache_key(gguf_path: Path) -> str:
    """Changes whenever the file or the converting transformers version does."""
    import transformers

    stat = gguf_path.stat()
    ident = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return f"{gguf_path.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def dequantized_checkpoint(path: str | os.PathLike, gguf_file: str) -> Path | None:
    """A plain checkpoint (config, float32 safetensors, tokenizer) of `path/gguf_file`, made on first use.

    None when caching is off or the cache cannot be written; the caller then loads the GGUF file itself.
    Made in a temporary folder and renamed into place, so an interrupted conversion leaves nothing half
    written; a process that finishes second keeps the first one's copy, so a folder in use is never swapped.
    """
    root = cache_root()
    gguf_path = Path(path) / gguf_file
    if root is None or not gguf_path.is_file():
        return None
    target = root / "gguf" / cache_key(gguf_path)
    if not (target / "config.json").is_file():
        try:
            with atomic_directory(target) as staging:
                _convert(Path(path), gguf_file, staging)
                if (target / "config.json").is_file():  # another process finished first: keep its copy
                    raise _MadeElsewhere
        except _MadeElsewhere:
            pass
        except OSError:  # a read-only or full cache: load from the GGUF file instead
            return None
    return target


class _MadeElsewhere(Exception):
    """Abandons a conversion (its staging folder is removed) when another process already published one."""


def _convert(path: Path, gguf_file: str, out: Path) -> None:
    """Dequantize through transformers (float32, as a direct GGUF load would) and save the plain checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import torch

    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=torch.float32)
    unmark_dequantized(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def unmark_dequantized(model) -> None:
    """transformers dequantizes GGUF weights on load but keeps marking the model as quantized, which blocks
    saving it; the weights in memory are plain tensors."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def loadable(path: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(path, gguf_file) to hand transformers: the cached plain checkpoint in place of a GGUF file when there
    is one, else what was given."""
    if gguf_file:
        cached = dequantized_checkpoint(path, gguf_file)
        if cached is not None:
            return str(cached), None
    return path, gguf_file
