"""Multi-objective training end to end on tiny models: each head learns from the labels tagged for it
(preferences per data file, attribute ratings with missing ones masked), the combination (fixed, equal or
learned) is saved with the model and used by the scorer, and the ODIN length head de-correlates the quality
reward from length."""

import json
import random

import numpy as np
import pytest
import torch

from rewardkit.data import load_records
from rewardkit.errors import RewardkitError
from rewardkit.eval import evaluate
from rewardkit.models import RewardModel, RewardModelScorer
from rewardkit.train import load_config, train
from tiny import toy_pairs as pairs
from tiny import write_jsonl as write

BASE = ["lr=2e-3", "batch_size=8", "precision=fp32", "progress=false", "warmup_ratio=0"]


def config(backbone, out, data, *overrides, eval_data=None, **fields):
    return load_config(None, BASE + list(overrides), model=str(backbone), data=data, output=str(out),
                       eval_data=eval_data, **fields)


def flipped(rows):
    """The same pairs with the other response chosen: a head trained on these prefers the rude answer."""
    return [{**r, "chosen": 1 - r["chosen"]} for r in rows]


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def head_rows(model):
    return model.head_layer.weight.detach().clone()


def test_each_head_learns_from_the_preferences_tagged_for_it(llama_dir, tmp_path):
    # helpful prefers the polite answer, harmless (on purpose) the rude one: only routing can fit both.
    helpful = write(tmp_path / "helpful.jsonl", pairs(32))
    harmless = write(tmp_path / "harmless.jsonl", flipped(pairs(32, offset=50)))
    test = write(tmp_path / "test.jsonl", [{**r, "meta": {"objective": "helpful"}} for r in pairs(8, offset=100)]
                 + [{**r, "meta": {"objective": "harmless"}} for r in flipped(pairs(8, offset=200))])
    out = tmp_path / "run"
    result = train(config(llama_dir, out, [{"path": str(helpful), "objective": "helpful"},
                                          {"path": str(harmless), "objective": "harmless"}],
                          "epochs=3", eval_data=[str(test)], objectives=["helpful", "harmless"]))
    per = result.final_eval["objectives"]
    assert per["helpful"]["accuracy"] == 1.0 and per["helpful"]["n_comparisons"] == 8
    assert per["harmless"]["accuracy"] == 1.0 and per["harmless"]["n_comparisons"] == 8
    assert per["helpful"]["accuracy_all"] == 0.5  # right on its own comparisons, wrong on the other's
    assert result.final_eval["weights"] == {"helpful": 0.5, "harmless": 0.5}
    assert {"loss_pref", "weight_helpful", "eval_accuracy_helpful"} <= set(metrics(out)[-1])

    model = RewardModel.from_pretrained(out / "last")
    assert model.meta.objectives == ["helpful", "harmless"]
    assert (model.meta.combination, model.meta.weights) == ("fixed", [0.5, 0.5])
    assert model.meta.training["objectives"] == {"helpful": {"preference_records": 32, "ratings": 0},
                                                 "harmless": {"preference_records": 32, "ratings": 0}}
    assert model.meta.training["data"][0] == {"path": str(helpful), "objective": "helpful"}
    records = load_records(test).records
    res = RewardModelScorer(model, precision="fp32").score(records)[0]
    assert res.weights == {"helpful": 0.5, "harmless": 0.5}
    assert res.rewards == pytest.approx([0.5 * a + 0.5 * b for a, b in zip(res.objectives["helpful"],
                                                                            res.objectives["harmless"])])


def rated(rows, objective, value_of=lambda polite: 1.0 if polite else 0.0, missing=None):
    """Rows whose responses carry attribute ratings instead of a preference label."""
    out = []
    for r in rows:
        attrs = [{objective: value_of(resp.startswith("Thank")), **({missing: None} if missing else {})}
                 for resp in r["responses"]]
        out.append({k: v for k, v in r.items() if k != "chosen"} | {"attributes": attrs})
    return out


def test_attribute_ratings_train_their_head_and_missing_ones_train_nothing(llama_dir, tmp_path):
    data = write(tmp_path / "rated.jsonl", rated(pairs(32), "helpful", missing="harmless"))
    out = tmp_path / "run"
    initial = head_rows(RewardModel.from_pretrained(llama_dir, objectives=["helpful", "harmless"]))
    train(config(llama_dir, out, [str(data)], "epochs=3", objectives=["helpful", "harmless"]))
    model = RewardModel.from_pretrained(out / "last")
    trained = head_rows(model)
    assert torch.equal(trained[1], initial[1])  # every 'harmless' label is missing: zero gradient, no step
    assert not torch.equal(trained[0], initial[0])
    history = metrics(out)
    assert history[-1]["loss_attr"] < 0.5 * history[0]["loss_attr"]
    assert model.meta.training["objectives"]["helpful"] == {"preference_records": 0, "ratings": 64}
    scores = RewardModelScorer(model, precision="fp32").score(load_records(data).records[:8])
    for rec, res in zip(load_records(data).records[:8], scores):
        polite = [i for i, r in enumerate(rec.responses) if r.content.startswith("Thank")][0]
        assert res.objectives["helpful"][polite] > res.objectives["helpful"][1 - polite]


def test_preferences_and_ratings_in_one_run(llama_dir, tmp_path):
    prefs = write(tmp_path / "prefs.jsonl", pairs(32))
    ratings = write(tmp_path / "ratings.jsonl", rated(pairs(32, offset=50), "harmless",
                                                      value_of=lambda polite: 0.0 if polite else 1.0))
    data = [{"path": str(prefs), "objective": "helpful"}, str(ratings)]
    runs = {}
    for weight in (1.0, 0.0):
        out = tmp_path / f"w{weight}"
        train(config(llama_dir, out, data, "epochs=3", f"attribute_weight={weight}",
                     objectives=["helpful", "harmless"]))
        runs[weight] = RewardModel.from_pretrained(out / "last")
    initial = head_rows(RewardModel.from_pretrained(llama_dir, objectives=["helpful", "harmless"]))
    assert torch.equal(head_rows(runs[0.0])[1], initial[1])  # attribute_weight 0: the ratings do nothing
    records = load_records(prefs).records[:8]
    results = RewardModelScorer(runs[1.0], precision="fp32").score(records)
    for rec, res in zip(records, results):
        c = rec.chosen
        assert res.objectives["helpful"][c] > res.objectives["helpful"][1 - c]  # learned from preferences
        assert res.objectives["harmless"][c] < res.objectives["harmless"][1 - c]  # learned from ratings


def test_learned_weights_concentrate_on_the_informative_objective_and_resume_exactly(llama_dir, tmp_path):
    # 'good' learns the task from preferences; 'flat' regresses onto ratings that are equal within each record
    # (random across records), so its head learns nothing that ranks two responses.
    rng = random.Random(0)
    flat = [{k: v for k, v in r.items() if k != "chosen"} | {"attributes": [{"flat": x}, {"flat": x}]}
            for r, x in ((r, rng.random()) for r in pairs(32, offset=50))]
    good = write(tmp_path / "good.jsonl", pairs(32))
    data = [{"path": str(good), "objective": "good"}, str(write(tmp_path / "flat.jsonl", flat))]
    settings = ["epochs=4", "combination=learned", "combination_lr=0.1", "save_every=3", "eval_every=100"]
    out = tmp_path / "run"
    train(config(llama_dir, out, data, *settings, objectives=["good", "flat"]))
    model = RewardModel.from_pretrained(out / "last")
    w = dict(zip(model.meta.objectives, model.meta.weights))
    assert model.meta.combination == "learned"
    assert w["good"] > 1.0 and 0 < w["flat"] < 0.6  # from 0.5 each; softplus keeps them positive
    history = metrics(out)
    assert history[-1]["loss_combination"] < 0.2 < history[0]["loss_combination"]
    assert history[-1]["weight_good"] == pytest.approx(w["good"])
    res = RewardModelScorer(model, precision="fp32").score(load_records(good).records[:1])[0]
    assert res.weights == pytest.approx(w)

    cut = tmp_path / "cut"

    def interrupt(step, _):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(llama_dir, cut, data, *settings, objectives=["good", "flat"]), on_step=interrupt)
    train(config(llama_dir, cut, data, *settings, objectives=["good", "flat"]))
    # a tolerance, not bit-exactness: the resumed steps run on weights and optimizer state read back from disk
    # (other memory offsets, where MKL may round differently); fp32 losses below 1, 1e-6
    assert [m["loss"] for m in metrics(cut)] == pytest.approx([m["loss"] for m in history], abs=1e-6)
    assert RewardModel.from_pretrained(cut / "last").meta.weights == pytest.approx(model.meta.weights, abs=1e-6)


def test_fixed_weights_from_the_config(llama_dir, tmp_path):
    data = write(tmp_path / "d.jsonl", pairs(8))
    out = tmp_path / "run"
    train(config(llama_dir, out, [{"path": str(data), "objective": "b"}], "max_steps=1",
                 objectives=["a", "b"], weights={"a": 0.2, "b": 0.8}))
    model = RewardModel.from_pretrained(out / "last")
    assert (model.meta.combination, model.meta.weights) == ("fixed", [0.2, 0.8])


def test_untagged_preferences_in_a_multi_objective_run_are_an_error(llama_dir, tmp_path):
    data = write(tmp_path / "d.jsonl", pairs(8))
    with pytest.raises(RewardkitError, match="record 'p0'.*no objective.*objective: NAME"):
        train(config(llama_dir, tmp_path / "run", [str(data)], objectives=["a", "b"]))
    tagged = write(tmp_path / "t.jsonl", [{**r, "meta": {"objective": "c"}} for r in pairs(8)])
    with pytest.raises(RewardkitError, match="objective 'c' is not among"):
        train(config(llama_dir, tmp_path / "run", [str(tagged)], objectives=["a", "b"]))
    train(config(llama_dir, tmp_path / "one", [str(data)], "max_steps=1"))
    with pytest.raises(RewardkitError, match=r"has the objectives \['reward'\]"):
        train(config(tmp_path / "one" / "last", tmp_path / "two", [str(data)], "max_steps=1", objectives=["a", "b"]))


# -- ODIN length head -------------------------------------------------------------------------------------------
def length_confounded(n, seed):
    """Half the pairs differ in quality (polite beats rude, lengths random); in the other half both answers
    are equally good and the longer one is chosen. Length predicts the label without being quality."""
    rng = random.Random(seed)
    topics = ["the sky", "Paris", "python", "the sea", "numbers", "music", "cats", "the moon"]
    rows = []
    for i in range(n):
        t = topics[i % len(topics)]
        pad_a, pad_b = rng.sample(range(7), 2)
        if rng.random() < 0.5:
            a, b, chosen = f"Thank you! A clear answer about {t}.", f"No. whatever {t}.", 0
        else:
            a = b = f"An answer about {t}."
            chosen = 0 if pad_a > pad_b else 1
        responses = [a + " indeed" * pad_a, b + " indeed" * pad_b]
        if rng.random() < 0.5:
            responses, chosen = responses[::-1], 1 - chosen
        rows.append({"id": f"{seed}-{i}", "prompt": f"Tell me about {t}.", "responses": responses,
                     "chosen": chosen, "subset": "quality" if "Thank" in a else "length"})
    return rows


def test_odin_length_head_decorrelates_the_quality_reward_from_length(llama_dir, tmp_path):
    data = write(tmp_path / "train.jsonl", length_confounded(128, seed=0))
    held_out = load_records(write(tmp_path / "test.jsonl", length_confounded(200, seed=1))).records
    reports = {}
    for head in (False, True):
        out = tmp_path / f"head-{head}"
        # ODIN's correlation terms are scale-free, so they dominate the clipped gradient while the rewards are
        # still tiny: the quality head needs more steps than plain BT (12 epochs: q >= 0.95 on 8 data seeds).
        train(config(llama_dir, out, [str(data)], "epochs=12", "batch_size=16", f"length_head={head}"))
        model = RewardModel.from_pretrained(out / "last")
        reports[head] = evaluate(held_out, RewardModelScorer(model, precision="fp32").score(held_out))
    rho = {h: abs(r["length_correlation"]["pearson"]) for h, r in reports.items()}
    assert rho[False] > 0.5  # without the head the reward learned length
    assert rho[True] < 0.25 and rho[True] < 0.35 * rho[False]
    # Quality is kept: both rank the pairs that differ in quality. (The length-only pairs are what r_Q should
    # no longer decide, so overall accuracy is not the measure.)
    assert reports[False]["subsets"]["quality"]["accuracy"] >= 0.9
    assert reports[True]["subsets"]["quality"]["accuracy"] >= 0.9
    history = metrics(tmp_path / "head-True")
    assert history[-1]["loss_length"] < history[0]["loss_length"]
    assert {"loss_pref", "loss_length", "loss_orth"} <= set(history[-1])


def test_length_head_is_saved_hidden_and_scores_use_r_q_only(llama_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rewardkit.batching import plan_padded

    data = write(tmp_path / "d.jsonl", pairs(8))
    out = tmp_path / "run"
    train(config(llama_dir, out, [str(data)], "max_steps=2", "length_head=true"))
    model = RewardModel.from_pretrained(out / "last")
    assert model.meta.length_head and model.meta.objectives == ["reward"] and model.meta.n_outputs == 2
    records = load_records(data).records[:2]
    results = RewardModelScorer(model, precision="fp32").score(records)
    assert all(res.objectives is None and res.weights is None for res in results)
    encoded = [model.text.encode(records[0].prompt, r.content) for r in records[0].responses]
    batch = plan_padded(encoded, model.tokenizer.pad_token_id)
    with torch.no_grad():
        both = model(batch.input_ids, batch.attention_mask, all_outputs=True)
        plain = AutoModelForSequenceClassification.from_pretrained(out / "last").eval()(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert both.shape == (2, 2) and plain.shape == (2, 2)
    assert results[0].rewards == pytest.approx(both[:, 0].tolist(), abs=1e-5)
    assert plain[:, 0].tolist() == pytest.approx(both[:, 0].tolist(), abs=1e-5)  # portable: column 0 is r_Q
    assert not np.allclose(both[:, 1].numpy(), both[:, 0].numpy())
    with pytest.raises(RewardkitError, match="has length head, but the config says length_head=False"):
        train(config(tmp_path / "run" / "last", tmp_path / "again", [str(data)], "max_steps=1"))
