"""Frozen features: head(features) reproduces the model's scores; prompt-end features; the on-disk cache."""

import inspect
import json

import pytest
import torch

from rewardkit.batching import Planner
from rewardkit.data.record import Response
from rewardkit.errors import ModelError
from rewardkit.models.reward_model import RewardModel
from rewardkit.models.rm_scorer import RewardModelScorer
from rewardkit.models.scorer import ScoreItem
from rewardkit.multiobjective import (
    FeatureCacheError,
    Features,
    FrozenHeadsScorer,
    extract_features,
    head_parameters,
    model_fingerprint,
    output_layer,
)
from rewardkit.multiobjective import features as features_module

ITEMS = [
    ScoreItem([{"role": "user", "content": "What is the capital of France?"}],
              [Response("Paris."), Response("I do not know, maybe London or somewhere else entirely.")]),
    ScoreItem([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
              [Response("Hello there"), Response(""), Response("Hi! How can I help you today?")]),
    ScoreItem([{"role": "user", "content": "Please explain why the sky is blue, in detail, with numbers 1 2 3."}],
              [Response("Sunlight scatters off molecules in the air."), Response("No.")]),
]
CASES = [("llama_dir", None), ("llama_dir", False), ("bert_dir", None)]  # packed, padded, encoder


def two_objective_model(path) -> RewardModel:
    """Two objectives, with a head of unit-scale weights (a fresh head's are tiny, and so are its score
    differences) so the comparisons below see real differences."""
    model = RewardModel.from_pretrained(path, objectives=["help", "harm"])
    head = output_layer(model)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(0)))
    return model


def reference_objectives(model) -> torch.Tensor:
    """(n_responses, J) per-objective scores from the fully computed model."""
    results = RewardModelScorer(model, precision="fp32").score(ITEMS)
    names = model.meta.objectives
    return torch.tensor([[r.objectives[n][k] for n in names] for r in results for k in range(len(r.rewards))])


@pytest.mark.parametrize("family,share_prefix", CASES)
def test_head_of_features_reproduces_the_models_scores(family, share_prefix, request):
    model = two_objective_model(request.getfixturevalue(family))
    feats = extract_features(model, ITEMS, precision="fp32", share_prefix=share_prefix)
    assert feats.n_items == 3 and feats.n_responses == 7 and feats.offsets.tolist() == [0, 2, 5, 7]
    W, b = head_parameters(model)
    ours = feats.response_features @ W.T + b
    ref = reference_objectives(model)
    assert (ours - ref).abs().max() <= 1e-5
    assert ref.std(0).min() > 1e-3, "a random head should not give identical scores"
    # the frozen-heads scorer, with the model's own head, gives the model's scores
    frozen = FrozenHeadsScorer.from_model(model, precision="fp32", share_prefix=share_prefix).score(ITEMS)
    full = RewardModelScorer(model, precision="fp32").score(ITEMS)
    for a, b_ in zip(frozen, full):
        assert a.rewards == pytest.approx(b_.rewards, abs=1e-5)
        for name in ("help", "harm"):
            assert a.objectives[name] == pytest.approx(b_.objectives[name], abs=1e-5)
        assert a.response_tokens == b_.response_tokens


def test_bf16_features_reproduce_bf16_scores(llama_dir):
    """Under bf16 compute the head still reads exactly the captured features (it runs in fp32), and the
    model's own compute dtype is left as it was."""
    model = two_objective_model(llama_dir)
    feats = extract_features(model, ITEMS, precision="bf16")
    assert feats.precision == "bf16" and model.compute_dtype is None
    W, b = head_parameters(model)
    results = RewardModelScorer(model, precision="bf16").score(ITEMS)
    ref = torch.tensor([[r.objectives[n][k] for n in ("help", "harm")] for r in results
                        for k in range(len(r.rewards))])
    assert (feats.response_features @ W.T + b - ref).abs().max() <= 1e-5
    fp32 = extract_features(model, ITEMS, precision="fp32").response_features
    assert 0 < (feats.response_features - fp32).abs().max() < 0.1  # really computed in bf16


def test_a_length_head_row_is_not_an_objective(llama_dir):
    """With an ODIN length head the output layer has one extra row; the frozen heads are the objectives'."""
    if "length_head" not in inspect.signature(RewardModel.from_pretrained).parameters:
        pytest.skip("this RewardModel has no length head option")
    model = RewardModel.from_pretrained(llama_dir, objectives=["help", "harm"], length_head=True)
    W, b = head_parameters(model)
    assert W.shape == (2, 32) and output_layer(model).out_features == 3
    frozen = FrozenHeadsScorer.from_model(model, precision="fp32").score(ITEMS)
    full = RewardModelScorer(model, precision="fp32").score(ITEMS)
    for a, b_ in zip(frozen, full):
        assert a.rewards == pytest.approx(b_.rewards, abs=1e-5)


def test_the_llama_default_plan_is_packed(llama_dir):
    # so the CASES above cover both the shared-prefix plan and the padded one
    assert Planner(two_objective_model(llama_dir)).packed


@pytest.mark.parametrize("family,share_prefix", CASES)
@torch.no_grad()
def test_prompt_features_are_the_prompt_end_state(family, share_prefix, request):
    model = two_objective_model(request.getfixturevalue(family))
    feats = extract_features(model, ITEMS, precision="fp32", share_prefix=share_prefix)
    hf = model.hf_model
    for i, item in enumerate(ITEMS):
        e = model.text.encode(item.prompt, item.responses[0].content)
        ids = torch.tensor([e.input_ids[: e.response_start]])
        if family == "llama_dir":  # the last prompt token's final hidden state, from a prompt-only pass
            expected = hf.base_model(input_ids=ids).last_hidden_state[0, -1]
        else:  # the pooled [CLS] state of "[CLS] prompt [SEP]"
            assert ids[0, -1].item() == model.tokenizer.sep_token_id
            expected = hf.bert(input_ids=ids, token_type_ids=torch.zeros_like(ids)).pooler_output[0]
        assert (feats.prompt_features[i] - expected).abs().max() <= 1e-5
        # a prompt-end state is not a response's score feature
        assert (feats.response_features[feats.rows(i)] - expected).abs().max() > 1e-3


def test_extract_without_prompt_features(llama_dir):
    feats = extract_features(two_objective_model(llama_dir), ITEMS, precision="fp32", prompt_features=False)
    assert feats.prompt_features is None


def test_fingerprint_ignores_the_head_and_sees_the_backbone(llama_dir, bert_dir):
    a = RewardModel.from_pretrained(llama_dir)
    b = RewardModel.from_pretrained(llama_dir, objectives=["x", "y", "z"], seed=3)
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        next(p for n, p in a.model.named_parameters() if "layers.1" in n).add_(1e-3)
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(RewardModel.from_pretrained(bert_dir)) != model_fingerprint(b)


def test_cache_round_trip_and_reuse(llama_dir, tmp_path, monkeypatch):
    model = two_objective_model(llama_dir)
    cache = tmp_path / "cache"
    feats = extract_features(model, ITEMS, precision="fp32", cache=cache)
    assert (cache / "features.safetensors").is_file() and (cache / "features.json").is_file()
    loaded = Features.load(cache, model=model)
    for name in ("response_features", "prompt_features", "response_tokens", "offsets"):
        assert torch.equal(getattr(loaded, name), getattr(feats, name))  # exact: saved, loaded, no arithmetic
    assert loaded.ids == ["0", "1", "2"] and loaded.objectives == ["help", "harm"]

    # a second extraction reads the cache and never runs the backbone
    def boom(*a, **k):
        raise AssertionError("the backbone ran")
    monkeypatch.setattr(features_module, "backbone_features", boom)
    again = extract_features(model, ITEMS, precision="fp32", cache=cache)
    assert torch.equal(again.response_features, feats.response_features)  # exact: read back, not recomputed
    # ... but not for other items: a clear error, and the cache is left alone
    with pytest.raises(FeatureCacheError, match="other items"):
        extract_features(model, ITEMS[:2], precision="fp32", cache=cache)


def test_a_directory_that_is_not_a_cache_is_never_replaced(llama_dir, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FeatureCacheError, match="not a feature cache"):
        extract_features(two_objective_model(llama_dir), ITEMS, precision="fp32", cache=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cache_of_another_model_is_refused(llama_dir, bert_dir, tmp_path):
    extract_features(two_objective_model(llama_dir), ITEMS, precision="fp32", cache=tmp_path / "c")
    bert = two_objective_model(bert_dir)
    with pytest.raises(FeatureCacheError, match="different model") as err:
        Features.load(tmp_path / "c", model=bert)
    assert isinstance(err.value, ModelError)
    with pytest.raises(FeatureCacheError, match="different model"):
        extract_features(bert, ITEMS, precision="fp32", cache=tmp_path / "c")


def test_corrupt_or_missing_cache_is_refused(llama_dir, tmp_path):
    model = two_objective_model(llama_dir)
    cache = extract_features(model, ITEMS, precision="fp32").save(tmp_path / "c")
    data = (cache / "features.safetensors").read_bytes()
    (cache / "features.safetensors").write_bytes(data[:-8] + b"\x00" * 8)  # flipped tensor bytes
    with pytest.raises(FeatureCacheError, match="corrupt"):
        Features.load(cache)
    (cache / "features.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(FeatureCacheError, match="corrupt"):
        Features.load(cache)
    (cache / "features.safetensors").write_bytes(data)
    Features.load(cache, model=model)  # intact again
    meta = json.loads((cache / "features.json").read_text())
    meta["n_responses"] = 6
    (cache / "features.json").write_text(json.dumps(meta))
    with pytest.raises(FeatureCacheError, match="corrupt"):
        Features.load(cache)
    (cache / "features.json").write_text("{not json")
    with pytest.raises(FeatureCacheError, match="corrupt"):
        Features.load(cache)
    with pytest.raises(FeatureCacheError, match="not a feature cache"):
        Features.load(tmp_path / "nowhere")


def test_a_failed_save_leaves_the_old_cache_whole(llama_dir, tmp_path, monkeypatch):
    feats = extract_features(two_objective_model(llama_dir), ITEMS, precision="fp32")
    cache = feats.save(tmp_path / "c")
    before = (cache / "features.safetensors").read_bytes()
    import safetensors.torch

    def fail(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(OSError):
        feats.save(cache)
    assert (cache / "features.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
