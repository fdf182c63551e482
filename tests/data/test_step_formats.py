"""Step-labelled (PRM) formats on small files the test writes: prm800k, math_shepherd and stepwise, their
detection next to the other formats, the prm800k `neutral` option, and every documented bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardkit.data import FORMATS, PreferenceRecord, detect_format, iter_records, load_records, load_split
from rewardkit.data.formats import describe_formats, hard_from_soft
from rewardkit.errors import DataError

from data_checks import assert_points_at, bad_row_error, write_jsonl


def load_one(tmp_path: Path, row: dict, format: str | None = None, **options) -> PreferenceRecord:
    result = load_records(write_jsonl(tmp_path / "data.jsonl", [row]), format=format,
                          format_options=options or None)
    assert len(result.records) == 1
    return result.records[0]


def steps_and_labels(rec: PreferenceRecord) -> tuple[list[str], list[float | None]]:
    assert len(rec.responses) == 1 and rec.step_labels is not None and len(rec.step_labels) == 1
    return rec.responses[0].steps, rec.step_labels[0]


# -------------------------------------------------------------------------------------------- prm800k


def completion(text: str, rating: int | None) -> dict:
    return {"text": text, "rating": rating, "flagged": False}


def step(*completions: dict, chosen: int | None = 0, human: dict | str | None = None) -> dict:
    return {"completions": list(completions), "human_completion": human, "chosen_completion": chosen}


def prm800k_row(*steps: dict, finish_reason: str = "found_error", **question) -> dict:
    return {"labeler": "l-1", "timestamp": "2023-01-22T04:34:27", "generation": 9,
            "is_quality_control_question": False, "is_initial_screening_question": False,
            "question": {"problem": "What is 2+2?", "ground_truth_answer": "4", **question},
            "label": {"steps": list(steps), "total_time": 1234, "finish_reason": finish_reason}}


# +1, neutral, +1, then the labeler stops at a step whose alternatives are rated 0, -1, -1.
PRM800K_ROW = prm800k_row(
    step(completion("I add the numbers.", 1)),
    step(completion("Addition is commutative.", 0)),
    step(completion("2 + 2 = 4.", 1)),
    step(completion("Let me restate.", 0), completion("So the answer is 5.", -1), completion("It is 22.", -1),
         chosen=None),
)
PRM800K_STEPS = ["I add the numbers.", "Addition is commutative.", "2 + 2 = 4.", "So the answer is 5."]


def test_prm800k_rebuilds_the_labeled_path_and_counts_neutral_as_correct(tmp_path):
    rec = load_one(tmp_path, PRM800K_ROW)
    assert steps_and_labels(rec) == (PRM800K_STEPS, [1.0, 1.0, 1.0, 0.0])
    assert rec.responses[0].content == "\n\n".join(PRM800K_STEPS)
    assert rec.prompt == [{"role": "user", "content": "What is 2+2?"}]
    assert rec.id == "data:1"
    assert rec.meta == {"source": "prm800k", "line": 1, "finish_reason": "found_error", "ground_truth_answer": "4"}


@pytest.mark.parametrize("neutral, expected", [
    (1.0, [1.0, 1.0, 1.0, 0.0]),
    (0.0, [1.0, 0.0, 1.0, 0.0]),
    (0.5, [1.0, 0.5, 1.0, 0.0]),
    (None, [1.0, None, 1.0, 0.0]),
    (0, [1.0, 0.0, 1.0, 0.0]),  # an int is a number in [0, 1]
])
def test_prm800k_neutral_option(tmp_path, neutral, expected):
    rec = load_one(tmp_path, PRM800K_ROW, neutral=neutral)
    assert steps_and_labels(rec) == (PRM800K_STEPS, expected)


def test_prm800k_neutral_option_through_every_public_loader(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [PRM800K_ROW] * 5)
    options = {"neutral": None}
    assert [r.step_labels[0][1] for r in iter_records(path, format_options=options)] == [None] * 5
    assert [r.step_labels[0][1] for r in iter_records(path, "prm800k", format_options=options)] == [None] * 5
    test = load_split(path, "test", format_options=options)
    assert test.row_numbers == [5] and test.records[0].step_labels == [[1.0, None, 1.0, 0.0]]
    assert load_split(path, "all", format_options=options).records[4].step_labels == [[1.0, None, 1.0, 0.0]]
    assert load_split(path, "train").records[0].step_labels == [[1.0, 1.0, 1.0, 0.0]]  # default unchanged


def test_prm800k_chosen_completion_picks_the_alternative(tmp_path):
    row = prm800k_row(step(completion("a", -1), completion("b", 1), completion("c", 0), chosen=1),
                      step(completion("d", 0), chosen=0), finish_reason="solution")
    rec = load_one(tmp_path, row, neutral=0.0)
    assert steps_and_labels(rec) == (["b", "d"], [1.0, 0.0])
    assert rec.meta["finish_reason"] == "solution"


def test_prm800k_human_completion_when_none_is_chosen(tmp_path):
    row = prm800k_row(
        step(completion("wrong", -1), chosen=None, human={"text": "human fix", "rating": None, "source": "human"}),
        step(completion("also wrong", -1), chosen=None, human="plain human text"),
        step(completion("x", -1), chosen=None, human={"text": "rated human", "rating": 0}),
        step(completion("end", 1)),
    )
    assert steps_and_labels(load_one(tmp_path, row, neutral=0.25)) == (
        ["human fix", "plain human text", "rated human", "end"], [1.0, 1.0, 0.25, 1.0])


def test_prm800k_stops_before_a_step_without_a_wrong_alternative(tmp_path):
    row = prm800k_row(step(completion("a", 1)),
                      step(completion("b", 0), completion("c", 1), chosen=None),
                      step(completion("never reached", 1)), finish_reason="give_up")
    assert steps_and_labels(load_one(tmp_path, row)) == (["a"], [1.0])


def test_prm800k_steps_after_the_stop_are_dropped(tmp_path):
    row = prm800k_row(step(completion("a", 1)), step(completion("b", -1), chosen=None), step(completion("c", 1)))
    assert steps_and_labels(load_one(tmp_path, row)) == (["a", "b"], [1.0, 0.0])


def test_prm800k_null_rating_is_unlabeled_whatever_neutral_is(tmp_path):
    row = prm800k_row(step(completion("a", None)), step(completion("b", 0)), finish_reason="solution")
    assert steps_and_labels(load_one(tmp_path, row, neutral=0.0)) == (["a", "b"], [None, 0.0])
    assert steps_and_labels(load_one(tmp_path, row)) == (["a", "b"], [None, 1.0])


def test_prm800k_without_ground_truth_answer_leaves_it_out_of_meta(tmp_path):
    row = prm800k_row(step(completion("a", 1)))
    del row["question"]["ground_truth_answer"]
    assert load_one(tmp_path, row).meta == {"source": "prm800k", "line": 1, "finish_reason": "found_error"}


def test_prm800k_round_trips_through_the_canonical_form(tmp_path):
    rec = load_one(tmp_path, PRM800K_ROW, neutral=None)
    back = load_records(write_jsonl(tmp_path / "canon.jsonl", [rec.to_json()])).records[0]
    assert back.meta["source"] == "prm800k"
    assert steps_and_labels(back) == (PRM800K_STEPS, [1.0, None, 1.0, 0.0])


@pytest.mark.parametrize("row, field", [
    (prm800k_row(step(completion("a", 2))), "label.steps[0].completions[0].rating"),
    (prm800k_row(step(completion("a", "1"))), "label.steps[0].completions[0].rating"),
    (prm800k_row(step(completion("a", True))), "label.steps[0].completions[0].rating"),
    (prm800k_row(step(completion("a", 1)), step(completion("b", 0.5))), "label.steps[1].completions[0].rating"),
    (prm800k_row(step(completion("a", 1), chosen=1)), "label.steps[0].chosen_completion"),
    (prm800k_row(step(completion("a", 1), chosen="0")), "label.steps[0].chosen_completion"),
    (prm800k_row(step({"text": 3, "rating": 1})), "label.steps[0].completions[0].text"),
    (prm800k_row(step("a step as text")), "label.steps[0].completions[0]"),
    (prm800k_row("not a step"), "label.steps[0]"),
    (prm800k_row(step(completion("a", -1), chosen=None, human={"text": None})), "label.steps[0].human_completion.text"),
    (prm800k_row(step(completion("a", 1), chosen=None, human=5)), "label.steps[0].human_completion"),
    (prm800k_row(step(completion("a", 1)), problem=7), "question.problem"),
    (prm800k_row(step(completion("a", 1)), problem=None), "question.problem"),
    ({**prm800k_row(step(completion("a", 1))), "question": "What is 2+2?"}, "question"),
    ({**prm800k_row(), "label": {"steps": "a, b", "finish_reason": "solution"}}, "label.steps"),
    ({**prm800k_row(), "label": ["a"]}, "label"),
    (prm800k_row(), "label.steps"),  # no steps at all
    (prm800k_row(step(completion("a", 0), completion("b", 1), chosen=None)), "label.steps"),  # none kept
])
def test_prm800k_bad_rows_name_the_field(tmp_path, row, field):
    good = prm800k_row(step(completion("fine", 1)))
    assert_points_at(bad_row_error(tmp_path, good, row), 2, field)


def test_prm800k_missing_question_with_the_format_named(tmp_path):
    row = {k: v for k, v in PRM800K_ROW.items() if k != "question"}
    assert_points_at(bad_row_error(tmp_path, row, format="prm800k"), 1, "question")


def test_prm800k_no_steps_message_says_why(tmp_path):
    err = bad_row_error(tmp_path, prm800k_row(step(completion("a", 1), chosen=None)))
    assert "no steps" in err.reason


# ------------------------------------------------------------------------------------ format options


@pytest.mark.parametrize("value", [2, -0.5, "0.5", True, float("nan"), [0.5]])
def test_prm800k_bad_neutral_is_a_call_error(tmp_path, value):
    path = write_jsonl(tmp_path / "p.jsonl", [PRM800K_ROW])
    with pytest.raises(DataError) as info:  # raised by the call itself, before any row is read
        iter_records(path, "prm800k", format_options={"neutral": value})
    assert info.value.field == "format_options.neutral" and Path(info.value.file).name == "p.jsonl"
    assert "[0, 1]" in str(info.value)


def test_bad_neutral_with_a_detected_format_is_not_skipped(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [PRM800K_ROW, PRM800K_ROW])
    with pytest.raises(DataError) as info:
        load_records(path, skip_bad=True, format_options={"neutral": 1.5})
    assert info.value.field == "format_options.neutral" and info.value.line is None


def test_an_option_for_a_format_that_takes_none(tmp_path):
    path = write_jsonl(tmp_path / "pb.jsonl", [{"problem": "p", "steps": ["a"], "label": -1}])
    with pytest.raises(DataError) as info:
        iter_records(path, "processbench", format_options={"neutral": 0.0})
    assert info.value.field == "format_options.neutral"
    assert "'processbench' has no option 'neutral'" in str(info.value) and "takes no options" in str(info.value)
    with pytest.raises(DataError) as detected:  # detected from the first row: raised there, even with skip_bad
        load_records(path, skip_bad=True, format_options={"neutral": 0.0})
    assert "'processbench' has no option 'neutral'" in str(detected.value)


def test_an_unknown_option_lists_the_ones_the_format_takes(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [PRM800K_ROW])
    with pytest.raises(DataError) as info:
        load_records(path, format_options={"netural": 0.0})
    assert info.value.field == "format_options.netural" and "it takes: neutral" in str(info.value)


def test_empty_options_change_nothing(tmp_path):
    path = write_jsonl(tmp_path / "pb.jsonl", [{"problem": "p", "steps": ["a", "b"], "label": 1}])
    assert load_records(path, format_options={}).records[0].step_labels == [[1.0, 0.0]]
    assert load_records(path, "processbench", format_options=None).records[0].step_labels == [[1.0, 0.0]]


# -------------------------------------------------------------------------------------- math_shepherd

SHEPHERD_QUESTION = "Janet has 16 eggs and eats 3. How many are left?"
SHEPHERD_STEPS = ["Step 1: She has 16 - 3 = <<16-3=13>>13 eggs.", "Step 2: Then 13 + 0 = 13.",
                  "Step 3: The answer is: 12"]
SHEPHERD_INPUT = f"{SHEPHERD_QUESTION} " + "".join(f"{s} ки\n" for s in SHEPHERD_STEPS).rstrip("\n")
SHEPHERD_ROW = {"input": SHEPHERD_INPUT, "task": "GSM8K",
                "label": SHEPHERD_INPUT.replace(" ки\n", " +\n", 2).replace(" ки", " -")}


def test_shepherd_row_is_built_as_intended():
    assert SHEPHERD_INPUT.count("ки") == 3 and SHEPHERD_ROW["label"].endswith("12 -")
    assert "ки" not in SHEPHERD_ROW["label"]


def test_math_shepherd_hard_labels(tmp_path):
    rec = load_one(tmp_path, SHEPHERD_ROW)
    assert steps_and_labels(rec) == (SHEPHERD_STEPS, [1.0, 1.0, 0.0])
    assert rec.prompt == [{"role": "user", "content": SHEPHERD_QUESTION}]
    assert rec.responses[0].content == "\n\n".join(SHEPHERD_STEPS)
    assert rec.meta == {"source": "math_shepherd", "line": 1, "task": "GSM8K"}
    assert rec.id == "data:1"


def test_math_shepherd_signs_in_the_arithmetic_are_not_labels(tmp_path):
    text = "Q? Step 1: 2 - 1 = 1 - ки\nStep 2: 1 + 1 = 2 + ки"  # steps that themselves end in '-' / '+'
    label = "Q? Step 1: 2 - 1 = 1 - +\nStep 2: 1 + 1 = 2 + -"
    rec = load_one(tmp_path, {"input": text, "label": label, "task": "MATH"})
    assert steps_and_labels(rec) == (["Step 1: 2 - 1 = 1 -", "Step 2: 1 + 1 = 2 +"], [1.0, 0.0])


def test_math_shepherd_without_step_markers_takes_the_first_line_as_the_question(tmp_path):
    text = "What is 1+1?\nFirst, add. ки\nSo 2. ки"
    rec = load_one(tmp_path, {"input": text, "label": text.replace("ки", "+", 1).replace("ки", "-"), "task": "x"})
    assert rec.prompt == [{"role": "user", "content": "What is 1+1?"}]
    assert steps_and_labels(rec) == (["First, add.", "So 2."], [1.0, 0.0])


def test_math_shepherd_soft_labels_as_the_label(tmp_path):
    rec = load_one(tmp_path, {"input": SHEPHERD_INPUT, "label": [1, 0.75, 0.0], "task": "GSM8K"})
    assert steps_and_labels(rec) == (SHEPHERD_STEPS, [1.0, 0.75, 0.0])


def test_math_shepherd_soft_labels_field_replaces_the_hard_ones(tmp_path):
    rec = load_one(tmp_path, {**SHEPHERD_ROW, "soft_labels": [0.5, 0.125, 0.0]})
    assert steps_and_labels(rec) == (SHEPHERD_STEPS, [0.5, 0.125, 0.0])


def test_hard_from_soft_is_one_when_any_completion_succeeds():
    assert hard_from_soft([0.0, 0.01, 0.5, 1.0, None]) == [0.0, 1.0, 1.0, 1.0, None]
    assert hard_from_soft([]) == []


def test_loaded_hard_labels_are_the_hard_estimate_of_the_soft_ones(tmp_path):
    """HE = 1[SE > 0] on loaded data: the hard labels of the text label match those the soft ones imply."""
    soft = [0.5, 0.125, 0.0]
    hard = steps_and_labels(load_one(tmp_path, SHEPHERD_ROW))[1]
    loaded_soft = steps_and_labels(load_one(tmp_path, {**SHEPHERD_ROW, "label": soft}))[1]
    assert hard_from_soft(loaded_soft) == hard == [1.0, 1.0, 0.0]


def test_math_shepherd_soft_labels_that_contradict_the_hard_ones(tmp_path):
    err = bad_row_error(tmp_path, SHEPHERD_ROW, {**SHEPHERD_ROW, "soft_labels": [0.5, 0.0, 0.0]})
    assert_points_at(err, 2, "soft_labels[1]")
    assert "HE = 1[SE > 0]" in err.reason


@pytest.mark.parametrize("update, field", [
    ({"label": SHEPHERD_INPUT.replace(" ки\n", " +\n").replace(" ки", "")}, "label"),  # one label short
    ({"label": SHEPHERD_ROW["label"] + "\nStep 4: more +"}, "label"),  # one label too many
    ({"label": SHEPHERD_INPUT.replace("ки", "?")}, "label"),  # neither + nor -
    ({"label": SHEPHERD_ROW["label"].replace("Janet", "Jane")}, "label"),  # not the input's text
    ({"label": [1.0, 0.0]}, "label"),  # soft labels: one short
    ({"label": [1.0, 0.0, 1.0, 1.0]}, "label"),
    ({"label": [1.0, 1.5, 0.0]}, "label[1]"),
    ({"label": [1.0, None, 0.0]}, "label[1]"),
    ({"label": [True, 1.0, 0.0]}, "label[0]"),
    ({"label": 1}, "label"),
    ({"label": None}, "label"),
    ({"soft_labels": [0.5, 0.5]}, "soft_labels"),
    ({"soft_labels": "0.5 0.5 0"}, "soft_labels"),
    ({"soft_labels": [0.5, 0.5, -0.1]}, "soft_labels[2]"),
    ({"label": [1.0, 1.0, 0.0], "soft_labels": [1.0, 1.0, 0.0]}, "soft_labels"),  # soft labels twice
    ({"input": SHEPHERD_INPUT + "\nStep 4: untagged"}, "input"),
    ({"input": "Step 1: no question ки", "label": "Step 1: no question +"}, "input"),
    ({"input": "One line, no step marker ки", "label": "One line, no step marker +"}, "input"),
    ({"input": "Q? Step 1: a ки ки", "label": "Q? Step 1: a + +"}, "input"),  # an empty step
    ({"input": 5}, "input"),
])
def test_math_shepherd_bad_rows_name_the_field(tmp_path, update, field):
    assert_points_at(bad_row_error(tmp_path, SHEPHERD_ROW, {**SHEPHERD_ROW, **update}), 2, field)


def test_math_shepherd_label_count_mismatch_says_how_many_tags(tmp_path):
    err = bad_row_error(tmp_path, {**SHEPHERD_ROW, "label": [1.0, 0.0]})
    assert "expected 3 labels" in err.reason
    err = bad_row_error(tmp_path, {**SHEPHERD_ROW, "label": SHEPHERD_INPUT.replace(" ки", " +", 2)})
    assert "3 'ки' tags" in err.reason and "step 3" in err.reason


# ------------------------------------------------------------------------------------------- stepwise

STEPWISE_ROW = {"prompt": "Compute 3*4.", "completions": ["3*4 = 12.", "So 12.", "Done."],
                "labels": [True, False, None]}


def test_stepwise_booleans_and_null(tmp_path):
    rec = load_one(tmp_path, STEPWISE_ROW)
    assert steps_and_labels(rec) == (["3*4 = 12.", "So 12.", "Done."], [1.0, 0.0, None])
    assert rec.prompt == [{"role": "user", "content": "Compute 3*4."}]
    assert rec.id == "data:1" and rec.meta == {"source": "stepwise", "line": 1}


def test_stepwise_soft_labels_steps_key_messages_prompt_and_id(tmp_path):
    prompt = [{"role": "system", "content": "Be careful."}, {"role": "user", "content": "Compute 3*4."}]
    rec = load_one(tmp_path, {"id": "s-7", "prompt": prompt, "steps": ["a", "b", "c"], "labels": [1, 0.25, 0]})
    assert rec.id == "s-7" and rec.prompt == prompt
    assert steps_and_labels(rec) == (["a", "b", "c"], [1.0, 0.25, 0.0])
    assert all(type(v) is float for v in rec.step_labels[0])


@pytest.mark.parametrize("update, field", [
    ({"labels": [True, False]}, "labels"),  # length mismatch
    ({"labels": [True, False, True, True]}, "labels"),
    ({"labels": [True, 2, None]}, "labels[1]"),  # outside [0, 1]
    ({"labels": [True, -0.5, None]}, "labels[1]"),
    ({"labels": ["yes", False, None]}, "labels[0]"),
    ({"labels": "TFN"}, "labels"),
    ({"labels": None}, "labels"),
    ({"completions": "3*4 = 12."}, "completions"),
    ({"completions": []}, "completions"),
    ({"completions": ["a", 2, "c"]}, "completions[1]"),
    ({"steps": ["a", "b", "c"]}, "steps"),  # both completions and steps
    ({"prompt": 12}, "prompt"),
    ({"prompt": [{"role": "robot", "content": "x"}]}, "prompt[0].role"),
])
def test_stepwise_bad_rows_name_the_field(tmp_path, update, field):
    assert_points_at(bad_row_error(tmp_path, STEPWISE_ROW, {**STEPWISE_ROW, **update}), 2, field)


def test_stepwise_missing_prompt_with_the_format_named(tmp_path):
    row = {k: v for k, v in STEPWISE_ROW.items() if k != "prompt"}
    assert_points_at(bad_row_error(tmp_path, row, format="stepwise"), 1, "prompt")


# ------------------------------------------------------------------------------------------ detection

NEW_FORMATS = {"prm800k": PRM800K_ROW, "math_shepherd": SHEPHERD_ROW, "stepwise": STEPWISE_ROW,
               "stepwise-steps": {"prompt": "Q", "steps": ["a"], "labels": [0.5]}}

# One row of each format that was there before, including the ones nearest the new formats' fields.
EXISTING_FORMATS = {
    "processbench": {"id": "p", "problem": "Q", "steps": ["a"], "label": -1, "final_answer_correct": True},
    "generic": {"id": "g", "prompt": "Q", "responses": [{"content": "a", "steps": ["a"]}], "step_labels": [[1.0]]},
    "pandalm": {"idx": 1, "instruction": "Do it", "input": "x", "response1": "a", "response2": "b",
                "annotator1": 1},
    "trl": {"prompt": "Q", "chosen": "a", "rejected": "b"},
    "rewardbench": {"prompt": "Q", "chosen": "a", "rejected": "b", "subset": "s"},
    "rewardbench2": {"prompt": "Q", "chosen": ["a"], "rejected": ["b"], "num_correct": 1},
    "rm-bench": {"prompt": "Q", "chosen": ["a"] * 3, "rejected": ["b"] * 3, "domain": "chat"},
    "hh": {"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Hi\n\nAssistant: B"},
}

# Rows of the old formats with extra fields that a new detector also accepts: they go where they went before.
AMBIGUOUS_ROWS = [
    ("pandalm", {**EXISTING_FORMATS["pandalm"], "input": "x ки", "label": "x +"}, "math_shepherd"),
    ("trl", {**EXISTING_FORMATS["trl"], "completions": ["a"], "labels": [True]}, "stepwise"),
    ("generic", {**EXISTING_FORMATS["generic"], "steps": ["a"], "labels": [1.0]}, "stepwise"),
    ("processbench", {**EXISTING_FORMATS["processbench"], "prompt": "Q", "labels": [1.0]}, "stepwise"),
]


def accepting(row: dict) -> list[str]:
    return [name for name, fmt in FORMATS.items() if fmt.detect(row)]


@pytest.mark.parametrize("name", sorted(NEW_FORMATS))
def test_new_formats_are_detected_by_their_own_detector_only(tmp_path, name):
    row, expected = NEW_FORMATS[name], name.split("-")[0]
    assert accepting(row) == [expected]
    result = load_records(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert result.format == expected and result.records[0].meta["source"] == expected


@pytest.mark.parametrize("name", sorted(EXISTING_FORMATS))
def test_existing_formats_are_still_detected_and_no_new_detector_takes_them(tmp_path, name):
    row = EXISTING_FORMATS[name]
    assert name in accepting(row) and not set(accepting(row)) & {"prm800k", "math_shepherd", "stepwise"}
    assert detect_format(row) == name
    assert load_records(write_jsonl(tmp_path / "d.jsonl", [row])).records[0].meta["source"] == name


@pytest.mark.parametrize("name, row, also", AMBIGUOUS_ROWS)
def test_a_row_both_an_old_and_a_new_format_accept_keeps_its_old_format(tmp_path, name, row, also):
    assert also in accepting(row)  # the row really is ambiguous
    assert detect_format(row) == name
    assert load_records(write_jsonl(tmp_path / "d.jsonl", [row])).format == name


def test_existing_formats_cover_every_old_format():
    assert set(EXISTING_FORMATS) | {"prm800k", "math_shepherd", "stepwise"} == set(FORMATS)


@pytest.mark.parametrize("row", [
    {"input": "no step tags here", "label": "no step tags here"},  # input/label alone is not Math-Shepherd
    {"question": "Q", "label": "a"},  # a label without steps is not PRM800K
    {"prompt": "Q", "completions": ["a"]},  # steps without labels are not stepwise
])
def test_near_misses_fit_no_format(tmp_path, row):
    assert detect_format(row) is None
    with pytest.raises(DataError) as info:
        load_records(write_jsonl(tmp_path / "bad.jsonl", [row]))
    assert "cannot detect the format" in str(info.value)


def test_describe_formats_lists_the_new_formats_and_the_option():
    text = describe_formats()
    assert all(f"{name} (" in text for name in ("prm800k", "math_shepherd", "stepwise"))
    assert "options: neutral" in text and text.count("options:") == 1
