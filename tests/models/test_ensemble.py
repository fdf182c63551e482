"""EnsembleScorer: METHODS §5.1's Checks, standardisation, the manifest and the spec string, bad input."""

import json
import math

import pytest

from rewardkit.data.record import Response
from rewardkit.errors import RewardkitError
from rewardkit.models.ensemble import (EnsembleScorer, MemberStats, aggregate, reference_stats, spread,
                                       standardize)
from rewardkit.models.scorer import FunctionScorer, ScoreItem, ScoreResult
from rewardkit.models.spec import load_scorer

PROMPT = [{"role": "user", "content": "Say something."}]
TOL = 1e-12  # a handful of float additions and one division: far below this


def items(*responses_per_item):
    return [ScoreItem(PROMPT, [Response(r) for r in rs]) for rs in responses_per_item]


def constant(value, name="c"):
    return FunctionScorer(lambda prompt, response: value, name=name)


def by_length(scale=1.0, shift=0.0, name="len"):
    return FunctionScorer(lambda prompt, response: scale * len(response.content) + shift, name=name)


# -- METHODS §5.1 Checks -------------------------------------------------------------------------------------
def test_members_0_and_2_give_the_reference_values():
    scores = [[0.0], [2.0]]
    assert aggregate(scores, "mean") == [1.0]
    assert aggregate(scores, "wco") == [0.0]
    assert aggregate(scores, "uwo", lam=0.5, ddof=0) == [0.5]  # var 1
    assert aggregate(scores, "uwo", lam=0.5, ddof=1) == [0.0]  # var 2
    assert aggregate(scores, "uwo") == [0.5]  # the defaults: lambda 0.5, ddof 0
    assert aggregate(scores, "mean_minus_std", lam=1.0) == [0.0]  # std 1
    assert spread(scores) == [1.0]


def test_lambda_zero_makes_uwo_the_mean():
    scores = [[0.3, -1.0, 4.0], [2.0, 5.0, 4.5], [-0.7, 0.1, 3.0]]
    assert aggregate(scores, "uwo", lam=0.0) == pytest.approx(aggregate(scores, "mean"), abs=TOL)


def test_identical_members_make_every_aggregate_equal():
    scores = [[0.25, -3.0, 7.5]] * 4
    for agg in ("mean", "wco", "uwo", "mean_minus_std"):
        assert aggregate(scores, agg) == pytest.approx([0.25, -3.0, 7.5], abs=TOL)
    assert spread(scores) == pytest.approx([0.0, 0.0, 0.0], abs=TOL)


def test_a_positive_affine_change_to_one_member_leaves_standardised_outputs_unchanged():
    reference = items(["a", "bbb", "cc", "dddddd"])
    batch = items(["x", "yyyy"], ["zz", "wwwwwwww", "q"])
    plain = EnsembleScorer([by_length(), by_length(-1.0, 10.0, "neg")], aggregator="uwo")
    shifted = EnsembleScorer([by_length(3.0, -7.0), by_length(-1.0, 10.0, "neg")], aggregator="uwo")
    for e in (plain, shifted):
        e.fit_stats(reference)
    for a, b in zip(plain.score(batch), shifted.score(batch)):
        assert a.rewards == pytest.approx(b.rewards, abs=1e-9)
        assert a.uncertainty == pytest.approx(b.uncertainty, abs=1e-9)
        assert a.members != b.members  # members keep their own scale


def test_standardize_is_z_with_population_std():
    stats = reference_stats([1.0, 3.0], "m")
    assert (stats.mean, stats.std) == (2.0, 1.0)
    assert standardize([2.0, 5.0], stats) == [0.0, 3.0]


# -- the Scorer ----------------------------------------------------------------------------------------------
def test_results_carry_aggregate_members_and_uncertainty():
    ensemble = EnsembleScorer([by_length(), by_length(2.0)], aggregator="mean")
    (res,) = ensemble.score(items(["ab", "abcd"]))
    assert res.members == [[2.0, 4.0], [4.0, 8.0]]
    assert res.rewards == pytest.approx([3.0, 6.0], abs=TOL)
    assert res.uncertainty == pytest.approx([1.0, 2.0], abs=TOL)


def test_wco_without_stats_is_an_error_that_says_how_to_get_them():
    ensemble = EnsembleScorer([constant(0.0), constant(1.0, "one")], aggregator="wco", names=["a", "b"])
    with pytest.raises(RewardkitError, match="member 'a' has no reference stats"):
        ensemble.score(items(["x"]))
    raw = EnsembleScorer([constant(0.0), constant(1.0, "one")], aggregator="wco", standardize=False)
    assert raw.score(items(["x"]))[0].rewards == [0.0]


def test_a_member_with_no_spread_on_the_reference_set_is_named():
    ensemble = EnsembleScorer([by_length(), constant(1.0)], names=["length", "flat"], aggregator="uwo")
    with pytest.raises(RewardkitError, match="'flat'.*no spread"):
        ensemble.fit_stats(items(["a", "bb", "ccc"]))


def test_unknown_aggregator_and_too_few_members_for_ddof():
    with pytest.raises(RewardkitError, match="unknown ensemble aggregator 'median'"):
        EnsembleScorer([constant(0.0)], aggregator="median")
    with pytest.raises(RewardkitError, match="ddof=1 needs more than 1 members"):
        EnsembleScorer([constant(0.0)], aggregator="uwo", ddof=1, standardize=False)


class TwoObjectives:
    def score(self, its):
        return [ScoreResult(rewards=[0.0] * len(it.responses)) for it in its]

    def describe(self):
        return {"kind": "reward_model", "objectives": ["helpful", "harmless"]}


def test_members_scoring_different_objectives_are_refused_by_name():
    with pytest.raises(RewardkitError, match="member 'mo' scores objectives \\['helpful', 'harmless'\\]"):
        EnsembleScorer([constant(0.0), TwoObjectives()], names=["single", "mo"])


# -- manifest and spec, with real tiny reward models ---------------------------------------------------------
@pytest.fixture(scope="module")
def member_dirs(tmp_path_factory, llama_dir):
    from rewardkit.models import RewardModel

    root = tmp_path_factory.mktemp("members")
    return [RewardModel.from_pretrained(llama_dir, seed=seed).save_pretrained(root / f"seed{seed}") for seed in
            range(3)]


def test_manifest_round_trip_gives_the_aggregate_recomputed_from_the_members(member_dirs, tmp_path):
    reference = items(["a short answer", "a longer answer than that one", "no"])
    batch = items(["first response", "second, longer response"], ["only one"])
    ensemble = EnsembleScorer.from_specs([str(d) for d in member_dirs], aggregator="uwo", lam=0.5)
    stats = ensemble.fit_stats(reference)
    path = ensemble.save(tmp_path / "ens")
    assert path.name == "ensemble.json"
    manifest = json.loads(path.read_text())
    assert [m["name"] for m in manifest["members"]] == ["seed0", "seed1", "seed2"]

    loaded = load_scorer(str(tmp_path / "ens"))
    assert isinstance(loaded, EnsembleScorer)
    assert loaded.stats == pytest.approx(stats)
    singles = [load_scorer(str(d)).score(batch) for d in member_dirs]
    for i, res in enumerate(loaded.score(batch)):
        z = [[(r - s.mean) / s.std for r in member[i].rewards] for member, s in zip(singles, stats)]
        k = len(z)
        for j in range(len(res.rewards)):
            column = [row[j] for row in z]
            mean = sum(column) / k
            var = sum((v - mean) ** 2 for v in column) / k
            # fp32 forward passes, the same batches in both: the only difference is float64 summation order
            assert res.rewards[j] == pytest.approx(mean - 0.5 * var, abs=1e-9)
            assert res.uncertainty[j] == pytest.approx(math.sqrt(var), abs=1e-9)
            assert res.members[0][j] == pytest.approx(singles[0][i].rewards[j], abs=1e-9)


def test_spec_string_names_members_and_options(member_dirs):
    spec = f"ensemble:a={member_dirs[0]},b={member_dirs[1]}?agg=mean_minus_std&lambda=2&ddof=1"
    ensemble = load_scorer(spec)
    assert ensemble.names == ["a", "b"]
    assert (ensemble.aggregator, ensemble.lam, ensemble.ddof) == ("mean_minus_std", 2.0, 1)
    assert ensemble.describe()["kind"] == "ensemble"


def test_spec_and_manifest_errors(member_dirs, tmp_path):
    with pytest.raises(RewardkitError, match="unknown option 'aggregator'"):
        load_scorer(f"ensemble:{member_dirs[0]}?aggregator=uwo")
    manifest = {"format": "rewardkit-ensemble", "version": 1, "aggregator": "mean",
                "members": [{"name": "ok", "spec": str(member_dirs[0])}, {"name": "gone", "spec": "missing_dir"}]}
    (tmp_path / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(RewardkitError, match="ensemble.json: ensemble member 'gone' \\(missing_dir\\)"):
        load_scorer(str(tmp_path))
    manifest["members"][1] = {"spec": str(member_dirs[1]), "stats": {"mean": 0.0, "std": 0.0}}
    (tmp_path / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(RewardkitError, match=r"members\[1\].stats.std must be a positive number"):
        load_scorer(str(tmp_path))


def test_ensemble_of_scorer_objects_cannot_be_saved(tmp_path):
    with pytest.raises(RewardkitError, match="cannot be saved as a manifest"):
        EnsembleScorer([constant(0.0)], stats=[MemberStats(0.0, 1.0)]).save(tmp_path)
    assert not (tmp_path / "ensemble.json").exists()
