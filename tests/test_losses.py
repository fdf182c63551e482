"""Every METHODS.md Check for §1.1-1.8 and §6, plus the objective layer (dispatch, weights, errors)."""

import math

import pytest
import torch
import torch.nn.functional as F

from rewardkit.errors import RewardkitError
from rewardkit.losses import (
    LOSS_NAMES,
    LOSSES,
    LossInputs,
    bradley_terry,
    centering_penalty,
    compute_loss,
    distill_regression,
    distill_soft_bt,
    kwise_all_pairs,
    label_smoothed_bt,
    margin_bt,
    plackett_luce,
    robust_bt,
    scaled_bt,
    soft_bt,
    validate_loss,
)

LN2 = math.log(2.0)
D = torch.float64


def t(*values):
    return torch.tensor(values, dtype=D)


def deltas():
    return torch.linspace(-6.0, 6.0, 25, dtype=D)


def argmin_scalar(loss_of_delta):
    """The Δ minimising a convex scalar loss, found numerically (LBFGS from Δ = 0)."""
    d = torch.zeros((), dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS([d], lr=1.0, max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_of_delta(d.reshape(1))
        loss.backward()
        return loss

    opt.step(closure)
    return d.detach().item()


def grad_wrt_delta(loss_fn, delta):
    delta = delta.clone().requires_grad_(True)
    loss_fn(delta).backward()
    return delta.grad


# ---------------------------------------------------------------------------------------------- §1.1 BT

def test_bt_at_zero_is_ln2():
    assert bradley_terry(t(0.0)).item() == pytest.approx(0.693147, abs=1e-6)


def test_bt_is_shift_invariant():
    r_c, r_r = t(1.0, -2.0, 0.5), t(0.0, 3.0, 0.5)
    base = bradley_terry(r_c - r_r)
    shifted = bradley_terry((r_c + 7.3) - (r_r + 7.3))
    assert shifted.item() == pytest.approx(base.item(), abs=1e-12)


def test_bt_gradient_wrt_chosen_reward():
    r_c = t(0.0, 1.5).requires_grad_(True)
    r_r = t(0.0, -0.5)
    bradley_terry(r_c - r_r).sum().backward()
    # Mean over 2 pairs, so each pair's gradient is −σ(−Δ)/2.
    expected = -torch.sigmoid(-(r_c.detach() - r_r)) / 2
    assert torch.allclose(r_c.grad, expected)
    single = t(0.0).requires_grad_(True)
    bradley_terry(single - t(0.0)).backward()
    assert single.grad.item() == pytest.approx(-0.5)


def test_bt_swapped_labels_give_softplus_delta():
    for d in deltas():
        assert bradley_terry(-d.reshape(1)).item() == pytest.approx(F.softplus(d).item())


def test_bt_is_stable_for_large_deltas():
    loss = bradley_terry(t(-1000.0, 1000.0))
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(500.0)


# -------------------------------------------------------------------------------------------- §1.2 K-wise

def lengths(*ks):
    return torch.tensor(ks, dtype=torch.long)


def test_kwise_k2_equals_bt():
    r = t(1.3, -0.4, 0.2, 0.9).reshape(2, 2)
    bt = bradley_terry(r[:, 0] - r[:, 1])
    assert kwise_all_pairs(r, lengths(2, 2)).item() == pytest.approx(bt.item())
    assert plackett_luce(r, lengths(2, 2)).item() == pytest.approx(bt.item())


def test_kwise_equal_rewards():
    r = torch.full((1, 4), 0.37, dtype=D)
    assert plackett_luce(r, lengths(4)).item() == pytest.approx(math.log(24), abs=1e-12)
    assert plackett_luce(r, lengths(4)).item() == pytest.approx(3.178, abs=5e-4)
    assert kwise_all_pairs(r, lengths(4)).item() == pytest.approx(LN2)


def test_kwise_losses_are_shift_invariant():
    r = t(2.0, 0.5, -1.0, -1.5, 0.3, 0.1, -0.2, 0.0).reshape(2, 4)
    k = lengths(4, 3)
    for fn in (kwise_all_pairs, plackett_luce):
        assert fn(r + 11.0, k).item() == pytest.approx(fn(r, k).item(), abs=1e-10)


def brute_force(r_list):
    """Reference all-pairs and PL for one unpadded ranking, by explicit loops."""
    k = len(r_list)
    r = torch.tensor(r_list, dtype=D)
    pairs = [F.softplus(-(r[i] - r[j])) for i in range(k) for j in range(i + 1, k)]
    all_pairs = sum(pairs) / math.comb(k, 2)
    pl = -sum(r[i] - torch.logsumexp(r[i:], 0) for i in range(k - 1))
    return all_pairs.item(), pl.item()


def test_kwise_matches_explicit_loops_with_mixed_lengths():
    groups = [[1.0, 0.2, -0.3, -2.0, 0.1], [0.5, 0.7], [3.0, -1.0, 0.0]]
    padded = torch.zeros(3, 5, dtype=D)
    for g, row in enumerate(groups):
        padded[g, :len(row)] = torch.tensor(row, dtype=D)
    k = lengths(*(len(row) for row in groups))
    refs = [brute_force(row) for row in groups]
    assert kwise_all_pairs(padded, k).item() == pytest.approx(sum(a for a, _ in refs) / 3)
    assert plackett_luce(padded, k).item() == pytest.approx(sum(p for _, p in refs) / 3)


def test_kwise_padding_changes_nothing_even_if_garbage():
    row = t(0.9, 0.1, -0.4)
    unpadded = row.reshape(1, 3)
    for pad in (0.0, float("inf"), float("-inf"), float("nan")):
        padded = torch.cat([row, t(pad, pad)]).reshape(1, 5).requires_grad_(True)
        for fn in (kwise_all_pairs, plackett_luce):
            loss = fn(padded, lengths(3))
            assert loss.item() == pytest.approx(fn(unpadded, lengths(3)).item())
            (grad,) = torch.autograd.grad(loss, padded)
            assert torch.isfinite(grad).all()
            assert (grad[0, 3:] == 0).all()


def test_kwise_group_weights():
    r = t(1.0, 0.0, 0.0, 1.0).reshape(2, 2)  # group losses softplus(-1), softplus(1)
    w = t(3.0, 1.0)
    expected = (3 * F.softplus(t(-1.0)) + F.softplus(t(1.0))) / 4
    assert kwise_all_pairs(r, lengths(2, 2), w).item() == pytest.approx(expected.item())


def test_kwise_rejects_bad_lengths():
    with pytest.raises(ValueError, match="2 <= K"):
        plackett_luce(torch.zeros(1, 3, dtype=D), lengths(1))
    with pytest.raises(ValueError, match="2 <= K"):
        kwise_all_pairs(torch.zeros(1, 3, dtype=D), lengths(4))


# ------------------------------------------------------------------------------------------- §1.3 margin

def test_margin_bt_is_ln2_at_delta_equal_margin():
    m = t(0.0, 1 / 3, 1.0, 3.0)
    assert margin_bt(m.clone(), m).item() == pytest.approx(LN2)


def test_margin_zero_is_bt():
    d = deltas()
    assert margin_bt(d, torch.zeros_like(d)).item() == pytest.approx(bradley_terry(d).item())


# ------------------------------------------------------------------------------------------- §1.4 scaled

def test_scaled_strength_one_is_bt():
    d = deltas()
    assert scaled_bt(d, torch.ones_like(d)).item() == pytest.approx(bradley_terry(d).item())


def test_scaled_gradient_is_exactly_m_times_bt_gradient():
    d = t(-1.0, 0.0, 0.5, 2.0)
    m = t(1.0, 2.0, 3.0, 2.0)
    g_scaled = grad_wrt_delta(lambda x: scaled_bt(x, m), d)
    g_bt = grad_wrt_delta(bradley_terry, d)
    # exact on purpose: elementwise on 4 values (no reduction), and the mean's 1/4 is a power of two, so
    # m * (g / 4) and (m * g) / 4 round alike whatever the order of the products
    assert torch.equal(g_scaled, m * g_bt)


# ----------------------------------------------------------------------------------------- §1.5 smoothed

def test_smoothed_minimiser_is_log_odds():
    assert argmin_scalar(lambda d: label_smoothed_bt(d, 0.1)) == pytest.approx(math.log(9), abs=1e-6)
    assert math.log(9) == pytest.approx(2.1972, abs=1e-4)
    assert argmin_scalar(lambda d: label_smoothed_bt(d, 0.25)) == pytest.approx(math.log(3), abs=1e-6)


def test_smoothed_eps_zero_is_bt():
    d = deltas()
    assert label_smoothed_bt(d, 0.0).item() == pytest.approx(bradley_terry(d).item())


@pytest.mark.parametrize("fn", [label_smoothed_bt, robust_bt])
@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7])
def test_eps_out_of_range_is_rejected(fn, eps):
    with pytest.raises(RewardkitError, match="0 <= eps < 0.5"):
        fn(t(0.0), eps)


# ------------------------------------------------------------------------------------------- §1.6 robust

@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.45])
def test_robust_bt_is_unbiased(eps):
    for d in deltas():
        d = d.reshape(1)
        noisy = (1 - eps) * robust_bt(d, eps) + eps * robust_bt(-d, eps)
        assert noisy.item() == pytest.approx(F.softplus(-d).item(), abs=1e-10)


# ---------------------------------------------------------------------------------------- §1.7 centering

def test_centering_zero_when_rewards_are_opposite():
    r_c = t(1.0, -2.0, 0.3)
    assert centering_penalty(r_c, -r_c).item() == 0.0


def test_centering_squares_the_sum_not_the_difference():
    # Equal rewards: the difference is 0 (TRL #1931 would give 0), the sum squared is (1+1)^2 = 4.
    assert centering_penalty(t(1.0), t(1.0)).item() == pytest.approx(4.0)
    assert centering_penalty(t(3.0, 1.0), t(1.0, -1.0)).item() == pytest.approx((16 + 0) / 2)


def test_centering_pulls_mean_reward_to_zero_keeping_accuracy():
    # Free per-response rewards with a large common offset; BT + centering should remove the offset.
    base = t(2.0, 1.0, 0.5, -0.5, 1.5, 1.0)
    rewards = (base + 5.0).requires_grad_(True)
    winner, loser = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])
    inputs = LossInputs(rewards=rewards, winner=winner, loser=loser, p=torch.ones(3, dtype=D),
                        margin=torch.zeros(3, dtype=D), weight=torch.ones(3, dtype=D))
    opt = torch.optim.SGD([rewards], lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        compute_loss("bt", inputs, center=0.1).backward()
        opt.step()
    assert abs(rewards.mean().item()) < 0.01
    assert (rewards[winner] > rewards[loser]).all()


# -------------------------------------------------------------------------------------------- §1.8 soft

@pytest.mark.parametrize("p, expected", [(0.75, math.log(3)), (0.5, 0.0), (0.9, math.log(9))])
def test_soft_bt_minimiser_is_logit_p(p, expected):
    assert argmin_scalar(lambda d: soft_bt(d, p)) == pytest.approx(expected, abs=1e-6)


def test_soft_bt_minimum_is_binary_entropy():
    p = 0.75
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert entropy == pytest.approx(0.5623, abs=1e-4)
    assert soft_bt(t(math.log(3)), p).item() == pytest.approx(entropy, abs=1e-12)


def test_soft_bt_hard_label_is_bt():
    d = deltas()
    assert soft_bt(d, torch.ones_like(d)).item() == pytest.approx(bradley_terry(d).item())


# ------------------------------------------------------------------------------------- §6 distillation

def test_distill_soft_small_tau_is_hard_bt():
    student = t(0.3, -1.2, 2.0)
    teacher = t(0.5, -0.1, 4.0)  # argmax labels +, -, +
    hard = (F.softplus(-student[0]) + F.softplus(student[1]) + F.softplus(-student[2])) / 3
    assert distill_soft_bt(student, teacher, tau=1e-4).item() == pytest.approx(hard.item(), abs=1e-9)


def test_distill_tau_must_be_positive():
    with pytest.raises(RewardkitError, match="tau"):
        distill_soft_bt(t(0.0), t(0.0), tau=0.0)


def test_distill_student_equal_teacher_gives_zero_regression():
    d = t(0.4, -2.0, 1.0)
    assert distill_regression(d, d.clone()).item() == 0.0


def test_distill_teacher_gradient_does_not_flow():
    student = t(0.1, 0.2).requires_grad_(True)
    teacher = t(1.0, -1.0).requires_grad_(True)
    (distill_soft_bt(student, teacher) + distill_regression(student, teacher)).backward()
    assert teacher.grad is None and student.grad is not None


def pair_inputs(**extra):
    # Two prompts: responses 0-2 belong to prompt A, 3-4 to prompt B.
    rewards = t(1.0, 0.2, -0.5, 0.3, 0.8)
    return LossInputs(rewards=rewards, winner=torch.tensor([0, 0, 1, 4]), loser=torch.tensor([1, 2, 2, 3]),
                      p=t(1.0, 0.8, 0.6, 1.0), margin=t(0.0, 1.0, 2.0, 3.0), weight=t(1.0, 1.0, 1.0, 2.0),
                      **extra)


@pytest.mark.parametrize("name", ["distill_soft", "distill_regression"])
def test_per_prompt_teacher_constant_changes_no_loss(name):
    teacher = t(2.0, 0.5, -1.0, 0.0, 1.0)
    prompt = torch.tensor([0, 0, 0, 1, 1])
    shifted = teacher + t(10.0, -3.0)[prompt]
    base = compute_loss(name, pair_inputs(teacher=teacher))
    assert compute_loss(name, pair_inputs(teacher=shifted)).item() == pytest.approx(base.item(), abs=1e-12)


# ------------------------------------------------------------------------------------ objective layer

def test_weighted_mean():
    d = t(0.0, 2.0)
    w = t(3.0, 1.0)
    expected = (3 * LN2 + F.softplus(t(-2.0)).item()) / 4
    assert bradley_terry(d, w).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="weight has shape"):
        bradley_terry(d, t(1.0, 1.0, 1.0))


def test_compute_loss_dispatches_to_each_pairwise_function():
    x = pair_inputs(teacher=t(0.0, 1.0, -1.0, 0.5, 0.5))
    d = x.rewards[x.winner] - x.rewards[x.loser]
    dt = x.teacher[x.winner] - x.teacher[x.loser]
    w = x.weight
    strength = t(1.0, 1.0, 2.0, 3.0)  # margin 0 counts as strength 1
    expected = {
        "bt": bradley_terry(d, w),
        "margin": margin_bt(d, x.margin, w),
        "scaled": scaled_bt(d, strength, w),
        "smoothed": label_smoothed_bt(d, 0.2, w),
        "robust": robust_bt(d, 0.2, w),
        "soft": soft_bt(d, x.p, w),
        "distill_soft": distill_soft_bt(d, dt, 0.5, w),
        "distill_regression": distill_regression(d, dt, w),
    }
    params = {"smoothed": {"eps": 0.2}, "robust": {"eps": 0.2}, "distill_soft": {"tau": 0.5}}
    for name, value in expected.items():
        got = compute_loss(name, x, **params.get(name, {}))
        assert got.dim() == 0
        assert got.item() == pytest.approx(value.item(), abs=1e-12), name


def test_compute_loss_kwise_reads_groups():
    rewards = t(0.1, 2.0, -1.0, 0.5, 0.7)
    groups = torch.tensor([[1, 0, 2], [4, 3, -1]])  # rankings 1>0>2 and 4>3, padded with -1
    x = LossInputs(rewards=rewards, winner=torch.tensor([1]), loser=torch.tensor([0]), p=t(1.0),
                   margin=t(0.0), weight=t(1.0), groups=groups)
    ranked = t(2.0, 0.1, -1.0, 0.7, 0.5, 0.0).reshape(2, 3)
    k = lengths(3, 2)
    assert compute_loss("kwise", x).item() == pytest.approx(kwise_all_pairs(ranked, k).item())
    assert compute_loss("plackett_luce", x).item() == pytest.approx(plackett_luce(ranked, k).item())


def test_compute_loss_adds_centering_to_any_loss():
    x = pair_inputs(teacher=t(0.0, 1.0, -1.0, 0.5, 0.5), groups=torch.tensor([[0, 1, 2], [4, 3, -1]]))
    pen = centering_penalty(x.rewards[x.winner], x.rewards[x.loser], x.weight)
    for name in LOSS_NAMES:
        plain = compute_loss(name, x)
        assert compute_loss(name, x, center=0.01).item() == pytest.approx(plain.item() + 0.01 * pen.item())


def test_compute_loss_upcasts_half_precision():
    x = pair_inputs()
    x.rewards = x.rewards.to(torch.bfloat16)
    assert compute_loss("bt", x).dtype == torch.float32


def test_hard_labels_make_soft_equal_bt_in_dispatch():
    x = pair_inputs()
    x.p = torch.ones_like(x.p)
    assert compute_loss("soft", x).item() == pytest.approx(compute_loss("bt", x).item())


# --------------------------------------------------------------------------------------------- errors

def test_loss_names_registry():
    assert set(LOSS_NAMES) == set(LOSSES) == {
        "bt", "margin", "scaled", "smoothed", "robust", "soft", "kwise", "plackett_luce", "distill_soft",
        "distill_regression"}


def test_unknown_loss_lists_valid_names():
    with pytest.raises(RewardkitError, match="unknown loss 'hinge'.*bt, margin.*distill_regression"):
        validate_loss("hinge")
    with pytest.raises(RewardkitError, match="unknown loss"):
        compute_loss("hinge", pair_inputs())


def test_validate_loss_fills_defaults():
    assert validate_loss("smoothed") == {"eps": 0.1, "center": 0.0}
    assert validate_loss("distill_soft", tau=2) == {"tau": 2.0, "center": 0.0}
    assert validate_loss("bt", center=0.01) == {"center": 0.01}


@pytest.mark.parametrize("name, params, message", [
    ("bt", {"eps": 0.1}, "takes no parameter 'eps'; its parameters: center"),
    ("robust", {"eps": 0.5}, "eps must satisfy 0 <= eps < 0.5"),
    ("smoothed", {"eps": -0.01}, "eps must satisfy 0 <= eps < 0.5"),
    ("distill_soft", {"tau": 0.0}, "tau must satisfy tau > 0"),
    ("bt", {"center": -1.0}, "center must satisfy center >= 0"),
    ("bt", {"center": float("nan")}, "center must be a finite number"),
    ("soft", {"center": "0.1"}, "center must be a finite number"),
])
def test_bad_params_are_rejected(name, params, message):
    with pytest.raises(RewardkitError, match=message):
        validate_loss(name, **params)


@pytest.mark.parametrize("name", ["kwise", "plackett_luce"])
def test_kwise_without_groups_is_a_clear_error(name):
    with pytest.raises(RewardkitError, match=f"loss '{name}' needs full rankings"):
        compute_loss(name, pair_inputs())


@pytest.mark.parametrize("name", ["distill_soft", "distill_regression"])
def test_distillation_without_teacher_is_a_clear_error(name):
    with pytest.raises(RewardkitError, match=f"loss '{name}' needs teacher rewards"):
        compute_loss(name, pair_inputs())


def test_groups_padded_in_the_middle_are_rejected():
    x = pair_inputs(groups=torch.tensor([[0, -1, 2]]))
    with pytest.raises(ValueError, match="padded with -1 on the right"):
        compute_loss("plackett_luce", x)
