"""The best-of-n study end to end on a task with planted over-optimization (tests/overopt_task.py): the gold
curve of the hacked proxy peaks and falls while its proxy curve rises, and conservative ensemble objectives
peak higher."""

import numpy as np
import pytest

import overopt_task as task
from rewardkit.errors import RewardkitError
from rewardkit.overopt.bon import bon_estimate
from rewardkit.overopt.pool import Pool, cached_scores
from rewardkit.overopt.study import bon_study, objectives_of


@pytest.fixture(scope="module")
def pool():
    return Pool(task.pool_records(), "synthetic")


@pytest.fixture(scope="module")
def study(pool, tmp_path_factory):
    scores = tmp_path_factory.mktemp("scores")
    gold = cached_scores(task.gold(), "gold", pool, scores)
    single = cached_scores(task.proxy_a(), "a", pool, scores)
    ensemble = task.ensemble()
    members = cached_scores(ensemble, "ens", pool, scores)
    objectives = {**objectives_of("a", task.proxy_a(), single, ["mean"]),
                  **objectives_of("ens", ensemble, members, ["mean", "wco", "uwo"])}
    return bon_study(pool, gold, objectives, n_max=64, resamples=200), gold, objectives


def test_the_hacked_proxy_overoptimizes(study):
    report, _, _ = study
    a = report["objectives"]["a"]
    assert report["n"] == [1, 2, 4, 8, 16, 32, 64]
    assert a["gold"][0] == pytest.approx(0.0, abs=1e-9) and a["proxy"][0] == pytest.approx(0.0, abs=1e-9)
    assert all(later > earlier for earlier, later in zip(a["proxy"], a["proxy"][1:]))  # the proxy keeps rising
    assert a["overoptimized"] and 1 < a["peak"]["n"] < 64 and a["gold"][-1] < a["peak"]["gold"]
    assert a["fit"]["beta"] > 0 and 0 < a["fit"]["d_star"] < report["d"][-1]
    assert all(lo <= m <= hi for lo, m, hi in zip(a["gold_lo"], a["gold"], a["gold_hi"]))
    assert a["gap_std"][-1] > a["gap_std"][1] > 0  # the proxy pulls away from the gold as n grows


def test_conservative_ensembles_peak_higher_than_the_single_proxy(study):
    report, _, _ = study
    single = report["objectives"]["a"]["peak"]["gold"]
    for agg in ("mean", "uwo", "wco"):
        assert report["objectives"][f"ens {agg}"]["peak"]["gold"] > single, agg
    rows = {row["objective"]: row for row in report["mitigation"]}
    assert set(rows) == {"a", "ens mean", "ens wco", "ens uwo"}
    assert rows["ens uwo"]["gold_at_n_max"] > rows["a"]["gold_at_n_max"]


def test_the_curves_are_the_mean_of_per_prompt_estimates(study, pool):
    report, gold, objectives = study
    keys = objectives["ens uwo"]
    for j, n in enumerate(report["n"]):
        by_hand = np.mean([bon_estimate(k, g.rewards, n) for k, g in zip(keys, gold)]) - report["gold"]["mean"]
        # the same weights, summed per prompt in two orders
        assert report["objectives"]["ens uwo"]["gold"][j] == pytest.approx(by_hand, abs=1e-9)


def test_hacks_are_what_the_proxy_picks_and_the_gold_dislikes(study):
    report, _, objectives = study
    hacks = report["hacks"]
    assert len(hacks) == 10 and all(h["objective"] == "a" for h in hacks)
    assert [h["gold_std"] for h in hacks] == sorted(h["gold_std"] for h in hacks)
    flat = np.concatenate([np.asarray(k) for k in objectives["a"]])
    top_share = (np.quantile(flat, 0.95) - flat.mean()) / flat.std()
    assert all(h["proxy_std"] >= top_share - 1e-9 and h["gold_std"] < 0 for h in hacks)
    # what the proxy rewards and the gold punishes: the planted feature A is large in what it picks
    assert np.mean([task.features(h["text"])[1] for h in hacks]) > 1.0


def test_n_max_above_the_pool_is_a_clear_error(pool, study):
    _, gold, objectives = study
    with pytest.raises(RewardkitError, match="--n-max 65 is above the pool size"):
        bon_study(pool, gold, objectives, n_max=65)


def test_cached_scores_are_reused_and_refused_for_another_pool(pool, tmp_path):
    calls = []
    scorer = task.gold()
    original = scorer.score
    scorer.score = lambda items: calls.append(len(items)) or original(items)
    first = cached_scores(scorer, "gold", pool, tmp_path)
    again = cached_scores(scorer, "gold", pool, tmp_path)
    assert sum(calls) == len(pool.records) and [r.rewards for r in again] == [r.rewards for r in first]
    other = Pool(task.pool_records(prompts=3, seed=9), "other")
    with pytest.raises(RewardkitError, match="scores of another pool"):
        cached_scores(scorer, "gold", other, tmp_path)


def test_the_report_files(study, tmp_path):
    from rewardkit.overopt.report import write_overopt_report

    report, _, _ = study
    paths = write_overopt_report({**report, "gold_model": "python:overopt_task:gold"}, tmp_path)
    for key in ("curves", "mitigation"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["markdown"].read_text()
    assert "stands in for human judgement" in markdown
    assert "| ens uwo |" in markdown and "| yes |" in markdown
    assert "## What `a` picks and the gold dislikes" in markdown
    import json

    assert json.loads(paths["json"].read_text())["n"] == report["n"]
