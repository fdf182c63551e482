"""RecomputeBackwardAttention and the fast-attention switch for transformers models."""

import json
import math
import types

import pytest
import torch
import torch.nn.functional as F

from rewardkit.attention import (
    FAST_ATTENTION_NAME,
    HYBRID_MAX_KV_LENGTH,
    RecomputeBackwardAttention,
    fast_attention,
    fast_sdpa_attention_forward,
    restore_attention,
    use_fast_attention,
)

MASK_KINDS = ["none", "bool", "float", "causal", "dead_rows_bool", "dead_rows_float"]


def make_mask(kind, b, q_len, kv_len, dtype):
    """(mask, is_causal) for one of MASK_KINDS; masks are (b, 1, q_len, kv_len) like transformers builds."""
    if kind == "none":
        return None, False
    if kind == "causal":
        return None, True
    keep = torch.ones(b, 1, q_len, kv_len, dtype=torch.bool)
    keep[0, ..., kv_len - 2:] = False  # right padding
    keep[-1, ..., :1] = False  # left padding
    if kind.startswith("dead_rows"):
        keep[0, :, 1] = False  # a query row that may attend to nothing
        keep[-1, :, 0] = False
    if kind.endswith("bool"):
        return keep, False
    return torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, float("-inf")), False


def reference_attention(q, k, v, mask, is_causal, scale=None):
    """Textbook attention; rows with no key to attend give zeros (as SDPA)."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-1, -2) * scale
    if is_causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    dead = torch.isneginf(scores).all(-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)
    return probs @ v


def qkv(b=2, h=3, q_len=5, kv_len=5, d=4, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=gen, dtype=dtype).requires_grad_()
            for n in (q_len, kv_len, kv_len)]


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_gradcheck_and_reference(kind):
    q_len, kv_len = 4, 6  # q_len != kv_len: causal is upper-left aligned, as in SDPA
    q, k, v = qkv(q_len=q_len, kv_len=kv_len)
    mask, is_causal = make_mask(kind, 2, q_len, kv_len, torch.float64)

    def fn(q, k, v):
        return RecomputeBackwardAttention.apply(q, k, v, mask, is_causal, 0.7)

    assert torch.autograd.gradcheck(fn, (q, k, v))
    out, ref = fn(q, k, v), reference_attention(q, k, v, mask, is_causal, 0.7)
    torch.testing.assert_close(out, ref)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
        assert torch.isfinite(got).all()


def test_fully_masked_rows_match_sdpa():
    """SDPA gives zero output and zero gradients for a query row that attends to nothing; so do we."""
    q, k, v = qkv(dtype=torch.float32)
    mask, _ = make_mask("dead_rows_bool", 2, 5, 5, torch.float32)
    out = RecomputeBackwardAttention.apply(q, k, v, mask)
    out.sum().backward()
    assert out[0, :, 1].eq(0).all() and q.grad[0, :, 1].eq(0).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def _outputs_and_grads(fn, q0, k0, v0, grad_out, dtype):
    q, k, v = [t.detach().to(dtype).requires_grad_() for t in (q0, k0, v0)]
    out = fn(q, k, v)
    return [out] + list(torch.autograd.grad(out, (q, k, v), grad_out.to(dtype)))


def _rel_err(got, want):
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


@pytest.mark.parametrize("kind", ["bool", "float", "causal", "dead_rows_bool"])
def test_matches_sdpa_fp32_and_bf16(kind):
    """fp32: equal to SDPA within 1e-5 (relative to the largest value); bf16: within 2e-2 of SDPA and no
    further from the float64 result than 2x SDPA's own bf16 error (+1e-3)."""
    b, h, n, d = 2, 3, 37, 16
    q, k, v = qkv(b, h, n, n, d, torch.float32, seed=1)
    grad_out = torch.randn(b, h, n, d, generator=torch.Generator().manual_seed(2))
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        mask, is_causal = make_mask(kind, b, n, n, dtype)

        def ours(q, k, v):
            return RecomputeBackwardAttention.apply(q, k, v, mask, is_causal)

        def sdpa(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)

        got = _outputs_and_grads(ours, q, k, v, grad_out, dtype)
        want = _outputs_and_grads(sdpa, q, k, v, grad_out, dtype)
        for g, w in zip(got, want):
            assert g.dtype == dtype
            assert _rel_err(g, w) <= tol
        if dtype == torch.bfloat16:
            mask64 = mask.double() if mask is not None and mask.is_floating_point() else mask
            exact = _outputs_and_grads(
                lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask64, is_causal=is_causal),
                q, k, v, grad_out, torch.float64)
            for g, w, e in zip(got, want, exact):
                assert _rel_err(g, e) <= 2 * _rel_err(w, e) + 1e-3


def test_only_needed_gradients_are_computed():
    q, k, v = qkv()
    k.requires_grad_(False)
    out = RecomputeBackwardAttention.apply(q, k, v)
    out.sum().backward()
    assert q.grad is not None and v.grad is not None and k.grad is None


# ---- dispatch -----------------------------------------------------------------------------------------


@pytest.fixture
def hybrid_calls(monkeypatch):
    """Counts calls of RecomputeBackwardAttention.apply, with the recompute backward used in fp32 too (by
    default only bf16 training takes it), so the dispatch is checked against SDPA at fp32's tolerance."""
    import rewardkit.attention as attention

    monkeypatch.setattr(attention, "RECOMPUTE_BACKWARD_DTYPES", frozenset({torch.float32, torch.bfloat16}))
    calls = []
    original = RecomputeBackwardAttention.apply

    def spy(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(RecomputeBackwardAttention, "apply", spy)
    return calls


def _module(groups=1, is_causal=True):
    return types.SimpleNamespace(num_key_value_groups=groups, is_causal=is_causal)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
@pytest.mark.parametrize("is_causal", [True, False])
def test_forward_matches_transformers_sdpa(hybrid_calls, groups, mask_kind, is_causal):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h_kv, n, d = 2, 2, 6, 8
    gen = torch.Generator().manual_seed(0)
    q0 = torch.randn(b, h_kv * groups, n, d, generator=gen)
    k0, v0 = torch.randn(b, h_kv, n, d, generator=gen), torch.randn(b, h_kv, n, d, generator=gen)
    mask, _ = make_mask(mask_kind, b, n, n, torch.float32)
    module = _module(groups, is_causal)
    results = []
    for fn in (fast_sdpa_attention_forward, sdpa_attention_forward):
        q, k, v = [t.clone().requires_grad_() for t in (q0, k0, v0)]
        out, weights = fn(module, q, k, v, mask, scaling=0.4)
        assert weights is None and out.shape == (b, n, h_kv * groups, d)
        out.pow(2).sum().backward()
        results.append([out, q.grad, k.grad, v.grad])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert len(hybrid_calls) == 1


def test_dispatch_falls_back_to_sdpa(hybrid_calls):
    module = _module()
    q, k, v = qkv(1, 2, 8, 8, 4, torch.float32)
    fast_sdpa_attention_forward(module, q, k, v, None, dropout=0.1)  # dropout
    with torch.no_grad():
        fast_sdpa_attention_forward(module, q, k, v, None)  # no gradients
    fast_sdpa_attention_forward(module, *[t.detach() for t in (q, k, v)], None)
    long = qkv(1, 1, 4, HYBRID_MAX_KV_LENGTH + 1, 4, torch.float32)
    fast_sdpa_attention_forward(module, *long, None)  # too many keys
    assert hybrid_calls == []
    fast_sdpa_attention_forward(module, *qkv(1, 1, 4, HYBRID_MAX_KV_LENGTH, 4, torch.float32), None)
    assert len(hybrid_calls) == 1


def test_by_default_fp32_training_keeps_sdpa_and_bf16_takes_the_recompute_backward(monkeypatch):
    calls = []
    original = RecomputeBackwardAttention.apply
    monkeypatch.setattr(RecomputeBackwardAttention, "apply", lambda *args: calls.append(args) or original(*args))
    module = _module()
    fast_sdpa_attention_forward(module, *qkv(1, 2, 8, 8, 4, torch.float32), None)
    assert calls == []
    fast_sdpa_attention_forward(module, *(t.bfloat16() for t in qkv(1, 2, 8, 8, 4, torch.float32)), None)
    assert len(calls) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_sdpa_attention_forward(module, *qkv(1, 2, 8, 8, 4, torch.float32), None)
    assert len(calls) == 2


def test_autocast_behaves_like_sdpa(hybrid_calls):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    mask, _ = make_mask("bool", 2, 9, 9, torch.float32)
    results = []
    for fn in (fast_sdpa_attention_forward, sdpa_attention_forward):
        q, k, v = qkv(2, 2, 9, 9, 8, torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = fn(_module(), q, k, v, mask)
        out.float().sum().backward()
        results.append([out, q.grad, k.grad, v.grad])
    assert len(hybrid_calls) == 1
    for got, want in zip(*results):
        assert got.dtype == want.dtype
        assert _rel_err(got, want) <= 2e-2


# ---- transformers models ------------------------------------------------------------------------------


def tiny_model(kind):
    import transformers as tf

    common = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_labels=1, pad_token_id=0)
    if kind == "bert":
        config = tf.BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common)
    elif kind == "llama":
        config = tf.LlamaConfig(num_key_value_heads=2, **common)
    elif kind == "qwen2":
        config = tf.Qwen2Config(num_key_value_heads=2, **common)
    else:
        config = tf.GPTNeoXConfig(hidden_dropout=0.0, attention_dropout=0.0, **common)
    torch.manual_seed(0)
    return tf.AutoModelForSequenceClassification.from_config(config).train()


def padded_batch():
    ids = torch.randint(1, 100, (3, 9), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 6:] = 0  # right padding
    attention_mask[2, :3] = 0  # left padding: causal models get query rows with nothing to attend
    return ids.masked_fill(attention_mask == 0, 0), attention_mask


def logits_and_grads(model, ids, attention_mask):
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=attention_mask).logits
    logits.sum().backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["bert", "llama", "qwen2", "gpt_neox"])
def test_model_same_logits_and_gradients(kind, hybrid_calls, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = tiny_model(kind)
    batch = padded_batch()
    want_logits, want_grads = logits_and_grads(model, *batch)
    assert hybrid_calls == []

    assert use_fast_attention(model)
    assert model.config._attn_implementation == FAST_ATTENTION_NAME
    got_logits, got_grads = logits_and_grads(model, *batch)
    assert len(hybrid_calls) == model.config.num_hidden_layers
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-5, rtol=1e-5, msg=name)

    restore_attention(model)
    assert model.config._attn_implementation == "sdpa"
    model.save_pretrained(tmp_path)
    config_text = (tmp_path / "config.json").read_text()
    assert FAST_ATTENTION_NAME not in config_text and "rewardkit" not in config_text
    json.loads(config_text)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "sdpa"
    # fp32: the reloaded weights sit at other memory offsets, where the GEMMs can round differently; 1e-5
    torch.testing.assert_close(reloaded(input_ids=batch[0], attention_mask=batch[1]).logits, want_logits,
                               atol=1e-5, rtol=1e-5)


def test_config_saved_while_switched_has_no_custom_name(tmp_path):
    model = tiny_model("llama")
    with fast_attention(model) as switched:
        assert switched
        model.save_pretrained(tmp_path)
    assert FAST_ATTENTION_NAME not in (tmp_path / "config.json").read_text()
    assert model.config._attn_implementation == "sdpa"


def test_context_manager_nested_in_explicit_switch():
    model = tiny_model("bert")
    assert use_fast_attention(model)
    with fast_attention(model) as switched:
        assert switched
    assert model.config._attn_implementation == FAST_ATTENTION_NAME  # the outer switch still holds
    restore_attention(model)
    assert model.config._attn_implementation == "sdpa"
    restore_attention(model)  # no-op when not switched
    assert model.config._attn_implementation == "sdpa"


def test_models_that_cannot_switch_are_left_alone():
    from transformers import BertForSequenceClassification

    assert not use_fast_attention(torch.nn.Linear(2, 2))

    eager = tiny_model("bert")
    eager.set_attn_implementation("eager")
    assert not use_fast_attention(eager)
    assert eager.config._attn_implementation == "eager"

    class OpaqueAttentionBert(BertForSequenceClassification):
        """Stands for a model whose attention layers do not go through the AttentionInterface."""

        @classmethod
        def _can_set_attn_implementation(cls):
            return False

    opaque = OpaqueAttentionBert(tiny_model("bert").config)
    assert not use_fast_attention(opaque)
    assert opaque.config._attn_implementation == "sdpa"
    with fast_attention(opaque) as switched:
        assert not switched
