"""The Checks of docs/EVALUATION.md §5 (calibration) and §6 (length bias), plus strict accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rewardkit.eval.metrics import (
    average_ranks,
    brier,
    ece,
    fit_temperature,
    length_split_accuracy,
    mce,
    nll,
    pearson,
    reliability,
    sigmoid,
    spearman,
    strict_accuracy,
    tie_rate,
)

LN3 = math.log(3.0)
FOUR_PAIRS = np.array([LN3, LN3, LN3, -LN3])  # p = 0.75 three times right, once wrong


# --- strict accuracy ---------------------------------------------------------------------------------


def test_constant_scorer_has_zero_accuracy():
    assert strict_accuracy(np.zeros(7)) == 0.0
    assert tie_rate(np.zeros(7)) == 1.0


def test_swapping_chosen_and_rejected_gives_one_minus_acc_minus_ties():
    rng = np.random.default_rng(0)
    delta = rng.integers(-2, 3, size=200).astype(float)  # plenty of ties
    acc, ties = strict_accuracy(delta), tie_rate(delta)
    assert 0 < ties < 1
    assert strict_accuracy(-delta) == pytest.approx(1 - acc - ties)


def test_empty_input_is_nan():
    for fn in (strict_accuracy, tie_rate, ece, mce, brier, nll, fit_temperature):
        assert math.isnan(fn(np.array([])))


def test_rejects_non_vector_input():
    with pytest.raises(ValueError):
        strict_accuracy(np.zeros((2, 2)))


# --- calibration -------------------------------------------------------------------------------------


def test_constant_scorer_calibration():
    delta = np.zeros(5)
    assert ece(delta) == pytest.approx(0.5)
    assert mce(delta) == pytest.approx(0.5)
    assert brier(delta) == pytest.approx(0.25)
    assert nll(delta) == pytest.approx(math.log(2))


def test_four_pairs_are_perfectly_calibrated():
    assert ece(FOUR_PAIRS) == pytest.approx(0.0, abs=1e-12)
    assert brier(FOUR_PAIRS) == pytest.approx(0.1875)


def test_doubling_delta_overconfident_and_temperature_recovers_two():
    doubled = 2 * FOUR_PAIRS
    assert ece(doubled) == pytest.approx(0.15)
    assert fit_temperature(doubled) == pytest.approx(2.0, abs=1e-3)
    assert ece(doubled, temperature=2.0) == pytest.approx(0.0, abs=1e-12)
    assert strict_accuracy(doubled / 2.0) == strict_accuracy(doubled)  # scaling leaves accuracy alone


def test_reliability_bins_follow_the_spec():
    rel = reliability(np.array([0.0, 2 * LN3, 2 * LN3, -2 * LN3, 50.0]))
    assert np.allclose(rel.edges, np.linspace(0, 1, 11))
    # Tie -> conf 0.5 opens bin 6 ([0.5, 0.6)); conf 0.9 opens bin 10; conf ~1 closes bin 10.
    assert rel.counts.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 4]
    assert rel.accuracy[5] == 0.0 and rel.confidence[5] == 0.5
    assert rel.accuracy[9] == pytest.approx(0.75)
    table = rel.table()
    assert len(table) == 10 and table[0]["accuracy"] is None and table[9]["count"] == 4
    expected_ece = 1 / 5 * 0.5 + 4 / 5 * abs(0.75 - (3 * 0.9 + sigmoid(50.0)) / 4)
    assert rel.ece == pytest.approx(expected_ece)
    assert rel.mce == pytest.approx(0.5)


def test_brier_does_not_depend_on_pair_order_and_accepts_soft_labels():
    delta, y = np.array([1.0, -0.5, 2.0]), np.array([0.8, 0.6, 1.0])
    assert brier(-delta, 1 - y) == pytest.approx(brier(delta, y))
    p = 1 / (1 + np.exp(-delta))
    assert brier(delta, y) == pytest.approx(np.mean((p - y) ** 2))


def test_nll_is_stable_for_huge_margins():
    assert nll(np.array([1e4])) == pytest.approx(0.0)
    assert nll(np.array([-1e4])) == pytest.approx(1e4)
    assert np.isfinite(sigmoid(np.array([-1e4, 1e4]))).all()


def test_soft_label_nll_is_cross_entropy_and_hard_label_reduces_to_softplus():
    delta = np.array([0.3, -1.2])
    p = 1 / (1 + np.exp(-delta))
    assert nll(delta, y=0.7) == pytest.approx(np.mean(-(0.7 * np.log(p) + 0.3 * np.log(1 - p))))
    assert nll(delta, y=1.0) == pytest.approx(nll(delta))


def test_fit_temperature_minimises_nll_and_handles_degenerate_input():
    rng = np.random.default_rng(1)
    delta = rng.normal(1.0, 3.0, size=400)
    t = fit_temperature(delta)
    assert nll(delta, t) <= min(nll(delta, t * 1.01), nll(delta, t / 1.01))
    assert fit_temperature(np.zeros(3)) == 1.0  # NLL is ln 2 whatever T is
    assert fit_temperature(np.array([1.0, 2.0]), bounds=(0.1, 10.0)) == pytest.approx(0.1, rel=1e-4)


# --- length bias -------------------------------------------------------------------------------------


def test_reward_equal_to_length():
    len_c = np.array([10, 3, 5, 8, 2])
    len_r = np.array([4, 9, 5, 1, 2])
    lengths = np.r_[len_c, len_r]
    assert pearson(lengths, lengths) == pytest.approx(1.0)
    assert spearman(lengths, lengths) == pytest.approx(1.0)
    split = length_split_accuracy(len_c - len_r, len_c, len_r)
    assert split["longer"] == {"accuracy": 1.0, "n": 2}
    assert split["shorter"] == {"accuracy": 0.0, "n": 1}
    assert split["equal"] == {"accuracy": 0.0, "n": 2}
    assert split["gap"] == 1.0


def test_empty_length_group_is_nan():
    split = length_split_accuracy(np.array([1.0]), np.array([5]), np.array([3]))
    assert math.isnan(split["shorter"]["accuracy"]) and split["shorter"]["n"] == 0
    assert math.isnan(split["gap"])


def test_pearson_matches_numpy_and_is_nan_for_constant_input():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert pearson(-x, x) == pytest.approx(-1.0)
    assert math.isnan(pearson(np.full(4, 0.1), y[:4]))
    assert math.isnan(pearson(np.array([1.0]), np.array([2.0])))
    with pytest.raises(ValueError):
        pearson(x, y[:3])


def test_spearman_averages_tied_ranks():
    assert average_ranks(np.array([10, 20, 20, 5, 20])).tolist() == [2.0, 4.0, 4.0, 1.0, 4.0]
    # Monotone but non-linear: Spearman 1, Pearson below 1.
    x = np.arange(1.0, 11.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert pearson(x, np.exp(x)) < 0.9
    # Ties: compare against Pearson of hand-computed average ranks.
    a, b = np.array([1, 2, 2, 3]), np.array([4, 4, 1, 2])
    assert spearman(a, b) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [3.5, 3.5, 1, 2])[0, 1])
    assert math.isnan(spearman(np.ones(3), np.arange(3)))
