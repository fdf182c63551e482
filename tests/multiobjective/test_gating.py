"""Verbosity de-correlation and the ArmoRM gate (METHODS §2.3 Checks)."""

import numpy as np
import pytest
import torch

from rewardkit.eval.metrics import spearman
from rewardkit.multiobjective import (
    LAMBDA_GRID,
    Decorrelation,
    GatingNetwork,
    decorrelate,
    fit_gate,
    fit_static_weights,
    gated_score,
)


def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_the_lambda_grid_is_armorms():
    assert LAMBDA_GRID[:5] == (0.0, 0.01, 0.025, 0.05, 0.075) and LAMBDA_GRID[-1] == 0.95
    assert list(LAMBDA_GRID) == sorted(LAMBDA_GRID) and len(LAMBDA_GRID) == 24


def reference_rewards(n=6000):
    """Columns: verbose-biased quality (0.6 r_v), mildly biased (0.27 r_v), independent, anti-verbose, and
    the verbosity objective r_v itself (index 4)."""
    q, v = gaussian(n, 4, seed=1), gaussian(n, seed=2)
    return torch.stack([q[:, 0] + 0.6 * v, q[:, 1] + 0.27 * v, q[:, 2], q[:, 3] - 0.3 * v, v], 1)


def test_decorrelation_check():
    R = reference_rewards()
    dec = decorrelate(R, verbosity_index=4)
    Rp = dec.apply(R)
    v = R[:, 4].numpy()
    assert torch.all(Rp[:, 4] == 0)  # r'_v ≡ 0
    for j in range(3):  # every objective the rule de-biases: |Spearman(r'_j, r_v)| ≤ τ
        assert abs(spearman(Rp[:, j].numpy(), v)) <= 0.03
        assert dec.satisfied[j]
    # the smallest λ on the grid: the grid value before it still leaves Spearman above τ
    assert dec.lambdas[2] == 0.0 and dec.lambdas[0] > dec.lambdas[1] > 0.0
    for j in (0, 1):
        before = LAMBDA_GRID[LAMBDA_GRID.index(dec.lambdas[j]) - 1]
        assert spearman((R[:, j] - before * R[:, 4]).numpy(), v) > 0.03
    # λ ≥ 0 only removes positive correlation: the anti-verbose objective is left as it is
    assert dec.lambdas[3] == 0.0 and torch.equal(Rp[:, 3], R[:, 3])  # exact: r - 0 * r_v is r
    assert dec.lambdas[4] == 1.0 and np.isnan(dec.spearman[4])


def test_decorrelation_without_a_grid_value_keeps_lambda_one_and_says_so():
    R = reference_rewards()
    dec = decorrelate(R, verbosity_index=4, grid=(0.0, 0.1))
    assert dec.lambdas[0] == 1.0 and not dec.satisfied[0]
    assert dec.spearman[0] == pytest.approx(spearman((R[:, 0] - R[:, 4]).numpy(), R[:, 4].numpy()))


def test_effective_weights_give_the_same_combination_on_raw_rewards():
    R = reference_rewards(50)
    dec = decorrelate(reference_rewards(), 4)
    w = torch.tensor([0.5, 1.0, -0.2, 0.3, 2.0])
    assert torch.allclose(dec.apply(R) @ w, R @ dec.effective_weights(w), atol=1e-5)
    again = Decorrelation.from_json(dec.to_json())
    assert torch.equal(again.matrix(), dec.matrix())  # exact: the λ's round-trip through JSON, no arithmetic


def test_gate_is_beta_times_a_tempered_softmax():
    gate = GatingNetwork(6, 3, hidden_dim=16, n_hidden=2).eval()
    assert gate.beta.item() == 1.0 and gate.beta.requires_grad
    assert len(gate.layers) == 3 and gate.temperature == 10.0 and gate.dropout == 0.2
    x = gaussian(5, 6)
    g = gate(x)
    assert torch.all(g >= 0) and torch.allclose(g.sum(-1), torch.ones(5))
    with torch.no_grad():
        gate.beta.fill_(2.5)
        hidden = x
        for layer in gate.layers[:-1]:
            hidden = torch.relu(layer(hidden))
        logits = gate.layers[-1](hidden)
    assert torch.allclose(gate(x), 2.5 * torch.softmax(logits / 10.0, -1), atol=1e-6)
    R = gaussian(5, 4, 3, seed=1)  # 5 prompts, 4 responses each
    assert torch.allclose(gated_score(gate, x, R), (R * gate(x)[:, None, :]).sum(-1))


def prompt_dependent_pairs(n, seed):
    """Prompts whose first feature says which of two objectives decides the preference."""
    x = gaussian(n, 8, seed=seed)
    kind = (x[:, 0] > 0).long()
    Ra, Rb = gaussian(n, 2, seed=seed + 1), gaussian(n, 2, seed=seed + 2)
    first_wins = Ra.gather(1, kind[:, None])[:, 0] > Rb.gather(1, kind[:, None])[:, 0]
    return x, torch.where(first_wins[:, None], Ra, Rb), torch.where(first_wins[:, None], Rb, Ra), kind


def test_the_gate_learns_which_objective_a_prompt_needs():
    x, Rc, Rr, _ = prompt_dependent_pairs(3000, seed=0)
    xt, Tc, Tr, kind = prompt_dependent_pairs(2000, seed=10)
    static = fit_static_weights(Rc, Rr).weights
    static_acc = float(((Tc - Tr) @ static > 0).float().mean())
    fit = fit_gate(x, Rc, Rr, steps=200, batch_size=128, hidden_dim=32, n_hidden=2, lr=3e-3)
    with torch.no_grad():
        g = fit.gate(xt)
    gate_acc = float((((Tc - Tr) * g).sum(-1) > 0).float().mean())
    assert static_acc < 0.8  # one fixed mix cannot serve both kinds of prompt
    assert gate_acc > static_acc + 0.12
    assert g[kind == 0, 0].mean() > 2 * g[kind == 0, 1].mean()
    assert g[kind == 1, 1].mean() > 2 * g[kind == 1, 0].mean()
    assert fit.losses[-1] < fit.losses[0] and not fit.gate.training
    # seeded: the same call trains the same gate, bit for bit (the identical computation again, same process)
    again = fit_gate(x[:500], Rc[:500], Rr[:500], steps=5, batch_size=64, hidden_dim=8, n_hidden=1)
    same = fit_gate(x[:500], Rc[:500], Rr[:500], steps=5, batch_size=64, hidden_dim=8, n_hidden=1)
    assert all(torch.equal(a, b) for a, b in zip(again.gate.state_dict().values(),
                                                 same.gate.state_dict().values()))
