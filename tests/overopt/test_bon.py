"""EVALUATION §8-9 Checks: the unbiased best-of-n estimator, the best-of-n KL, and the Gao et al. fits."""

import itertools
import math

import numpy as np
import pytest

from rewardkit.data.record import Response, user_prompt
from rewardkit.models.ensemble import AGGREGATORS, EnsembleScorer, MemberStats
from rewardkit.models.scorer import FunctionScorer, ScoreItem
from rewardkit.overopt.bon import bon_estimate, bon_weights, fit_bon, fit_rl, kl_bon, n_values


@pytest.mark.parametrize("pool, n", [(1, 1), (8, 3), (64, 64), (12_600, 1), (12_600, 256), (12_600, 12_600)])
def test_weights_sum_to_one(pool, n):
    w = bon_weights(pool, n)
    assert w.shape == (pool,) and (w >= 0).all() and (w[: n - 1] == 0).all()
    # exp of log-gamma differences: each weight carries ~1e-12 relative error at pool 12,600
    assert w.sum() == pytest.approx(1.0, abs=1e-8)


def test_n_one_is_the_mean_and_n_pool_is_the_top_proxy_sample():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=50), rng.normal(size=50)
    assert bon_estimate(proxy, gold, 1) == pytest.approx(gold.mean(), abs=1e-12)
    assert bon_estimate(proxy, gold, 50) == pytest.approx(gold[np.argmax(proxy)], abs=1e-12)
    assert bon_estimate(proxy, proxy, 50) == pytest.approx(proxy.max(), abs=1e-12)


def test_the_estimate_matches_brute_force_over_every_subset_of_eight():
    rng = np.random.default_rng(1)
    proxy = rng.integers(0, 4, size=8).astype(float)  # repeated values: the tie rule is part of the check
    gold = rng.normal(size=8)
    for n in range(1, 9):
        picks = [max(subset, key=lambda i: (proxy[i], i)) for subset in itertools.combinations(range(8), n)]
        brute = float(np.mean(gold[picks]))
        assert bon_estimate(proxy, gold, n) == pytest.approx(brute, abs=1e-12)


def test_kl_bon_reproduces_the_published_table():
    table = {2: (0.193, 0.439), 4: (0.636, 0.798), 16: (1.835, 1.355), 64: (3.175, 1.782), 256: (4.549, 2.133),
             1024: (5.932, 2.436), 12_500: (8.434, 2.904)}
    for n, (kl, d) in table.items():
        assert kl_bon(n) == pytest.approx(kl, abs=5e-4)  # the table rounds to 3 decimals
        assert math.sqrt(kl_bon(n)) == pytest.approx(d, abs=5e-4)
    assert kl_bon(1) == 0.0
    with pytest.raises(ValueError):
        kl_bon(0)


def test_fits_recover_alpha_and_beta_and_their_optima():
    d = np.sqrt([kl_bon(n) for n in n_values(1024)])
    bon = fit_bon(d, d * (1.5 - 0.6 * d))
    assert (bon.alpha, bon.beta) == pytest.approx((1.5, 0.6), abs=1e-9)  # exact data: least squares is exact
    assert bon.d_star == pytest.approx(1.5 / 1.2, abs=1e-9) and bon.r_star == pytest.approx(1.5 ** 2 / 2.4, abs=1e-9)
    assert bon(bon.d_star) == pytest.approx(bon.r_star, abs=1e-9)

    d_rl = np.linspace(0.1, 6, 30)
    rl = fit_rl(d_rl, d_rl * (0.8 - 0.4 * np.log(d_rl)))
    assert (rl.alpha, rl.beta) == pytest.approx((0.8, 0.4), abs=1e-9)
    assert rl.d_star == pytest.approx(math.exp(0.8 / 0.4 - 1), abs=1e-9)
    assert rl.r_star == pytest.approx(0.4 * rl.d_star, abs=1e-9)
    assert float(rl(rl.d_star)) == pytest.approx(rl.r_star, abs=1e-9)

    noisy = d * (1.5 - 0.6 * d) + np.random.default_rng(2).normal(scale=0.01, size=len(d))
    fit = fit_bon(d, noisy)
    # 11 points, noise 0.01: the coefficients move by a few hundredths at most
    assert fit.alpha == pytest.approx(1.5, abs=0.05) and fit.beta == pytest.approx(0.6, abs=0.05)


def test_a_curve_that_never_turns_has_no_peak():
    d = np.linspace(0.1, 2, 10)
    fit = fit_bon(d, 0.7 * d)
    assert abs(fit.beta) < 1e-9 and fit.d_star is None and fit.r_star is None
    assert fit_rl(d, 0.7 * d).d_star is None or fit_rl(d, 0.7 * d).extrapolated
    rising = fit_bon(d, d * (1.0 - 0.1 * d))  # turns at d = 5, beyond the data
    assert rising.d_star == pytest.approx(5.0, abs=1e-9) and rising.extrapolated


def test_n_values_are_powers_of_two_up_to_n_max():
    assert n_values(1) == [1]
    assert n_values(64) == [1, 2, 4, 8, 16, 32, 64]
    assert n_values(48) == [1, 2, 4, 8, 16, 32, 48]
    with pytest.raises(ValueError):
        n_values(0)


def test_bad_n_is_a_clear_error():
    with pytest.raises(ValueError, match="pool size 4"):
        bon_weights(4, 5)


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_identical_members_give_the_single_member_curve(aggregator):
    """EVALUATION §9: the ensemble objective is the sort key; identical members leave the order unchanged."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=40)
    gold = rng.normal(size=40)
    member = FunctionScorer(lambda prompt, response: float(response.content))
    item = ScoreItem(user_prompt("q"), [Response(repr(float(v))) for v in values])
    stats = MemberStats(float(values.mean()), float(values.std()))
    ensemble = EnsembleScorer([member] * 3, names=["a", "b", "c"], stats=[stats] * 3, aggregator=aggregator)
    key = ensemble.score([item])[0].rewards
    single = member.score([item])[0].rewards
    for n in n_values(40):
        assert bon_estimate(key, gold, n) == pytest.approx(bon_estimate(single, gold, n), abs=1e-12)
