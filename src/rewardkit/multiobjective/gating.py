"""ArmoRM-style combination (METHODS §2.3): verbosity de-correlation and a prompt-conditioned gate.

- `decorrelate`: on a reference set, for each objective j ≠ v (v = verbosity) the smallest λ_j on the grid
  with Spearman(r_j − λ_j r_v, r_v) ≤ τ; then r'_j = r_j − λ_j r_v and r'_v ≡ 0. As in the released code,
  an objective that no grid value brings under τ keeps λ_j = 1 (and is flagged). The rule only removes
  *positive* correlation with verbosity (λ ≥ 0): an objective that already correlates negatively keeps
  λ_j = 0.
- `GatingNetwork`: an MLP on the prompt-end feature, g = β · softmax(logits / 10), β learned (init 1).
- `fit_gate`: s = Σ_j g_j r'_j, trained with BT on s_c − s_r (AdamW, lr 1e-3, cosine schedule). rewardkit
  trains and scores with the transformed r' (METHODS §2.3, spec choice).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rewardkit.eval.metrics import average_ranks, pearson
from rewardkit.losses import soft_bt

#: ArmoRM's verbosity penalty grid (RLHFlow armo-rm, stage 2).
LAMBDA_GRID = (0.0, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55,
               0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
TAU = 0.03


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


@dataclass
class Decorrelation:
    """The verbosity de-correlation transform r' = r T.

    lambdas: (J,) λ_j per objective; λ_v = 1 for the verbosity objective itself (so r'_v = r_v − r_v ≡ 0).
    spearman: (J,) Spearman(r'_j, r_v) on the reference set at the chosen λ (NaN for v).
    satisfied: (J,) whether the chosen λ reached Spearman ≤ τ (True for v).
    """

    verbosity_index: int
    lambdas: np.ndarray
    tau: float = TAU
    spearman: np.ndarray | None = None
    satisfied: np.ndarray | None = None

    def matrix(self) -> torch.Tensor:
        """T (J, J) with r' = r @ T: the identity, minus λ_j in row v, column j."""
        J = len(self.lambdas)
        T = torch.eye(J)
        T[self.verbosity_index, :] -= torch.as_tensor(self.lambdas, dtype=torch.float32)
        return T

    def apply(self, R: torch.Tensor) -> torch.Tensor:
        """R: (..., J) rewards -> (..., J) de-correlated rewards (column v all zeros)."""
        R = torch.as_tensor(R, dtype=torch.float32)
        return R @ self.matrix().to(R.device)

    def effective_weights(self, w: torch.Tensor) -> torch.Tensor:
        """Weights on the raw rewards that give the same combination: wᵀr' = (T w)ᵀ r. w: (..., J)."""
        w = torch.as_tensor(w, dtype=torch.float32)
        return w @ self.matrix().to(w.device).T

    def to_json(self) -> dict[str, Any]:
        return {"verbosity_index": self.verbosity_index, "lambdas": [float(x) for x in self.lambdas],
                "tau": self.tau,
                "spearman": None if self.spearman is None else [None if np.isnan(x) else float(x)
                                                                for x in self.spearman],
                "satisfied": None if self.satisfied is None else [bool(x) for x in self.satisfied]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decorrelation:
        spearman = data.get("spearman")
        return cls(int(data["verbosity_index"]), np.asarray(data["lambdas"], dtype=np.float64), float(data["tau"]),
                   None if spearman is None else np.array([np.nan if x is None else x for x in spearman]),
                   None if data.get("satisfied") is None else np.asarray(data["satisfied"], dtype=bool))


def decorrelate(R_ref, verbosity_index: int, tau: float = TAU, grid=LAMBDA_GRID) -> Decorrelation:
    """λ per objective from a reference set of rewards R_ref: (N, J), one row per response.

    For j ≠ v the smallest λ in `grid` (sorted ascending) with Spearman(r_j − λ r_v, r_v) ≤ τ, else 1.
    """
    R = _numpy(R_ref).astype(np.float64)
    if R.ndim != 2:
        raise ValueError(f"R_ref must be (N, J), got shape {R.shape}")
    J = R.shape[1]
    if not 0 <= verbosity_index < J:
        raise ValueError(f"verbosity_index {verbosity_index} is not one of the {J} objectives")
    v = R[:, verbosity_index]
    v_ranks = average_ranks(v)
    lambdas, corr = np.ones(J), np.full(J, np.nan)
    satisfied = np.zeros(J, dtype=bool)
    satisfied[verbosity_index] = True
    for j in range(J):
        if j == verbosity_index:
            continue
        for lam in sorted(grid):
            rho = pearson(average_ranks(R[:, j] - lam * v), v_ranks)
            if rho <= tau:
                lambdas[j], corr[j], satisfied[j] = lam, rho, True
                break
        else:
            corr[j] = pearson(average_ranks(R[:, j] - v), v_ranks)
    return Decorrelation(verbosity_index, lambdas, tau, corr, satisfied)


# -- the gate ------------------------------------------------------------------------------------------------
class GatingNetwork(nn.Module):
    """g(x) = β · softmax(MLP(x) / temperature): (b, H) prompt features -> (b, J) non-negative weights
    summing to β. The MLP has `n_hidden` hidden layers of `hidden_dim` with ReLU and dropout (ArmoRM: 3 ×
    1024, dropout 0.2, temperature 10)."""

    def __init__(self, in_features: int, n_objectives: int, *, hidden_dim: int = 1024, n_hidden: int = 3,
                 dropout: float = 0.2, temperature: float = 10.0, beta: float = 1.0):
        super().__init__()
        self.in_features, self.n_objectives = in_features, n_objectives
        self.hidden_dim, self.n_hidden, self.dropout, self.temperature = hidden_dim, n_hidden, dropout, temperature
        dims = [in_features] + [hidden_dim] * n_hidden + [n_objectives]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.dropout(F.relu(x), p=self.dropout, training=self.training)
        return self.beta * torch.softmax(x / self.temperature, dim=-1)

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "n_objectives": self.n_objectives, "hidden_dim": self.hidden_dim,
                "n_hidden": self.n_hidden, "dropout": self.dropout, "temperature": self.temperature}


def gated_score(gate: GatingNetwork, prompt_features: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """s = Σ_j g_j r_j. prompt_features: (b, H); R: (b, J) or (b, K, J) rewards of K responses -> (b,) or
    (b, K)."""
    g = gate(prompt_features)
    return (R * (g[:, None, :] if R.dim() == 3 else g)).sum(-1)


@dataclass
class GateFit:
    """gate: the trained network (eval mode). steps: optimiser steps taken. losses: the training loss every
    `log_every` steps. train_accuracy: strict accuracy of the gated score on the training pairs. seconds: wall
    time."""

    gate: GatingNetwork
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    train_accuracy: float = float("nan")
    seconds: float = 0.0


def fit_gate(prompt_features, R_chosen, R_rejected, *, p=None, steps: int | None = None, batch_size: int = 1024,
             lr: float = 1e-3, weight_decay: float = 0.0, hidden_dim: int = 1024, n_hidden: int = 3,
             dropout: float = 0.2, temperature: float = 10.0, seed: int = 0, device: str | None = None,
             log_every: int = 50) -> GateFit:
    """Train a GatingNetwork with BT on the gated score (METHODS §2.3).

    prompt_features: (N, H) the prompt-end feature of each pair's prompt. R_chosen, R_rejected: (N, J) the
    (de-correlated) per-objective rewards of each pair's preferred and other response. p: (N,) soft labels.
    Each step draws `batch_size` pairs with replacement (at most N); AdamW with a cosine schedule over `steps`
    (default: ArmoRM's 2000 on a GPU, 200 on a CPU, where one step of the default 3 x 1024 MLP on a batch of
    1024 takes a few hundred ms on two cores). Seeded: the same call gives the same gate.
    """
    t0 = time.perf_counter()
    dev = torch.device(device) if device else torch.device("cpu")
    if steps is None:
        steps = 2000 if dev.type == "cuda" else 200
    X = torch.as_tensor(prompt_features, dtype=torch.float32).to(dev)
    Rc = torch.as_tensor(R_chosen, dtype=torch.float32).to(dev)
    Rr = torch.as_tensor(R_rejected, dtype=torch.float32).to(dev)
    n = X.shape[0]
    if not (Rc.shape == Rr.shape and Rc.shape[0] == n and Rc.dim() == 2):
        raise ValueError(f"prompt_features {tuple(X.shape)}, R_chosen {tuple(Rc.shape)} and R_rejected "
                         f"{tuple(Rr.shape)} do not match")
    pt = torch.ones(n, device=dev) if p is None else torch.as_tensor(p, dtype=torch.float32).to(dev)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gate = GatingNetwork(X.shape[1], Rc.shape[1], hidden_dim=hidden_dim, n_hidden=n_hidden, dropout=dropout,
                             temperature=temperature).to(dev)
        opt = torch.optim.AdamW(gate.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        losses = []
        gate.train()
        for step in range(steps):
            idx = torch.randint(0, n, (min(batch_size, n),), generator=g).to(dev)
            w = gate(X[idx])
            loss = soft_bt(((Rc[idx] - Rr[idx]) * w).sum(-1), pt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            if step % log_every == 0 or step == steps - 1:
                losses.append(loss.item())
    gate.eval()
    with torch.no_grad():
        acc = float((((Rc - Rr) * gate(X)).sum(-1) > 0).float().mean()) if n else float("nan")
    return GateFit(gate.cpu(), steps, losses, acc, time.perf_counter() - t0)
