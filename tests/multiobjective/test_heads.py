"""Heads on frozen features: ridge with masking and α by validation, BT heads, learned static weights."""

import numpy as np
import pytest
import torch

from rewardkit.multiobjective import (
    RIDGE_ALPHAS,
    fit_bt_head,
    fit_ridge,
    fit_static_weights,
    helpsteer_to_unit,
    unit_to_helpsteer,
)
from rewardkit.multiobjective.heads import split_indices


def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_ridge_grid_is_armorms():
    assert RIDGE_ALPHAS == (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


def test_ridge_recovers_weights_and_picks_alpha_by_validation_mse():
    X = gaussian(120, 40)  # few rows per feature: least squares overfits noise
    W = gaussian(2, 40, seed=1)
    Y = torch.stack([X @ W[0] + 0.01 * gaussian(120, seed=2),  # clean signal: a small α wins
                     gaussian(120, seed=3)], 1)                  # pure noise: a large α wins
    fit = fit_ridge(X, Y)
    assert torch.allclose(fit.weight[0], W[0], atol=0.02)
    assert fit.alpha[0] <= 1.0 and fit.alpha[1] >= 100.0
    least_squares = fit_ridge(X, Y, alphas=(1e-4,))
    assert fit.weight[1].norm() < 0.5 * least_squares.weight[1].norm()  # shrunk towards 0
    assert fit.val_mse.shape == (2, 9)
    assert [fit.alphas[i] for i in np.argmin(fit.val_mse, 1)] == list(fit.alpha)
    assert fit.n_labels.tolist() == [120, 120]


def test_ridge_has_no_intercept_and_refits_on_all_rows():
    X, y = gaussian(50, 4), gaussian(50, seed=1) + 3.0  # an offset that an intercept would absorb
    fit = fit_ridge(X, y[:, None], alphas=(0.5,))
    Xd, yd = X.double(), y.double()
    expected = torch.linalg.solve(Xd.T @ Xd + 0.5 * torch.eye(4, dtype=torch.float64), Xd.T @ yd)
    assert torch.allclose(fit.weight[0].double(), expected, atol=1e-5)


def test_split_is_80_20_and_seeded():
    train, val = split_indices(100, seed=42)
    assert len(train) == 80 and len(val) == 20 and not set(train) & set(val)
    assert np.array_equal(val, split_indices(100, seed=42)[1])
    assert not np.array_equal(val, split_indices(100, seed=7)[1])


def test_masked_labels_do_not_affect_the_fit():
    X = gaussian(300, 6)
    Y = X @ gaussian(6, 3, seed=1) + 0.1 * gaussian(300, 3, seed=2)
    mask = torch.rand(300, 3, generator=torch.Generator().manual_seed(3)) > 0.4
    mask[:, 2] = mask[:, 0]  # two attributes with the same labelled rows share one decomposition
    with_nan = torch.where(mask, Y, torch.tensor(float("nan")))
    with_junk = torch.where(mask, Y, torch.tensor(1e6))
    a, b = fit_ridge(X, with_nan, mask), fit_ridge(X, with_junk, mask)
    # bit-exact: masked labels are replaced by zeros before any arithmetic, so both fits compute the same thing
    assert torch.equal(a.weight, b.weight) and np.array_equal(a.alpha, b.alpha)
    # each attribute's fit depends only on its own labelled rows
    for j in range(3):
        rows = mask[:, j]
        alone = fit_ridge(X[rows], Y[rows, j:j + 1])
        assert torch.allclose(alone.weight[0], a.weight[j], atol=1e-6)
        assert alone.alpha[0] == a.alpha[j]
    # a junk value that leaks through the mask would move the fit
    leaked = mask.clone()
    leaked[0, 1] = ~leaked[0, 1]
    assert not torch.allclose(fit_ridge(X, with_junk, leaked).weight[1], a.weight[1])


def test_an_attribute_without_labels_gets_a_zero_head():
    X = gaussian(40, 5)
    Y = torch.stack([X[:, 0], torch.full((40,), float("nan"))], 1)
    fit = fit_ridge(X, Y)  # mask defaults to the finite labels
    assert fit.n_labels.tolist() == [40, 0]
    assert torch.all(fit.weight[1] == 0) and np.isnan(fit.alpha[1])
    assert fit.weight[0][0] > 0.9


def test_helpsteer_rescale_round_trips():
    y = np.arange(5.0)
    assert np.allclose(helpsteer_to_unit(y), [0.1, 0.3, 0.5, 0.7, 0.9])
    assert np.allclose(unit_to_helpsteer(helpsteer_to_unit(y)), y)


def bt_pairs(n, h, w_true, seed):
    """Pairs whose labels are drawn from BT with the true head w_true: (x_chosen, x_rejected)."""
    a, b = gaussian(n, h, seed=seed), gaussian(n, h, seed=seed + 1)
    p = torch.sigmoid((a - b) @ w_true)
    first_wins = torch.rand(n, generator=torch.Generator().manual_seed(seed + 2)) < p
    return torch.where(first_wins[:, None], a, b), torch.where(first_wins[:, None], b, a)


def test_bt_head_learns_the_preference_direction():
    w_true = gaussian(16, seed=10)
    xc, xr = bt_pairs(1500, 16, w_true, seed=0)
    fit = fit_bt_head(xc, xr)
    cosine = torch.nn.functional.cosine_similarity(fit.weight, w_true, dim=0)
    assert cosine > 0.95
    assert set(fit.val_loss) == {1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0} and fit.l2 in fit.val_loss
    # held-out pairs: close to the accuracy of the true head
    tc, tr = bt_pairs(2000, 16, w_true, seed=5)
    ours, best = ((tc - tr) @ fit.weight > 0).float().mean(), ((tc - tr) @ w_true > 0).float().mean()
    assert ours > best - 0.03


def test_bt_head_is_scale_equivariant():
    """Features with one dimension 1000x larger give the same predictions (the fit standardises)."""
    w_true = gaussian(8, seed=10)
    xc, xr = bt_pairs(600, 8, w_true, seed=0)
    scale = torch.ones(8)
    scale[3] = 1000.0
    a, b = fit_bt_head(xc, xr, l2=1e-3), fit_bt_head(xc * scale, xr * scale, l2=1e-3)
    assert torch.allclose((xc - xr) @ a.weight, (xc * scale - xr * scale) @ b.weight, atol=1e-3)


@pytest.mark.parametrize("nonneg", [False, True])
def test_static_weights_concentrate_on_the_true_bt_score(nonneg):
    n = 3000
    true_c, true_r = gaussian(n, seed=0), gaussian(n, seed=1)
    # the other attributes are noisy copies of the true score: correlated with the label, but no better
    noisy = lambda s, seed: s[:, None] + gaussian(n, 3, seed=seed)  # noqa: E731
    Rc = torch.cat([noisy(true_c, 2)[:, :2], true_c[:, None], noisy(true_c, 3)[:, :1]], 1)
    Rr = torch.cat([noisy(true_r, 4)[:, :2], true_r[:, None], noisy(true_r, 5)[:, :1]], 1)
    first_wins = torch.rand(n, generator=torch.Generator().manual_seed(6)) < torch.sigmoid(true_c - true_r)
    Rw, Rl = torch.where(first_wins[:, None], Rc, Rr), torch.where(first_wins[:, None], Rr, Rc)
    fit = fit_static_weights(Rw, Rl, nonneg=nonneg)
    w = fit.weights
    assert w[2] / w.abs().sum() > 0.85
    assert 0.8 < w[2] < 1.2  # the BT score's own scale
    if nonneg:
        assert torch.all(w >= 0)
    # a mis-specified start (equal weights) would rank worse than the fit
    assert fit.train_accuracy > ((Rw - Rl).mean(1) > 0).float().mean()
