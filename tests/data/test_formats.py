"""Each format adapter on a small file the test writes: conversion, detection, and every documented bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.data import FORMATS, PreferenceRecord, detect_format, load_records
from rewardkit.errors import DataError

from data_checks import assert_points_at, bad_row_error, write_jsonl


def load_one(tmp_path: Path, row: dict, format: str | None = None) -> PreferenceRecord:
    return load_records(write_jsonl(tmp_path / "data.jsonl", [row]), format=format).records[0]


HH_ROW = {
    "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!  \n\nHuman: Tell me a joke\n\nAssistant:  Why did the...",
    "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No.",
}


# ------------------------------------------------------------------------------------------------ hh


def test_hh_shared_turns_become_the_prompt(tmp_path):
    rec = load_one(tmp_path, HH_ROW)
    assert rec.prompt == [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                          {"role": "user", "content": "Tell me a joke"}]
    assert [r.content for r in rec.responses] == ["Why did the...", "No."]
    assert rec.chosen == 0
    assert rec.id == "data:1"
    assert rec.meta == {"source": "hh", "line": 1}


def test_hh_keeps_an_empty_final_turn(tmp_path):
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: "}
    assert [r.content for r in load_one(tmp_path, row).responses] == ["Hello", ""]


def test_hh_keeps_identical_transcripts(tmp_path):
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello"}
    rec = load_one(tmp_path, row)
    assert rec.prompt == [{"role": "user", "content": "Hi"}]
    assert [r.content for r in rec.responses] == ["Hello", "Hello"]


def test_hh_inline_human_marker_stays_in_the_content(tmp_path):
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: Sure.  Human: thanks", "rejected": "\n\nHuman: Hi\n\nAssistant: No"}
    assert load_one(tmp_path, row).responses[0].content == "Sure.  Human: thanks"


def test_hh_transcripts_differing_before_the_final_turn_keep_whole_continuations(tmp_path):
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: A\n\nHuman: And?\n\nAssistant: B",
           "rejected": "\n\nHuman: Hi\n\nAssistant: C"}
    rec = load_one(tmp_path, row)
    assert rec.prompt == [{"role": "user", "content": "Hi"}] and rec.meta["continuation"]
    assert [r.content for r in rec.responses] == ["A\n\nHuman: And?\n\nAssistant: B", "C"]


def test_hh_transcript_ending_with_a_human_turn_keeps_it_in_the_response(tmp_path):
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Hi\n\nAssistant: A2\n\nHuman: more?"}
    rec = load_one(tmp_path, row)
    assert [r.content for r in rec.responses] == ["A", "A2\n\nHuman: more?"]


def test_hh_transcripts_sharing_no_user_turn_are_an_error(tmp_path):
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Bye\n\nAssistant: B"}
    err = bad_row_error(tmp_path, HH_ROW, row, format="hh")
    assert_points_at(err, 2, "chosen")
    assert "share no Human turn" in str(err)


def test_hh_text_before_the_first_turn_is_an_error(tmp_path):
    row = {"chosen": "preamble\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Hi\n\nAssistant: B"}
    assert_points_at(bad_row_error(tmp_path, row, format="hh"), 1, "chosen")


# ----------------------------------------------------------------------------------------------- trl


def test_trl_plain_text(tmp_path):
    rec = load_one(tmp_path, {"prompt": "Q?", "chosen": "good", "rejected": "bad", "margin": 2.5, "id": 7})
    assert rec.prompt == [{"role": "user", "content": "Q?"}]
    assert [r.content for r in rec.responses] == ["good", "bad"]
    assert (rec.chosen, rec.margin, rec.id, rec.meta["source"]) == (0, 2.5, "7", "trl")


def test_trl_conversational(tmp_path):
    row = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}],
           "chosen": [{"role": "assistant", "content": "good"}],
           "rejected": [{"role": "assistant", "content": "bad"}]}
    rec = load_one(tmp_path, row)
    assert rec.prompt == row["prompt"]
    assert [r.content for r in rec.responses] == ["good", "bad"]


def test_trl_implicit_prompt_is_the_shared_leading_messages(tmp_path):
    shared = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."},
              {"role": "user", "content": "Q2?"}]
    row = {"chosen": shared + [{"role": "assistant", "content": "good"}],
           "rejected": shared + [{"role": "assistant", "content": "bad"}]}
    rec = load_one(tmp_path, row)
    assert rec.prompt == shared
    assert [r.content for r in rec.responses] == ["good", "bad"]


def test_trl_plain_text_without_prompt_is_an_error(tmp_path):
    assert_points_at(bad_row_error(tmp_path, {"chosen": "a", "rejected": "b"}, format="trl"), 1, "prompt")


def test_trl_bad_role_names_the_message(tmp_path):
    row = {"prompt": [{"role": "human", "content": "Q?"}], "chosen": "a", "rejected": "b"}
    assert_points_at(bad_row_error(tmp_path, row), 1, "prompt[0].role")


def test_trl_non_string_content_names_the_message(tmp_path):
    row = {"prompt": "Q?", "chosen": [{"role": "assistant", "content": 5}], "rejected": "b"}
    assert_points_at(bad_row_error(tmp_path, row), 1, "chosen[0].content")


def test_trl_bad_margin(tmp_path):
    good = {"prompt": "Q", "chosen": "a", "rejected": "b"}
    assert_points_at(bad_row_error(tmp_path, good, {**good, "margin": "big"}), 2, "margin")


# ------------------------------------------------------------------------------------ reward benches


def test_rewardbench(tmp_path):
    row = {"prompt": "Q?", "chosen": "good", "chosen_model": "m1", "rejected": "bad", "rejected_model": "m2",
           "subset": "alpacaeval-easy", "id": 30}
    rec = load_one(tmp_path, row)
    assert (rec.id, rec.chosen, rec.subset) == ("30", 0, "alpacaeval-easy")
    assert rec.meta["models"] == ["m1", "m2"]


def test_rewardbench2_one_chosen_is_an_index(tmp_path):
    row = {"id": "a1", "prompt": "Q?", "chosen": ["good"], "rejected": ["b1", "b2", "b3"], "num_correct": 1,
           "num_incorrect": 3, "total_completions": 4, "models": ["m"] * 4, "subset": "Math"}
    rec = load_one(tmp_path, row)
    assert [r.content for r in rec.responses] == ["good", "b1", "b2", "b3"]
    assert (rec.chosen, rec.scores, rec.subset, rec.meta["num_correct"]) == (0, None, "Math", 1)


def test_rewardbench2_several_chosen_become_scores(tmp_path):
    row = {"id": "t1", "prompt": "Q?", "chosen": ["g1", "g2"], "rejected": ["b1"], "num_correct": 2,
           "subset": "Ties"}
    rec = load_one(tmp_path, row)
    assert rec.chosen is None and rec.scores == [1.0, 1.0, 0.0]
    assert len(rec.comparisons()) == 2


def test_rewardbench2_non_string_response(tmp_path):
    row = {"prompt": "Q?", "chosen": ["g1"], "rejected": ["b1", 3], "num_correct": 1, "subset": "x"}
    assert_points_at(bad_row_error(tmp_path, row), 1, "rejected[1]")


def test_rm_bench(tmp_path):
    row = {"id": 5, "prompt": "Q?", "chosen": ["c0", "c1", "c2"], "rejected": ["r0", "r1", "r2"], "domain": "code"}
    rec = load_one(tmp_path, row)
    assert [r.content for r in rec.responses] == ["c0", "c1", "c2", "r0", "r1", "r2"]
    assert rec.scores == [1, 1, 1, 0, 0, 0]
    assert rec.subset == "code" and rec.meta["styles"] == [0, 1, 2, 0, 1, 2]
    assert len(rec.comparisons()) == 9


def test_rm_bench_needs_three_styles(tmp_path):
    row = {"prompt": "Q?", "chosen": ["c0", "c1"], "rejected": ["r0", "r1", "r2"], "domain": "code"}
    assert_points_at(bad_row_error(tmp_path, row), 1, "chosen")


# ------------------------------------------------------------------------------------------- pandalm

PANDALM_ROW = {"idx": 3, "motivation_app": "Grammarly", "cmp_key": "a_b", "instruction": "Fix this.",
               "input": "teh cat", "response1": "the cat", "response2": "teh cat",
               "annotator1": 1, "annotator2": 0, "annotator3": 2}


def test_pandalm_votes_and_prompt(tmp_path):
    path = tmp_path / "panda.json"
    path.write_text(json.dumps([PANDALM_ROW, {**PANDALM_ROW, "idx": 4, "input": ""}]))
    first, second = load_records(path).records
    assert first.prompt == [{"role": "user", "content": "Fix this.\n\nteh cat"}]
    assert second.prompt == [{"role": "user", "content": "Fix this."}]
    assert first.votes == [0, None, 1]
    assert (first.id, first.subset, first.meta["line"]) == ("3", "Grammarly", 1)
    assert first.preference_probability() == 0.5


def test_pandalm_reads_a_boolean_response_as_its_text(tmp_path):
    # The published test set has six of these: the model wrote "True" and the JSON holds true.
    assert load_one(tmp_path, {**PANDALM_ROW, "response1": True}).responses[0].content == "True"


def test_pandalm_bad_vote_in_a_json_list_names_the_item(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([PANDALM_ROW, {**PANDALM_ROW, "annotator2": 3}]))
    with pytest.raises(DataError) as info:
        load_records(path)
    assert_points_at(info.value, 2, "annotator2", file="bad.json")
    assert "(item 2)" in str(info.value)


# -------------------------------------------------------------------------------------- processbench


def test_processbench_labels_steps_up_to_the_earliest_error(tmp_path):
    row = {"id": "gsm8k-1", "generator": "g", "problem": "1+1?", "steps": ["a", "b", "c", "d"], "label": 1,
           "final_answer_correct": False}
    rec = load_one(tmp_path, row)
    assert rec.responses[0].content == "a\n\nb\n\nc\n\nd" and rec.responses[0].steps == ["a", "b", "c", "d"]
    assert rec.step_labels == [[1.0, 0.0, None, None]]
    assert rec.meta["earliest_error"] == 1 and rec.meta["final_answer_correct"] is False
    assert rec.meta["generator"] == "g"


def test_processbench_all_correct(tmp_path):
    rec = load_one(tmp_path, {"problem": "p", "steps": ["a", "b"], "label": -1, "final_answer_correct": True})
    assert rec.step_labels == [[1.0, 1.0]]


def test_processbench_label_out_of_range(tmp_path):
    good = {"problem": "p", "steps": ["a"], "label": 0}
    assert_points_at(bad_row_error(tmp_path, good, {**good, "label": 1}), 2, "label")


def test_processbench_empty_steps(tmp_path):
    assert_points_at(bad_row_error(tmp_path, {"problem": "p", "steps": [], "label": -1}), 1, "steps")


# ------------------------------------------------------------------------------------------- generic


def test_generic_response_shapes(tmp_path):
    row = {"id": "g1", "prompt": [{"role": "user", "content": "Q?"}],
           "responses": ["text", {"role": "assistant", "content": "message"},
                         [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "conversation"}],
                         {"content": "s1 s2", "steps": ["s1", "s2"]}],
           "ranking": [3, 0, 1, 2], "subset": "mix", "meta": {"origin": "x"}}
    rec = load_one(tmp_path, row)
    assert [r.content for r in rec.responses] == ["text", "message", "conversation", "s1 s2"]
    assert rec.responses[3].steps == ["s1", "s2"]
    assert rec.ranking == [3, 0, 1, 2]
    assert rec.meta == {"origin": "x", "subset": "mix", "source": "generic", "line": 1}


def test_generic_all_label_kinds(tmp_path):
    row = {"prompt": "Q?", "responses": [{"content": "a", "steps": ["a"]}, "b"], "chosen": 1, "scores": [0.5, 2],
           "attributes": [{"helpful": 3, "safe": None}, {"helpful": 1}], "votes": [0, None, 1],
           "soft_label": 0.25, "step_labels": [[1.0], None], "margin": 1.5}
    rec = load_one(tmp_path, row)
    assert rec.label_kinds == ["chosen", "scores", "attributes", "votes", "soft_label", "step_labels"]
    assert rec.margin == 1.5


@pytest.mark.parametrize("update, field", [
    ({"responses": ["only one"]}, "responses"),
    ({"chosen": 2}, "chosen"),
    ({"chosen": True}, "chosen"),
    ({"ranking": [0, 0]}, "ranking"),
    ({"scores": [1.0]}, "scores"),
    ({"scores": [1.0, "high"]}, "scores[1]"),
    ({"attributes": [{"h": 1}]}, "attributes"),
    ({"votes": [0, 5]}, "votes[1]"),
    ({"soft_label": 1.5}, "soft_label"),
    ({"step_labels": [[1.0], None]}, "step_labels[0]"),  # no steps to label
    ({"step_labels": [[1.0]]}, "step_labels"),
    ({"responses": ["a", 5]}, "responses[1]"),
    ({"responses": ["a", {"role": "user", "content": "x"}]}, "responses[1].role"),
    ({"responses": ["a", [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]]}, "responses[1]"),
    ({"responses": ["a", {"content": "x", "steps": [1]}]}, "responses[1].steps"),
    ({"prompt": [{"role": "bot", "content": "x"}]}, "prompt[0].role"),
    ({"prompt": [{"role": "user", "content": None}]}, "prompt[0].content"),
    ({"prompt": []}, "prompt"),
    ({"meta": "x"}, "meta"),
])
def test_generic_validation_names_the_field(tmp_path, update, field):
    good = {"id": "x", "prompt": "Q?", "responses": ["a", "b"]}
    assert_points_at(bad_row_error(tmp_path, good, {**good, **update}), 2, field)


def test_a_single_response_is_fine_with_step_labels(tmp_path):
    rec = load_one(tmp_path, {"prompt": "Q", "responses": [{"content": "a", "steps": ["a"]}], "step_labels": [[0.0]]})
    assert len(rec.responses) == 1


# ----------------------------------------------------------------------------------------- detection

DETECTION_EXAMPLES = {
    "prm800k": {"question": {"problem": "Q"}, "label": {"steps": [{"completions": [{"text": "a", "rating": 1}],
                "chosen_completion": 0}], "finish_reason": "solution"}},
    "math_shepherd": {"input": "Q Step 1: a ки", "label": "Q Step 1: a +", "task": "GSM8K"},
    "stepwise": {"prompt": "Q", "completions": ["a"], "labels": [True]},
    "hh": HH_ROW,
    "trl": {"prompt": "Q", "chosen": "a", "rejected": "b"},
    "rewardbench": {"prompt": "Q", "chosen": "a", "rejected": "b", "chosen_model": "m", "rejected_model": "n",
                    "subset": "s", "id": 1},
    "rewardbench2": {"id": "1", "prompt": "Q", "chosen": ["a"], "rejected": ["b", "c"], "num_correct": 1,
                     "num_incorrect": 2, "total_completions": 3, "models": ["m"] * 3, "subset": "s"},
    "rm-bench": {"id": 1, "prompt": "Q", "chosen": ["a"] * 3, "rejected": ["b"] * 3, "domain": "chat"},
    "pandalm": PANDALM_ROW,
    "processbench": {"id": "p", "problem": "Q", "steps": ["a"], "label": -1, "final_answer_correct": True},
    "generic": {"id": "g", "prompt": "Q", "responses": ["a", "b"], "chosen": 0},
}


def test_every_format_has_a_detection_example():
    assert set(DETECTION_EXAMPLES) == set(FORMATS)


@pytest.mark.parametrize("name", sorted(DETECTION_EXAMPLES))
def test_detection_picks_the_format(tmp_path, name):
    row = DETECTION_EXAMPLES[name]
    assert detect_format(row) == name
    result = load_records(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert result.format == name and result.records[0].meta["source"] == name


def test_trl_implicit_prompt_is_detected():
    row = {"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a"}],
           "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "b"}]}
    assert detect_format(row) == "trl"


def test_nothing_fits_lists_the_formats_and_the_keys_seen(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "Q", "good": "a", "bad": "b"}])
    with pytest.raises(DataError) as info:
        load_records(path, skip_bad=True)  # not skippable: no later row would fit either
    message = str(info.value)
    assert_points_at(info.value, 1, None)
    assert "question, good, bad" in message
    assert all(name in message for name in FORMATS)


def test_an_explicit_format_overrides_detection(tmp_path):
    rec = load_one(tmp_path, DETECTION_EXAMPLES["rewardbench"], format="trl")
    assert rec.meta["source"] == "trl"


def test_unknown_format_name_lists_the_names(tmp_path):
    with pytest.raises(DataError, match="unknown format 'hh-rlhf'; known formats: .*generic"):
        load_records(write_jsonl(tmp_path / "d.jsonl", [HH_ROW]), format="hh-rlhf")
