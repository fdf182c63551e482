"""compare_scorers(): side-by-side evaluation, strict agreement, top disagreements, and the writers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.data.synthetic import gold_reward, gold_scorer, make_synthetic_preferences
from rewardkit.errors import DataError
from rewardkit.eval import evaluate
from rewardkit.eval.compare import (
    compare_markdown,
    compare_scorers,
    comparison_pairs,
    disagreement_order,
    scale_free,
    snippet,
    strict_agreement,
    write_comparison,
)
from rewardkit.models.scorer import FunctionScorer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RECORDS = make_synthetic_preferences(60, seed=11)  # gold values differ within a record: gold never ties
GOLD = gold_scorer()
DOUBLED = FunctionScorer(lambda p, r: 2.0 * gold_reward(p, r), name="doubled")
NEGATED = FunctionScorer(lambda p, r: -gold_reward(p, r), name="negated")
CONSTANT = FunctionScorer(lambda p, r: 0.3, name="constant")
BY_LENGTH = FunctionScorer(lambda p, r: float(len(r.content.split())), name="length")


def agreement_of(report, a, b):
    (row,) = [g for g in report["agreement"] if {g["a"], g["b"]} == {a, b}]
    return row


# --- pure measures ----------------------------------------------------------------------------------


def test_strict_agreement_counts_ties_as_disagreement():
    assert strict_agreement([1.0, -2.0, 3.0], [0.5, -1.0, 9.0]) == 1.0
    assert strict_agreement([1.0, -2.0], [-1.0, 2.0]) == 0.0
    assert strict_agreement([0.0, 0.0], [0.0, 0.0]) == 0.0  # identical ties are still not a shared preference
    assert strict_agreement([1.0, 0.0, -1.0, 2.0], [1.0, 1.0, 1.0, 0.0]) == 0.25
    assert np.isnan(strict_agreement([], []))


def test_scale_free_keeps_signs_and_ignores_scale():
    delta = np.array([3.0, -1.0, 0.0, 2.0])
    assert scale_free(delta) == pytest.approx(scale_free(10.0 * delta))
    assert np.array_equal(np.sign(scale_free(delta)), np.sign(delta))
    assert np.mean(scale_free(delta) ** 2) == pytest.approx(1.0)
    assert scale_free(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_disagreement_order_puts_confident_opposite_calls_first():
    a = np.array([1.0, -1.0, 4.0, 0.5, 2.0])
    b = np.array([1.0, 1.0, -4.0, 0.0, 2.0])  # agree on 0 and 4; a tie at 3
    order, score = disagreement_order(a, b)
    assert order.tolist() == [2, 1, 3]
    assert np.all(np.diff(score) <= 0)


def test_pairs_are_labelled_comparisons_or_every_pair_of_an_unlabelled_record():
    records = [
        PreferenceRecord("lab", user_prompt("q"), [Response("a"), Response("b"), Response("c")], chosen=2),
        PreferenceRecord("unl", user_prompt("q"), [Response("a"), Response("b"), Response("c")]),
    ]
    pairs = comparison_pairs(records)
    rows = list(zip(pairs.record.tolist(), pairs.first.tolist(), pairs.second.tolist(), pairs.labelled.tolist()))
    assert rows == [(0, 2, 0, True), (0, 2, 1, True), (1, 0, 1, False), (1, 0, 2, False), (1, 1, 2, False)]


def test_snippet_collapses_whitespace_and_cuts():
    assert snippet("a\n\n b  c") == "a b c"
    cut = snippet("word " * 100, 20)
    assert len(cut) <= 20 and cut.endswith("…")


# --- the report -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report():
    scorers = {"gold": GOLD, "doubled": DOUBLED, "negated": NEGATED, "constant": CONSTANT, "length": BY_LENGTH}
    return compare_scorers(scorers, RECORDS, top_k=5)


def test_scorers_that_agree_everywhere_have_agreement_one(report):
    row = agreement_of(report, "gold", "doubled")
    assert row["agreement"] == 1.0 and row["n_pairs"] == 60
    assert row["reward_spearman"] == pytest.approx(1.0) and row["delta_spearman"] == pytest.approx(1.0)
    (d,) = [d for d in report["disagreements"] if (d["a"], d["b"]) == ("gold", "doubled")]
    assert d["n_disagree"] == 0 and d["examples"] == []


def test_a_scorer_and_its_negation_never_agree_and_top_the_disagreements(report):
    row = agreement_of(report, "gold", "negated")
    assert row["agreement"] == 0.0
    assert row["reward_spearman"] == pytest.approx(-1.0)
    (d,) = [d for d in report["disagreements"] if (d["a"], d["b"]) == ("gold", "negated")]
    assert d["n_disagree"] == 60 and len(d["examples"]) == 5
    examples = d["examples"]
    margins = [abs(e["delta"]["gold"]) for e in examples]
    all_margins = sorted((abs(np.diff(GOLD.score([r])[0].rewards)[0]) for r in RECORDS), reverse=True)
    assert margins == pytest.approx(all_margins[:5])  # the most confident calls are the top disagreements
    for e in examples:
        assert e["delta"]["negated"] == pytest.approx(-e["delta"]["gold"])
        assert e["z"]["negated"] == pytest.approx(-e["z"]["gold"])
        assert e["disagreement"] == pytest.approx(2 * abs(e["z"]["gold"]))
        rec = RECORDS[e["record_index"]]
        assert e["id"] == rec.id and e["subset"] == rec.subset and e["labelled"]
        assert e["preferred"] == rec.chosen and e["other"] == 1 - rec.chosen
        assert e["preferred_response"] == snippet(rec.responses[rec.chosen].content)
        assert e["prompt"] == snippet(rec.prompt[-1]["content"])
        gold = rec.meta["gold"]
        assert e["delta"]["gold"] == pytest.approx(gold[e["preferred"]] - gold[e["other"]])
    # Gold + negation: every comparison is right for exactly one of the two.
    assert report["summary"]["gold"]["accuracy"] + report["summary"]["negated"]["accuracy"] == pytest.approx(1.0)


def test_a_constant_scorer_is_always_wrong_and_agrees_with_nobody(report):
    assert report["summary"]["constant"]["accuracy"] == 0.0
    assert report["summary"]["constant"]["tie_rate"] == 1.0
    for other in ("gold", "doubled", "negated", "length"):
        row = agreement_of(report, "constant", other)
        assert row["agreement"] == 0.0
        assert row["reward_spearman"] is None  # a constant series has no rank correlation


def test_numbers_match_evaluate_run_separately(report):
    for name, scorer in [("gold", GOLD), ("negated", NEGATED), ("length", BY_LENGTH)]:
        alone = evaluate(RECORDS, scorer.score(RECORDS), scorer.describe())
        assert report["reports"][name] == alone
        s = report["summary"][name]
        assert s["accuracy"] == alone["accuracy"]
        assert (s["ece"], s["brier"], s["nll"]) == (alone["ece"], alone["brier"], alone["nll"])
        assert s["length"]["pearson"] == alone["length_correlation"]["pearson"]
        assert s["length"]["longer"] == alone["length_split"]["longer"]["accuracy"]
        assert s["length"]["gap"] == alone["length_split"]["gap"]
        for subset, info in alone["subsets"].items():
            assert report["subsets"][subset]["accuracy"][name] == info["accuracy"]
            assert report["subsets"][subset]["n_comparisons"] == info["n_comparisons"]
    assert set(report["subsets"]) == {rec.subset for rec in RECORDS}
    assert report["scorers"] == ["gold", "doubled", "negated", "constant", "length"]
    assert report["n"] == 60 and report["n_comparisons"] == 60
    json.dumps(report, allow_nan=False)


def test_precomputed_results_are_used_instead_of_scoring():
    class MustNotScore:
        def score(self, items):
            raise AssertionError("scored again")

        def describe(self):
            return {"name": "cached"}

    cached = GOLD.score(RECORDS)
    report = compare_scorers([("cached", MustNotScore()), ("length", BY_LENGTH)], RECORDS,
                             results={"cached": cached, "negated": NEGATED.score(RECORDS)})
    assert report["scorers"] == ["cached", "length", "negated"]  # results-only names come last
    assert report["reports"]["cached"]["scorer"] == {"name": "cached"}
    assert report["reports"]["negated"]["scorer"] is None
    assert agreement_of(report, "cached", "negated")["agreement"] == 0.0


def test_unlabelled_records_are_compared_on_every_pair():
    records = [PreferenceRecord(f"u{i}", user_prompt("q"), [Response("a " * (i + 1)), Response("b " * 3),
                                                            Response("c " * 5)]) for i in range(4)]
    report = compare_scorers({"length": BY_LENGTH, "negated": FunctionScorer(lambda p, r: -len(r.content))},
                             records)
    assert report["n_comparisons"] == 0 and report["n_pairs"] == 12
    assert report["summary"]["length"]["accuracy"] is None  # no labels, no accuracy
    (d,) = report["disagreements"]
    assert d["n_disagree"] == 12  # opposite calls, except one equal-length pair: a tie for both, still no agreement
    assert not any(e["labelled"] for e in d["examples"])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unique"):
        compare_scorers([("a", GOLD), ("a", NEGATED)], RECORDS)
    with pytest.raises(ValueError, match="at least one"):
        compare_scorers({}, RECORDS)
    with pytest.raises(ValueError, match="neither"):
        compare_scorers({"a": None}, RECORDS)
    with pytest.raises(DataError, match="pair up"):
        compare_scorers({"a": GOLD}, RECORDS, results={"a": GOLD.score(RECORDS[:3])})


# --- writers ----------------------------------------------------------------------------------------


def test_writers_produce_valid_files(report, tmp_path):
    paths = write_comparison(report, tmp_path / "cmp")
    assert {p.name for p in paths.values()} == {"compare.json", "compare.md", "compare.png"}
    assert json.loads(paths["json"].read_text()) == report
    md = paths["markdown"].read_text()
    assert md == compare_markdown(report, image="compare.png")
    for heading in ("# Reward model comparison", "## Accuracy and calibration", "## Length bias", "## Subsets",
                    "## Agreement", "## Top disagreements: gold vs negated", "![Accuracy per subset](compare.png)"):
        assert heading in md
    assert "| gold | negated | 0.0% | 60 |" in md
    png = paths["plot"].read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 5_000
    assert not list((tmp_path / "cmp").glob(".*"))  # no temporary files left behind


def test_markdown_escapes_table_breaking_text():
    records = [PreferenceRecord("p", user_prompt("a | b"), [Response("x |\ny"), Response("z")], chosen=1)]
    md = compare_markdown(compare_scorers({"len": BY_LENGTH, "neg": NEGATED}, records))
    row = next(line for line in md.splitlines() if line.startswith("| p |"))
    assert "a \\| b" in row and "x \\| y" in row


def test_a_real_tiny_reward_model_against_a_function_scorer(llama_dir, tmp_path):
    from rewardkit.models import RewardModelScorer

    model = RewardModelScorer.from_pretrained(llama_dir, device="cpu", precision="fp32")
    records = make_synthetic_preferences(12, seed=5)
    report = compare_scorers({"tiny": model, "gold": GOLD}, records, top_k=3)
    assert report["reports"]["tiny"]["scorer"]["kind"] == "reward_model"
    assert report["summary"]["tiny"]["length"]["unit"] == "tokens"
    assert report["summary"]["gold"]["length"]["unit"] == "words"
    tiny_results = model.score(records)
    alone = evaluate(records, tiny_results, model.describe())
    assert report["summary"]["tiny"]["accuracy"] == pytest.approx(alone["accuracy"])
    row = agreement_of(report, "tiny", "gold")
    tiny_delta = [r.rewards[rec.chosen] - r.rewards[1 - rec.chosen] for r, rec in zip(tiny_results, records)]
    gold_delta = [rec.meta["gold"][rec.chosen] - rec.meta["gold"][1 - rec.chosen] for rec in records]
    assert row["agreement"] == pytest.approx(strict_agreement(tiny_delta, gold_delta))
    d = report["disagreements"][0]
    assert len(d["examples"]) == min(3, d["n_disagree"])
    paths = write_comparison(report, tmp_path)
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC
