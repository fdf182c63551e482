"""The compiled bf16 attention kernels (rewardkit.kernels): the backward against float64 and the PyTorch
backward, the AMX forward against float64 and SDPA."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from rewardkit import attention, kernels
from rewardkit.attention import HYBRID_MAX_KV_LENGTH, RecomputeBackwardAttention, fast_sdpa_attention_forward


def packed_mask(b, length, cut):
    """A packed causal row: a shared prefix [0, cut) and two segments after it, each seeing the prefix and
    itself; the last row of the batch has padding at its end (query rows that see nothing)."""
    pos = torch.arange(length)
    segment = torch.where(pos < cut, 0, torch.where(pos < (cut + length) // 2, 1, 2))
    keep = ((segment[:, None] == segment[None, :]) | (segment[None, :] == 0)) & (pos[None, :] <= pos[:, None])
    keep = keep.expand(b, 1, length, length).clone()
    keep[-1, :, length - 5:] = False
    keep[-1, :, :, length - 5:] = False
    return keep


def bidirectional_blocks(b, length):
    """Rows of sequences that see all of themselves (both ways) and nothing else, cut at different places
    per row (off the 16-key vector step), padding that sees only padding at the end of the last row."""
    pos = torch.arange(length)
    keep = torch.zeros(b, 1, length, length, dtype=torch.bool)
    for r in range(b):
        cuts = [0, 5 + 3 * r, length // 2 + r, length - 4, length]
        for lo, hi in zip(cuts, cuts[1:]):
            inside = (pos >= lo) & (pos < hi)
            keep[r, 0] |= inside[:, None] & inside[None, :]
    return keep


def cases(length, b=3):
    """(name, mask, is_causal) in the forms transformers hands to attention."""
    keep = torch.ones(b, length, dtype=torch.bool)
    keep[1, length - 7:] = False  # right padding
    keep[2, :4] = False  # left padding
    padded = keep[:, None, None, :].expand(b, 1, length, length)
    additive_min = torch.zeros(b, 1, length, length).masked_fill(~padded, torch.finfo(torch.float32).min)
    additive_inf = torch.zeros(b, 1, 1, length).masked_fill(~keep[:, None, None, :], float("-inf"))
    return [("no mask", None, False), ("causal", None, True), ("bool padding", padded, False),
            ("additive finfo.min, bf16", additive_min.bfloat16(), False),
            ("additive -inf, broadcast rows", additive_inf, False),
            ("packed causal blocks", packed_mask(b, length, length // 3), False),
            ("bidirectional blocks", bidirectional_blocks(b, length), False)]


def exact_grads(q, k, v, mask, is_causal, scale, grad_out):
    """float64 gradients of textbook attention; query rows that see no key give zeros (as SDPA)."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    n_rep = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1)
    scores = q @ kk.transpose(-1, -2) * scale
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask.double()
    probs = torch.softmax(scores, -1).nan_to_num(0.0)
    (probs @ vv).backward(grad_out.double())
    return q.grad, k.grad, v.grad


def exact_out(q, k, v, mask, is_causal, scale):
    """float64 textbook attention; query rows that see no key give zeros."""
    n_rep = q.shape[1] // k.shape[1]
    kk, vv = (t.double().repeat_interleave(n_rep, 1) for t in (k, v))
    scores = q.double() @ kk.transpose(-1, -2) * scale
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask.double()
    return torch.softmax(scores, -1).nan_to_num(0.0) @ vv


def python_grads(q, k, v, mask, is_causal, scale, grad_out, monkeypatch):
    """The same backward through the chunked PyTorch path."""
    with monkeypatch.context() as patch:
        patch.setattr(attention, "_fused_backward", lambda *args: None)
        q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
        n_rep = q.shape[1] // k.shape[1]
        out = RecomputeBackwardAttention.apply(q, k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1),
                                               mask, is_causal, scale)
        return torch.autograd.grad(out, (q, k, v), grad_out), out.detach()


def max_err(got, want):
    return (got.double() - want).abs().max().item()


@pytest.mark.parametrize("length,d,heads,kv_heads,tile", [(37, 32, 4, 4, 1 << 16), (70, 64, 6, 2, 300),
                                                          (130, 16, 2, 1, 1 << 16)])
def test_gradients_as_exact_as_the_pytorch_backward(cpu_kernels, monkeypatch, length, d, heads, kv_heads, tile):
    # tile=300: blocks of 4 query rows, so key ranges are cut per block and whole blocks see nothing
    gen = torch.Generator().manual_seed(length)
    b, scale = 3, 1 / math.sqrt(d)
    for name, mask, is_causal in cases(length, b):
        q = torch.randn(b, length, heads, d, generator=gen).bfloat16().transpose(1, 2)  # strided, as in models
        k, v = (torch.randn(b, kv_heads, length, d, generator=gen).bfloat16() for _ in range(2))
        grad_out = torch.randn(b, heads, length, d, generator=gen).bfloat16()
        exact = exact_grads(q, k, v, mask, is_causal, scale, grad_out)
        (py_q, py_k, py_v), out = python_grads(q, k, v, mask, is_causal, scale, grad_out, monkeypatch)
        kernel_mask = None
        if mask is not None:
            kernel_mask = (mask if mask.dtype == torch.bool else mask.float()).expand(b, heads, length, length)
        grads = cpu_kernels.attention_backward(q, k, v, out, grad_out, kernel_mask, is_causal, scale, tile)
        for got, py, want, what in zip(grads, (py_q, py_k, py_v), exact, "qkv"):
            assert got.shape == want.shape and got.dtype == torch.bfloat16
            assert torch.isfinite(got).all(), (name, what)
            scale_of = want.abs().max().item()
            # bf16 rounding of the inputs to the products: a few 1e-3 of the gradients' size
            assert max_err(got, want) <= 1e-2 * scale_of + 1e-3, (name, what, max_err(got, want), scale_of)
            assert max_err(got, want) <= 1.5 * max_err(py, want) + 1e-3, (name, what)


def test_query_rows_that_see_nothing_get_zero_gradients(cpu_kernels):
    b, h, length, d = 2, 2, 20, 16
    keep = torch.ones(b, 1, length, length, dtype=torch.bool)
    keep[0, :, 5:9] = False  # four query rows that attend to nothing
    q, k, v, out, grad_out = (torch.randn(b, h, length, d).bfloat16() for _ in range(5))
    dq, dk, dv = cpu_kernels.attention_backward(q, k, v, out, grad_out, keep.expand(b, h, length, length), False,
                                           0.25, 64)
    assert (dq[0, :, 5:9] == 0).all()
    assert dq[0, :, :5].abs().sum() > 0 and torch.isfinite(dk).all() and torch.isfinite(dv).all()


def test_attention_layer_uses_the_kernel_in_bf16_at_any_length(cpu_kernels, monkeypatch):
    calls = []
    real = attention._fused_backward
    monkeypatch.setattr(attention, "_fused_backward", lambda *a: calls.append(a[0].shape) or real(*a))
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, 3
    length = HYBRID_MAX_KV_LENGTH + 30  # beyond the PyTorch backward's limit
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 6, length, 32, generator=gen).requires_grad_()
    k, v = (torch.randn(2, 2, length, 32, generator=gen).requires_grad_() for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = fast_sdpa_attention_forward(module, q, k, v, None)
    grad_out = torch.randn_like(out.float())
    grads = torch.autograd.grad(out.float(), (q, k, v), grad_out)
    assert calls == [(2, 6, length, 32)]
    exact = exact_grads(q.bfloat16(), k.bfloat16(), v.bfloat16(), None, True, 1 / math.sqrt(32),
                        grad_out.bfloat16().transpose(1, 2))  # the layer returns (b, q_len, h, d)
    for got, want in zip(grads, exact):
        assert max_err(got, want) <= 1e-2 * want.abs().max().item() + 1e-3
    # a model's SDPA reference in bf16 agrees to bf16 precision
    ref_q, ref_k, ref_v = (t.detach().bfloat16().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(ref_q, ref_k.repeat_interleave(3, 1), ref_v.repeat_interleave(3, 1),
                                         is_causal=True)
    torch.testing.assert_close(out, ref.transpose(1, 2), atol=2e-2, rtol=2e-2)


def test_fp32_never_uses_the_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "load", lambda: calls.append(1))
    q, k, v = (torch.randn(1, 2, 8, 4, requires_grad=True) for _ in range(3))
    RecomputeBackwardAttention.apply(q, k, v, None, True, None).sum().backward()
    assert calls == [] and torch.isfinite(q.grad).all()


def test_kernels_off_and_failed_builds_fall_back(monkeypatch):
    monkeypatch.setenv(kernels.KERNELS_ENV, "off")
    assert kernels.load() is None
    monkeypatch.setenv(kernels.KERNELS_ENV, "on")
    monkeypatch.setattr(kernels, "_cpu_can_run", lambda: True)
    monkeypatch.setattr(kernels, "_loaded", {})

    def broken_build(**kwargs):
        raise RuntimeError("Error building extension 'rewardkit_attention': c++: not found")

    monkeypatch.setattr("torch.utils.cpp_extension.load", broken_build)
    with pytest.warns(RuntimeWarning, match="could not be built .*c\\+\\+: not found"):
        assert kernels.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.load() is None  # decided once per process: no second build, no warning
    # and training attention still runs, through the PyTorch backward
    q, k, v = (torch.randn(1, 2, 8, 4, requires_grad=True) for _ in range(3))
    out = RecomputeBackwardAttention.apply(*(t.bfloat16() for t in (q, k, v)), None, True, None)
    out.float().sum().backward()
    assert torch.isfinite(q.grad).all()


# -- the AMX forward --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length,d,heads,kv_heads", [(37, 32, 4, 4), (70, 64, 6, 2), (130, 32, 3, 1), (16, 64, 2, 2)])
def test_forward_as_exact_as_sdpa(cpu_kernels, length, d, heads, kv_heads):
    """Every mask form, both head widths, grouped key heads, lengths off the 16- and 32-key tile steps: the
    kernel's output is as close to float64 as SDPA's own bf16 output, and rows that see nothing are zeros."""
    if not cpu_kernels.amx_ready():
        pytest.skip("AMX tiles are not available to this process")
    gen = torch.Generator().manual_seed(length + d)
    b, scale = 3, 1 / math.sqrt(d)
    q = torch.randn(b, heads, length, d, generator=gen).bfloat16()
    k, v = (torch.randn(b, kv_heads, length, d, generator=gen).bfloat16() for _ in range(2))
    n_rep = heads // kv_heads
    for name, mask, is_causal in cases(length, b):
        got = attention._fused_forward(q, k, v, mask, is_causal, scale)
        assert got is not None and got.shape == q.shape and got.dtype == torch.bfloat16, name
        want = exact_out(q, k, v, mask, is_causal, scale)
        sdpa = F.scaled_dot_product_attention(q, k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1),
                                              attn_mask=mask, is_causal=is_causal, scale=scale).nan_to_num(0.0)
        assert max_err(got, want) <= 1.5 * max_err(sdpa, want) + 2e-3, name
        if mask is not None and mask.dtype == torch.bool:
            blind = ~mask.expand(b, heads, length, length).any(-1)  # query rows that see no key
            assert blind.any() == (name == "packed causal blocks"), name
            assert (got[blind] == 0).all(), name


def test_forward_long_rows_and_uneven_queries(cpu_kernels):
    """More queries than one tile row block and fewer keys than queries' rows (cross lengths), causal cut."""
    if not cpu_kernels.amx_ready():
        pytest.skip("AMX tiles are not available to this process")
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 2, 5, 64, generator=gen).bfloat16()
    k, v = (torch.randn(2, 1, 83, 64, generator=gen).bfloat16() for _ in range(2))
    keep = torch.rand(2, 1, 5, 83, generator=gen) > 0.5
    got = attention._fused_forward(q, k, v, keep, False, 0.125)
    assert max_err(got, exact_out(q, k, v, keep, False, 0.125)) < 2e-2
    long_q = torch.randn(1, 2, 300, 32, generator=gen).bfloat16()
    long_k, long_v = (torch.randn(1, 2, 300, 32, generator=gen).bfloat16() for _ in range(2))
    got = attention._fused_forward(long_q, long_k, long_v, None, True, 0.2)
    assert max_err(got, exact_out(long_q, long_k, long_v, None, True, 0.2)) < 2e-2


def test_forward_declines_what_it_does_not_compute(cpu_kernels):
    x = torch.randn(1, 2, 8, 48).bfloat16()  # head width 48: no tile layout for it
    assert attention._fused_forward(x, x, x, None, True, 0.1) is None
    y = torch.randn(1, 2, 8, 32)  # fp32
    assert attention._fused_forward(y, y, y, None, True, 0.1) is None


def test_scoring_attention_runs_the_forward_kernel(cpu_kernels, monkeypatch):
    """No gradients, bf16 (autocast), grouped key heads read in place: the kernel, and SDPA's result to bf16
    precision; with gradients the training path (the kernel forward, then the compiled backward)."""
    if not cpu_kernels.amx_ready():
        pytest.skip("AMX tiles are not available to this process")
    calls = []
    real = attention._fused_forward
    monkeypatch.setattr(attention, "_fused_forward", lambda *a: calls.append(a[1].shape) or real(*a))
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, 3
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(2, 6, 40, 64, generator=gen)
    k, v = (torch.randn(2, 2, 40, 64, generator=gen) for _ in range(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = fast_sdpa_attention_forward(module, q, k, v, None)
    assert calls == [(2, 2, 40, 64)]  # key heads as they are: no repeat for the kernel
    ref = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16().repeat_interleave(3, 1),
                                         v.bfloat16().repeat_interleave(3, 1), is_causal=True)
    torch.testing.assert_close(out, ref.transpose(1, 2), atol=2e-2, rtol=2e-2)
    with torch.no_grad():  # fp32: SDPA, not the kernel
        fast_sdpa_attention_forward(module, q, k, v, None)
    assert len(calls) == 1
    q.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = fast_sdpa_attention_forward(module, q, k, v, None)
    out.float().sum().backward()
    assert calls[1:] == [(2, 6, 40, 64)] and torch.isfinite(q.grad).all()


def test_bf16_scorer_runs_attention_in_the_kernel(cpu_kernels, tmp_path, monkeypatch):
    """A Llama-style reward model with 32-wide heads, scored in bf16 with shared-prefix packed rows: attention
    goes through the kernel (block masks), and the rewards match SDPA's to bf16 precision."""
    if not cpu_kernels.amx_ready():
        pytest.skip("AMX tiles are not available to this process")
    from transformers import AutoModelForCausalLM

    from rewardkit.data.record import Response
    from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem
    from tiny import make_bpe_tokenizer, tiny_causal_config

    tok = make_bpe_tokenizer(add_bos=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_causal_config("llama", len(tok), hidden_size=128,
                                                        intermediate_size=128)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    items = [ScoreItem([{"role": "user", "content": f"Question number {i}: which colour is the sky?"}],
                       [Response(a) for a in ("Blue.", "It is blue on a clear day.", "Green, I think.")])
             for i in range(3)]

    def rewards():
        scorer = RewardModelScorer(RewardModel.from_pretrained(tmp_path), device="cpu", precision="bf16")
        return [x for r in scorer.score(items) for x in r.rewards]

    calls = []
    real = attention._fused_forward
    monkeypatch.setattr(attention, "_fused_forward", lambda *a: calls.append(a[3] is not None) or real(*a))
    got = rewards()
    assert calls and all(calls)  # every layer, with the packed rows' block masks
    monkeypatch.setattr(attention, "_kernel_forward_applies", lambda *a: False)
    calls.clear()
    want = rewards()
    assert calls == []
    assert got == pytest.approx(want, abs=3e-2)
