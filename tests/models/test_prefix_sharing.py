"""Shared-prefix packed plans give the same scores and gradients as separate padded passes, on real
transformers backbones (tiny random Llama, Qwen2, GPT-NeoX; the real SmolLM2-135M when installed); backbones
that cannot share a prefix (encoders, ALiBi models) fall back to padded plans; scoring and training give the
same numbers either way."""

import pytest
import torch

from rewardkit.attention import restore_attention, use_fast_attention
from rewardkit.batching import plan_packed, plan_padded
from rewardkit.data.record import Response
from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem
from rewardkit.train import TrainConfig, train
from tiny import make_bpe_tokenizer, toy_pairs, write_jsonl

SKY = [{"role": "user", "content": "Tell me about the sky, please."}]
PARIS = [{"role": "user", "content": "What is the capital of France?"}]
HELLO = [{"role": "user", "content": "Hello there, how are you doing today?"}]

# Measured on a 2-core AMX CPU (torch 2.13, transformers 5.24), packed vs padded under bf16 autocast, over the
# tiny Llama/Qwen2/GPT-NeoX models, default and fast attention, head seeds 0-2: with these groups the scores are
# bitwise equal (up to 2.2e-5 apart with other groups; scores are 0.02-0.1 in size, and bf16 vs fp32 differ by
# 6e-5 to 9e-4); gradients differ by at most 1.4e-3 relative norm (bf16 vs fp32: 1.4e-3 to 4.1e-3). fp32: scores
# within 2.3e-8, gradients within 1.7e-7. For scale, a mask that lets a suffix see its sibling suffixes moves
# the scores by 3e-3 and the gradients by 0.15; ignoring the position ids moves the scores by 3e-4 and the
# bf16 gradients by 4e-3 (caught by the score and fp32 checks).
BF16_SCORE_ATOL = 1e-4
BF16_GRAD_RTOL = 5e-3


def groups_for(model):
    """A prompt with 3 responses of different lengths plus a repeat of the first, a group of 1, and a group
    whose prompt differs."""
    e = model.text.encode
    return [
        [e(SKY, "The sky is blue."), e(SKY, "Sunlight scatters off molecules in the air, so the sky looks blue."),
         e(SKY, "No."), e(SKY, "The sky is blue.")],
        [e(PARIS, "Paris.")],
        [e(HELLO, "I am fine, thank you very much."), e(HELLO, "Fine.")],
    ]


def scores_and_grads(model, plan, *, bf16=False):
    """Scores of a plan and the gradient of a fixed weighted sum of them w.r.t. every parameter."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        scores = model(**plan.model_inputs())[:, 0]
    weights = torch.linspace(-1.0, 1.5, len(scores))
    (scores.float() * weights).sum().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in params)
    grads = torch.cat([p.grad.flatten() for p in params])
    model.zero_grad(set_to_none=True)
    return scores.detach().float(), grads


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("fast", [False, True], ids=["sdpa", "fast_attention"])
@pytest.mark.parametrize("kind", ["llama", "qwen2", "neox"])
def test_packed_plans_give_the_scores_and_gradients_of_padded_passes(kind, fast, request):
    model = RewardModel.from_pretrained(request.getfixturevalue(f"{kind}_dir"))
    assert model.supports_prefix_sharing()
    groups = groups_for(model)
    pad = model.tokenizer.pad_token_id
    packed = plan_packed(groups, pad)
    padded = plan_padded([e for g in groups for e in g], pad)
    unshared = plan_packed(groups, pad, share=False)
    # the plans really differ: a shared prefix, several groups in one row
    assert packed.real_tokens < padded.real_tokens and packed.input_ids.shape[0] < len(groups)

    if fast:
        assert use_fast_attention(model.hf_model)
    try:
        s_padded, g_padded = scores_and_grads(model, padded)
        s_packed, g_packed = scores_and_grads(model, packed)
        s_unshared, g_unshared = scores_and_grads(model, unshared)
        assert torch.allclose(s_packed, s_padded, rtol=0, atol=1e-5), (s_packed - s_padded).abs().max()
        assert torch.allclose(s_unshared, s_padded, rtol=0, atol=1e-5)
        assert rel(g_packed, g_padded) < 1e-5 and rel(g_unshared, g_padded) < 1e-5
        assert s_padded[0] == pytest.approx(float(s_padded[3]), abs=1e-6)  # identical responses

        b_padded, bg_padded = scores_and_grads(model, padded, bf16=True)
        b_packed, bg_packed = scores_and_grads(model, packed, bf16=True)
        assert not torch.equal(b_padded, s_padded)  # autocast really computed in bf16
        assert torch.allclose(b_packed, b_padded, rtol=0, atol=BF16_SCORE_ATOL), (b_packed - b_padded).abs().max()
        assert rel(bg_packed, bg_padded) < BF16_GRAD_RTOL
    finally:
        restore_attention(model.hf_model)
    assert model.hf_model.config._attn_implementation == "sdpa"


def test_fast_attention_really_runs_on_packed_plans(llama_dir, monkeypatch):
    """The fast attention's own backward (not a silent fallback to SDPA) handles the 4D packed mask."""
    import rewardkit.attention as attention

    # fp32 training keeps SDPA's backward by default; the recompute one is forced on to check it at fp32's tolerance
    monkeypatch.setattr(attention, "RECOMPUTE_BACKWARD_DTYPES", frozenset({torch.float32, torch.bfloat16}))
    calls = []
    apply = attention.RecomputeBackwardAttention.apply
    monkeypatch.setattr(attention.RecomputeBackwardAttention, "apply",
                        lambda *args: calls.append(args[3].shape) or apply(*args))
    model = RewardModel.from_pretrained(llama_dir)
    groups = groups_for(model)
    plan = plan_packed(groups, model.tokenizer.pad_token_id)
    with attention.fast_attention(model.hf_model) as switched:
        assert switched
        scores_and_grads(model, plan)
    n_layers = model.hf_model.config.num_hidden_layers
    assert len(calls) == n_layers and all(len(shape) == 4 and shape[-1] == plan.input_ids.shape[1]
                                          for shape in calls)


# -- fallbacks ----------------------------------------------------------------------------------------------
ITEMS = [ScoreItem(SKY, [Response("The sky is blue."), Response("No."), Response("Sunlight scatters in the air.")]),
         ScoreItem(PARIS, [Response("Paris.")])]


def padded_scores(model):
    encoded = [model.text.encode(it.prompt, r.content) for it in ITEMS for r in it.responses]
    with torch.no_grad():
        return model(**plan_padded(encoded, model.tokenizer.pad_token_id,
                                   model.meta.padding_side).model_inputs())[:, 0].tolist()


def scorer_rewards(scorer):
    return [r for res in scorer.score(ITEMS) for r in res.rewards]


def test_encoders_use_padded_plans(bert_dir):
    model = RewardModel.from_pretrained(bert_dir)
    assert model.meta.score_rule == "classifier"
    assert not model.supports_prefix_sharing()
    scorer = RewardModelScorer(model, device="cpu", precision="fp32")
    assert scorer.describe()["batch_plan"] == "padded"
    assert scorer_rewards(scorer) == pytest.approx(padded_scores(model), abs=1e-6)


def test_forcing_prefix_sharing_on_an_encoder_is_a_clear_error(bert_dir):
    from rewardkit.errors import RewardkitError

    model = RewardModel.from_pretrained(bert_dir)
    with pytest.raises(RewardkitError, match="share_prefix: this backbone cannot share"):
        RewardModelScorer(model, device="cpu", precision="fp32", share_prefix=True)


def save_tiny(path, config_for):
    from transformers import AutoModelForCausalLM

    tok = make_bpe_tokenizer()
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config_for(len(tok))).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_bloom(vocab):
    from transformers import BloomConfig

    return BloomConfig(vocab_size=vocab, hidden_size=32, n_layer=2, n_head=4)


def tiny_mpt(vocab):
    from transformers import MptConfig

    return MptConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, max_seq_len=256)


@pytest.mark.parametrize("arch", ["bloom", "mpt"])
def test_backbones_that_cannot_share_a_prefix_fall_back_to_padded_plans(arch, tmp_path):
    """ALiBi backbones take no position ids, so a suffix placed after its siblings would see its prefix from
    too far away. Bloom rejects the 4D mask outright (the check catches the error); MPT accepts it and scores
    differently (the check catches the difference). Either way the scorer must fall back to padded plans."""
    model = RewardModel.from_pretrained(save_tiny(tmp_path / arch, tiny_bloom if arch == "bloom" else tiny_mpt))
    assert model.meta.score_rule == "last_token"
    assert not model.supports_prefix_sharing()
    group = [model.text.encode(SKY, r) for r in ("The sky is blue.", "No, it is not.")]
    pad = model.tokenizer.pad_token_id
    with torch.no_grad():
        padded = model(**plan_padded(group, pad).model_inputs())
        try:
            packed = model(**plan_packed([group], pad).model_inputs())
        except Exception:  # Bloom (transformers 5.24): "too many values to unpack" building ALiBi from the mask
            packed = None
        if packed is not None:  # MPT: measured 1.4e-2 apart (scores ~0.07)
            assert (packed - padded).abs().max() > 1e-3

    scorer = RewardModelScorer(model, device="cpu", precision="fp32")
    assert scorer.describe()["batch_plan"] == "padded"
    assert scorer_rewards(scorer) == pytest.approx(padded_scores(model), abs=1e-6)
    # one sequence at a time, no padding at all
    alone = []
    for it in ITEMS:
        for r in it.responses:
            e = model.text.encode(it.prompt, r.content)
            with torch.no_grad():
                alone.append(float(model(torch.tensor([e.input_ids]), torch.ones(1, len(e.input_ids)))[0, 0]))
    assert scorer_rewards(scorer) == pytest.approx(alone, abs=1e-5)


# -- scoring -----------------------------------------------------------------------------------------------
def best_of_n_items():
    answers = ["Paris.", "The capital of France is Paris.", "Lyon, I think.", "I don't know.",
               "Paris, a city on the Seine, is the capital of France.", "No.", "Paris!", "Marseille."]
    moods = ["Yes.", "Fine, thanks.", "I am doing well today, thank you very much for asking!", "Meh.",
             "Great!", "Not bad at all.", "Hello there, I am fine.", "Tired."]
    return [ScoreItem(PARIS, [Response(a) for a in answers]), ScoreItem(HELLO, [Response(m) for m in moods])]


def test_best_of_n_scores_match_with_and_without_prefix_sharing(llama_dir):
    model = RewardModel.from_pretrained(llama_dir)
    items = best_of_n_items()

    def rewards(**kwargs):
        scorer = RewardModelScorer(model, device="cpu", precision="fp32", **kwargs)
        return scorer, [r for res in scorer.score(items) for r in res.rewards]

    shared_scorer, shared = rewards(share_prefix=True)
    padded_scorer, padded = rewards(share_prefix=False)
    default_scorer, default = rewards()
    assert shared_scorer.describe()["batch_plan"] == default_scorer.describe()["batch_plan"] == "shared-prefix packed"
    assert padded_scorer.describe()["batch_plan"] == "padded"
    assert len(shared) == 16 and len(set(shared)) > 8  # distinct responses get distinct rewards
    assert shared == pytest.approx(padded, abs=1e-5)
    assert default == shared  # bit-exact: the default plan is the shared-prefix one, on the same model object

    # a budget below one item: every item is its own forward pass (for padded rows, each item alone is over it)
    small_scorer, small_shared = rewards(share_prefix=True, batch_tokens=40)
    _, small_padded = rewards(share_prefix=False, batch_tokens=40)
    encoded = small_scorer.encode(items)
    assert len(small_scorer.planner.batches(encoded)) == len(items) == 2
    assert len(shared_scorer.planner.batches(encoded)) == 1
    assert small_shared == pytest.approx(shared, abs=1e-5)
    assert small_padded == pytest.approx(shared, abs=1e-5)


# -- training ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("toy") / "train.jsonl", toy_pairs(16))


def run_training(backbone, data, out, monkeypatch, **fields):
    """Train 2 steps of 4 records; returns (history, number of forward passes)."""
    import rewardkit.train.loop as loop

    passes = []
    collate = loop.collate_examples
    monkeypatch.setattr(loop, "collate_examples", lambda *a, **k: passes.append(1) or collate(*a, **k))
    config = TrainConfig(model=str(backbone), data=[str(data)], output=str(out), lr=2e-3, batch_size=4,
                         max_steps=2, precision="fp32", progress=False, warmup_ratio=0.0, **fields)
    result = train(config)
    assert result.steps == 2
    return result.history, len(passes)


def test_training_losses_match_with_and_without_prefix_sharing(llama_dir, toy_data, tmp_path, monkeypatch):
    runs = {}
    for share in (True, False):
        for budget in (16384, 64):
            runs[share, budget] = run_training(llama_dir, toy_data, tmp_path / f"{share}-{budget}", monkeypatch,
                                               share_prefix=share, batch_tokens=budget)
    reference, n_passes = runs[False, 16384]
    assert n_passes == 2  # one forward pass per step
    losses = [m["loss"] for m in reference]
    assert losses[0] != losses[-1]  # the model moved
    for (share, budget), (history, n_passes) in runs.items():
        assert [m["loss"] for m in history] == pytest.approx(losses, abs=1e-5), (share, budget)
        assert [m["grad_norm"] for m in history] == pytest.approx([m["grad_norm"] for m in reference], rel=1e-4)
        if budget == 64:  # a record (two ~58-token responses, ~83 shared) is over 64 tokens alone
            assert n_passes == 2 * 4, (share, n_passes)
    # the shared prompt is computed once per record
    assert all(a["tokens"] < b["tokens"] for a, b in zip(runs[True, 16384][0], reference))


# -- real weights: SmolLM2-135M ------------------------------------------------------------------------------
# Measured (2-core AMX CPU, head seeds 0-2, scores 0.06 to 2.1): packed vs padded in fp32 differ by at most
# 1.9e-6 (gradients: 4.2e-6 relative). Under bf16 autocast they differ by 1.5e-2 (seed 0, used here) to 2.3e-2:
# that is bf16 layout noise, not packing; the same padded sequences batched with a longer one (wider rows, no
# packing) move by 1.9e-2, and bf16 vs fp32 differ by 2.1e-2 to 3.4e-2. A packed mask that lets the suffixes
# see each other moves the fp32 scores by 0.34.
SMOLLM2_BF16_ATOL = 5e-2


def test_smollm2_packed_plans_match_padded_passes(smollm2):
    assert smollm2.supports_prefix_sharing()
    group = [smollm2.text.encode(PARIS, r) for r in ("Paris.", "The capital of France is Paris.", "Lyon?",
                                                     "I do not know.")]
    pad = smollm2.tokenizer.pad_token_id
    packed, padded = plan_packed([group], pad), plan_padded(group, pad)
    assert packed.real_tokens < padded.real_tokens
    s_packed, g_packed = scores_and_grads(smollm2, packed)
    s_padded, g_padded = scores_and_grads(smollm2, padded)
    assert torch.allclose(s_packed, s_padded, rtol=0, atol=1e-4), (s_packed - s_padded).abs().max()
    assert rel(g_packed, g_padded) < 1e-4
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        b_packed = smollm2(**packed.model_inputs())[:, 0].float()
        b_padded = smollm2(**padded.model_inputs())[:, 0].float()
    assert torch.allclose(b_packed, b_padded, rtol=0, atol=SMOLLM2_BF16_ATOL), (b_packed - b_padded).abs().max()
