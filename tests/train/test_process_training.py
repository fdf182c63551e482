"""Process reward models (PRMs) trained through `train()` on tiny backbones: a causal (Llama) and an encoder
(BERT) PRM learn a synthetic ProcessBench-style task and save process checkpoints; the data alone makes a PRM;
outcome-only (last-step) labels; the clear errors for data or checkpoints a PRM cannot train on; LoRA; and
the step loss is one global-batch mean however a batch is cut into forward passes."""

import json
import math

import pytest
import torch

from rewardkit.data import load_records
from rewardkit.data.record import PreferenceRecord, Response
from rewardkit.errors import DataError, RewardkitError
from rewardkit.eval.steps import auroc
from rewardkit.models import RewardModel, RewardModelScorer
from rewardkit.batching import Planner
from rewardkit.steps import outcome_label
from rewardkit.train import load_config, train
from rewardkit.train.batches import build_examples, epoch_batches, forward_parts
from tiny import toy_pairs, write_jsonl

DEFAULTS = {"separator": "auto", "aggregation": "min", "last_step_only": False}


# -- data ------------------------------------------------------------------------------------------------------
def synthetic_rows(n: int, offset: int = 0) -> list[dict]:
    """ProcessBench rows (problem, steps, label = earliest wrong step or -1) with a learnable pattern: a wrong
    step has wrong arithmetic and ends in 'whatever!', a right one is correct and ends in 'Thank you.'.
    Rows have 3 or 4 steps; a third have no error, the others an error at varying positions (also before the
    last step, so later steps are unlabeled)."""
    rows = []
    for i in range(offset, offset + n):
        k = 3 + i % 2
        label = -1 if i % 3 == 0 else i % k
        steps = []
        for s in range(k):
            x, y = (i + s) % 7 + 1, (2 * i + s) % 5 + 1
            steps.append(f"Step {s + 1}: {x} + {y} = {x + y + 3}. whatever!" if s == label
                         else f"Step {s + 1}: {x} + {y} = {x + y}. Thank you.")
        rows.append({"id": f"syn-{i}", "problem": f"Add the numbers, case {i}.", "steps": steps, "label": label})
    return rows


@pytest.fixture(scope="module")
def pb_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pb") / "syn.json"
    path.write_text(json.dumps(synthetic_rows(32)))
    return path


def config(backbone, data, out, *overrides, eval_data=None, **fields):
    base = ["lr=3e-3", "batch_size=8", "precision=fp32", "progress=false", "warmup_ratio=0"]
    return load_config(None, base + list(overrides), model=str(backbone), data=[str(d) for d in data],
                       eval_data=[str(d) for d in (eval_data or [])] or None, output=str(out), **fields)


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def epoch_mean_loss(rows, epoch):
    values = [m["loss"] for m in rows if m["epoch"] == epoch]
    assert values
    return sum(values) / len(values)


def process_model(backbone, **kwargs) -> RewardModel:
    """The PRM `train()` starts from: the backbone with a new per-step head (seed 0, as the config's)."""
    return RewardModel.from_pretrained(backbone, step_separator="auto", seed=0, **kwargs)


# -- a PRM learns, on a causal and on an encoder backbone ------------------------------------------------------
@pytest.fixture(scope="module")
def llama_prm(llama_dir, pb_file, tmp_path_factory):
    """Explicit process settings (a non-default aggregation)."""
    out = tmp_path_factory.mktemp("llama-prm") / "run"
    result = train(config(llama_dir, [pb_file], out, "epochs=3", "eval_every=12", "process.aggregation=product",
                          eval_data=[pb_file]))
    return result, out


@pytest.fixture(scope="module")
def bert_prm(bert_dir, pb_file, tmp_path_factory):
    """No `process` in the config: the data (step labels only) makes it a PRM."""
    out = tmp_path_factory.mktemp("bert-prm") / "run"
    result = train(config(bert_dir, [pb_file], out, "epochs=3", "eval_every=12", eval_data=[pb_file]))
    return result, out


@pytest.mark.parametrize("which, separator, process", [
    ("llama_prm", "\n", {**DEFAULTS, "aggregation": "product"}),
    ("bert_prm", "[SEP]", DEFAULTS),
])
def test_a_prm_learns_the_steps_and_saves_a_process_checkpoint(which, separator, process, request, pb_file):
    result, out = request.getfixturevalue(which)
    rows = metrics(out)
    assert all(math.isfinite(m["loss"]) for m in rows)
    last_epoch = rows[-1]["epoch"]
    assert last_epoch >= 3 and len(rows) == 4 * last_epoch  # 32 records, 8 a step
    assert epoch_mean_loss(rows, last_epoch) < epoch_mean_loss(rows, 1) - 0.03, [m["loss"] for m in rows]
    # one loss term, the step BCE: no preference term logged for a PRM
    assert all("loss_pref" not in m for m in rows)

    saved = json.loads((out / "last" / "rewardkit.json").read_text())
    assert saved["step_separator"] == separator
    assert saved["step_aggregation"] == process["aggregation"]
    assert saved["training"]["process"] == process
    assert saved["training"]["records"] == 32

    steps = result.final_eval["steps"]
    assert steps["steps"] == sum(k + 1 if k >= 0 else len(r["steps"])
                                 for r in synthetic_rows(32) for k in [r["label"]])  # labelled steps only
    assert steps["step_auroc"] > 0.9  # a fresh head is at about 0.75 here
    assert result.final_eval["accuracy"] == steps["step_accuracy"]  # what picks the best checkpoint
    assert result.best_accuracy is not None and (out / "best" / "rewardkit.json").is_file()

    model = RewardModel.from_pretrained(out / "last")
    assert model.meta.is_process and model.meta.step_separator == separator
    records = load_records(pb_file).records
    scored = RewardModelScorer(model, precision="fp32").score(records[:4])
    for rec, res in zip(records, scored):
        assert [len(s) for s in res.step_rewards] == [len(rec.responses[0].steps)]
        assert all(0.0 < p < 1.0 for p in res.step_rewards[0])


def test_the_untrained_head_does_not_already_separate_the_steps(llama_dir, pb_file, llama_prm):
    """The learned step AUROC is the training's doing: the fresh head is well below the trained one."""
    result, _ = llama_prm
    records = load_records(pb_file).records
    fresh = RewardModelScorer(process_model(llama_dir), precision="fp32").score(records)
    scores = [s for r, res in zip(records, fresh) for s, y in zip(res.step_rewards[0], r.step_labels[0])
              if y is not None]
    labels = [y for r in records for y in r.step_labels[0] if y is not None]
    assert auroc(scores, labels) < result.final_eval["steps"]["step_auroc"] - 0.05


def test_step_labelled_data_alone_makes_a_prm_from_stepwise_jsonl(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "steps.jsonl", [
        {"prompt": f"Solve {i}.", "completions": [f"Step one {i}.", f"Step two {i}."], "labels": [True, i % 2 == 0]}
        for i in range(8)])
    out = tmp_path / "run"
    result = train(config(llama_dir, [data], out, "max_steps=1"))
    assert result.steps == 1
    saved = json.loads((out / "last" / "rewardkit.json").read_text())
    assert saved["step_separator"] == "\n" and saved["training"]["process"] == DEFAULTS


@pytest.fixture(scope="module")
def continued_prm(llama_prm, pb_file, tmp_path_factory):
    """One more step from the llama PRM's checkpoint (aggregation product), with no `process` in the config."""
    _, prm = llama_prm
    out = tmp_path_factory.mktemp("more") / "run"
    train(config(prm / "last", [pb_file], out, "max_steps=1"))
    return json.loads((out / "last" / "rewardkit.json").read_text())


def test_training_on_from_a_prm_checkpoint_stays_a_prm(continued_prm):
    assert continued_prm["step_separator"] == "\n"
    assert continued_prm["training"]["process"] is not None


def test_training_on_from_a_prm_checkpoint_keeps_its_aggregation(continued_prm):
    assert continued_prm["step_aggregation"] == "product"
    assert continued_prm["training"]["process"]["aggregation"] == "product"


# -- outcome-only (last-step) training --------------------------------------------------------------------------
def test_last_step_only_keeps_one_outcome_label_per_solution(llama_dir, pb_file):
    records = load_records(pb_file).records
    model = process_model(llama_dir)
    examples, unusable = build_examples(records, model, process=True, last_step_only=True)
    assert unusable == 0 and len(examples) == len(records)
    error_before_last = 0
    for rec, ex in zip(records, examples):
        (row,) = ex.step_labels
        n = len(rec.responses[0].steps)
        assert len(row) == n and all(v is None for v in row[:-1])
        assert ex.n_step_labels == 1
        earliest = rec.meta["earliest_error"]
        want = 1.0 if earliest == -1 else 0.0
        assert row[-1] == want == outcome_label(rec.step_labels[0])
        error_before_last += 0 <= earliest < n - 1
    assert error_before_last >= 5  # the rows this is about: an error, then unlabeled steps, outcome 0

    full, _ = build_examples(records, model, process=True)
    assert sum(ex.n_step_labels for ex in full) > len(records)  # without it, every labelled step counts


def test_last_step_only_soft_and_unknown_outcomes(llama_dir):
    def rec(rid, labels):
        steps = [f"step {k}" for k in range(len(labels))]
        return PreferenceRecord(id=rid, prompt=[{"role": "user", "content": "q"}],
                                responses=[Response("\n\n".join(steps), steps)], step_labels=[labels])

    records = [rec("soft", [1.0, 0.7]), rec("unknown", [1.0, None, 1.0]), rec("wrong-first", [0.0, None, None]),
               rec("soft-wrong", [0.9, 0.3, 1.0])]
    examples, unusable = build_examples(records, process_model(llama_dir), process=True, last_step_only=True)
    assert unusable == 1  # no outcome without every step labelled or a wrong one
    assert [ex.record_id for ex in examples] == ["soft", "wrong-first", "soft-wrong"]
    assert [ex.step_labels[0] for ex in examples] == [[None, 0.7], [None, None, 0.0], [None, None, 0.0]]


def test_last_step_only_trains_and_is_recorded(llama_dir, pb_file, tmp_path):
    out = tmp_path / "run"
    train(config(llama_dir, [pb_file], out, "max_steps=2", "process.last_step_only=true"))
    saved = json.loads((out / "last" / "rewardkit.json").read_text())
    assert saved["training"]["process"] == {**DEFAULTS, "last_step_only": True}
    assert saved["step_separator"] == "\n"
    assert all(math.isfinite(m["loss"]) for m in metrics(out))


# -- clear errors -------------------------------------------------------------------------------------------------
def test_mixed_step_and_preference_data_is_a_clear_error(llama_dir, pb_file, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(8))
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"preference or attribute labels in a process reward model's data"):
        train(config(llama_dir, [pb_file, pairs], out, "process.aggregation=min", "max_steps=1"))
    assert not (out / "last").exists()


def test_mixed_step_and_preference_data_without_process_settings_is_a_clear_error(llama_dir, pb_file, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(8))
    try:
        train(config(llama_dir, [pb_file, pairs], tmp_path / "run", "max_steps=1"))
    except RewardkitError as e:
        assert "step" in str(e)
    else:
        raise AssertionError("trained without a word about the 32 step-labelled records it ignored")


def test_a_record_with_steps_and_a_preference_is_a_clear_error(llama_dir, tmp_path):
    row = {"id": "both", "prompt": "q", "chosen": 0, "step_labels": [[1.0, 0.0], [1.0, 1.0]],
           "responses": [{"content": "a\n\nb", "steps": ["a", "b"]}, {"content": "c\n\nd", "steps": ["c", "d"]}]}
    data = write_jsonl(tmp_path / "both.jsonl", [row])
    with pytest.raises(DataError, match=r"record 'both'.*preference"):
        train(config(llama_dir, [data], tmp_path / "run", "process.aggregation=min", "max_steps=1"))


def test_step_label_count_mismatch_names_the_record(llama_dir):
    steps = ["first step", "second step", "third step"]
    bad = PreferenceRecord(id="short-labels", prompt=[{"role": "user", "content": "q"}],
                           responses=[Response("\n\n".join(steps), steps)], step_labels=[[1.0, 0.0]],
                           meta={"subset": "mine", "line": 7})
    with pytest.raises(DataError, match=r"record 'short-labels'.*line 7.*3 steps but 2 step labels") as err:
        build_examples([bad], process_model(llama_dir), process=True)
    assert err.value.field == "step_labels"


def test_step_label_count_mismatch_in_a_file_names_its_line(llama_dir, tmp_path):
    good = {"id": "ok", "prompt": "q", "responses": [{"content": "a\n\nb", "steps": ["a", "b"]}],
            "step_labels": [[1.0, 1.0]]}
    bad = {**good, "id": "bad", "step_labels": [[1.0, 1.0, 0.0]]}
    data = write_jsonl(tmp_path / "mismatch.jsonl", [good, bad])
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"mismatch\.jsonl:2.*step_labels\[0\].*2 steps.*got 3"):
        train(config(llama_dir, [data], out))
    assert not out.exists()


def test_a_prm_cannot_train_from_an_outcome_model_checkpoint(llama_dir, pb_file, tmp_path):
    outcome = RewardModel.from_pretrained(llama_dir).save_pretrained(tmp_path / "orm")
    out = tmp_path / "run"
    with pytest.raises(RewardkitError, match=r"is an outcome reward model; a process reward model trains from"):
        train(config(outcome, [pb_file], out, "max_steps=1"))
    assert not (out / "last").exists()


# -- LoRA -------------------------------------------------------------------------------------------------------
def test_lora_prm_trains_saves_and_reloads(llama_dir, pb_file, tmp_path):
    out = tmp_path / "lora"
    result = train(config(llama_dir, [pb_file], out, "max_steps=4", "lora.r=4", "lora.alpha=8", "lr=5e-3",
                          eval_data=[pb_file]))
    files = {p.name for p in (out / "last").iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    model = RewardModel.from_pretrained(out / "last")
    assert model.meta.lora is not None and model.meta.is_process and model.meta.step_separator == "\n"
    assert model.meta.training["process"] == DEFAULTS
    # the reloaded adapter and head score the training data as the final evaluation did
    records = load_records(pb_file).records
    results = RewardModelScorer(model, precision="fp32").score(records)
    scores = [s for r, res in zip(records, results) for s, y in zip(res.step_rewards[0], r.step_labels[0])
              if y is not None]
    labels = [y for r in records for y in r.step_labels[0] if y is not None]
    want = result.final_eval["steps"]["step_auroc"]
    assert want is not None and want > 0.5
    # AUROC counts ranks: fp32 noise between the reloaded model and the run's own evaluation (measured at most
    # 3e-8 across batch plans) moves it only by reordering a positive and a negative step, and the closest such
    # pair is 2e-6 apart (measured, 2-core EPYC, 1 and 2 threads): the same number, so a tight 1e-9
    assert auroc(scores, labels) == pytest.approx(want, abs=1e-9)


# -- the step loss is one global-batch mean -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_step_runs(llama_dir, pb_file, tmp_path_factory):
    """One optimizer step: the batch in one forward pass, cut into several, and in two micro-steps."""
    root = tmp_path_factory.mktemp("cut")
    runs = {}
    for name, extra in {"whole": [], "cut": ["batch_tokens=64"], "accum": ["grad_accum=2", "batch_tokens=64"]
                        }.items():
        train(config(llama_dir, [pb_file], root / name, "max_steps=1", *extra))
        runs[name] = metrics(root / name)
    return runs


def test_a_small_token_budget_really_cuts_the_batch(llama_dir, pb_file):
    records = load_records(pb_file).records
    model = process_model(llama_dir, max_length=512)
    examples, _ = build_examples(records, model, process=True)
    first = epoch_batches(examples, 8, 0, 0)[0]
    assert len(forward_parts(examples, first, Planner(model, batch_tokens=64))) > 2
    assert len(forward_parts(examples, first, Planner(model, batch_tokens=16384))) == 1


def test_the_step_loss_does_not_depend_on_how_the_batch_is_cut(one_step_runs):
    whole = one_step_runs["whole"]
    for name in ("cut", "accum"):
        other = one_step_runs[name]
        assert len(other) == len(whole) == 1
        for a, b in zip(whole, other):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), name
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), name


def test_the_first_step_loss_is_the_mean_bce_over_the_batchs_labelled_steps(llama_dir, pb_file, one_step_runs):
    """Recomputed from the scorer's step probabilities at the initial weights: -mean over every labelled step
    of the first global batch of y log p + (1 - y) log(1 - p), unlabeled steps (after the error) left out."""
    records = load_records(pb_file).records
    model = process_model(llama_dir, max_length=512)
    examples, _ = build_examples(records, model, process=True)
    first = epoch_batches(examples, 8, 0, 0)[0]
    batch = [records[i] for i in first]
    results = RewardModelScorer(model, precision="fp32").score(batch)
    terms = []
    for i, res in zip(first, results):
        for p, y in zip(res.step_rewards[0], examples[i].step_labels[0]):
            if y is not None:
                terms.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
    assert len(terms) == sum(examples[i].n_step_labels for i in first)
    assert len(terms) < sum(len(r.responses[0].steps) for r in batch)  # some steps are unlabeled
    want = sum(terms) / len(terms)
    for name, rows in one_step_runs.items():
        assert rows[0]["loss"] == pytest.approx(want, rel=1e-5), name
