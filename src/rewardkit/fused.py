"""Fused layers for bf16 CPU training: RMSNorm and SiLU-gated MLP of Llama-style backbones, and the weight
gradients of every linear layer.

In a SmolLM2 training step the elementwise work around the matrix products cost as much as the products:
RMSNorm is ten eager ops (casts, pow, mean, rsqrt, products and their backward) and the MLP's
`act_fn(gate) * up` five more, each a pass through memory. `use_fused_layers(model)` routes the RMSNorm and MLP
modules of Llama, Qwen2/3 and Mistral backbones through `rewardkit.kernels` (one pass each way), with the
eager ops' bf16 roundings, so losses and gradients match the eager modules to bf16 precision.

A module runs fused only for bf16 CPU input and weights (the bf16 weight copies of `precision: bf16`) outside
torch.compile; anything else runs its own forward. `restore_layers(model)` undoes the switch.

Linear layers (`nn.Linear`, any backbone) keep their fp32 master weights through a training pass instead of
meeting bf16 copies made beforehand (`RewardModel` leaves them out of its casts, see `casts_own_weights`): each
casts its weights itself, computes exactly what it computed before, and its backward writes the weight
gradient in fp32 straight from MKL's mixed-precision product (`kernels.linear_weight_grad`), where PyTorch
runs a slow transposed bf16 product, rounds it to bf16 and casts it to fp32. Measured on the 2-core AMX CPU:
1.3-1.7x for those products alone and ~1.3x inside a step (none for 384 x 384), the gradients' cast pass gone;
SmolLM2 training steps 4-5% faster, MiniLM's unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

#: transformers classes whose forward is exactly `weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype)`
RMS_NORMS = {"LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm"}
#: ... and exactly `down_proj(act_fn(gate_proj(x)) * up_proj(x))`
GATED_MLPS = {"LlamaMLP", "Qwen2MLP", "Qwen3MLP", "MistralMLP"}
_SWITCHED = "_rewardkit_fused"


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, x, weight, eps):
        y, rstd = kernel.rms_norm_forward(x, weight, eps)
        ctx.kernel = kernel
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = ctx.kernel.rms_norm_backward(grad_y.contiguous(), x, weight, rstd)
        return None, dx, dw if ctx.needs_input_grad[2] else None, None


class _SiluMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, gate, up):
        ctx.kernel = kernel
        ctx.save_for_backward(gate, up)
        return kernel.silu_mul_forward(gate, up)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        gate, up = ctx.saved_tensors
        dg, du = ctx.kernel.silu_mul_backward(grad_y.contiguous(), gate, up)
        return None, dg, du


class _MasterLinear(torch.autograd.Function):
    """y = x W^T + b for bf16 x and fp32 (master) W, b: the forward of a linear layer on bf16 copies of W and b,
    the backward giving fp32 gradients for W and b themselves."""

    @staticmethod
    def forward(ctx, kernel, x, weight, bias):
        weight16 = weight.to(x.dtype)
        bias16 = None if bias is None else bias.to(x.dtype)
        ctx.kernel = kernel
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight16)
        return nn.functional.linear(x, weight16, bias16)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, weight16 = ctx.saved_tensors
        grad_y2d = grad_y.reshape(-1, grad_y.shape[-1]).contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_x = (grad_y2d @ weight16).view(*grad_y.shape[:-1], weight16.shape[1])
        if ctx.needs_input_grad[2]:
            grad_w = ctx.kernel.linear_weight_grad(grad_y2d, x.reshape(-1, x.shape[-1]).contiguous())
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = grad_y2d.sum(0).float()  # a bf16 sum (fp32 inside), as before: 2.5x faster than dtype=fp32
        return None, grad_x, grad_w, grad_b


def _runs_fused(*tensors: torch.Tensor) -> bool:
    # (autocast does not matter: none of the replaced elementwise ops is on its lists)
    return not torch.compiler.is_compiling() and all(t.device.type == "cpu" and t.dtype == torch.bfloat16
                                                     for t in tensors)


def _rms_norm_forward(module: nn.Module, kernel, hidden_states: torch.Tensor) -> torch.Tensor:
    if not _runs_fused(hidden_states, module.weight):
        return type(module).forward(module, hidden_states)
    return _RMSNorm.apply(kernel, hidden_states.contiguous(), module.weight.contiguous(),
                          float(module.variance_epsilon))


def _gated_mlp_forward(module: nn.Module, kernel, x: torch.Tensor) -> torch.Tensor:
    gate, up = module.gate_proj(x), module.up_proj(x)
    if not _runs_fused(gate, up):
        return module.down_proj(module.act_fn(gate) * up)
    return module.down_proj(_SiluMul.apply(kernel, gate.contiguous(), up.contiguous()))


def _linear_forward(module: nn.Linear, kernel, x: torch.Tensor) -> torch.Tensor:
    weight, bias = module.weight, module.bias
    if not (x.dtype == torch.bfloat16 and weight.dtype == torch.float32 and x.device.type == "cpu"
            and not torch.compiler.is_compiling()):
        return type(module).forward(module, x)
    if torch.is_grad_enabled() and (weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _MasterLinear.apply(kernel, x, weight, bias)
    return nn.functional.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


def casts_own_weights(module: nn.Module) -> bool:
    """Whether `module` is a linear layer that casts its fp32 weights to bf16 itself in a training pass, so the
    bf16 weight copies of `precision: bf16` must leave it out."""
    return isinstance(module, nn.Linear) and getattr(module, _SWITCHED, False)


def _is_silu(act: nn.Module) -> bool:
    return isinstance(act, nn.SiLU) or type(act).__name__ == "SiLUActivation"


def use_fused_layers(model: nn.Module) -> int:
    """Route `model`'s RMSNorm and SiLU-gated MLP modules and its linear layers through the fused kernels;
    returns how many were switched (0 where the kernels cannot run or the model has none). A module whose
    forward is already replaced on the instance (the output layer, which computes in fp32) is left alone."""
    from rewardkit import kernels

    kernel = kernels.load()
    if kernel is None:
        return 0
    switched = 0
    for module in model.modules():
        name = type(module).__name__
        if getattr(module, _SWITCHED, False) or "forward" in vars(module):
            continue
        if isinstance(module, nn.Linear):
            module.forward = _bind(_linear_forward, module, kernel)
        elif name in RMS_NORMS and hasattr(module, "variance_epsilon"):
            module.forward = _bind(_rms_norm_forward, module, kernel)
        elif name in GATED_MLPS and _is_silu(getattr(module, "act_fn", None)):
            module.forward = _bind(_gated_mlp_forward, module, kernel)
        else:
            continue
        setattr(module, _SWITCHED, True)
        switched += 1
    return switched


def restore_layers(model: nn.Module) -> None:
    """Undo `use_fused_layers`: the modules run their own forward again."""
    for module in model.modules():
        if getattr(module, _SWITCHED, False):
            del module.forward  # the instance attribute; the class's forward shows through again
            delattr(module, _SWITCHED)


def _bind(function, module: nn.Module, kernel):
    def forward(*args, **kwargs):
        return function(module, kernel, *args, **kwargs)

    return forward
