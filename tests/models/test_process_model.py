"""Process reward models (METHODS.md §4): a step score read at every separator, on causal backbones (tiny
Llama, Qwen2, GPT-NeoX; the real SmolLM2-135M when installed) and on a BERT encoder; shared-prefix plans give
the step scores and gradients of separate passes; checkpoints, aggregation and the scorer's contract."""

import dataclasses
import json
import math

import pytest
import torch

from rewardkit.batching import plan_packed, plan_padded
from rewardkit.data.record import Response
from rewardkit.errors import ModelError, RewardkitError
from rewardkit.losses import step_bce
from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem
from rewardkit.models.reward_model import META_FILE, RewardModelMeta
from rewardkit.steps import AGGREGATIONS, aggregate
from rewardkit.text import resolve_separator

MATH = [{"role": "user", "content": "What is 12 + 12, then doubled?"}]
SKY = [{"role": "user", "content": "Why is the sky blue?"}]

S1, S2, S3, S4, S5 = ("Let x = 12 + 12 = 24.", "Doubled, 2x = 48.", "So the answer is 48.", "So it is 46.",
                      "Then x times 2 is 50.")
# One prompt whose responses share their first step (two share two), one repeated; and a second prompt.
ITEMS = [
    ScoreItem(MATH, [Response("", steps=[S1, S2, S3]), Response("", steps=[S1, S2, S4]),
                     Response("", steps=[S1, S5]), Response("", steps=[S1, S2, S3])]),
    ScoreItem(SKY, [Response("", steps=["Sunlight scatters off molecules in the air."]),
                    Response("", steps=["Sunlight scatters off molecules in the air.", "Blue scatters most."])]),
]

# Measured on the 2-core CPU (tiny Llama / Qwen2 / GPT-NeoX, head seeds 0-2, these items): step probabilities
# (~0.5, spread 2e-3 to 7e-3 across steps) of shared-prefix plans vs each response alone are at most 9.3e-9 apart
# in fp32 and in bf16; bf16 packed vs bf16 padded plans are bitwise equal; bf16 vs fp32 differ by 5.6e-5 to 2.2e-4.
BF16_STEP_ATOL = 1e-4
FP32_STEP_ATOL = 1e-5


def prm(path, **kwargs) -> RewardModel:
    return RewardModel.from_pretrained(path, step_separator="auto", **kwargs)


def step_rewards_alone(scorer, items):
    """Each response scored in its own call: no prefix shared with anything."""
    return [[scorer.score([ScoreItem(it.prompt, [r])])[0].step_rewards[0] for r in it.responses] for it in items]


def flat_steps(results):
    return [v for r in results for s in r.step_rewards for v in s]


def assert_steps_close(a, b, atol):
    assert [len(x) for row in a for x in row] == [len(x) for row in b for x in row]
    flat_a = [v for row in a for x in row for v in x]
    flat_b = [v for row in b for x in row for v in x]
    diff = max(abs(u - v) for u, v in zip(flat_a, flat_b))
    assert diff <= atol, diff


# -- causal PRMs: shared prefixes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["llama", "qwen2", "neox"])
def test_shared_prefix_step_scores_equal_separate_passes(kind, request):
    model = prm(request.getfixturevalue(f"{kind}_dir"))
    assert model.meta.is_process and model.meta.step_separator == "\n"
    scorer = RewardModelScorer(model, precision="fp32")
    assert scorer.planner.packed
    encoded = scorer.encode(ITEMS)
    plan = scorer.planner.plan(encoded)
    assert plan.packed and plan.real_tokens < sum(len(e.input_ids) for g in encoded for e in g)
    # the first step's read is inside the prompt's shared prefix: every response of the group reads it there
    n = [len(e.read_offsets) for e in encoded[0]]
    firsts = [int(plan.score_index[sum(n[:k])]) for k in range(len(n))]
    assert len(set(firsts)) == 1

    packed = [r.step_rewards for r in scorer.score(ITEMS)]
    assert [[len(s) for s in row] for row in packed] == [[3, 3, 2, 3], [1, 2]]
    assert all(0.0 < v < 1.0 for row in packed for s in row for v in s)
    assert_steps_close(packed, step_rewards_alone(scorer, ITEMS), FP32_STEP_ATOL)
    padded_scorer = RewardModelScorer(model, precision="fp32", share_prefix=False)
    assert not padded_scorer.planner.packed
    assert_steps_close(packed, [r.step_rewards for r in padded_scorer.score(ITEMS)], FP32_STEP_ATOL)
    # the repeated response gets the same step scores; the shared first step too
    assert packed[0][3] == pytest.approx(packed[0][0], abs=FP32_STEP_ATOL)
    assert packed[0][1][0] == pytest.approx(packed[0][0][0], abs=FP32_STEP_ATOL)

    bf16 = RewardModelScorer(model, precision="bf16")
    assert bf16.planner.packed
    packed16 = [r.step_rewards for r in bf16.score(ITEMS)]
    assert_steps_close(packed16, step_rewards_alone(bf16, ITEMS), BF16_STEP_ATOL)
    assert_steps_close(packed16, packed, 10 * BF16_STEP_ATOL)  # bf16 is still the same model...
    assert packed16 != packed  # ...really computed in bf16


def test_step_bce_gradient_over_a_packed_plan_equals_separate_padded_passes(llama_dir):
    model = prm(llama_dir)
    model.train()
    encoded = [[model.encode(it.prompt, r) for r in it.responses] for it in ITEMS]
    flat = [e for g in encoded for e in g]
    n_reads = sum(len(e.read_offsets) for e in flat)
    g = torch.Generator().manual_seed(0)
    target = torch.rand(n_reads, generator=g).round()
    target[::3] = 0.7  # some soft labels
    mask = torch.rand(n_reads, generator=g) > 0.25
    pad = model.tokenizer.pad_token_id
    head = model.head_layer.weight
    backbone = model.hf_model.model.layers[0].self_attn.q_proj.weight

    def grads(plan):
        model.zero_grad(set_to_none=True)
        logits = model(**plan.model_inputs())[:, 0]
        assert logits.shape == (n_reads,)
        loss = step_bce(logits, target, mask)
        loss.backward()
        out = loss.detach(), logits.detach(), head.grad.clone(), backbone.grad.clone()
        model.zero_grad(set_to_none=True)
        return out

    packed = plan_packed(encoded, pad)
    assert packed.packed and packed.input_ids.shape[0] < len(flat)
    l_packed, z_packed, h_packed, b_packed = grads(packed)
    # separate passes: one padded forward per response, the same loss over all reads
    model.zero_grad(set_to_none=True)
    logits = torch.cat([model(**plan_padded([e], pad).model_inputs())[:, 0] for e in flat])
    step_bce(logits, target, mask).backward()
    l_sep, h_sep, b_sep = step_bce(logits.detach(), target, mask), head.grad.clone(), backbone.grad.clone()
    model.zero_grad(set_to_none=True)
    l_padded, z_padded, h_padded, b_padded = grads(plan_padded(flat, pad))

    assert torch.allclose(z_packed, logits.detach(), atol=1e-5, rtol=0)
    assert l_packed.item() == pytest.approx(l_sep.item(), abs=1e-6)
    assert h_sep.norm() > 0 and b_sep.norm() > 0
    for a, b in ((h_packed, h_sep), (b_packed, b_sep), (h_padded, h_sep), (b_padded, b_sep)):
        assert float((a - b).norm() / b.norm()) < 1e-5
    model.eval()


# -- encoder PRM -------------------------------------------------------------------------------------------------------
def test_bert_prm_reads_the_classifier_at_each_separator(bert_dir):
    model = prm(bert_dir)
    tok = model.tokenizer
    assert model.meta.step_separator == "[SEP]" == resolve_separator(tok)
    assert model.meta.score_rule == "classifier" and model.meta.text_mode == "pair"
    scorer = RewardModelScorer(model, precision="fp32")
    assert not scorer.planner.packed  # an encoder attends both ways: padded rows

    encoded = [e for g in scorer.encode(ITEMS) for e in g]
    for e in encoded:
        assert e.token_type_ids is not None and len(e.reads) == e.n_steps
        assert all(e.input_ids[r] == tok.sep_token_id for r in e.reads)
    plan = plan_padded(encoded, tok.pad_token_id)
    with torch.no_grad():
        ours = model(**plan.model_inputs())[:, 0]
        hf = model.hf_model
        hidden = hf.bert(input_ids=plan.input_ids, attention_mask=plan.attention_mask,
                         token_type_ids=plan.token_type_ids).last_hidden_state.flatten(0, 1)
        dense, cls = hf.bert.pooler.dense, hf.classifier
        by_hand = (torch.tanh(hidden[plan.score_index] @ dense.weight.T + dense.bias) @ cls.weight.T + cls.bias)[:, 0]
        # the same head read at [CLS] is the plain sequence classifier's own logit
        rows = torch.arange(plan.input_ids.shape[0]) * plan.input_ids.shape[1]
        at_cls = (torch.tanh(hidden[rows] @ dense.weight.T + dense.bias) @ cls.weight.T + cls.bias)[:, 0]
        pooled = hf(input_ids=plan.input_ids, attention_mask=plan.attention_mask,
                    token_type_ids=plan.token_type_ids).logits[:, 0]
    assert ours.shape == (sum(len(e.reads) for e in encoded),)
    assert torch.allclose(ours, by_hand, atol=1e-6, rtol=0)
    assert torch.allclose(at_cls, pooled, atol=1e-6, rtol=0)
    assert ours.unique().numel() > 1  # a score per step, not one pooled score repeated

    got = [s for r in scorer.score(ITEMS) for row in r.step_rewards for s in row]
    assert got == pytest.approx(torch.sigmoid(by_hand).tolist(), abs=1e-6)


# -- the real SmolLM2 backbone ----------------------------------------------------------------------------------------
def test_smollm2_prm_shared_prefix_equals_separate_passes(smollm2):
    sep = resolve_separator(smollm2.tokenizer)
    assert sep == "\n"
    model = RewardModel(smollm2.model, smollm2.tokenizer, dataclasses.replace(smollm2.meta, step_separator=sep))
    scorer = RewardModelScorer(model, precision="fp32")
    assert scorer.planner.packed
    items = [ScoreItem(MATH, ITEMS[0].responses[:3])]
    packed = [r.step_rewards for r in scorer.score(items)]
    assert [len(s) for s in packed[0]] == [3, 3, 2]
    # separate passes: one padded row per response, in one forward pass (a 135M model is slow on a CPU)
    padded = RewardModelScorer(model, precision="fp32", share_prefix=False)
    assert not padded.planner.packed
    assert_steps_close(packed, [r.step_rewards for r in padded.score(items)], 1e-4)


def test_two_scorers_of_one_model_keep_their_own_precision(llama_dir):
    model = prm(llama_dir)
    fp32 = RewardModelScorer(model, precision="fp32")
    before = [r.step_rewards for r in fp32.score(ITEMS)]
    bf16 = RewardModelScorer(model, precision="bf16")
    assert [r.step_rewards for r in bf16.score(ITEMS)] != before
    assert fp32.describe()["precision"] == "fp32"
    # bit-exact: the same scorer's same call again (same weights, plans and threads); the bf16 scorer between
    # the two must not have touched what the fp32 one computes with
    assert [r.step_rewards for r in fp32.score(ITEMS)] == before


# -- checkpoints, aggregation, the scorer's contract -------------------------------------------------------------------
def test_save_load_round_trip_keeps_the_step_fields_and_scores(llama_dir, tmp_path):
    model = prm(llama_dir, step_aggregation="product")
    assert model.meta.step_aggregation == "product"
    before = RewardModelScorer(model, precision="fp32").score(ITEMS)
    model.save_pretrained(tmp_path / "prm")
    saved = json.loads((tmp_path / "prm" / META_FILE).read_text())
    assert saved["step_separator"] == "\n" and saved["step_aggregation"] == "product"
    loaded = RewardModel.from_pretrained(tmp_path / "prm")
    assert loaded.meta.step_separator == "\n" and loaded.meta.step_aggregation == "product"
    after = RewardModelScorer(loaded, precision="fp32").score(ITEMS)
    # fp32, not bit-exact: the reloaded weights sit at other memory offsets (where safetensors maps them), and
    # MKL's GEMM can round differently with another alignment; 1e-5 relative on the step probabilities
    assert [[len(s) for s in r.step_rewards] for r in after] == [[len(s) for s in r.step_rewards] for r in before]
    assert flat_steps(after) == pytest.approx(flat_steps(before), rel=1e-5, abs=1e-6)
    assert [x for r in after for x in r.rewards] == pytest.approx([x for r in before for x in r.rewards],
                                                                  rel=1e-5, abs=1e-6)
    assert after[0].rewards[0] == pytest.approx(math.prod(after[0].step_rewards[0]))
    # step_aggregation overrides a checkpoint's stored rule
    mean = RewardModel.from_pretrained(tmp_path / "prm", step_aggregation="mean")
    assert mean.meta.step_aggregation == "mean" and mean.meta.step_separator == "\n"
    res = RewardModelScorer(mean, precision="fp32").score(ITEMS)
    assert res[0].rewards[0] == pytest.approx(sum(res[0].step_rewards[0]) / 3)


@pytest.fixture(scope="module")
def llama_prm(llama_dir):
    return prm(llama_dir)


def test_scorer_aggregation_changes_rewards_as_aggregate_says(llama_prm):
    assert llama_prm.meta.step_aggregation == "min"
    default = RewardModelScorer(llama_prm, precision="fp32")
    assert default.aggregation == "min"
    steps = [r.step_rewards for r in default.score(ITEMS)]
    by_rule = {}
    for rule in AGGREGATIONS:
        scorer = RewardModelScorer(llama_prm, precision="fp32", aggregation=rule)
        assert scorer.describe()["step_aggregation"] == rule
        res = scorer.score(ITEMS)
        # bit-exact: one model object and the same batch plans; the aggregation only reads the step scores
        assert [r.step_rewards for r in res] == steps
        for r in res:
            assert r.rewards == [aggregate(s, rule) for s in r.step_rewards]  # the same function, same values
        by_rule[rule] = [v for r in res for v in r.rewards]
    assert by_rule["min"] == [v for r in default.score(ITEMS) for v in r.rewards]  # same model, plans, rule
    multi = [k for k, n in enumerate([3, 3, 2, 3, 1, 2]) if n > 1]
    assert all(by_rule["product"][k] < by_rule["min"][k] for k in multi)  # the rules really differ


def test_aggregation_errors(llama_dir, llama_prm):
    outcome = RewardModel.from_pretrained(llama_dir)
    assert not outcome.meta.is_process
    with pytest.raises(RewardkitError, match="process reward models only"):
        RewardModelScorer(outcome, precision="fp32", aggregation="min")
    with pytest.raises(RewardkitError, match="unknown step aggregation"):
        RewardModelScorer(llama_prm, precision="fp32", aggregation="median")
    with pytest.raises(ModelError, match="unknown step aggregation"):
        RewardModel.from_pretrained(llama_dir, step_separator="auto", step_aggregation="median")


def test_token_id_scoring_raises_for_a_prm(llama_prm):
    scorer = RewardModelScorer(llama_prm, precision="fp32")
    with pytest.raises(RewardkitError, match="process reward model"):
        scorer.score_token_ids([([5, 6, 7], [[8, 9]])])
    with pytest.raises(RewardkitError, match="process reward model"):
        scorer.encode_token_ids([5, 6, 7], [[8, 9]])


def test_a_response_without_steps_is_split_into_paragraphs(llama_prm):
    text = "Let x = 24.\n\nThen 2x = 48.\n\nSo 48."
    e = llama_prm.encode(MATH, Response(text))
    assert e == llama_prm.text.encode_steps(MATH, ["Let x = 24.", "Then 2x = 48.", "So 48."], "\n")
    assert llama_prm.encode(MATH, text) == e  # plain text too
    assert llama_prm.encode(MATH, Response(text, steps=[])) == e  # empty steps: split the content
    res = RewardModelScorer(llama_prm, precision="fp32").score(
        [ScoreItem(MATH, [Response(text), Response("One paragraph\nonly.")])])[0]
    assert [len(s) for s in res.step_rewards] == [3, 1]
    assert res.rewards == [min(s) for s in res.step_rewards]


def test_truncated_steps_score_none_and_are_left_out_of_the_reward(llama_dir):
    model = prm(llama_dir, max_length=40)
    item = ScoreItem(MATH, [Response("", steps=[S1, S2, S3, S4, S5])])
    e = model.encode(item.prompt, item.responses[0])
    assert len(e.input_ids) <= 40 and 0 < len(e.reads) < 5 and e.response_truncated > 0
    res = RewardModelScorer(model, precision="fp32", aggregation="mean").score([item])[0]
    s = res.step_rewards[0]
    assert len(s) == 5 and s[len(e.reads):] == [None] * (5 - len(e.reads))
    assert all(v is not None for v in s[: len(e.reads)])
    assert res.rewards[0] == pytest.approx(sum(s[: len(e.reads)]) / len(e.reads))
    assert res.truncated == [e.truncated] and res.truncated[0] > 0


def test_describe(llama_dir, llama_prm):
    d = RewardModelScorer(llama_prm, precision="fp32").describe()
    assert d["kind"] == "process_reward_model"
    assert d["step_separator"] == "\n" and d["step_aggregation"] == "min"
    assert d["batch_plan"] == "shared-prefix packed"
    plain = RewardModelScorer(RewardModel.from_pretrained(llama_dir), precision="fp32").describe()
    assert plain["kind"] == "reward_model" and "step_separator" not in plain


# -- metadata validation -----------------------------------------------------------------------------------------------
def _meta(**fields):
    return {**RewardModelMeta().to_json(), **fields}


def test_meta_accepts_a_prm():
    meta = RewardModelMeta.from_json(_meta(step_separator="\n", step_aggregation="product"), "m")
    assert meta.is_process and meta.step_aggregation == "product"
    assert not RewardModelMeta.from_json(_meta(), "m").is_process


@pytest.mark.parametrize("fields,match", [
    ({"step_separator": ""}, "step_separator"),
    ({"step_separator": 5}, "step_separator"),
    ({"step_separator": "\n", "step_aggregation": "median"}, "step_aggregation"),
    ({"step_aggregation": "sum"}, "step_aggregation"),
    ({"step_separator": "\n", "objectives": ["help", "safe"]}, "one objective"),
    ({"step_separator": "\n", "length_head": True}, "no length head"),
])
def test_meta_rejects_bad_step_fields(fields, match):
    with pytest.raises(ModelError, match=match):
        RewardModelMeta.from_json(_meta(**fields), "rewardkit.json")


def test_from_pretrained_rejects_bad_prm_requests(llama_dir, bert_dir):
    with pytest.raises(RewardkitError, match="encodes to no tokens"):
        RewardModel.from_pretrained(llama_dir, step_separator="")
    with pytest.raises(RewardkitError, match="encodes to no tokens"):
        RewardModel.from_pretrained(bert_dir, step_separator="\n")  # WordPiece drops whitespace
    with pytest.raises(ModelError, match="one objective"):
        RewardModel.from_pretrained(llama_dir, step_separator="auto", objectives=["help", "safe"])
    with pytest.raises(ModelError, match="no length head"):
        RewardModel.from_pretrained(llama_dir, step_separator="auto", length_head=True)
