"""Fused RMSNorm, SiLU-gated MLP and master-weight linear layers (rewardkit.fused) against transformers' own
modules and plain PyTorch."""

import pytest
import torch

from rewardkit import fused, kernels
from rewardkit.fused import restore_layers, use_fused_layers


def tiny_causal(kind, hidden=64, intermediate=96, layers=2):
    import transformers as tf

    common = dict(vocab_size=120, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    config = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig}[kind](**common)
    torch.manual_seed(0)
    return tf.AutoModel.from_config(config)


def rel_err(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-12)).item()


def run(module, x, grad):
    x = x.detach().clone().requires_grad_()
    module.zero_grad()
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad, [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("width", [64, 70])  # 70: a tail past the 32-wide vector steps
def test_rms_norm_matches_transformers(cpu_kernels, width):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    gen = torch.Generator().manual_seed(width)
    norm = LlamaRMSNorm(width, eps=1e-5).bfloat16()
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(width, generator=gen))
    x = (3 * torch.randn(5, 7, width, generator=gen)).bfloat16()
    grad = torch.randn(5, 7, width, generator=gen).bfloat16()
    eager = run(norm, x, grad)
    assert use_fused_layers(norm) == 1
    got = run(norm, x, grad)
    restore_layers(norm)
    # the same roundings as the eager ops (measured: bit-identical here), so only a last-bit rsqrt or
    # summation-order difference may show
    torch.testing.assert_close(got[0], eager[0], atol=0, rtol=8e-3)
    assert rel_err(got[0], eager[0]) < 1e-3
    assert rel_err(got[1], eager[1]) < 1e-3  # dx
    assert rel_err(got[2][0], eager[2][0]) < 1e-3  # dweight


def test_rms_norm_gradients_against_float64(cpu_kernels):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    gen = torch.Generator().manual_seed(3)
    width = 96
    weight = 1 + 0.3 * torch.randn(width, generator=gen)
    x = (2 * torch.randn(4, 9, width, generator=gen)).bfloat16()
    grad = torch.randn(4, 9, width, generator=gen).bfloat16()
    reference = LlamaRMSNorm(width, eps=1e-6).double()
    with torch.no_grad():
        reference.weight.copy_(weight.bfloat16().double())
    exact = run(reference, x.double(), grad.double())
    norm = LlamaRMSNorm(width, eps=1e-6).bfloat16()
    with torch.no_grad():
        norm.weight.copy_(weight)
    eager = run(norm, x, grad)
    use_fused_layers(norm)
    got = run(norm, x, grad)
    assert rel_err(got[1], exact[1]) <= 1.2 * rel_err(eager[1], exact[1]) + 1e-4
    assert rel_err(got[2][0], exact[2][0]) <= 1.2 * rel_err(eager[2][0], exact[2][0]) + 1e-4


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_backbone_same_outputs_and_gradients(cpu_kernels, kind):
    model = tiny_causal(kind).bfloat16()
    ids = torch.randint(1, 120, (3, 11), generator=torch.Generator().manual_seed(1))

    def step():
        model.zero_grad()
        hidden = model(input_ids=ids).last_hidden_state
        hidden.float().pow(2).mean().backward()
        return hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    eager_hidden, eager_grads = step()
    switched = use_fused_layers(model)
    assert switched == 2 * 2 + 1 + 2 + 2 * 7  # norms: two per layer and a final one; an MLP and 7 linears a layer
    hidden, grads = step()
    restore_layers(model)
    assert rel_err(hidden, eager_hidden) < 1e-3  # measured: identical
    assert grads.keys() == eager_grads.keys()
    for name, g in grads.items():
        assert rel_err(g, eager_grads[name]) < 2e-2, name  # measured: at most 8e-3
    again, _ = step()  # restored: the eager modules again, bit for bit
    torch.testing.assert_close(again, eager_hidden, atol=0, rtol=0)
    assert not any("forward" in vars(m) for m in model.modules())


def test_fp32_and_other_architectures_run_their_own_forward(cpu_kernels, monkeypatch):
    import transformers as tf

    calls = []
    monkeypatch.setattr(fused._RMSNorm, "apply", lambda *a: calls.append("norm"))
    monkeypatch.setattr(fused._SiluMul, "apply", lambda *a: calls.append("mlp"))
    model = tiny_causal("llama")  # fp32 weights: the fused kernels are bf16 only
    monkeypatch.setattr(fused._MasterLinear, "apply", lambda *a: calls.append("linear"))
    model = tiny_causal("llama")  # fp32 weights: the fused kernels are bf16 only
    assert use_fused_layers(model) == 7 + 2 * 7
    model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.sum().backward()
    assert calls == []
    neox = tf.AutoModel.from_config(tf.GPTNeoXConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                                                     num_hidden_layers=1, num_attention_heads=4))
    assert use_fused_layers(neox) == 4  # LayerNorm and a GELU MLP stay; its four linear layers switch


def test_no_kernel_switches_nothing(monkeypatch):
    monkeypatch.setattr(kernels, "load", lambda: None)
    model = tiny_causal("llama")
    assert use_fused_layers(model) == 0
    assert not any("forward" in vars(m) for m in model.modules())


def test_bf16_scorer_scores_through_fused_layers(cpu_kernels, llama_dir, monkeypatch):
    from rewardkit.data.record import Response
    from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem

    items = [ScoreItem([{"role": "user", "content": "Which is the capital of France?"}],
                       [Response(a) for a in ("Paris.", "It is Paris, on the Seine.", "Lyon, I think.")])]
    fused_scorer = RewardModelScorer(RewardModel.from_pretrained(llama_dir), device="cpu", precision="bf16")
    assert any(getattr(m, "_rewardkit_fused", False) for m in fused_scorer.model.modules())
    calls = []
    real = fused._RMSNorm.apply
    monkeypatch.setattr(fused._RMSNorm, "apply", lambda *a: calls.append(1) or real(*a))
    got = fused_scorer.score(items)[0].rewards
    assert calls  # the scores went through the kernels
    monkeypatch.setattr(kernels, "load", lambda: None)
    plain = RewardModelScorer(RewardModel.from_pretrained(llama_dir), device="cpu", precision="bf16")
    assert not any(getattr(m, "_rewardkit_fused", False) for m in plain.model.modules())
    assert got == pytest.approx(plain.score(items)[0].rewards, abs=1e-2)


# -- linear layers on fp32 master weights ------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 37, 300])
def test_linear_weight_grad_is_the_fp32_product(cpu_kernels, n):
    gen = torch.Generator().manual_seed(n)
    grad_y = torch.randn(n, 70, generator=gen).bfloat16()
    x = torch.randn(n, 45, generator=gen).bfloat16()
    got = cpu_kernels.linear_weight_grad(grad_y, x)
    assert got.dtype == torch.float32 and got.shape == (70, 45)
    want = grad_y.double().t() @ x.double()
    # fp32 sums of exact bf16 products: far inside one bf16 rounding (2^-9 relative)
    torch.testing.assert_close(got.double(), want, atol=1e-4 * max(n, 1) ** 0.5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="contiguous bf16"):
        cpu_kernels.linear_weight_grad(grad_y.float(), x.float())


@pytest.mark.parametrize("bias", [True, False])
def test_linear_on_master_weights_matches_bf16_copies(cpu_kernels, bias):
    """Forward and input gradient bit for bit what a linear layer on bf16 copies of its weights computes; the
    weight gradient the same product without the rounding to bf16 (at least as close to the exact one)."""
    gen = torch.Generator().manual_seed(7)
    layer = torch.nn.Linear(70, 50, bias=bias)
    x = torch.randn(3, 5, 70, generator=gen).bfloat16()
    grad = torch.randn(3, 5, 50, generator=gen).bfloat16()

    def run_layer(forward):
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        y = forward(xi)
        y.backward(grad)
        return y.detach(), xi.grad, layer.weight.grad.clone(), None if not bias else layer.bias.grad.clone()

    eager = run_layer(lambda xi: torch.nn.functional.linear(
        xi, layer.weight.bfloat16(), None if not bias else layer.bias.bfloat16()))
    assert use_fused_layers(layer) == 1
    got = run_layer(layer)
    restore_layers(layer)
    assert got[0].dtype == torch.bfloat16 and got[2].dtype == torch.float32
    # bit-exact by design: the forward is nn.functional.linear on the same bf16 copies, the input gradient the
    # same bf16 product; only the weight gradient goes through the kernel
    torch.testing.assert_close(got[0], eager[0], atol=0, rtol=0)
    torch.testing.assert_close(got[1], eager[1], atol=0, rtol=0)
    exact_w = grad.double().flatten(0, 1).t() @ x.double().flatten(0, 1)
    assert rel_err(got[2], exact_w) <= rel_err(eager[2], exact_w) + 1e-7
    assert rel_err(got[2], exact_w) < 1e-5
    if bias:
        torch.testing.assert_close(got[3], eager[3], atol=0, rtol=0)  # the same bf16 sum


def test_linear_without_gradients_casts_and_computes(cpu_kernels, monkeypatch):
    calls = []
    monkeypatch.setattr(fused._MasterLinear, "apply", lambda *a: calls.append(1))
    layer = torch.nn.Linear(16, 8)
    use_fused_layers(layer)
    x = torch.randn(4, 16).bfloat16()
    want = torch.nn.functional.linear(x, layer.weight.bfloat16(), layer.bias.bfloat16())
    with torch.no_grad():  # bit-exact by design: the layer casts and calls nn.functional.linear itself
        torch.testing.assert_close(layer(x), want, atol=0, rtol=0)
    layer.requires_grad_(False)  # frozen (a LoRA base layer): nothing to differentiate
    torch.testing.assert_close(layer(x), want, atol=0, rtol=0)
    assert calls == []


@pytest.mark.parametrize("backbone", ["llama", "bert"])
def test_reward_model_bf16_pass_keeps_linear_weights_fp32(cpu_kernels, backbone, llama_dir, bert_dir,
                                                          monkeypatch):
    """In a bf16 training pass the linear layers get their fp32 weights and cast them themselves; the rewards
    equal those of the plain bf16 pass and every gradient is as close to it as bf16 allows, while the output
    layer keeps computing in fp32. Scoring (no gradients) uses the cached bf16 copies as before."""
    from rewardkit.models import RewardModel

    path = llama_dir if backbone == "llama" else bert_dir
    ids = torch.randint(5, 100, (4, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)

    def train_pass(model):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rewards = model(input_ids=ids, attention_mask=mask)
        (rewards.float() ** 2).sum().backward()
        return rewards.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = RewardModel.from_pretrained(path)
    plain.compute_dtype = torch.bfloat16
    want_rewards, want_grads = train_pass(plain)
    model = RewardModel.from_pretrained(path)
    model.compute_dtype = torch.bfloat16
    switched = use_fused_layers(model.hf_model)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1][-1]
    assert not getattr(head, "_rewardkit_fused", False)  # the fp32 output layer is left alone
    linears = [m for m in model.hf_model.base_model.modules() if isinstance(m, torch.nn.Linear)]
    assert switched >= len(linears) > 0
    cast = model._cast_weights(torch.bfloat16)
    own = {id(p) for m in linears for p in m.parameters(recurse=False)}
    assert not any(id(p) in own for n, p in model.named_parameters() if n in cast)
    calls = []
    real = fused._MasterLinear.apply
    monkeypatch.setattr(fused._MasterLinear, "apply", lambda *a: calls.append(1) or real(*a))
    rewards, grads = train_pass(model)
    assert len(calls) == len(linears)
    # bit-exact by design: the forward is nn.functional.linear on the same bf16 copies of the same weights (two
    # loads of one file, one seeded head); only the weight gradients go through the kernel
    torch.testing.assert_close(rewards, want_rewards, atol=0, rtol=0)
    assert grads.keys() == want_grads.keys()
    for name, g in grads.items():
        assert g.dtype == torch.float32
        assert rel_err(g, want_grads[name]) < 2e-2, name
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask),
                                   plain(input_ids=ids, attention_mask=mask), atol=0, rtol=0)
