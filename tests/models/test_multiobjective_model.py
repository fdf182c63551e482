"""Multi-objective reward models: the combination saved with the model and used by the scorer, learned weights as
a parameter that never reaches the transformers weights, and the hidden ODIN length head on every family."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rewardkit.data.record import Response
from rewardkit.errors import ModelError
from rewardkit.models.reward_model import META_FILE, RewardModel
from rewardkit.models.rm_scorer import RewardModelScorer
from rewardkit.models.scorer import ScoreItem

ITEMS = [ScoreItem([{"role": "user", "content": "What is the capital of France?"}],
                   [Response("Paris."), Response("I do not know, maybe London or somewhere else entirely.")])]


def score(model, **kw):
    return RewardModelScorer(model, precision="fp32", **kw).score(ITEMS)[0]


def test_several_objectives_default_to_equal_weights_and_report_them(llama_dir):
    model = RewardModel.from_pretrained(llama_dir, objectives=["a", "b", "c"])
    assert model.meta.weights is None and model.combination_weights() == pytest.approx([1 / 3] * 3)
    res = score(model)
    assert res.weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert res.rewards == pytest.approx([sum(res.objectives[n][i] for n in "abc") / 3 for i in range(2)])
    described = RewardModelScorer(model, precision="fp32").describe()
    assert described["combination"] == "fixed" and described["weights"]["a"] == pytest.approx(1 / 3)


def test_single_objective_results_are_unchanged(llama_dir):
    model = RewardModel.from_pretrained(llama_dir)
    res = score(model)
    assert res.objectives is None and res.weights is None
    assert set(res.to_json()) == {"rewards", "response_tokens", "truncated"}
    assert "combination" not in RewardModelScorer(model, precision="fp32").describe()


def test_learned_weights_are_saved_in_meta_not_in_the_weights(llama_dir, tmp_path):
    model = RewardModel.from_pretrained(llama_dir, objectives=["a", "b"])
    model.enable_learned_combination(nonnegative=True, init=[0.2, 0.8])
    assert model.combination_weights() == pytest.approx([0.2, 0.8], abs=1e-6)
    with torch.no_grad():
        model.combiner.add_(torch.tensor([1.0, -1.0]))
    trained = model.combination_weights()
    assert trained[0] > 0.2 and 0 < trained[1] < 0.8
    s = model.combine(torch.tensor([[1.0, 2.0]]))
    s.sum().backward()
    assert model.combiner.grad is not None  # differentiable while learned
    res = score(model)
    assert res.weights == pytest.approx(dict(zip("ab", trained)))

    model.save_pretrained(tmp_path / "rm")
    meta = json.loads((tmp_path / "rm" / META_FILE).read_text())
    assert meta["combination"] == "learned" and meta["weights"] == pytest.approx(trained)
    again = RewardModel.from_pretrained(tmp_path / "rm")
    assert again.combiner is None and again.combination_weights() == pytest.approx(trained)
    assert score(again).rewards == pytest.approx(res.rewards, abs=1e-5)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")  # no stray combiner tensor
    assert hf.config.num_labels == 2 and "combiner" not in str(list(hf.state_dict()))


def test_combination_metadata_is_validated(llama_dir, tmp_path):
    RewardModel.from_pretrained(llama_dir, objectives=["a", "b"]).save_pretrained(tmp_path / "rm")
    path = tmp_path / "rm" / META_FILE
    meta = json.loads(path.read_text())
    for bad, field in [({"combination": "gated"}, "combination"), ({"weights": [1.0]}, "weights"),
                       ({"weights": [1.0, float("nan")]}, "weights"), ({"length_head": "yes"}, "length_head"),
                       ({"objectives": ["a", "a"]}, "objectives")]:
        path.write_text(json.dumps({**meta, **bad}))
        with pytest.raises(ModelError, match=f"field '{field}'"):
            RewardModel.from_pretrained(tmp_path / "rm")
    with pytest.raises(ModelError, match="distinct names"):
        RewardModel.from_pretrained(llama_dir, objectives=["a", "_length"])
    path.write_text(json.dumps({k: v for k, v in meta.items() if k not in ("combination", "length_head")}))
    old = RewardModel.from_pretrained(tmp_path / "rm")  # a checkpoint from before these fields loads as it was
    assert (old.meta.combination, old.meta.length_head, old.meta.n_outputs) == ("fixed", False, 2)


@pytest.mark.parametrize("family", ["llama_dir", "bert_dir"])
def test_length_head_is_a_hidden_last_output(family, request, tmp_path):
    path = request.getfixturevalue(family)
    model = RewardModel.from_pretrained(path, objectives=["a", "b"], length_head=True)
    plain = RewardModel.from_pretrained(path, objectives=["a", "b"])
    assert model.meta.n_outputs == 3 and model.head_layer.weight.shape[0] == 3
    res = score(model)
    assert set(res.objectives) == {"a", "b"}  # the length head is never an objective
    encoded = [model.text.encode(ITEMS[0].prompt, r.content) for r in ITEMS[0].responses]
    from rewardkit.batching import plan_padded

    batch = plan_padded(encoded, model.tokenizer.pad_token_id)
    kw = {"token_type_ids": batch.token_type_ids} if batch.token_type_ids is not None else {}
    with torch.no_grad():
        out = model(batch.input_ids, batch.attention_mask, all_outputs=True, **kw)
        assert out.shape == (2, 3)
        assert model(batch.input_ids, batch.attention_mask, **kw).shape == (2, 2)
        quality, length = model.split_outputs(out)
        assert torch.equal(quality, out[:, :2]) and torch.equal(length, out[:, 2])
        assert plain.split_outputs(plain(batch.input_ids, batch.attention_mask, all_outputs=True, **kw))[1] is None
        model.compute_dtype = torch.bfloat16  # the cast pass passes all_outputs on; the output layer stays fp32
        low = model(batch.input_ids, batch.attention_mask, all_outputs=True, **kw)
        model.compute_dtype = None
    assert low.shape == (2, 3) and low.dtype == torch.float32
    assert res.objectives["a"] == pytest.approx(out[:, 0].tolist(), abs=1e-5)

    model.save_pretrained(tmp_path / "rm")
    again = RewardModel.from_pretrained(tmp_path / "rm")
    assert again.meta.length_head and again.meta.n_outputs == 3
    assert again.hf_model.config.id2label == {0: "a", 1: "b", 2: "_length"}
    assert score(again).objectives["b"] == pytest.approx(res.objectives["b"], abs=1e-5)


def test_length_head_under_lora_trains_the_head_copy(llama_dir):
    model = RewardModel.from_pretrained(llama_dir, length_head=True)
    model.enable_lora(r=2, alpha=4)
    head = model.head_layer
    assert head.weight.requires_grad and head.weight.shape[0] == 2
    assert head is model.hf_model.score.modules_to_save["default"]
