"""Weight averaging of reward models (WARM, METHODS §5.2): the arithmetic on state dicts.

theta = (1/M) sum_i theta_i, for members fine-tuned from the same initialisation (otherwise their weights are
not in one basin and the average is meaningless; `rewardkit.eval.warm` checks that along the interpolation
path before averaging). Pure functions of state dicts; floats are averaged in float64 and cast back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rewardkit.errors import RewardkitError


def check_same_shapes(states: Sequence[dict[str, torch.Tensor]], names: Sequence[str]) -> None:
    """Members must hold the same tensors with the same shapes: the error names the first difference."""
    first = states[0]
    for name, state in zip(names[1:], states[1:]):
        if state.keys() != first.keys():
            only = sorted(set(state) ^ set(first))[:3]
            raise RewardkitError(f"{name}: its weights are not {names[0]}'s (tensors only in one of them: {only}); "
                                 "weight averaging needs members of one architecture")
        for key, tensor in state.items():
            if tensor.shape != first[key].shape:
                raise RewardkitError(f"{name}: tensor {key} has shape {tuple(tensor.shape)}, {names[0]}'s "
                                     f"{tuple(first[key].shape)}")


def interpolate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """alpha * a + (1 - alpha) * b for floating tensors; others (integer buffers) are taken from a."""
    return {k: (alpha * a[k].double() + (1 - alpha) * b[k].double()).to(a[k].dtype)
            if a[k].is_floating_point() else a[k].clone() for k in a}


def average(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of the floating tensors (integer buffers from the first member)."""
    first = states[0]
    return {k: (sum(s[k].double() for s in states) / len(states)).to(first[k].dtype)
            if first[k].is_floating_point() else first[k].clone() for k in first}
