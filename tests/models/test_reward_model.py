"""RewardModel: heads on every backbone family, the portable checkpoint, and the score position."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tiny import make_bpe_tokenizer, tiny_causal_config
from rewardkit.data.record import Response
from rewardkit.errors import ModelError
from rewardkit.io import atomic_directory
from rewardkit.models.reward_model import META_FILE, RewardModel
from rewardkit.models.rm_scorer import RewardModelScorer
from rewardkit.models.scorer import ScoreItem
from rewardkit.batching import plan_padded

ITEMS = [
    ScoreItem([{"role": "user", "content": "What is the capital of France?"}],
              [Response("Paris."), Response("I do not know, maybe London or somewhere else entirely.")]),
    ScoreItem([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
              [Response("Hello there"), Response(""), Response("Hi! How can I help you today?")]),
]
FAMILIES = ["llama_dir", "qwen2_dir", "neox_dir", "bert_dir"]


def scores(model, **kw):
    return [r.rewards for r in RewardModelScorer(model, precision="fp32", **kw).score(ITEMS)]


def flat(nested):
    return [x for row in nested for x in row]


def plain_transformers_scores(path, model):
    """Scores from the saved directory through plain transformers, right-padded with the saved pad id."""
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    encoded = [model.text.encode(it.prompt, r.content) for it in ITEMS for r in it.responses]
    batch = plan_padded(encoded, hf.config.pad_token_id, "right")
    kw = {"token_type_ids": batch.token_type_ids} if batch.token_type_ids is not None else {}
    with torch.no_grad():
        logits = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kw).logits
    return logits[:, 0].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_model_loads_in_plain_transformers_with_the_same_scores(family, request, tmp_path):
    model = RewardModel.from_pretrained(request.getfixturevalue(family))
    ours = scores(model)
    model.save_pretrained(tmp_path / "rm")
    assert (tmp_path / "rm" / META_FILE).is_file()
    reloaded = RewardModel.from_pretrained(tmp_path / "rm")
    # fp32, not bit-exact: the reloaded weights are the same bits at other memory offsets (safetensors maps
    # them at their file offsets), and MKL's GEMM rounds differently with another alignment (measured 7.5e-9
    # on GPT-NeoX on a 2-core EPYC); 1e-5 relative.
    assert flat(scores(reloaded)) == pytest.approx(flat(ours), rel=1e-5, abs=1e-6)
    assert plain_transformers_scores(tmp_path / "rm", model) == pytest.approx(flat(ours), abs=1e-5)
    assert len(set(flat(ours))) > 1, "a random head should not give identical scores"


@pytest.mark.parametrize("family", FAMILIES)
def test_new_head_is_seeded(family, request):
    path = request.getfixturevalue(family)
    a, b, other = (RewardModel.from_pretrained(path, **kw) for kw in ({}, {}, {"seed": 1}))
    head = lambda m: m.head_layer.state_dict()  # noqa: E731
    # bit-exact: the same seed draws the same head, and no forward pass stands in between
    assert all(torch.equal(w, head(b)[k]) for k, w in head(a).items())
    assert not torch.equal(head(other)["weight"], head(a)["weight"])
    # the scores: two models, two computations; seeding promises the head above, so the scores get the fp32
    # tolerance (1e-5 relative)
    assert flat(scores(a)) == pytest.approx(flat(scores(b)), rel=1e-5, abs=1e-6)
    assert flat(scores(other)) != pytest.approx(flat(scores(a)), rel=1e-5, abs=1e-6)


def test_score_rule_per_family(llama_dir, bert_dir):
    causal, encoder = RewardModel.from_pretrained(llama_dir), RewardModel.from_pretrained(bert_dir)
    assert (causal.meta.score_rule, causal.meta.text_mode) == ("last_token", "chat")
    assert (encoder.meta.score_rule, encoder.meta.text_mode) == ("classifier", "pair")
    # A causal tokenizer without a pad token gets a distinct one, so the checkpoint is portable.
    assert causal.tokenizer.pad_token_id not in (None, causal.tokenizer.eos_token_id)
    assert causal.model.config.pad_token_id == causal.tokenizer.pad_token_id


@pytest.mark.parametrize("family", ["llama_dir", "qwen2_dir", "neox_dir"])
def test_left_and_right_padding_and_pad_equal_to_eos_give_the_same_scores(family, request):
    model = RewardModel.from_pretrained(request.getfixturevalue(family))
    alone = [[RewardModelScorer(model, precision="fp32").score([ScoreItem(it.prompt, [r])])[0].rewards[0]
              for r in it.responses] for it in ITEMS]
    right = scores(model)
    model.meta.padding_side = "left"
    left = scores(model)
    model.tokenizer.pad_token = model.tokenizer.eos_token  # pad == EOS
    left_eos = scores(model)
    model.meta.padding_side = "right"
    right_eos = scores(model)
    for got in (right, left, left_eos, right_eos):
        assert flat(got) == pytest.approx(flat(alone), abs=1e-5)


def test_batch_budget_does_not_change_scores(llama_dir):
    model = RewardModel.from_pretrained(llama_dir)
    assert flat(scores(model, batch_tokens=1)) == pytest.approx(flat(scores(model, batch_tokens=100_000)),
                                                                abs=1e-5)


def test_an_encoders_responses_are_planned_by_their_own_lengths(bert_dir):
    """Padded plans share nothing, so a group's short response is batched with other short ones, not padded to
    its group's longest: fewer computed tokens, the same scores (each row is computed on its own)."""
    model = RewardModel.from_pretrained(bert_dir)
    long, short = "word " * 60, "ok"
    items = [ScoreItem([{"role": "user", "content": f"Question {i}?"}], [Response(long), Response(short)])
             for i in range(24)]
    scorer = RewardModelScorer(model, precision="fp32", batch_tokens=16384)
    computed, plan = [], scorer.planner.plan
    scorer.planner.plan = lambda groups: (p := plan(groups), computed.append(p.computed_tokens))[0]
    got = [r.rewards for r in scorer.score(items)]
    alone = [[RewardModelScorer(model, precision="fp32").score([ScoreItem(it.prompt, [r])])[0].rewards[0]
              for r in it.responses] for it in items]
    assert flat(got) == pytest.approx(flat(alone), abs=1e-5)
    real = sum(len(model.text.encode(it.prompt, r.content).input_ids) for it in items for r in it.responses)
    group_padded = sum(2 * len(model.text.encode(it.prompt, long).input_ids) for it in items)
    assert real < 0.6 * group_padded  # what planning each group as a block computed (the old plan)
    assert sum(computed) <= 1.05 * real  # now: a batch of the long responses, one of the short ones


def test_existing_sequence_classifier_loads_as_a_scorer(tmp_path):
    """A reward model saved by another tool (e.g. TRL): a *ForSequenceClassification with one label."""
    from transformers import LlamaForSequenceClassification

    tok = make_bpe_tokenizer(pad="<unk>")
    torch.manual_seed(3)
    hf = LlamaForSequenceClassification(tiny_causal_config("llama", len(tok), num_labels=1,
                                                           pad_token_id=tok.pad_token_id))
    hf.save_pretrained(tmp_path / "trl_rm")
    tok.save_pretrained(tmp_path / "trl_rm")
    model = RewardModel.from_pretrained(tmp_path / "trl_rm")
    assert flat(scores(model)) == pytest.approx(plain_transformers_scores(tmp_path / "trl_rm", model), abs=1e-5)


def test_classifier_with_several_labels_is_refused(tmp_path):
    from transformers import LlamaForSequenceClassification

    tok = make_bpe_tokenizer(pad="<unk>")
    LlamaForSequenceClassification(tiny_causal_config("llama", len(tok), num_labels=3)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="3 outputs is not a reward model"):
        RewardModel.from_pretrained(tmp_path)


def test_multi_objective_scores(llama_dir, tmp_path):
    model = RewardModel.from_pretrained(llama_dir, objectives=["helpful", "harmless"])
    model.meta.weights = [0.25, 0.75]
    result = RewardModelScorer(model, precision="fp32").score(ITEMS[:1])[0]
    assert set(result.objectives) == {"helpful", "harmless"}
    expected = [0.25 * h + 0.75 * s for h, s in zip(result.objectives["helpful"], result.objectives["harmless"])]
    assert result.rewards == pytest.approx(expected)
    model.save_pretrained(tmp_path / "mo")
    again = RewardModel.from_pretrained(tmp_path / "mo")
    assert again.meta.objectives == ["helpful", "harmless"] and again.meta.weights == [0.25, 0.75]


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load a model from"):
        RewardModel.from_pretrained(tmp_path / "nope")


def test_bad_metadata_names_file_and_field(llama_dir, tmp_path):
    RewardModel.from_pretrained(llama_dir).save_pretrained(tmp_path / "rm")
    meta_path = tmp_path / "rm" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "score_rule": "first_token"}))
    with pytest.raises(ModelError, match=r"rewardkit\.json: field 'score_rule'"):
        RewardModel.from_pretrained(tmp_path / "rm")
    meta_path.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        RewardModel.from_pretrained(tmp_path / "rm")


def test_save_is_atomic(llama_dir, tmp_path, monkeypatch):
    model = RewardModel.from_pretrained(llama_dir)
    model.save_pretrained(tmp_path / "rm")
    before = sorted(p.name for p in (tmp_path / "rm").iterdir())

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(model.tokenizer, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(tmp_path / "rm")  # over an existing checkpoint
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(tmp_path / "fresh")
    assert sorted(p.name for p in (tmp_path / "rm").iterdir()) == before  # old checkpoint intact
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]  # no temporary leftovers


def test_atomic_directory_replaces_whole(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.txt").write_text("old")
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new.txt"]
