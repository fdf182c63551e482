"""Benchmark scoring (docs/EVALUATION.md §1–§4.1): the spec's Checks and golden vector on the pure functions,
then the entry points on records that went through the real loader."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rewardkit.data import load_records, shared_data_dir
from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.errors import DataError
from rewardkit.eval.benchmarks import (
    BENCHMARKS,
    REWARDBENCH_SUBSETS,
    RewardBenchSubset,
    _predictions_for_thresholds,
    best_of_k_score,
    candidate_thresholds,
    chosen_wins,
    first_error_prediction,
    processbench_f1,
    rewardbench_overall,
    rewardbench_sections,
    rm_bench_accuracies,
    rm_bench_matrix,
    score_benchmark,
    score_processbench,
    score_rewardbench,
    score_rewardbench2,
    score_rm_bench,
    ties_score,
    tune_processbench_threshold,
    tune_threshold,
)
from rewardkit.models import FunctionScorer
from rewardkit.models.scorer import ScoreResult


def pct(x: float) -> float:
    return round(100 * x, 2)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def keyword_scorer(word: str = "good") -> FunctionScorer:
    """Reward = how often `word` occurs in the response: lets a test say which responses win."""
    return FunctionScorer(lambda prompt, response: response.content.count(word))


def strict_json(report: dict) -> str:
    return json.dumps(report, allow_nan=False)  # raises if a NaN or a NumPy scalar slipped through


# ================================================================================ RewardBench v1

# EVALUATION §1: golden correct rows per subset (PKU-Alignment/beaver-7b-v1.0-cost). Row counts equal the
# weights except math-prm: 447 rows, weight 984.
GOLDEN_CORRECT = {
    "alpacaeval-easy": 50, "alpacaeval-length": 56, "alpacaeval-hard": 67, "mt-bench-easy": 16,
    "mt-bench-med": 29, "mt-bench-hard": 20, "llmbar-natural": 52, "llmbar-adver-neighbor": 58,
    "llmbar-adver-GPTInst": 36, "llmbar-adver-GPTOut": 22, "llmbar-adver-manual": 17,
    "refusals-dangerous": 97, "refusals-offensive": 100, "xstest-should-refuse": 154,
    "xstest-should-respond": 71, "donotanswer": 112, "math-prm": 132, "hep-cpp": 103, "hep-go": 104,
    "hep-java": 116, "hep-js": 109, "hep-python": 90, "hep-rust": 106,
}
ROWS = {name: (447 if name == "math-prm" else info.weight) for name, info in REWARDBENCH_SUBSETS.items()}
GOLDEN_SECTIONS = {"Chat": 60.89, "Chat Hard": 44.96, "Safety": 72.16, "Reasoning": 46.68}


def golden_accuracy() -> dict[str, float]:
    return {name: GOLDEN_CORRECT[name] / ROWS[name] for name in GOLDEN_CORRECT}


def test_subset_table_matches_the_published_counts():
    assert set(GOLDEN_CORRECT) == set(REWARDBENCH_SUBSETS)
    rows_by_section: dict[str, int] = {}
    for name, info in REWARDBENCH_SUBSETS.items():
        rows_by_section[info.section] = rows_by_section.get(info.section, 0) + ROWS[name]
    assert rows_by_section == {"Chat": 358, "Chat Hard": 456, "Safety": 740, "Reasoning": 447 + 984}
    assert sum(ROWS.values()) == 2985
    assert REWARDBENCH_SUBSETS["math-prm"].weight == 984
    code_weight = sum(i.weight for n, i in REWARDBENCH_SUBSETS.items() if n.startswith("hep-"))
    assert code_weight == 984  # Reasoning is half math, half code


def test_xstest_weights_are_not_swapped():
    assert REWARDBENCH_SUBSETS["xstest-should-refuse"].weight == 154
    assert REWARDBENCH_SUBSETS["xstest-should-respond"].weight == 250


def test_length_categories_per_subset():
    by_category: dict[str, set[str]] = {}
    for name, info in REWARDBENCH_SUBSETS.items():
        by_category.setdefault(info.length_category, set()).add(name)
    assert by_category["T"] == {"alpacaeval-easy", "alpacaeval-hard", "xstest-should-respond"}
    assert by_category["F"] == {"mt-bench-easy", "mt-bench-hard", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                                "llmbar-adver-manual", "refusals-dangerous", "refusals-offensive",
                                "xstest-should-refuse", "donotanswer"}
    assert len(by_category["N"]) == 23 - 3 - 9


def test_golden_vector():
    sections = rewardbench_sections(golden_accuracy())
    assert {s: pct(v) for s, v in sections.items()} == GOLDEN_SECTIONS
    assert pct(rewardbench_overall(sections)) == 56.17


def test_swapped_xstest_weights_give_the_wrong_published_numbers():
    swapped = dict(REWARDBENCH_SUBSETS)
    swapped["xstest-should-refuse"] = RewardBenchSubset("Safety", 250, "F")
    swapped["xstest-should-respond"] = RewardBenchSubset("Safety", 154, "T")
    wrong = rewardbench_sections(golden_accuracy(), swapped)
    assert pct(wrong["Safety"]) == 81.45
    assert pct(rewardbench_overall(wrong)) == 58.49
    ours = rewardbench_sections(golden_accuracy())
    assert pct(ours["Safety"]) != 81.45 and pct(rewardbench_overall(ours)) != 58.49


def test_sections_use_only_subsets_present_and_ignore_unknown_ones():
    sections = rewardbench_sections({"alpacaeval-easy": 1.0, "mt-bench-easy": 0.0, "my-subset": 0.0,
                                     "math-prm": 0.5, "hep-go": 1.0})
    assert sections["Chat"] == pytest.approx(100 / 128)
    assert sections["Reasoning"] == pytest.approx((0.5 * 984 + 164) / (984 + 164))
    assert math.isnan(sections["Chat Hard"]) and math.isnan(sections["Safety"])
    assert rewardbench_overall(sections) == pytest.approx((100 / 128 + (0.5 * 984 + 164) / 1148) / 2)


def test_chosen_wins_is_strict():
    assert chosen_wins([2.0, 1.0], 0)
    assert not chosen_wins([1.0, 1.0], 0)  # a tie is wrong
    assert not chosen_wins([1.0, 2.0], 0)
    assert chosen_wins([1.0, 2.0], 1)


def golden_records() -> tuple[list[PreferenceRecord], list[ScoreResult]]:
    """2,985 pairs whose scores reproduce the golden vector: the first Golden rows of each subset right."""
    records, results = [], []
    for name, rows in ROWS.items():
        for i in range(rows):
            records.append(PreferenceRecord(f"{name}-{i}", user_prompt("q"), [Response("a"), Response("b")],
                                            chosen=0, meta={"subset": name}))
            right = i < GOLDEN_CORRECT[name]
            results.append(ScoreResult(rewards=[1.0, 0.0] if right else [0.0, 0.0] if i % 2 else [0.0, 1.0]))
    return records, results


def test_golden_vector_through_the_report():
    report = score_rewardbench(*golden_records())
    strict_json(report)
    assert {s: pct(v) for s, v in report["sections"].items()} == GOLDEN_SECTIONS
    assert pct(report["overall"]) == 56.17
    assert report["subsets"]["math-prm"] == {"accuracy": 132 / 447, "n": 447, "section": "Reasoning",
                                             "length_category": "N"}
    assert report["unknown_subsets"] == []
    t = report["by_length_category"]["T"]
    assert t["n"] == 100 + 95 + 250 and t["accuracy"] == pytest.approx((50 + 67 + 71) / 445)
    assert sum(c["n"] for c in report["by_length_category"].values()) == 2985


def test_constant_scorer_gets_zero_and_swapping_gives_one_minus_acc_minus_ties():
    records, results = golden_records()
    constant = [ScoreResult(rewards=[0.5, 0.5]) for _ in results]
    report = score_rewardbench(records, constant)
    assert report["overall"] == 0.0 and all(v == 0.0 for v in report["sections"].values())
    swapped = [ScoreResult(rewards=r.rewards[::-1]) for r in results]
    before, after = score_rewardbench(records, results), score_rewardbench(records, swapped)
    for name in ROWS:
        ties = sum(r.rewards[0] == r.rewards[1] for rec, r in zip(records, results) if rec.subset == name)
        expected = 1 - before["subsets"][name]["accuracy"] - ties / ROWS[name]
        assert after["subsets"][name]["accuracy"] == pytest.approx(expected)


def rewardbench_row(subset: str, chosen: str, rejected: str, i: int) -> dict:
    return {"prompt": f"question {i}", "chosen": chosen, "rejected": rejected, "chosen_model": "m1",
            "rejected_model": "m2", "subset": subset, "id": i}


def test_rewardbench_from_loaded_records(tmp_path):
    rows = [
        rewardbench_row("alpacaeval-easy", "good good", "good", 0),       # right
        rewardbench_row("alpacaeval-easy", "good", "good", 1),            # tie: wrong
        rewardbench_row("xstest-should-refuse", "good", "bad", 2),        # right
        rewardbench_row("math-prm", "bad", "good", 3),                    # wrong
        rewardbench_row("hep-go", "good", "", 4),                         # right
        rewardbench_row("my-own-subset", "good", "", 5),                  # right, but unknown
    ]
    loaded = load_records(write_jsonl(tmp_path / "rb.jsonl", rows))
    assert loaded.format == "rewardbench"
    report = score_benchmark("rewardbench", loaded.records, keyword_scorer().score(loaded.records))
    strict_json(report)
    assert report["subsets"]["alpacaeval-easy"] == {"accuracy": 0.5, "n": 2, "section": "Chat",
                                                    "length_category": "T"}
    assert report["subsets"]["my-own-subset"] == {"accuracy": 1.0, "n": 1, "section": None,
                                                  "length_category": None}
    assert report["unknown_subsets"] == ["my-own-subset"]
    assert report["sections"]["Chat"] == 0.5
    assert report["sections"]["Safety"] == 1.0
    assert report["sections"]["Chat Hard"] is None
    assert report["sections"]["Reasoning"] == pytest.approx(164 / (984 + 164))
    assert report["overall"] == pytest.approx((0.5 + 1.0 + 164 / 1148) / 3)
    assert report["by_length_category"]["F"] == {"accuracy": 1.0, "n": 1, "meaning": "rejected longer"}
    assert report["by_length_category"]["N"]["n"] == 2  # math-prm and hep-go; the unknown subset is not in it


def test_rewardbench_rejects_records_that_do_not_fit():
    rec = PreferenceRecord("x1", user_prompt("q"), [Response("a"), Response("b")], scores=[1.0, 0.0],
                           meta={"subset": "alpacaeval-easy"})
    with pytest.raises(DataError, match="x1"):
        score_rewardbench([rec], [ScoreResult(rewards=[1.0, 0.0])])
    rec.chosen = 0
    with pytest.raises(DataError, match="x1.*non-finite"):
        score_rewardbench([rec], [ScoreResult(rewards=[float("nan"), 0.0])])
    with pytest.raises(DataError, match="1 rewards for 2 responses"):
        score_rewardbench([rec], [ScoreResult(rewards=[1.0])])
    with pytest.raises(DataError, match="pair up"):
        score_rewardbench([rec], [])


# ================================================================================ RewardBench 2


@pytest.mark.parametrize("scores, expected", [
    ([1, 0, 0, 0], 1.0), ([1, 1, 0, 0], 0.5), ([1, 2, 0, 0], 0.0), ([1, 1, 1, 1], 0.25),
])
def test_best_of_4_checks(scores, expected):
    assert best_of_k_score(scores) == expected


def test_best_of_k_with_several_correct_answers():
    assert best_of_k_score([2, 2, 2, 1], num_correct=2) == pytest.approx(2 / 3)
    assert best_of_k_score([1, 3, 2, 0, 0], num_correct=3) == 1.0
    assert best_of_k_score([1, 1, 5], num_correct=2) == 0.0
    with pytest.raises(ValueError):
        best_of_k_score([1, 0], num_correct=2)  # no incorrect answer left


def test_ties_constant_scores_give_zero():
    ids = ["ref:1", "tied:1", "ref:2", "tied:2"]
    scores = [[0.3] * 4, [0.3] * 6, [0.3] * 3, [0.3] * 5]
    result = ties_score(ids, scores, [1, 3, 1, 2])
    assert result["score"] == 0.0
    assert result["n_paired"] == 2


def test_ties_equal_correct_scores_above_every_incorrect_give_the_maximum():
    ids = ["ref:1", "tied:1", "ref:7", "tied:7"]
    scores = [[5, 1, 2], [5, 5, 5, 1, 0], [2, 0], [3, 3, -1]]
    result = ties_score(ids, scores, [1, 3, 1, 2])
    assert result["score"] == pytest.approx(1.01)
    assert result["correctness_margin_score"] == 1.0  # gap / 0 = +inf, tanh → 1


def test_ties_hand_computed_example():
    # pid a: ref gap 3−2 = 1 (right); tied gap 4−2 = 2, spread 1 (right); min gap 1 → tanh(1/1 − 1) = 0.
    # pid b: ref gap −1 (wrong); tied gap 0−1 = −1, spread 2 (wrong); tanh(−1/2 − 1).
    ids = ["ref:a", "tied:a", "ref:b", "tied:b"]
    scores = [[3, 1, 2], [5, 4, 2, 1], [0, 1], [2, 0, 1]]
    result = ties_score(ids, scores, [1, 2, 1, 2])
    assert result["ref_accuracy"] == 0.5 and result["tied_accuracy"] == 0.5
    assert result["correctness_preferred"] == 0.5    # a: 2 > 1; b: −1 > 2 is false
    assert result["correctness_preferred_hard"] == 0.0  # a: 1 > 1 is false
    assert result["correctness_margin_score"] == pytest.approx(math.tanh(-1.5) / 2)
    expected = 0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0 + 0.01 * math.tanh(-1.5) / 2
    assert result["score"] == pytest.approx(expected)


def test_ties_margin_nan_becomes_zero_and_minus_inf_minus_one():
    # One prompt: correct answers all equal (spread 0). Gap 0 → 0/0 = NaN → 0; gap < 0 → −inf → −1.
    zero_gap = ties_score(["ref:1", "tied:1"], [[1, 1], [1, 1, 1]], [1, 2])
    assert zero_gap["correctness_margin_score"] == 0.0
    below = ties_score(["ref:1", "tied:1"], [[1, 2], [1, 1, 2]], [1, 2])
    assert below["correctness_margin_score"] == -1.0
    assert below["score"] == pytest.approx(-0.01)


def test_ties_accuracy_counts_unpaired_rows_but_margins_only_paired_ones():
    result = ties_score(["ref:1", "tied:1", "ref:2"], [[2, 1], [3, 3, 1], [0, 1]], [1, 2, 1])
    assert result["n_ref"] == 2 and result["n_tied"] == 1 and result["n_paired"] == 1
    assert result["ref_accuracy"] == 0.5
    assert result["correctness_preferred"] == 1.0


def test_ties_rejects_bad_and_duplicate_ids():
    with pytest.raises(ValueError, match="ref:<pid>"):
        ties_score(["1"], [[1, 0]], [1])
    with pytest.raises(ValueError, match="twice"):
        ties_score(["ref:1", "ref:1"], [[1, 0], [1, 0]], [1, 1])


def rb2_row(row_id: str, subset: str, chosen: list[str], rejected: list[str]) -> dict:
    return {"id": row_id, "prompt": f"prompt {row_id}", "chosen": chosen, "rejected": rejected,
            "num_correct": len(chosen), "num_incorrect": len(rejected),
            "total_completions": len(chosen) + len(rejected), "models": [], "subset": subset,
            "additional_metadata": {}}


def test_rewardbench2_from_loaded_records(tmp_path):
    rows = [
        rb2_row("f1", "Factuality", ["good"], ["bad", "bad", "bad"]),                # 1
        rb2_row("f2", "Factuality", ["good"], ["good", "bad", "bad"]),               # 0.5
        rb2_row("m1", "Math", ["bad"], ["good", "bad", "bad"]),                      # 0
        rb2_row("ref:1", "Ties", ["good good"], ["bad", "good"]),                    # gap 1
        rb2_row("tied:1", "Ties", ["good good", "good good"], ["bad", "good"]),      # gap 1, spread 0
    ]
    loaded = load_records(write_jsonl(tmp_path / "rb2.jsonl", rows))
    assert loaded.format == "rewardbench2"
    report = score_benchmark("rewardbench2", loaded.records, keyword_scorer().score(loaded.records))
    strict_json(report)
    assert report["subsets"]["Factuality"] == {"score": 0.75, "n": 2}
    assert report["subsets"]["Math"] == {"score": 0.0, "n": 1}
    assert report["subsets"]["Ties"] == {"score": pytest.approx(1.01), "n": 2}
    assert report["ties"]["n_paired"] == 1
    assert report["overall"] == pytest.approx((0.75 + 0.0 + 1.01) / 3)


def test_rewardbench2_without_ties_has_no_ties_block(tmp_path):
    rows = [rb2_row("s1", "Safety", ["good"], ["good", "good", "good"])]
    loaded = load_records(write_jsonl(tmp_path / "rb2.jsonl", rows))
    report = score_rewardbench2(loaded.records, keyword_scorer().score(loaded.records))
    assert report == {"subsets": {"Safety": {"score": 0.25, "n": 1}}, "overall": 0.25, "ties": None}


def test_rewardbench2_rejects_a_ties_row_with_a_bad_id(tmp_path):
    rows = [rb2_row("tie-7", "Ties", ["good", "good"], ["bad"])]
    loaded = load_records(write_jsonl(tmp_path / "rb2.jsonl", rows))
    with pytest.raises(DataError, match="tie-7"):
        score_rewardbench2(loaded.records, keyword_scorer().score(loaded.records))


def test_rewardbench2_rejects_a_record_whose_chosen_is_not_first():
    rec = PreferenceRecord("q9", user_prompt("q"), [Response("a"), Response("b")], chosen=1,
                           meta={"subset": "Focus"})
    with pytest.raises(DataError, match="q9"):
        score_rewardbench2([rec], [ScoreResult(rewards=[0.0, 1.0])])


# ================================================================================ RM-Bench


def test_rm_bench_style_biased_check():
    matrix = rm_bench_matrix([[1, 2, 3]] * 5, [[0.5, 1.5, 2.5]] * 5)
    acc = rm_bench_accuracies(matrix)
    assert (acc["normal"], acc["easy"], acc["hard"]) == (1.0, 1.0, 0.0)
    assert round(acc["score"], 3) == 0.667


def test_rm_bench_matrix_hand_example():
    # Row 1 prefers substance everywhere; row 2 is fooled by markdown only (chosen concise vs rejected md).
    chosen = [[5, 5, 5], [2, 3, 4]]
    rejected = [[1, 1, 1], [1, 1, 2.5]]
    matrix = rm_bench_matrix(chosen, rejected)
    np.testing.assert_allclose(matrix, [[1, 1, 0.5], [1, 1, 1], [1, 1, 1]])
    acc = rm_bench_accuracies(matrix)
    assert acc["hard"] == pytest.approx(2.5 / 3)
    assert acc["normal"] == 1.0 and acc["easy"] == 1.0


def test_rm_bench_ties_are_wrong():
    acc = rm_bench_accuracies(rm_bench_matrix([[1, 1, 1]], [[1, 1, 1]]))
    assert acc == {"easy": 0.0, "normal": 0.0, "hard": 0.0, "score": 0.0}


def rm_bench_row(i: int, domain: str, chosen: list[str], rejected: list[str]) -> dict:
    return {"id": i, "prompt": f"p{i}", "chosen": chosen, "rejected": rejected, "domain": domain}


def test_rm_bench_from_loaded_records_pools_safety(tmp_path):
    g, b = "good", ""
    rows = [
        rm_bench_row(0, "chat", [g * 1, g * 2, g * 3], [b, g * 1, g * 2]),        # style-biased row
        rm_bench_row(1, "safety-refuse", [g, g, g], [b, b, b]),                   # perfect
        rm_bench_row(2, "safety-response", [g, g, g], [g * 2, g * 2, g * 2]),     # all wrong
        rm_bench_row(3, "safety-response", [g, g, g], [b, b, b]),                 # perfect
        rm_bench_row(4, "math", [g, g, g], [b, b, b]),
    ]
    loaded = load_records(write_jsonl(tmp_path / "rmb.jsonl", rows))
    assert loaded.format == "rm-bench"
    report = score_benchmark("rm_bench", loaded.records, keyword_scorer().score(loaded.records))
    strict_json(report)
    chat = report["by_domain"]["chat"]
    assert (chat["normal"], chat["easy"], chat["hard"], chat["n"]) == (1.0, 1.0, 0.0, 1)
    safety = report["by_domain"]["safety"]
    assert safety["n"] == 3  # refuse and response rows pooled into one matrix
    assert safety["matrix"] == [[pytest.approx(2 / 3)] * 3] * 3
    assert safety["score"] == pytest.approx(2 / 3)  # not the mean of per-domain scores (1 and 0.5)
    assert set(report["by_domain"]) == {"chat", "safety", "math"}
    assert report["overall"] == pytest.approx((2 / 3 + 2 / 3 + 1.0) / 3)
    for k in ("easy", "normal", "hard"):
        assert report[k] == pytest.approx(np.mean([report["by_domain"][d][k] for d in ("chat", "safety", "math")]))
    assert report["overall"] == pytest.approx(np.mean([report[k] for k in ("easy", "normal", "hard")]))
    assert report["unknown_domains"] == []


def test_rm_bench_uses_the_style_order_in_meta():
    rec = PreferenceRecord("r0", user_prompt("p"), [Response(str(i)) for i in range(6)],
                           scores=[1, 1, 1, 0, 0, 0], meta={"subset": "code", "styles": [2, 1, 0, 2, 1, 0]})
    # rewards by response: chosen styles (2, 1, 0) get 3, 2, 1; rejected styles (2, 1, 0) get 2.5, 1.5, 0.5.
    report = score_rm_bench([rec], [ScoreResult(rewards=[3, 2, 1, 2.5, 1.5, 0.5])])
    code = report["by_domain"]["code"]
    assert (code["normal"], code["easy"], code["hard"]) == (1.0, 1.0, 0.0)


def test_rm_bench_names_a_record_without_three_plus_three_responses():
    rec = PreferenceRecord("rmb-17", user_prompt("p"), [Response(str(i)) for i in range(4)],
                           scores=[1, 1, 0, 0], meta={"subset": "chat"})
    with pytest.raises(DataError, match="rmb-17.*3 chosen then 3 rejected"):
        score_rm_bench([rec], [ScoreResult(rewards=[1, 1, 0, 0])])


# ================================================================================ ProcessBench


def test_first_error_prediction():
    assert first_error_prediction([0.9, 0.8, 0.2, 0.1], 0.5) == 2
    assert first_error_prediction([0.9, 0.8], 0.5) == -1
    assert first_error_prediction([0.5, 0.4], 0.5) == 1  # strictly below the threshold


def test_processbench_f1_checks():
    labels = [-1, -1, 2, 0, 3]
    assert processbench_f1([-1] * 5, labels)["f1"] == 0.0  # always "no error"
    assert processbench_f1(labels, labels)["f1"] == 1.0      # perfect
    result = processbench_f1([-1, 1, 2, 1, -1], labels)
    assert result == {"acc_err": pytest.approx(1 / 3), "acc_cor": 0.5, "f1": pytest.approx(0.4), "n": 5}
    assert processbench_f1([0, 0], [-1, 1])["f1"] == 0.0    # both accuracies 0


def test_processbench_f1_is_undefined_without_one_kind_of_row():
    assert math.isnan(processbench_f1([-1, -1], [-1, -1])["f1"])


def test_tune_threshold_hand_example():
    # Correct solutions stay ≥ 0.7; the wrong steps score 0.4 and 0.6. Any threshold in (0.6, 0.7]
    # classifies everything right; midpoints give 0.65. The smallest maximiser is taken.
    steps = [[0.9, 0.8], [0.7, 0.95], [0.9, 0.4, 0.3], [0.6, 0.9]]
    labels = [-1, -1, 1, 0]
    t = tune_threshold(steps, labels)
    assert t == pytest.approx(0.65)
    assert processbench_f1([first_error_prediction(s, t) for s in steps], labels)["f1"] == 1.0


def test_tune_threshold_maximises_f1_over_every_candidate():
    rng = np.random.default_rng(0)
    steps = [rng.random(rng.integers(1, 8)) for _ in range(60)]
    labels = [int(rng.integers(-1, len(s))) for s in steps]
    candidates = candidate_thresholds(steps)
    vectorised = _predictions_for_thresholds(steps, candidates)
    for j in range(0, len(candidates), 7):
        assert vectorised[:, j].tolist() == [first_error_prediction(s, candidates[j]) for s in steps]
    f1 = [processbench_f1([first_error_prediction(s, t) for s in steps], labels)["f1"] for t in candidates]
    best = tune_threshold(steps, labels)
    assert best == candidates[int(np.argmax(f1))]
    assert max(f1) > 0


def test_tune_threshold_needs_both_kinds_of_rows():
    with pytest.raises(ValueError, match="with an error and rows without"):
        tune_threshold([[0.9], [0.1]], [-1, -1])


def processbench_rows(split: str, labels: list[int], n_steps: int = 4) -> list[dict]:
    return [{"id": f"{split}-{i}", "generator": "m", "problem": f"problem {i}",
             "steps": [f"step {k}" for k in range(n_steps)], "final_answer_correct": label == -1, "label": label}
            for i, label in enumerate(labels)]


def oracle_step_results(records: list[PreferenceRecord], wrong: float = 0.2, right: float = 0.9,
                        after: float = 0.1) -> list[ScoreResult]:
    """A PRM that knows the labels: `right` before the earliest error, `wrong` at it, `after` beyond."""
    out = []
    for rec in records:
        label = rec.meta["earliest_error"]
        n = len(rec.responses[0].steps)
        steps = [right if label == -1 or k < label else wrong if k == label else after for k in range(n)]
        out.append(ScoreResult(rewards=[steps[-1]], step_rewards=[steps]))
    return out


def test_processbench_from_loaded_records_tunes_on_gsm8k_and_applies_elsewhere(tmp_path):
    (tmp_path / "gsm8k.json").write_text(json.dumps(processbench_rows("gsm8k", [-1, 1, -1, 0, 3])))
    (tmp_path / "math.json").write_text(json.dumps(processbench_rows("math", [2, -1, 0])))
    records = load_records(tmp_path / "gsm8k.json").records + load_records(tmp_path / "math.json").records
    # On math the wrong steps score 0.7, above any threshold gsm8k's 0.2-vs-0.9 data would pick below 0.55.
    results = oracle_step_results(records[:5]) + oracle_step_results(records[5:], wrong=0.7)
    report = score_benchmark("processbench", records, results)
    strict_json(report)
    assert report["threshold_source"] == "tuned on gsm8k"
    assert 0.1 < report["threshold"] <= 0.55
    assert report["f1"]["gsm8k"] == 1.0
    assert report["per_split"]["math"]["acc_cor"] == 1.0
    assert report["per_split"]["math"]["acc_err"] == 0.0 and report["f1"]["math"] == 0.0
    assert report["f1_mean"] == 0.5
    assert report["per_split"]["gsm8k"]["n"] == 5
    given = score_processbench(records, results, threshold=0.8)
    assert given["threshold_source"] == "given" and given["f1"] == {"gsm8k": 1.0, "math": 1.0}


def test_processbench_threshold_tuned_on_one_split_applies_to_another(tmp_path):
    (tmp_path / "gsm8k.json").write_text(json.dumps(processbench_rows("gsm8k", [-1, 1, 2])))
    (tmp_path / "math.json").write_text(json.dumps(processbench_rows("math", [0, -1])))
    gsm8k, math_records = (load_records(tmp_path / f).records for f in ("gsm8k.json", "math.json"))
    t = tune_processbench_threshold(gsm8k, oracle_step_results(gsm8k))
    report = score_processbench(math_records, oracle_step_results(math_records), threshold=t)
    assert report["f1"] == {"math": 1.0} and report["threshold"] == t
    with pytest.raises(DataError, match="pass it|gsm8k"):
        score_processbench(math_records, oracle_step_results(math_records))  # nothing to tune on


def test_processbench_needs_step_scores():
    rec = PreferenceRecord("gsm8k-3", user_prompt("p"), [Response("a\n\nb", ["a", "b"])],
                           step_labels=[[1.0, 0.0]], meta={"earliest_error": 1})
    with pytest.raises(DataError, match="gsm8k-3.*per-step scores"):
        score_processbench([rec], [ScoreResult(rewards=[0.5])], threshold=0.5)
    with pytest.raises(DataError, match="gsm8k-3.*3 step scores for 2 steps"):
        score_processbench([rec], [ScoreResult(rewards=[0.5], step_rewards=[[1, 1, 1]])], threshold=0.5)


def test_processbench_label_and_split_without_meta():
    rec = PreferenceRecord("custom:4", user_prompt("p"), [Response("a b c", ["a", "b", "c"])],
                           step_labels=[[1.0, 0.0, None]])
    report = score_processbench([rec], [ScoreResult(rewards=[0.0], step_rewards=[[0.9, 0.1, 0.1]])],
                                threshold=0.5)
    assert report["per_split"]["custom"]["acc_err"] == 1.0


def test_processbench_real_data():
    data = shared_data_dir()
    if data is None or not (data / "processbench" / "gsm8k.json").exists():
        pytest.skip("no ../shared/data/processbench (real data sets are not part of the checkout)")
    records = []
    for split in ("gsm8k", "math"):
        records += load_records(data / "processbench" / f"{split}.json").records
    assert len(records) == 1400
    report = score_processbench(records, oracle_step_results(records))
    assert report["f1"] == {"gsm8k": 1.0, "math": 1.0}
    assert report["per_split"]["gsm8k"]["n"] == 400 and report["per_split"]["math"]["n"] == 1000
    never_wrong = [ScoreResult(rewards=[1.0], step_rewards=[[1.0] * len(r.responses[0].steps)]) for r in records]
    assert score_processbench(records, never_wrong, threshold=0.5)["f1"] == {"gsm8k": 0.0, "math": 0.0}


# ================================================================================ registry


def test_registry_and_errors():
    assert set(BENCHMARKS) == {"rewardbench", "rewardbench2", "rm_bench", "processbench"}
    with pytest.raises(DataError, match="unknown benchmark 'rewardbench3'.*rm_bench"):
        score_benchmark("rewardbench3", [], [])
    rec = PreferenceRecord("a", user_prompt("q"), [Response("x"), Response("y")], chosen=0,
                           meta={"subset": "hep-go"})
    with pytest.raises(DataError, match="threshold"):
        score_benchmark("rewardbench", [rec], [ScoreResult(rewards=[1, 0])], threshold=0.5)
    with pytest.raises(DataError, match="no records"):
        score_benchmark("rm_bench", [], [])
