"""Heads fitted on frozen features in seconds: ridge attribute heads, BT heads, learned static weights.

Pure functions of tensors (torch, any device; NumPy arrays are accepted): no model, no data loader.

- `fit_ridge` (METHODS §2.1, ArmoRM stage 1): one ridge regression per attribute, no intercept, its α chosen
  from a grid by validation MSE on an 80/20 split of that attribute's labelled rows (seed 42), then refitted
  on all of them. Missing labels are masked: a masked value never reaches the fit.
- `fit_bt_head`: a linear head trained with Bradley–Terry on (chosen, rejected) feature pairs, by L-BFGS on
  the full batch, with its L2 strength chosen the same way (validation BT loss on an 80/20 split).
- `fit_static_weights` (METHODS §2.2): the heads frozen, s = wᵀr learned with BT; w ≥ 0 through softplus
  when asked. ArmoRM with a constant gate: the ablation the gate must beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rewardkit.losses import soft_bt

#: ArmoRM's ridge grid: 1e-4 ... 1e4 in x10 steps.
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
#: L2 strengths tried by `fit_bt_head` (mean BT loss + l2/2 ||v||² on per-dimension standardised features).
BT_L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _tensor(x, dtype=torch.float32) -> torch.Tensor:
    return x.to(dtype) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


def split_indices(n: int, seed: int = 42, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices of an n-row 80/20 split (a seeded permutation; validation gets the first
    round(val_fraction * n) rows of it)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# -- ridge attribute heads ------------------------------------------------------------------------------------
@dataclass
class RidgeFit:
    """weight: (J, H) float32, one row per attribute (zeros for an attribute without labels).
    alpha: (J,) the chosen α (NaN without labels). val_mse: (J, n_alphas) validation MSE per α (NaN where no
    validation split was possible). n_labels: (J,) labelled rows per attribute."""

    weight: torch.Tensor
    alpha: np.ndarray
    val_mse: np.ndarray
    n_labels: np.ndarray
    alphas: tuple[float, ...]


def fit_ridge(X, Y, mask=None, alphas=RIDGE_ALPHAS, seed: int = 42, val_fraction: float = 0.2) -> RidgeFit:
    """Per-attribute ridge regression without intercept: w_j = argmin Σ_i m_ij (x_iᵀw − y_ij)² + α_j ||w||².

    X: (N, H) features. Y: (N, J) labels (any value, NaN included, where masked). mask: (N, J) bool, True
    where the label is present (default: where Y is finite). For each attribute its labelled rows are split
    80/20 (`seed`), every α is fitted on the 80 and scored by MSE on the 20, and the best α is refitted on all
    labelled rows. With fewer than 5 labelled rows there is no split and α = 1. Attributes with the same
    labelled rows share one Gram matrix (and factorisation per α), so J such attributes cost about one fit.
    Computes in float64 on X's device.
    """
    X = _tensor(X, torch.float64)
    Y = _tensor(Y, torch.float64).to(X.device)
    if Y.dim() == 1:
        Y = Y[:, None]
    mask = torch.isfinite(Y) if mask is None else _tensor(mask, torch.bool).to(X.device)
    if mask.dim() == 1:
        mask = mask[:, None]
    n, h = X.shape
    if Y.shape[0] != n or mask.shape != Y.shape:
        raise ValueError(f"X {tuple(X.shape)}, Y {tuple(Y.shape)} and mask {tuple(mask.shape)} do not match")
    Y = torch.where(mask, Y, torch.zeros((), dtype=Y.dtype, device=Y.device))
    alphas = tuple(float(a) for a in alphas)
    J = Y.shape[1]
    weight = torch.zeros(J, h, dtype=torch.float64, device=X.device)
    chosen = np.full(J, np.nan)
    val_mse = np.full((J, len(alphas)), np.nan)
    n_labels = mask.sum(0).cpu().numpy().astype(int)

    groups: dict[bytes, list[int]] = {}
    for j in range(J):
        if n_labels[j]:
            groups.setdefault(mask[:, j].cpu().numpy().tobytes(), []).append(j)
    eye = torch.eye(h, dtype=torch.float64, device=X.device)
    for cols in groups.values():
        rows = torch.nonzero(mask[:, cols[0]]).flatten().cpu().numpy()
        Xg, Yg = X[rows], Y[rows][:, cols]  # (n_g, H), (n_g, J_g)
        train, val = split_indices(len(rows), seed, val_fraction)
        if len(val) and len(train) and len(rows) >= 5:
            Xt, Xv = Xg[train], Xg[val]
            Gt, bt = Xt.T @ Xt, Xt.T @ Yg[train]  # (H, H), (H, J_g)
            for a, alpha in enumerate(alphas):
                w = _ridge_solve(Gt, bt, alpha, eye)
                val_mse[cols, a] = ((Xv @ w - Yg[val]) ** 2).mean(0).cpu().numpy()
            best = np.nanargmin(val_mse[cols], axis=1)
            chosen[cols] = [alphas[b] for b in best]
        else:
            chosen[cols] = 1.0
        G, b = Xg.T @ Xg, Xg.T @ Yg
        for k, j in enumerate(cols):
            weight[j] = _ridge_solve(G, b[:, k:k + 1], chosen[j], eye)[:, 0]
    return RidgeFit(weight.float(), chosen, val_mse, n_labels, alphas)


def _ridge_solve(G: torch.Tensor, b: torch.Tensor, alpha: float, eye: torch.Tensor) -> torch.Tensor:
    """(G + αI)⁻¹ b by Cholesky (G = XᵀX is symmetric PSD), with an LU solve where rounding defeats it."""
    A = G + alpha * eye
    L, info = torch.linalg.cholesky_ex(A)
    return torch.cholesky_solve(b, L) if int(info) == 0 else torch.linalg.solve(A, b)


def helpsteer_to_unit(y):
    """HelpSteer 0–4 ratings to ArmoRM's regression targets, (y + 0.5) / 5 in (0, 1)."""
    return (y + 0.5) / 5.0


def unit_to_helpsteer(r):
    """The inverse of `helpsteer_to_unit`: 5r − 0.5."""
    return 5.0 * r - 0.5


# -- Bradley–Terry heads ---------------------------------------------------------------------------------------
def _lbfgs(params: list[torch.Tensor], loss_fn, max_iter: int) -> float:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(loss_fn())


@dataclass
class BTHeadFit:
    """weight: (H,) float32 head (a bias would cancel in every BT difference, so there is none).
    l2: the L2 strength used; val_loss: validation BT loss per grid value (empty when l2 was given);
    train_accuracy: strict accuracy of the refitted head on all pairs."""

    weight: torch.Tensor
    l2: float
    val_loss: dict[float, float]
    train_accuracy: float


def fit_bt_head(X_chosen, X_rejected, *, p=None, l2: float | str = "auto", l2_grid=BT_L2_GRID, seed: int = 42,
                val_fraction: float = 0.2, max_iter: int = 200) -> BTHeadFit:
    """A linear head w with P(chosen ≻ rejected) = σ(wᵀx_c − wᵀx_r), by full-batch L-BFGS.

    X_chosen, X_rejected: (N, H) features of each pair's preferred and other response. p: (N,) probability
    that the first wins (soft labels; default 1). The fit works on D = X_c − X_r scaled per dimension to unit
    RMS (the head is mapped back), minimising mean soft-BT loss + l2/2 ||v||². l2 "auto": chosen from
    `l2_grid` by validation BT loss on an 80/20 split (`seed`), then refitted on all pairs.
    """
    D = _tensor(X_chosen) - _tensor(X_rejected).to(_tensor(X_chosen).device)  # (N, H)
    p = torch.ones(D.shape[0], device=D.device) if p is None else _tensor(p).to(D.device)
    scale = D.pow(2).mean(0).sqrt().clamp(min=1e-6)  # (H,)
    Ds = D / scale

    def fit(rows, strength: float) -> torch.Tensor:
        v = torch.zeros(D.shape[1], device=D.device, requires_grad=True)
        Dr, pr = Ds[rows], p[rows]
        _lbfgs([v], lambda: soft_bt(Dr @ v, pr) + 0.5 * strength * v.pow(2).sum(), max_iter)
        return v.detach()

    val_loss: dict[float, float] = {}
    if l2 == "auto":
        train, val = split_indices(D.shape[0], seed, val_fraction)
        if len(val) >= 2 and len(train) >= 2:
            for strength in l2_grid:
                v = fit(train, strength)
                with torch.no_grad():
                    val_loss[float(strength)] = float(soft_bt(Ds[val] @ v, p[val]))
            l2 = min(val_loss, key=val_loss.get)
        else:
            l2 = 1e-3
    v = fit(np.arange(D.shape[0]), float(l2))
    with torch.no_grad():
        acc = float(((Ds @ v) > 0).float().mean()) if D.shape[0] else float("nan")
    return BTHeadFit((v / scale).float(), float(l2), val_loss, acc)


@dataclass
class StaticWeightsFit:
    """weights: (J,) float32. train_accuracy: strict accuracy of s = wᵀr on the fitted pairs."""

    weights: torch.Tensor
    train_accuracy: float
    loss: float


def fit_static_weights(R_chosen, R_rejected, nonneg: bool = False, *, p=None, l2: float = 1e-6,
                       max_iter: int = 500) -> StaticWeightsFit:
    """Learned static combination weights (METHODS §2.2): s = wᵀr with BT on s_c − s_r, heads frozen.

    R_chosen, R_rejected: (N, J) per-objective rewards of each pair's preferred and other response. p: (N,)
    soft labels (default 1). nonneg: w = softplus(θ) ≥ 0. A tiny L2 keeps separable data finite.
    """
    Rd = _tensor(R_chosen) - _tensor(R_rejected).to(_tensor(R_chosen).device)  # (N, J)
    p = torch.ones(Rd.shape[0], device=Rd.device) if p is None else _tensor(p).to(Rd.device)
    J = Rd.shape[1]
    if nonneg:
        theta = torch.full((J,), float(np.log(np.expm1(1.0 / J))), device=Rd.device, requires_grad=True)
        weights = lambda: F.softplus(theta)  # noqa: E731
    else:
        theta = torch.zeros(J, device=Rd.device, requires_grad=True)
        weights = lambda: theta  # noqa: E731
    loss = _lbfgs([theta], lambda: soft_bt(Rd @ weights(), p) + 0.5 * l2 * weights().pow(2).sum(), max_iter)
    with torch.no_grad():
        w = weights().detach().float()
        acc = float(((Rd @ w) > 0).float().mean()) if Rd.shape[0] else float("nan")
    return StaticWeightsFit(w, acc, loss)
