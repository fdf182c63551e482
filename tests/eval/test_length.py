"""Length bias measures and post-hoc length calibration (EVALUATION.md §6, METHODS.md §3.2)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.data.synthetic import gold_reward, make_synthetic_preferences
from rewardkit.errors import DataError, ModelError
from rewardkit.eval import evaluate, metrics
from rewardkit.eval.length import (
    LengthCalibratedScorer,
    LengthCalibration,
    fit_length_calibration,
    length_bias,
    longer_baseline_accuracy,
    longer_chosen_gap,
    longer_chosen_rate,
    lowess_curve,
    pairwise_length_correlation,
)
from rewardkit.models.scorer import FunctionScorer, ScoreResult

# --- pure measures ----------------------------------------------------------------------------------


def test_reward_equal_to_length_gives_the_section_6_check():
    """EVALUATION §6 check: with r = len, accuracy 1 on chosen-longer pairs, 0 on chosen-shorter and equal."""
    len_c = np.array([5, 9, 3, 4, 7.0])
    len_r = np.array([2, 4, 6, 4, 1.0])
    delta = len_c - len_r
    assert pairwise_length_correlation(delta, len_c, len_r) == pytest.approx({"pearson": 1.0, "spearman": 1.0})
    assert longer_chosen_gap(delta, len_c, len_r) == 1.0
    assert longer_baseline_accuracy(len_c, len_r) == pytest.approx(3 / 5)  # the equal pair is a tie: wrong
    assert longer_chosen_rate(len_c, len_r) == pytest.approx(3 / 4)  # equal-length pairs are left out


def test_pure_measures_are_nan_when_undefined():
    empty = np.zeros(0)
    assert np.isnan(longer_baseline_accuracy(empty, empty))
    assert np.isnan(longer_chosen_rate([3, 3], [3, 3]))
    assert np.isnan(pairwise_length_correlation([1.0, 2.0], [3, 3], [3, 3])["pearson"])  # Δlen is constant
    assert np.isnan(longer_chosen_gap([1.0], [5], [2]))  # no chosen-shorter pair


def test_length_bias_agrees_with_evaluate_and_adds_the_label_rate():
    records = make_synthetic_preferences(80, seed=3)
    scorer = FunctionScorer(lambda p, r: gold_reward(p, r) + 0.1 * len(r.content.split()))
    results = scorer.score(records)
    bias, report = length_bias(records, results), evaluate(records, results)
    corr = report["length_correlation"]
    assert bias["unit"] == corr["unit"] == "words"
    assert bias["n_comparisons"] == report["n_comparisons"] == 80 and bias["n_responses"] == 160
    assert bias["reward_length"] == pytest.approx({"pearson": corr["pearson"], "spearman": corr["spearman"]})
    assert bias["pairwise"] == pytest.approx({"pearson": corr["pairwise_pearson"],
                                              "spearman": corr["pairwise_spearman"]})
    assert bias["length_split"] == report["length_split"]
    assert bias["longer_baseline_accuracy"] == report["longer_baseline_accuracy"]
    lens = [[len(r.content.split()) for r in rec.responses] for rec in records]
    longer = [lens[i][rec.chosen] > lens[i][1 - rec.chosen] for i, rec in enumerate(records)
              if lens[i][0] != lens[i][1]]
    assert bias["longer_chosen_rate"] == pytest.approx(np.mean(longer))
    json.dumps(bias, allow_nan=False)


def test_length_bias_uses_tokens_when_every_result_has_them():
    records = [PreferenceRecord(f"r{i}", user_prompt("q"), [Response("a b"), Response("a")], chosen=0)
               for i in range(4)]
    # Tokens say the chosen response is the *shorter* one, words say the opposite.
    results = [ScoreResult(rewards=[1.0, 0.0], response_tokens=[2, 5 + i]) for i in range(4)]
    bias = length_bias(records, results)
    assert bias["unit"] == "tokens"
    assert bias["length_split"]["shorter"] == {"accuracy": 1.0, "n": 4}
    assert length_bias(records, results, unit="words")["length_split"]["longer"]["n"] == 4


def test_length_bias_rejects_results_that_do_not_pair_up():
    records = make_synthetic_preferences(3)
    with pytest.raises(DataError, match="must pair up"):
        length_bias(records, [ScoreResult(rewards=[0.0, 1.0])])
    with pytest.raises(DataError, match="rewards"):
        length_bias(records[:1], [ScoreResult(rewards=[0.0])])


# --- LOWESS -----------------------------------------------------------------------------------------

X = np.array([1, 2, 2, 3, 5, 8, 9, 12, 13, 13, 15, 20], dtype=float)
Y = np.array([0.5, 1.1, 0.7, 1.9, 2.2, 9.0, 3.1, 3.3, 4.2, 3.8, 4.0, 5.5])
# statsmodels.nonparametric.lowess(Y, X, frac, it, return_sorted=False) (statsmodels 0.14), rounded to 1e-10.
STATSMODELS = {
    (0.6, 3): [0.5387223726, 0.9938980278, 0.9938980278, 1.4393785845, 2.2496490724, 2.8445936235,
               3.0215411705, 3.6002017019, 3.7694556038, 3.7694556038, 4.2191674513, 5.457494461],
    (0.6, 0): [0.3956694408, 0.9804981853, 0.9804981853, 1.6155354469, 3.340090786, 5.2327952171,
               4.9621351609, 4.2414638649, 3.9118848252, 3.9118848252, 4.2321175577, 5.4518771016],
    (1.0, 3): [0.8335424358, 1.0953115291, 1.0953115291, 1.3548497657, 1.8700560782, 2.6414316436,
               2.9024243888, 3.609851856, 3.8276583326, 3.8276583326, 4.2705832977, 5.3889669095],
}


@pytest.mark.parametrize(("frac", "iterations"), list(STATSMODELS))
def test_lowess_matches_statsmodels(frac, iterations):
    knots, fitted = lowess_curve(X, Y, frac, iterations)
    assert knots.tolist() == sorted(set(X.tolist()))
    assert np.interp(X, knots, fitted) == pytest.approx(STATSMODELS[frac, iterations], abs=1e-9)


def test_lowess_reproduces_a_line_and_resists_an_outlier():
    x = np.arange(50, dtype=float)
    _, fitted = lowess_curve(x, 2.0 * x - 3.0, frac=0.3)
    assert fitted == pytest.approx(2.0 * x - 3.0, abs=1e-9)
    y = 2.0 * x - 3.0
    y[25] += 100.0
    _, robust = lowess_curve(x, y, frac=0.3, iterations=3)
    assert abs(robust[25] - 47.0) < 0.5  # the robustifying passes reject the outlier
    _, plain = lowess_curve(x, y, frac=0.3, iterations=0)
    assert abs(plain[25] - 47.0) > 10.0


def test_lowess_with_more_ties_than_the_window_is_the_local_mean():
    x = np.array([1.0] * 10 + [2.0] * 10)
    y = np.r_[np.linspace(0, 1, 10), np.linspace(5, 6, 10)]
    knots, fitted = lowess_curve(x, y, frac=0.2, iterations=0)  # k = 4 < 10 points at each length
    assert knots.tolist() == [1.0, 2.0]
    assert fitted == pytest.approx([0.5, 5.5])


# --- fitting a calibration --------------------------------------------------------------------------


def test_a_pure_function_of_length_becomes_constant():
    """METHODS §3.2 check: a reward that is a function of length alone calibrates to ≈ a constant."""
    lengths = np.repeat(np.arange(5, 205, dtype=float), 3)
    rewards = 3.0 * np.sqrt(lengths)
    # A narrow window follows the curve; no robustifying passes, since nothing here is an outlier.
    cal = fit_length_calibration(rewards, lengths, unit="words", frac=0.1, iterations=0)
    calibrated = rewards - cal.predict(lengths)
    assert np.std(calibrated) < 0.01 * np.std(rewards)


def test_reference_spearman_is_near_zero_after_calibration():
    """METHODS §3.2 check: Spearman(r̂, len) ≈ 0 on the reference set."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, 3000).astype(float)
    rewards = 0.02 * lengths + 0.5 * np.sin(lengths / 40) + rng.normal(0, 0.5, len(lengths))
    assert metrics.spearman(rewards, lengths) > 0.8
    for method in ("lowess", "linear"):
        cal = fit_length_calibration(rewards, lengths, unit="tokens", method=method)
        assert abs(metrics.spearman(rewards - cal.predict(lengths), lengths)) < 0.05, method


def test_linear_baseline_is_alpha_times_relative_length():
    lengths = np.arange(10, 60, dtype=float)
    rewards = 0.5 * lengths + 7.0
    cal = fit_length_calibration(rewards, lengths, unit="words", method="linear")
    assert cal.len_ref == pytest.approx(lengths.mean())
    assert cal.alpha == pytest.approx(0.5 * lengths.mean())
    assert cal.predict([100.0]) == pytest.approx([50.0])  # α·len/len_ref, no intercept
    assert cal.summary()["slope"] == pytest.approx(0.5)


def test_lowess_calibration_is_held_at_the_ends_outside_the_reference_range():
    lengths = np.arange(10, 40, dtype=float)
    cal = fit_length_calibration(lengths * 2.0, lengths, unit="words")
    assert cal.predict([0.0, 10.0, 39.0, 1000.0]) == pytest.approx([20.0, 20.0, 78.0, 78.0])


def test_too_few_or_constant_reference_points_are_clear_errors():
    with pytest.raises(DataError, match=r"at least 20 reference responses, got 6"):
        fit_length_calibration(np.arange(6.0), np.arange(6.0), unit="words")
    with pytest.raises(DataError, match="varied lengths"):
        fit_length_calibration(np.arange(30.0), np.full(30, 12.0), unit="words")
    with pytest.raises(DataError, match="non-finite"):
        fit_length_calibration(np.r_[np.nan, np.arange(29.0)], np.arange(30.0), unit="words")
    scorer = FunctionScorer(lambda p, r: float(len(r.content)))
    few = [PreferenceRecord(f"r{i}", user_prompt("q"), [Response("a " * (i + 1)), Response("b")], chosen=0)
           for i in range(4)]  # 8 responses
    with pytest.raises(DataError, match="got 8"):
        LengthCalibratedScorer.fit(scorer, few)


# --- the calibrated Scorer --------------------------------------------------------------------------


def quality_of(text: str) -> float:
    return float(text.split()[0].removeprefix("q="))


def word_count(text: str) -> int:
    return len(text.split())


# reward = 0.05·len + quality: strongly length-correlated (lengths 5..200 words, quality ~ N(0, 1)).
BIASED = FunctionScorer(lambda p, r: 0.05 * word_count(r.content) + quality_of(r.content), name="biased")


def response(rng: random.Random, n_words: int | None = None, quality: float | None = None) -> Response:
    n = rng.randint(5, 200) if n_words is None else n_words
    q = rng.gauss(0.0, 1.0) if quality is None else quality
    return Response(f"q={q:.6f} " + "word " * (n - 1))


def pairs_by_quality(n: int, seed: int, equal_length: bool = False) -> list[PreferenceRecord]:
    """Pairs labelled by quality alone, lengths drawn independently of the label: length is uninformative."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        n_words = rng.randint(5, 200) if equal_length else None
        a, b = response(rng, n_words), response(rng, n_words)
        chosen = 0 if quality_of(a.content) > quality_of(b.content) else 1
        records.append(PreferenceRecord(f"{seed}-{i}", user_prompt(f"question {i}"), [a, b], chosen=chosen))
    return records


def flat(results, records):
    rewards = np.asarray([r for res in results for r in res.rewards])
    lengths = np.asarray([word_count(r.content) for rec in records for r in rec.responses], dtype=float)
    return rewards, lengths


@pytest.fixture(scope="module")
def calibrated():
    return LengthCalibratedScorer.fit(BIASED, pairs_by_quality(1000, seed=0))


def test_held_out_reward_no_longer_correlates_with_length(calibrated):
    held_out = pairs_by_quality(1000, seed=1)  # 2000 responses
    rewards, lengths = flat(BIASED.score(held_out), held_out)
    assert metrics.pearson(rewards, lengths) > 0.9
    rewards, lengths = flat(calibrated.score(held_out), held_out)
    assert abs(metrics.pearson(rewards, lengths)) < 0.1
    assert abs(metrics.spearman(rewards, lengths)) < 0.1


def test_order_among_equal_length_responses_is_unchanged(calibrated):
    same_length = pairs_by_quality(200, seed=2, equal_length=True)
    before = np.asarray([np.diff(r.rewards)[0] for r in BIASED.score(same_length)])
    after = np.asarray([np.diff(r.rewards)[0] for r in calibrated.score(same_length)])
    assert np.array_equal(np.sign(before), np.sign(after))
    assert after == pytest.approx(before, abs=1e-9)  # same length, same b̂: the margin itself is kept


def test_accuracy_improves_where_length_is_uninformative(calibrated):
    held_out = pairs_by_quality(500, seed=3)
    biased = evaluate(held_out, BIASED.score(held_out))
    fixed = evaluate(held_out, calibrated.score(held_out))
    assert fixed["accuracy"] >= biased["accuracy"]
    assert fixed["accuracy"] > 0.95 > 0.75 > biased["accuracy"]  # quality decides once length is removed
    assert abs(fixed["length_split"]["gap"]) < 0.1 < biased["length_split"]["gap"]


def test_synthetic_task_length_bias_is_removed_without_losing_accuracy():
    """gold + 0.1·words on the synthetic task: calibration recovers gold-level accuracy on held-out data."""
    biased = FunctionScorer(lambda p, r: gold_reward(p, r) + 0.1 * word_count(r.content), name="gold+len")
    scorer = LengthCalibratedScorer.fit(biased, make_synthetic_preferences(400, seed=1))
    test = make_synthetic_preferences(400, seed=2)
    before, after = length_bias(test, biased.score(test)), length_bias(test, scorer.score(test))
    assert before["reward_length"]["pearson"] > 0.5
    assert abs(after["reward_length"]["pearson"]) < 0.15
    assert evaluate(test, scorer.score(test))["accuracy"] >= evaluate(test, biased.score(test))["accuracy"]


def test_describe_names_the_base_the_unit_and_the_fit(calibrated):
    d = calibrated.describe()
    assert d["kind"] == "length_calibrated" and d["name"] == "biased+length-calibrated"
    assert d["base"] == BIASED.describe()
    cal = d["length_calibration"]
    assert cal["method"] == "lowess" and cal["unit"] == "words" and "whitespace" in cal["length_source"]
    assert cal["n_reference"] == 2000 and cal["frac"] == 1.0 and cal["iterations"] == 3
    assert cal["length_range"] == [5.0, 200.0] and len(cal["fingerprint"]) == 12
    json.dumps(d, allow_nan=False)


def test_saved_calibration_reloads_and_scores_identically(calibrated, tmp_path):
    path = calibrated.save(tmp_path / "calib" / "length.json")
    saved = json.loads(path.read_text())
    assert saved["format"] == "rewardkit.length_calibration" and saved["base_scorer"]["name"] == "biased"
    again = LengthCalibratedScorer.load(BIASED, path)
    assert again.calibration == calibrated.calibration
    assert again.describe() == calibrated.describe()
    items = pairs_by_quality(20, seed=4)
    assert [r.rewards for r in again.score(items)] == [r.rewards for r in calibrated.score(items)]
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind

    linear = LengthCalibratedScorer.fit(BIASED, pairs_by_quality(50, seed=5), method="linear")
    assert LengthCalibration.from_json(linear.calibration.to_json()) == linear.calibration


def test_loading_something_else_is_a_clear_error(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="not a length calibration"):
        LengthCalibration.load(tmp_path / "x.json")
    with pytest.raises(ModelError, match="cannot read"):
        LengthCalibration.load(tmp_path / "missing.json")
    with pytest.raises(ModelError, match="version"):
        LengthCalibration.from_json({"format": "rewardkit.length_calibration", "version": 99})


class TokenScorer:
    """A scorer that reports its own token counts (3 per word) and truncation, like a reward model."""

    def __init__(self, with_tokens: bool = True):
        self.with_tokens = with_tokens

    def score(self, items):
        out = []
        for it in items:
            tokens = [3 * word_count(r.content) for r in it.responses]
            out.append(ScoreResult(rewards=[0.01 * t + quality_of(r.content) for t, r in zip(tokens, it.responses)],
                                   objectives={"x": [0.0] * len(tokens)},
                                   response_tokens=tokens if self.with_tokens else None,
                                   truncated=[int(t > 500) for t in tokens]))
        return out

    def describe(self):
        return {"name": "tokens", "kind": "test"}


def test_token_lengths_are_used_and_result_fields_carried_over():
    scorer = LengthCalibratedScorer.fit(TokenScorer(), pairs_by_quality(100, seed=6))
    assert scorer.calibration.unit == "tokens"
    assert "response tokens" in scorer.describe()["length_calibration"]["length_source"]
    items = pairs_by_quality(10, seed=7)
    base, out = TokenScorer().score(items), scorer.score(items)
    for b, o in zip(base, out):
        assert o.response_tokens == b.response_tokens and o.truncated == b.truncated
        assert o.objectives is None  # base objectives no longer combine to the calibrated reward
        expected = np.asarray(b.rewards) - scorer.calibration.predict(b.response_tokens)
        assert o.rewards == pytest.approx(expected.tolist())
    # A token calibration cannot silently fall back to words.
    with pytest.raises(ModelError, match="response_tokens"):
        LengthCalibratedScorer(TokenScorer(with_tokens=False), scorer.calibration).score(items)
    # Words can be asked for explicitly.
    words = LengthCalibratedScorer.fit(TokenScorer(), pairs_by_quality(100, seed=6), unit="words")
    assert words.calibration.unit == "words"


def test_real_tiny_reward_model_is_calibrated_in_its_tokens(llama_dir):
    from rewardkit.models import RewardModelScorer

    base = RewardModelScorer.from_pretrained(llama_dir, device="cpu", precision="fp32")
    reference = make_synthetic_preferences(16, seed=8)  # 32 responses
    raw_reference = base.score(reference)
    scorer = LengthCalibratedScorer.fit(base, reference, reference_results=raw_reference)
    assert scorer.calibration.unit == "tokens" and scorer.calibration.n_reference == 32
    assert scorer.describe()["base"]["kind"] == "reward_model"
    tokens = [t for res in raw_reference for t in res.response_tokens]
    calibrated = [r for res in raw_reference for r in res.rewards] - scorer.calibration.predict(tokens)
    assert abs(metrics.spearman(calibrated, tokens)) < 0.3

    items = make_synthetic_preferences(4, seed=9)
    raw, out = base.score(items), scorer.score(items)
    for b, o in zip(raw, out):
        assert o.response_tokens == b.response_tokens and o.truncated == b.truncated
        expected = np.asarray(b.rewards) - scorer.calibration.predict(b.response_tokens)
        assert o.rewards == pytest.approx(expected.tolist(), abs=1e-5)
