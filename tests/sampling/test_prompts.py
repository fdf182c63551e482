"""Prompts files: text, rows with a prompt, any data format's records (HH-RLHF), and clear errors."""

import gzip
import json

import pytest

from rewardkit.data import shared_data_dir
from rewardkit.data.prompts import load_prompts
from rewardkit.errors import DataError


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_text_file_one_prompt_a_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("Say hi\n\n  \nWhat is 2+2?\r\n")
    prompts = load_prompts(path)
    assert [(p.id, p.messages) for p in prompts] == [
        ("p:1", [{"role": "user", "content": "Say hi"}]), ("p:4", [{"role": "user", "content": "What is 2+2?"}])]
    gz = tmp_path / "g.txt.gz"
    with gzip.open(gz, "wt") as f:
        f.write("one\ntwo\n")
    assert [p.id for p in load_prompts(gz, limit=1)] == ["g:1"]


def test_rows_with_a_prompt_text_or_messages(tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    path = write(tmp_path / "p.jsonl", [{"prompt": "plain"}, {"id": 7, "prompt": chat, "extra": 1},
                                        {"prompt": "with responses", "responses": ["a", "b"], "chosen": 0}])
    prompts = load_prompts(path)
    assert [p.id for p in prompts] == ["p:1", "7", "p:3"]
    assert prompts[1].messages == chat and prompts[2].messages == [{"role": "user", "content": "with responses"}]
    assert prompts[0].source == {"file": str(path), "line": 1}


def test_rows_of_another_format_give_their_records_prompt(tmp_path):
    hh = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi there\n\nAssistant: Go."}
    prompts = load_prompts(write(tmp_path / "hh.jsonl", [hh]))
    assert prompts[0].messages == [{"role": "user", "content": "Hi there"}] and prompts[0].source["format"] == "hh"


def test_hh_rlhf_test_files_are_prompts_files():
    root = shared_data_dir()
    files = sorted((root / "hh-rlhf").glob("*/test.jsonl.gz")) if root else []
    if not files:
        pytest.skip("the HH-RLHF test files are not in ../shared/data")
    for path in files:
        prompts = load_prompts(path, limit=50)
        assert len(prompts) == 50 and all(p.messages[-1]["role"] == "user" for p in prompts), path
        assert len({p.id for p in prompts}) == 50


@pytest.mark.parametrize("row, field, match", [
    ({"prompt": 5}, "prompt", "expected text or a list of {role, content} messages, got int"),
    ({"prompt": ""}, "prompt", "empty"),
    ({"prompt": [{"role": "robot", "content": "x"}]}, "prompt[0].role", "role must be one of"),
    ({"prompt": [{"role": "user", "content": 3}]}, "prompt[0].content", "content must be a string"),
    ({"question": "no prompt here"}, None, "no prompt: the row has no 'prompt' field"),
])
def test_a_bad_prompt_names_file_line_and_field(tmp_path, row, field, match):
    path = write(tmp_path / "bad.jsonl", [{"prompt": "fine"}, row])
    with pytest.raises(DataError, match=match) as err:
        load_prompts(path)
    assert err.value.file == str(path) and err.value.line == 2 and err.value.field == field


def test_empty_files_duplicates_and_unreadable_rows(tmp_path):
    for name in ("empty.jsonl", "empty.txt"):
        (tmp_path / name).write_text("\n\n")
        with pytest.raises(DataError, match="no prompts: the file is empty"):
            load_prompts(tmp_path / name)
    with pytest.raises(DataError, match="duplicate id 'a'") as err:
        load_prompts(write(tmp_path / "dup.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]))
    assert err.value.line == 2 and err.value.field == "id"
    with pytest.raises(DataError, match="invalid JSON") as err:
        load_prompts(write(tmp_path / "broken.jsonl", [{"prompt": "x"}, "{not json"]))
    assert err.value.line == 2
    with pytest.raises(DataError, match="no such file"):
        load_prompts(tmp_path / "missing.jsonl")
