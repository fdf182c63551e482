"""`rewardkit overopt prepare`: pairs labelled by a gold model (hard or Bradley-Terry sampled, seeded noise),
the seeded split into nested label sets, and end to end through the CLI: proxies trained on tiny backbones,
the lab's config, a rerun that retrains nothing, the study run on the written config, and bad input."""

import json
import math
import statistics

import pytest
from typer.testing import CliRunner

import overopt_task as task
from rewardkit.cli import app
from rewardkit.data import load_records, write_canonical_jsonl
from rewardkit.data.record import PreferenceRecord, Response, user_prompt
from rewardkit.errors import RewardkitError
from rewardkit.overopt.config import load_overopt_config
from rewardkit.overopt.prepare import (
    PrepareSettings, gold_label, load_pairs, prepare, prepare_markdown, proxy_name, split_labelled,
)
from tiny import toy_pairs

runner = CliRunner()
GOLD = "python:overopt_task:length_gold"
TRAIN_SETS = ["lr=2e-3", "batch_size=8", "precision=fp32", "progress=false", "warmup_ratio=0", "max_steps=2",
              "max_length=64"]


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def pair(i, a="answer A", b="answer B", **labels):
    return PreferenceRecord(f"r{i}", user_prompt(f"question {i}"), [Response(a), Response(b)], **labels)


def within_binomial(count, n, p, sds=4):
    """count out of n is within `sds` standard errors of a binomial(n, p) proportion."""
    return abs(count / n - p) <= sds * math.sqrt(p * (1 - p) / n)


# --- gold_label -------------------------------------------------------------------------------------------

def test_hard_label_puts_the_higher_reward_first_and_records_the_gold():
    record = pair(0, chosen=0, meta={"subset": "s", "line": 3})
    labelled = gold_label(record, [0.2, 1.5])
    assert [r.content for r in labelled.responses] == ["answer B", "answer A"] and labelled.chosen == 0
    gold = labelled.meta["gold"]
    assert gold["rewards"] == [1.5, 0.2]
    assert abs(gold["p"] - sigmoid(1.5 - 0.2)) < 1e-12
    assert gold["flipped"] is False
    assert gold["agrees"] is False  # the data preferred A, the gold B
    assert labelled.meta["subset"] == "s" and labelled.meta["line"] == 3  # the record's own meta is kept
    assert record.responses[0].content == "answer A" and "gold" not in record.meta  # the input is untouched

    kept = gold_label(record, [1.5, 0.2])
    assert [r.content for r in kept.responses] == ["answer A", "answer B"] and kept.chosen == 0
    assert kept.meta["gold"]["rewards"] == [1.5, 0.2] and kept.meta["gold"]["agrees"] is True
    assert abs(kept.meta["gold"]["p"] - sigmoid(1.3)) < 1e-12


def test_hard_label_clears_every_other_preference_field():
    record = pair(1, chosen=1, ranking=[1, 0], scores=[1.0, 2.0], votes=[1, 1], soft_label=0.1, margin=2.0)
    labelled = gold_label(record, [3.0, -1.0])
    assert labelled.chosen == 0 and labelled.label_kinds == ["chosen"] and labelled.margin is None
    assert labelled.meta["gold"]["agrees"] is False  # the data's own chosen (1) is what it is compared with


@pytest.mark.parametrize("labels, expected", [
    (dict(chosen=1), True), (dict(chosen=0), False),
    (dict(votes=[1, 1, 0]), True),  # votes favour response 1, as the gold does
    (dict(soft_label=0.9), False),  # P(response 0 preferred) = 0.9, the gold prefers response 1
    (dict(soft_label=0.5), None),  # an even split is no label to agree with
    (dict(), None),
])
def test_agreement_with_the_datas_own_label(labels, expected):
    assert gold_label(pair(2, **labels), [-1.0, 1.0]).meta["gold"]["agrees"] is expected


def test_a_tie_is_a_seeded_fair_coin():
    records = [pair(i) for i in range(400)]
    firsts = [gold_label(r, [0.7, 0.7], seed=5).responses[0].content for r in records]
    assert firsts == [gold_label(r, [0.7, 0.7], seed=5).responses[0].content for r in records]  # deterministic
    assert within_binomial(firsts.count("answer A"), len(firsts), 0.5)
    assert firsts != [gold_label(r, [0.7, 0.7], seed=6).responses[0].content for r in records]
    assert all(abs(gold_label(r, [0.7, 0.7]).meta["gold"]["p"] - 0.5) < 1e-12 for r in records[:10])


def test_bt_labels_keep_the_first_response_with_the_gold_probability():
    gap = math.log(0.73 / 0.27)  # sigmoid(gap) = 0.73
    records = [pair(i) for i in range(2000)]
    labelled = [gold_label(r, [gap, 0.0], labels="bt", seed=11) for r in records]
    stayed = [lab.responses[0].content == "answer A" for lab in labelled]
    assert within_binomial(sum(stayed), len(stayed), 0.73)
    for lab, kept in zip(labelled, stayed):
        assert lab.chosen == 0 and lab.meta["gold"]["flipped"] is False
        assert lab.meta["gold"]["rewards"] == ([gap, 0.0] if kept else [0.0, gap])
        assert abs(lab.meta["gold"]["p"] - (0.73 if kept else 0.27)) < 1e-12
    again = [gold_label(r, [gap, 0.0], labels="bt", seed=11).responses[0].content == "answer A" for r in records]
    assert again == stayed
    other = [gold_label(r, [gap, 0.0], labels="bt", seed=12).responses[0].content == "answer A" for r in records]
    assert other != stayed


def test_bt_labels_follow_a_gold_that_is_sure():
    records = [pair(i) for i in range(200)]
    assert all(gold_label(r, [40.0, 0.0], labels="bt").responses[0].content == "answer A" for r in records)
    assert all(gold_label(r, [0.0, 40.0], labels="bt").responses[0].content == "answer B" for r in records)
    huge = gold_label(records[0], [1e308, -1e308], labels="bt")  # the difference overflows to inf
    assert huge.responses[0].content == "answer A" and huge.meta["gold"]["p"] == 1.0


def test_noise_flips_labels_at_its_rate():
    records = [pair(i) for i in range(2000)]
    labelled = [gold_label(r, [1.0, 0.0], noise=0.2, seed=3) for r in records]
    flipped = [lab.meta["gold"]["flipped"] for lab in labelled]
    assert within_binomial(sum(flipped), len(flipped), 0.2)
    for lab, flip in zip(labelled, flipped):
        assert lab.chosen == 0
        assert lab.responses[0].content == ("answer B" if flip else "answer A")  # a flip puts the worse first
        assert lab.meta["gold"]["rewards"] == ([0.0, 1.0] if flip else [1.0, 0.0])
        assert abs(lab.meta["gold"]["p"] - sigmoid(-1.0 if flip else 1.0)) < 1e-12
    assert flipped == [gold_label(r, [1.0, 0.0], noise=0.2, seed=3).meta["gold"]["flipped"] for r in records]
    assert flipped != [gold_label(r, [1.0, 0.0], noise=0.2, seed=4).meta["gold"]["flipped"] for r in records]
    assert not any(gold_label(r, [1.0, 0.0], seed=3).meta["gold"]["flipped"] for r in records)


@pytest.mark.parametrize("kwargs, rewards, message", [
    (dict(noise=0.5), [1.0, 0.0], "label noise is a flip probability in"),
    (dict(noise=0.7), [1.0, 0.0], "label noise is a flip probability in"),
    (dict(noise=-0.01), [1.0, 0.0], "label noise is a flip probability in"),
    (dict(noise=float("nan")), [1.0, 0.0], "label noise is a flip probability in"),
    (dict(), [float("nan"), 0.0], "not finite"),
    (dict(), [1.0, float("inf")], "not finite"),
    (dict(), [float("-inf"), float("-inf")], "not finite"),
    (dict(labels="soft"), [1.0, 0.0], "labels must be hard or bt"),
])
def test_gold_label_refuses(kwargs, rewards, message):
    with pytest.raises(RewardkitError, match=message):
        gold_label(pair(0), rewards, **kwargs)


def test_gold_label_is_for_pairs():
    three = PreferenceRecord("t", user_prompt("q"), [Response("a"), Response("b"), Response("c")], chosen=0)
    with pytest.raises(RewardkitError, match="'t': has 3 responses; gold labels are for pairs"):
        gold_label(three, [1.0, 0.0, 2.0])
    with pytest.raises(RewardkitError, match="3 gold rewards for its 2 responses"):
        gold_label(pair(0), [1.0, 0.0, 2.0])


# --- split_labelled, proxy_name, load_pairs, prepare_markdown ----------------------------------------------

def test_split_labelled_is_seeded_and_holds_out_a_disjoint_set():
    records = [pair(i) for i in range(50)]
    pool, held = split_labelled(records, 10, seed=3)
    assert len(pool) == 40 and len(held) == 10
    ids = lambda rs: [r.id for r in rs]  # noqa: E731
    assert not set(ids(pool)) & set(ids(held)) and sorted(ids(pool) + ids(held)) == sorted(ids(records))
    assert (ids(pool), ids(held)) == tuple(ids(x) for x in split_labelled(records, 10, seed=3))
    assert ids(pool) != ids(split_labelled(records, 10, seed=4)[0])
    assert ids(pool) != ids(records)[:40]  # shuffled, not the file's order
    assert ids(records) == [f"r{i}" for i in range(50)]  # the input list is not shuffled in place
    with pytest.raises(RewardkitError, match="--eval-pairs 50 leaves no pair to train on"):
        split_labelled(records, 50, seed=3)


@pytest.mark.parametrize("backbone, count, name", [
    ("minilm", 1000, "minilm-1000"),
    ("HuggingFaceTB/SmolLM2-135M", 250, "HuggingFaceTB_SmolLM2-135M-250"),  # not a folder here: a hub id
    ("org2/SmolLM2-135M/", 250, "org2_SmolLM2-135M-250"),
    (".", 3, "backbone-3"),
])
def test_proxy_name(backbone, count, name):
    assert proxy_name(backbone, count) == name


def test_a_local_backbone_is_named_by_its_folder(tmp_path):
    folder = tmp_path / "my model (v2)"
    folder.mkdir()
    assert proxy_name(str(folder), 4) == proxy_name(str(folder) + "/", 4) == "my_model_v2-4"


def canonical(rows):
    return [PreferenceRecord(r["id"], user_prompt(r["prompt"]), [Response(x) for x in r["responses"]],
                             chosen=r["chosen"], meta={"subset": r["subset"]}) for r in rows]


def test_load_pairs_prefixes_ids_across_files(tmp_path):
    (tmp_path / "helpful").mkdir()
    write_canonical_jsonl(canonical(toy_pairs(5)), tmp_path / "helpful" / "train.jsonl")
    plain = [PreferenceRecord(r.id, r.prompt, r.responses, chosen=r.chosen) for r in canonical(toy_pairs(5))]
    write_canonical_jsonl(plain, tmp_path / "other.jsonl")  # the same ids: the prefixes keep them apart
    one = load_pairs([str(tmp_path / "other.jsonl")], "all", None)
    assert [r.id for r in one] == [f"p{i}" for i in range(5)]
    both = load_pairs([str(tmp_path / "helpful" / "train.jsonl"), str(tmp_path / "other.jsonl")], "all", None)
    assert [r.id for r in both] == [f"helpful:p{i}" for i in range(5)] + [f"other:p{i}" for i in range(5)]
    # a record's own subset is kept; one without gets its file's name
    assert [r.meta["subset"] for r in both] == [r["subset"] for r in toy_pairs(5)] + ["other"] * 5
    train, test = (load_pairs([str(tmp_path / "other.jsonl")], part, None) for part in ("train", "test"))
    assert [r.id for r in train + test] == [r.id for r in one] and len(train) == 4


def test_load_pairs_refuses(tmp_path):
    with pytest.raises(RewardkitError, match="no --data"):
        load_pairs([], "all", None)
    with pytest.raises(RewardkitError, match="missing.jsonl: no such file"):
        load_pairs([str(tmp_path / "missing.jsonl")], "all", None)
    three = PreferenceRecord("t3", user_prompt("q"), [Response("a"), Response("b"), Response("c")], chosen=0)
    write_canonical_jsonl([three], tmp_path / "three.jsonl")
    with pytest.raises(RewardkitError, match="record 't3' has 3 responses"):
        load_pairs([str(tmp_path / "three.jsonl")], "all", None)


@pytest.mark.parametrize("change, message", [
    (dict(counts=[0, 16]), "--counts must be positive"), (dict(counts=[]), "--counts must be positive"),
    (dict(backbones=[]), "no --backbones"),
])
def test_prepare_refuses_bad_plans_before_reading_anything(change, message, tmp_path):
    plan = PrepareSettings(gold=GOLD, data=[str(tmp_path / "missing.jsonl")], out=str(tmp_path / "o"), **change)
    with pytest.raises(RewardkitError, match=message):
        prepare(plan, None)
    assert not (tmp_path / "o").exists()


def test_prepare_markdown_states_noise_and_agreement():
    report = {"gold": "g", "labels": "bt", "noise": 0.1, "flipped": 3, "seed": 7, "pairs": 30, "eval_pairs": 10,
              "train_pool": 20, "agreement_with_data": 0.625, "config": "o/overopt.yaml",
              "proxies": [{"name": "b-8", "backbone": "b", "count": 8, "accuracy": None, "steps": 2, "seconds": 1.2}]}
    text = prepare_markdown(report)
    assert "labels: bt with 10% label noise (3 flipped), seed 7." in text
    assert "62.5% of the pairs" in text and "| b-8 | b | 8 | - | 2 | 1 |" in text
    assert "`rewardkit overopt --config o/overopt.yaml`" in text
    quiet = prepare_markdown({**report, "noise": 0.0, "agreement_with_data": None})
    assert "label noise" not in quiet and "agrees with the data" not in quiet


# --- the CLI end to end -----------------------------------------------------------------------------------

def run(*args):
    result = runner.invoke(app, ["overopt", *args])
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_canonical_jsonl(canonical(toy_pairs(64)), path)
    return path


def prepare_args(data, backbone, out, *extra, counts="16,32"):
    sets = [x for s in TRAIN_SETS for x in ("--set", s)]
    return ["prepare", "--gold", GOLD, "-d", str(data), "--backbones", str(backbone), "--counts", counts,
            "--eval-pairs", "16", *sets, "--out", str(out), *extra]


def stamps(out):
    """mtimes of everything a rerun must leave alone: each proxy's record and weights, the labels, the cache."""
    paths = [*out.glob("proxies/*/member.json"), *out.glob("proxies/*/*/model.safetensors"),
             *out.glob("labels/*.json*"), *out.glob("labels/scores/*")]
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in paths}


def read(path):
    return load_records(path).records


def proxy_names(backbone, *counts):
    """The proxies' names: the fixture's folder name (bert0, ...) and the count."""
    return [f"{backbone.name}-{c}" for c in counts]


def test_prepare_labels_trains_the_proxies_and_writes_the_config(pairs_file, bert_dir, tmp_path):
    b16, b32 = proxy_names(bert_dir, 16, 32)
    out = tmp_path / "lab"
    code, output = run(*prepare_args(pairs_file, bert_dir, out))
    assert code == 0, output
    assert f"proxy {b16}: trained" in output and f"proxy {b32}: trained" in output
    assert "64 pairs labelled (hard)" in output

    cfg = load_overopt_config(out / "overopt.yaml")
    assert cfg.gold == GOLD and list(cfg.proxies) == [b16, b32]
    for name, spec in cfg.proxies.items():
        assert (out / "proxies" / name / "member.json").is_file()
        assert spec.startswith(str(out / "proxies" / name)) and (spec.endswith("best") or spec.endswith("last"))
        assert (out / "proxies" / name / spec.rsplit("/", 1)[1] / "model.safetensors").is_file()
    eval_file = out / "labels" / "eval.jsonl"
    assert cfg.prompts == str(eval_file) and cfg.limit == 64 and cfg.policy == "smollm2" and cfg.n_max == 64
    assert cfg.out == str(out)

    held = read(eval_file)
    train16, train32 = read(out / "labels" / "train-16.jsonl"), read(out / "labels" / "train-32.jsonl")
    assert (len(held), len(train16), len(train32)) == (16, 16, 32)
    assert [r.id for r in train16] == [r.id for r in train32][:16]  # nested label sets
    assert not {r.id for r in held} & {r.id for r in train32}
    for r in held + train32:  # hard gold labels, no noise: the response the gold rates higher is first
        rewards = [task.length_gold_fn(r.prompt, resp) for resp in r.responses]
        assert r.chosen == 0 and rewards[0] >= rewards[1]
        assert all(abs(a - b) < 1e-12 for a, b in zip(r.meta["gold"]["rewards"], rewards))
        assert r.meta["gold"]["flipped"] is False

    report = json.loads((out / "prepare.json").read_text())
    assert (report["pairs"], report["train_pool"], report["eval_pairs"], report["flipped"]) == (64, 48, 16, 0)
    assert [row["name"] for row in report["proxies"]] == [b16, b32]
    assert [row["count"] for row in report["proxies"]] == [16, 32]
    assert all(row["steps"] == 2 for row in report["proxies"])
    originals = read(pairs_file)
    agrees = [gold_label(r, [task.length_gold_fn(r.prompt, x) for x in r.responses]).meta["gold"]["agrees"]
              for r in originals]
    assert abs(report["agreement_with_data"] - statistics.fmean(agrees)) < 1e-12
    assert 0 < report["agreement_with_data"] < 1  # length and politeness disagree on some pairs, not all
    markdown = (out / "prepare.md").read_text()
    assert "A small gold is itself an imperfect, hackable reward" in markdown
    assert "The gold model stands in for people" in markdown and f"| {b16} |" in markdown


def test_a_rerun_retrains_nothing_and_a_new_count_trains_only_itself(pairs_file, bert_dir, tmp_path):
    b16, b24, b32 = proxy_names(bert_dir, 16, 24, 32)
    out = tmp_path / "lab"
    args = prepare_args(pairs_file, bert_dir, out)
    code, output = run(*args)
    assert code == 0, output
    before = stamps(out)
    assert sum(k.endswith("member.json") for k in before) == 2 and any(k.startswith("labels/scores/") for k in before)
    labels_text = {p.name: p.read_text() for p in (out / "labels").glob("*.jsonl")}

    code, output = run(*args)
    assert code == 0, output
    assert f"proxy {b16}: already trained" in output and f"proxy {b32}: already trained" in output
    assert stamps(out) == before
    assert {p.name: p.read_text() for p in (out / "labels").glob("*.jsonl")} == labels_text
    assert list(load_overopt_config(out / "overopt.yaml").proxies) == [b16, b32]

    code, output = run(*prepare_args(pairs_file, bert_dir, out, counts="16,24,32"))
    assert code == 0, output
    assert f"proxy {b24}: trained" in output and f"proxy {b16}: already trained" in output
    after = stamps(out)
    assert all(after[k] == v for k, v in before.items())
    ids = lambda name: [r.id for r in read(out / "labels" / name)]  # noqa: E731
    assert ids("train-24.jsonl") == ids("train-32.jsonl")[:24]
    assert list(load_overopt_config(out / "overopt.yaml").proxies) == [b16, b24, b32]


def test_the_study_runs_on_the_written_config(pairs_file, bert_dir, qwen2_dir, tmp_path):
    b16, b32 = proxy_names(bert_dir, 16, 32)
    out = tmp_path / "lab"
    code, output = run(*prepare_args(pairs_file, bert_dir, out))
    assert code == 0, output
    code, output = run("--config", str(out / "overopt.yaml"), "--policy", str(qwen2_dir), "--limit", "2",
                       "--pool", "4", "--n-max", "4", "--max-new-tokens", "8", "--resamples", "50",
                       "--precision", "fp32")
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    assert report["gold_model"] == GOLD and list(report["proxies"]) == [b16, b32]
    assert list(report["objectives"]) == [b16, b32] and report["n"] == [1, 2, 4]
    samples = read(out / "samples.jsonl")
    held = {r.id for r in read(out / "labels" / "eval.jsonl")}
    assert len(samples) == 2 and {r.id for r in samples} <= held  # the held-out pairs' prompts
    assert all(len(r.responses) == 4 for r in samples)


def test_bad_input_is_refused_before_any_work(pairs_file, bert_dir, tmp_path):
    out = tmp_path / "lab"
    code, output = run(*prepare_args(pairs_file, bert_dir, out, counts="16,49"))
    assert code == 2 and "Traceback" not in output
    assert "--counts 49 is more than the 48 pairs left to train on (64 pairs, 16 held out)" in output
    assert not (out / "labels" / "scores").exists() and not (out / "proxies").exists()
    assert not (out / "labels" / "labels.json").exists()  # nothing recorded: a corrected rerun is not refused

    code, output = run(*prepare_args(tmp_path / "missing.jsonl", bert_dir, out))
    assert code == 2 and "Traceback" not in output and "missing.jsonl: no such file" in output

    code, output = run(*prepare_args(pairs_file, bert_dir, out, "--labels", "soft"))
    assert code == 2 and "Traceback" not in output and "--labels 'soft': expected hard or bt" in output

    code, output = run(*prepare_args(pairs_file, bert_dir, out, counts="16,x"))
    assert code == 2 and "Traceback" not in output and "expected comma-separated whole numbers" in output
    assert not out.exists()


def test_a_changed_seed_is_refused_in_the_same_out(pairs_file, bert_dir, tmp_path):
    out = tmp_path / "lab"
    code, output = run(*prepare_args(pairs_file, bert_dir, out, counts="16"))
    assert code == 0, output
    before = stamps(out)
    code, output = run(*prepare_args(pairs_file, bert_dir, out, "--seed", "1", counts="16"))
    assert code == 2 and "Traceback" not in output
    assert "the labels there were made with seed = 0, not 1" in output and "another --out" in output
    assert stamps(out) == before

    code, output = run(*prepare_args(pairs_file, bert_dir, out, "--labels", "bt", counts="16"))
    assert code == 2 and "made with labels = 'hard', not 'bt'" in output


# --- refused early, and nothing bound by a failed run ---

def test_backbones_with_the_same_folder_name_are_refused(pairs_file, bert_dir, tmp_path):
    import shutil

    a, b = tmp_path / "a" / "bert", tmp_path / "b" / "bert"
    shutil.copytree(bert_dir, a)
    shutil.copytree(bert_dir, b)
    out = tmp_path / "lab"
    code, output = run(*prepare_args(pairs_file, f"{a},{b}", out, counts="16"))
    assert code == 2 and "would both train proxy 'bert-16'" in output, output
    assert not out.exists()  # refused before anything is read or written


def test_a_corrected_gold_is_not_refused_after_a_failed_run(pairs_file, bert_dir, tmp_path):
    out = tmp_path / "lab"
    args = prepare_args(pairs_file, bert_dir, out, counts="16")
    typo = [("python:overopt_task:no_such_gold" if x == GOLD else x) for x in args]
    code, output = run(*typo)
    assert code == 2 and "no_such_gold" in output
    code, output = run(*args)
    assert code == 0, output


@pytest.mark.parametrize("extra, flag", [(["--noise", "0.6"], "noise"), (["--eval-pairs", "0"], "--eval-pairs")])
def test_bad_noise_or_eval_pairs_is_refused_before_scoring(extra, flag, pairs_file, bert_dir, tmp_path):
    out = tmp_path / "lab"
    code, output = run(*prepare_args(pairs_file, bert_dir, out, *extra, counts="16"))
    assert code == 2 and flag in output
    assert not (out / "labels" / "scores").exists()
