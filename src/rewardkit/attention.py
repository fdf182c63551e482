"""Faster attention on CPU: a compiled backward for training, and in bf16 a forward in AMX tiles.

On CPU, `F.scaled_dot_product_attention` runs a flash-attention kernel whose forward is fast but whose
backward (`_scaled_dot_product_flash_attention_for_cpu_backward`) is slow: it dominated (~44%) bf16 training
steps of MiniLM. `RecomputeBackwardAttention` keeps SDPA's forward (or the AMX one below) and replaces the
backward by one that recomputes the attention probabilities:

- in bf16 on a CPU with AMX, a compiled kernel (`rewardkit.kernels`, `attention_backward.cpp`) works per
  (row, head) on cache-sized score tiles and skips key columns a block of queries cannot see (causal and packed
  block masks): 1.7-2x faster than the flash backward from 320 to 1,024 keys and 2-3x faster than the
  chunked PyTorch backward below, so it is used at every length;
- otherwise in bf16 (no kernel) a plain PyTorch backward of a few large batched matmuls, which wins while the
  (q_len x kv_len) score matrix is small and loses for long sequences, so it is only used below
  `HYBRID_MAX_KV_LENGTH` keys.

In fp32 SDPA's own backward runs (`RECOMPUTE_BACKWARD_DTYPES`): the recompute backward's gain was measured in
bf16, and in fp32 it was slower.

In bf16 with head width 32 or 64, the forward runs in a compiled AMX kernel too (`attention_forward.cpp`,
`_fused_forward`), in training and in passes without gradients (scoring), where PyTorch's flash kernel spends
its time in small GEMM calls; it also skips the key blocks a block of queries cannot see.

`use_fast_attention(model)` / `restore_attention(model)` (or the `fast_attention(model)` context manager)
switch a transformers model that uses "sdpa" to it and back, through transformers' public attention
registries.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

#: Name under which the attention is registered in transformers' `AttentionInterface`.
FAST_ATTENTION_NAME = "rewardkit_sdpa"

#: Longest key sequence for which the PyTorch recompute backward is used (the compiled one has no limit).
#: Measured forward+backward (b=32, h=12, d=32, bf16, padding mask, 2-core AMX CPU, best of 4), flash vs this:
#: 128 keys 104 vs 32 ms, 184: 137 vs 52, 224: 118 vs 66, 256: 124 vs 86; at b=16: 320: 76 vs 62, 384: 99 vs
#: 99, 512: 178 vs 183.
HYBRID_MAX_KV_LENGTH = 320
#: Compute dtypes whose training backward is the recompute one. Not fp32: there SDPA's own backward was as fast
#: or faster, 0.97-1.45x, at MiniLM and SmolLM2 shapes on a 2-core AVX2 EPYC (`bench/attention_cpu.py`).
RECOMPUTE_BACKWARD_DTYPES = frozenset({torch.bfloat16})
#: Score elements (rows x h x q x kv) per backward chunk, about 4 MB of float32 scores: the backward is a
#: chain of elementwise passes over the scores, memory-bound once they spill out of cache. Measured before
#: the additive-mask change: 184 keys 60 ms chunked vs 120 unchunked; 256: 127 vs 229.
BACKWARD_CHUNK_ELEMENTS = 1 << 20

#: fp32 elements of a (queries x keys) score tile in the compiled backward: about 256 KB, so the tile, dP and
#: their bf16 copies stay in a core's L2 cache.
FUSED_TILE_ELEMENTS = 1 << 16

_RESTORE_ATTR = "_rewardkit_attn_before_fast"


class RecomputeBackwardAttention(torch.autograd.Function):
    """Attention with SDPA's forward and a backward that recomputes the softmax probabilities.

    Forward: `F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)`.
    Backward, with S = q kᵀ·scale + mask and P = softmax(S) recomputed in float32 (float64 for float64 input):
        dV = Pᵀ dO,  dP = dO Vᵀ,  dS = P ⊙ (dP − rowsum(dO ⊙ O)),  dQ = dS K·scale,  dK = dSᵀ Q·scale.
    For bf16/fp16 input the three output matmuls run in that dtype (fast on AMX); scores and dP are computed
    in float32 from upcast inputs (as precise as the flash kernel, and faster here than low-precision
    matmuls with float32 upcast of the result).

    Args (to `apply`, positional):
        query: (b, h, q_len, d); key: (b, h, kv_len, d); value: (b, h, kv_len, d_v). Same b and h (no
            broadcasting between them; repeat key/value heads for GQA beforehand).
        mask: None; a bool keep-mask (True = attend) or an additive float mask, broadcastable to
            (b, h, q_len, kv_len). The mask gets no gradient.
        is_causal: bool, upper-left aligned causal mask (like SDPA); not together with `mask`.
        scale: float or None (None = 1/sqrt(d)).
    Returns (b, h, q_len, d_v) in the input dtype. Query rows whose keys are all masked give zeros and zero
    gradients, as SDPA does. Runs with autocast disabled: cast inputs beforehand.
    """

    @staticmethod
    def forward(ctx, query, key, value, mask=None, is_causal=False, scale=None):
        ctx.scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
        out = _fused_forward(query, key, value, mask, is_causal, ctx.scale)
        if out is None:
            with torch.autocast(query.device.type, enabled=False):
                out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=is_causal,
                                                     scale=scale)
        ctx.save_for_backward(query, key, value, out, mask)
        ctx.is_causal = is_causal
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        query, key, value, out, mask = ctx.saved_tensors
        fused = _fused_backward(query, key, value, out, grad_out, mask, ctx.is_causal, ctx.scale)
        if fused is not None:
            return (*fused, None, None, None)
        needs = ctx.needs_input_grad[:3]
        grads = [torch.empty_like(t) if need else None for t, need in zip((query, key, value), needs)]
        # Work through the batch in chunks whose (h, q, k) score tensors stay cache-sized: the backward is
        # a chain of elementwise passes over them, memory-bound when they spill out of cache.
        b, h, q_len, kv_len = query.shape[0], query.shape[1], query.shape[2], key.shape[2]
        rows = max(1, BACKWARD_CHUNK_ELEMENTS // max(1, h * q_len * kv_len))
        with torch.autocast(grad_out.device.type, enabled=False):
            grad_out = grad_out.to(query.dtype)
            mask = _additive(mask, _compute_dtype(query.dtype))
            for i in range(0, b, rows):
                part = slice(i, i + rows)
                chunk_mask = mask[part] if mask is not None and mask.shape[0] > 1 else mask
                chunk_grads = _backward_chunk(query[part], key[part], value[part], out[part], grad_out[part],
                                              chunk_mask, ctx.is_causal, ctx.scale, needs)
                for full, chunk in zip(grads, chunk_grads):
                    if full is not None:
                        full[part] = chunk
        return (*grads, None, None, None)


def _fused_forward(query, key, value, mask, is_causal: bool, scale: float):
    """The attention output from the AMX kernel (`rewardkit.kernels`, `attention_forward.cpp`) for bf16 input
    with head width 32 or 64, or None where it cannot run.

    Same math as SDPA's CPU flash kernel (fp32 scores, bf16 probabilities against V, fp32 normalisation), with
    the products in AMX tiles instead of small GEMM calls and the key blocks a query block cannot see skipped:
    measured on the 2-core AMX CPU, 1.5x SDPA at MiniLM shapes (32 rows, 12 heads, 130 keys), 2-3x on
    causal and packed SmolLM2 rows.
    """
    if not all(t.dtype == torch.bfloat16 for t in (query, key, value)) or query.dim() != 4:
        return None
    if query.shape[-1] not in (32, 64) or value.shape[-1] != query.shape[-1]:
        return None
    kernel = _kernel()
    if kernel is None or not kernel.amx_ready():
        return None
    query, key, value = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    return kernel.attention_forward(query, key, value, _kernel_mask(mask, query, key), is_causal, scale)


def _fused_backward(query, key, value, out, grad_out, mask, is_causal: bool, scale: float):
    """(dQ, dK, dV) from the compiled kernel (`rewardkit.kernels`) for bf16 input, or None where it cannot run.

    Same math as the chunked backward below, but per (row, head) with the score tiles in cache and the key
    columns a block of queries cannot see skipped: 2-3x faster on MiniLM and SmolLM2 shapes.
    """
    if not all(t.dtype == torch.bfloat16 for t in (query, key, value, out)) or query.dim() != 4:
        return None
    kernel = _kernel()
    if kernel is None:
        return None
    query, key, value, out, grad_out = (t if t.stride(-1) == 1 else t.contiguous()
                                        for t in (query, key, value, out, grad_out.to(torch.bfloat16)))
    return tuple(kernel.attention_backward(query, key, value, out, grad_out, _kernel_mask(mask, query, key),
                                           is_causal, scale, FUSED_TILE_ELEMENTS))


def _kernel():
    from rewardkit import kernels

    return kernels.load()


def _kernel_mask(mask, query, key):
    """A mask as the kernels read it: bool or float32, expanded to (b, h, q_len, kv_len), unit last stride."""
    if mask is None:
        return None
    b, h, q_len, _ = query.shape
    mask = mask if mask.dtype == torch.bool else mask.float()
    mask = mask.expand(b, h, q_len, key.shape[2])
    return mask if mask.stride(-1) == 1 else mask.contiguous()


def _backward_chunk(query, key, value, out, grad_out, mask, is_causal: bool, scale: float, needs):
    """(dQ, dK, dV) for one chunk of the batch; None for inputs that need no gradient."""
    need_q, need_k, need_v = needs
    grad_q = grad_k = grad_v = None
    probs = _attention_probs(query, key, mask, is_causal, scale)  # (b, h, q, k)
    if need_v:
        grad_v = torch.matmul(probs.to(value.dtype).transpose(-1, -2), grad_out)
    if need_q or need_k:
        grad_scores = _upcast_matmul(grad_out, value.transpose(-1, -2), probs.dtype)  # dP
        # rowsum(dO ⊙ O) equals rowsum(dP ⊙ P) and is much cheaper: (b, h, q, d) instead of (.., k)
        row_dot = (grad_out.to(probs.dtype) * out.to(probs.dtype)).sum(-1, keepdim=True)
        grad_scores.sub_(row_dot).mul_(probs)  # dS, in place
        del probs, row_dot
        grad_scores = grad_scores.to(query.dtype)
        if need_q:
            grad_q = torch.matmul(grad_scores, key).mul_(scale)
        if need_k:
            grad_k = torch.matmul(grad_scores.transpose(-1, -2), query).mul_(scale)
    return grad_q, grad_k, grad_v


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A bool keep-mask as an additive float mask (0 / -inf), made once per backward: adding it to each
    chunk's scores costs far less than a masked_fill over every head."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask.logical_not(),
                                                                                  float("-inf"))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for reduced-precision input, the input dtype otherwise (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def _upcast_matmul(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """a @ b in `dtype`, upcasting the (small, (.., n, d)-shaped) operands rather than the large result."""
    return torch.matmul(a.to(dtype), b.to(dtype))


def _attention_probs(query, key, mask, is_causal: bool, scale: float) -> torch.Tensor:
    """softmax(q kᵀ·scale + mask) as a (b, h, q_len, kv_len) tensor in the compute dtype.

    Rows with every key masked are zeros (a plain softmax would give NaN there).
    """
    dtype = _compute_dtype(query.dtype)
    scores = _upcast_matmul(query, key.transpose(-1, -2), dtype).mul_(scale)
    dead_rows = None
    if is_causal:
        q_len, kv_len = scores.shape[-2:]
        future = torch.ones(q_len, kv_len, dtype=torch.bool, device=scores.device).triu_(1)
        scores.masked_fill_(future, float("-inf"))  # upper-left aligned: no row is fully masked
    elif mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(mask.logical_not(), float("-inf"))
        dead_rows = ~mask.any(-1, keepdim=True)
    elif mask is not None:
        scores.add_(mask)
        dead_rows = torch.isneginf(mask).all(-1, keepdim=True)
    probs = torch.softmax(scores, dim=-1)  # out of place: faster than an in-place exp/sum/div here
    del scores
    if dead_rows is not None and dead_rows.any():
        probs.masked_fill_(dead_rows, 0.0)
    return probs


def _replaceable(query, key, attention_mask, dropout, kwargs) -> bool:
    """Whether this call is one rewardkit's attention computes exactly as SDPA would: CPU, 4D, the same batch
    for queries and keys, no dropout, outside compile and tracing, a plain mask tensor."""
    if query.device.type != "cpu" or query.dim() != 4 or query.shape[0] != key.shape[0]:
        return False  # (SDPA would broadcast a differing batch; not supported here)
    if dropout > 0.0 or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    # Features sdpa_attention_forward handles (position bias, softcap errors, single-token GQA packing).
    if kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        return False
    return attention_mask is None or (isinstance(attention_mask, torch.Tensor) and not attention_mask.requires_grad
                                      and attention_mask.device.type == "cpu")


def _use_recompute_backward(query, key, value, attention_mask, dropout, kwargs) -> bool:
    """Whether the recompute backward is a win and computes exactly what SDPA would."""
    if not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)):
        return False
    if not _replaceable(query, key, attention_mask, dropout, kwargs):
        return False
    if query.shape[2] < 2 or key.shape[2] == 0:
        return False
    if _compute_dtype_of(query) not in RECOMPUTE_BACKWARD_DTYPES:
        return False
    return key.shape[2] <= HYBRID_MAX_KV_LENGTH or _fused_kernel_runs(query)


def _compute_dtype_of(query: torch.Tensor) -> torch.dtype:
    """The dtype attention computes in: autocast's, else the input's."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype


def _computes_in_bf16(query: torch.Tensor) -> bool:
    return _compute_dtype_of(query) == torch.bfloat16


def _fused_kernel_runs(query: torch.Tensor) -> bool:
    """Whether the backward of this attention will run in the compiled kernel: bf16 compute and the kernel
    available."""
    return _computes_in_bf16(query) and _kernel() is not None


def fast_sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Drop-in for transformers' `sdpa_attention_forward`, faster on CPU: in training a faster backward
    (`RecomputeBackwardAttention`), and in bf16 the forward in AMX tiles (`_fused_forward`), for scoring too.

    query: (b, h, q_len, d); key, value: (b, h_kv, kv_len, d) with h = h_kv * module.num_key_value_groups;
    attention_mask: None, a bool keep-mask or an additive float mask broadcastable to (b, h, q_len, kv_len).
    Returns (attn_output (b, q_len, h, d_v), None). Anything else (dropout, GPUs, unless the compiled bf16
    kernel runs kv_len > HYBRID_MAX_KV_LENGTH in training) goes to transformers' own SDPA path.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    training = _use_recompute_backward(query, key, value, attention_mask, dropout, kwargs)
    if not training and not _kernel_forward_applies(query, key, value, attention_mask, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)

    q_len = query.shape[2]
    # Same rule as sdpa_attention_forward: causal flag only for prefill without an explicit mask.
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = bool(q_len > 1 and attention_mask is None and is_causal)
    if is_causal and key.shape[2] > q_len:
        key, value = key[:, :, :q_len], value[:, :, :q_len]

    if torch.is_autocast_enabled(query.device.type):  # SDPA is a lower-precision op under autocast
        low = torch.get_autocast_dtype(query.device.type)
        query, key, value = query.to(low), key.to(low), value.to(low)
        if attention_mask is not None and attention_mask.is_floating_point():
            attention_mask = attention_mask.to(low)

    if training:
        n_rep = getattr(module, "num_key_value_groups", 1)
        if n_rep > 1:
            key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
        out = RecomputeBackwardAttention.apply(query, key, value, attention_mask, is_causal, scaling)
    else:  # the kernel reads each key head for all the query heads that share it
        scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
        out = _fused_forward(query, key, value, attention_mask, is_causal, scale)
        if out is None:  # inputs the kernel does not take after all (mixed dtypes)
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, is_causal=is_causal, **kwargs)
    return out.transpose(1, 2).contiguous(), None


def _kernel_forward_applies(query, key, value, attention_mask, dropout, kwargs) -> bool:
    """Whether a pass without gradients can run `_fused_forward` and compute exactly what SDPA would."""
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        return False
    if not _replaceable(query, key, attention_mask, dropout, kwargs):
        return False
    if query.shape[-1] not in (32, 64) or value.shape[-1] != query.shape[-1]:
        return False
    if key.shape[1] == 0 or query.shape[1] % key.shape[1] != 0:
        return False
    kernel = _kernel() if _computes_in_bf16(query) else None
    return kernel is not None and kernel.amx_ready()


def register_fast_attention() -> str:
    """Register the attention (and SDPA-style mask creation) with transformers; idempotent. Returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FAST_ATTENTION_NAME, fast_sdpa_attention_forward)
    AttentionMaskInterface.register(FAST_ATTENTION_NAME, sdpa_mask)
    return FAST_ATTENTION_NAME


def use_fast_attention(model) -> bool:
    """Switch a transformers model from "sdpa" to the fast-backward attention. Returns whether it did.

    Only models currently using "sdpa" whose attention layers go through transformers' AttentionInterface
    are switched (the new attention has exactly SDPA's semantics); anything else is left unchanged and gives
    False. Undo with `restore_attention` before saving, or use the `fast_attention` context manager.
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return False
    current = model.config._attn_implementation
    if current == FAST_ATTENTION_NAME:
        return True
    can_switch = getattr(type(model), "_can_set_attn_implementation", None)
    if current != "sdpa" or can_switch is None or not can_switch():
        return False
    model.set_attn_implementation(register_fast_attention())
    if model.config._attn_implementation != FAST_ATTENTION_NAME:
        model.set_attn_implementation(current)
        return False
    setattr(model, _RESTORE_ATTR, current)
    return True


def restore_attention(model) -> None:
    """Undo `use_fast_attention`: put back the attention the model had before (no-op if not switched)."""
    previous = getattr(model, _RESTORE_ATTR, None)
    if previous is None:
        return
    model.set_attn_implementation(previous)
    delattr(model, _RESTORE_ATTR)


@contextlib.contextmanager
def fast_attention(model) -> Iterator[bool]:
    """Context manager: `use_fast_attention(model)` on entry (yields its result), `restore_attention` on exit."""
    already_fast = getattr(model, _RESTORE_ATTR, None) is not None
    switched = use_fast_attention(model)
    try:
        yield switched
    finally:
        if switched and not already_fast:  # a switch made outside this block is undone outside it
            restore_attention(model)
