"""A local causal LM as the policy: n samples per prompt with their token ids, seeded per prompt and sample."""

import pytest
import torch

from rewardkit.data.prompts import Prompt
from rewardkit.data.record import user_prompt
from rewardkit.errors import RewardkitError
from rewardkit.sampling.local import LocalPolicy
from rewardkit.sampling.settings import SamplingSettings

from sampling_helpers import QUESTIONS


def prompts(k=4):
    return [Prompt(f"q{i}", user_prompt(q)) for i, q in enumerate(QUESTIONS[:k])]


def ids_of(generations):
    return [g.response_ids for g in generations]


def test_n_samples_per_prompt_with_the_policys_token_ids(policy):
    settings = SamplingSettings(n=3, max_new_tokens=10, seed=1)
    gens = list(policy.generate(prompts(), settings))
    assert len(gens) == 4
    tok = policy.tokenizer
    for p, g in zip(prompts(), gens):
        assert len(g.texts) == len(g.response_ids) == len(g.finish_reasons) == len(g.logprobs) == 3
        rendered = tok.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        assert g.prompt_ids == [tok.bos_token_id] + tok(rendered, add_special_tokens=False)["input_ids"]
        for text, ids, reason, lps in zip(g.texts, g.response_ids, g.finish_reasons, g.logprobs):
            assert 1 <= len(ids) <= 10 and len(lps) == len(ids) and all(lp <= 0 for lp in lps)
            assert reason == ("stop" if ids[-1] in policy.stop_ids else "length")
            assert reason == "stop" or len(ids) == 10
            assert text == policy.decode(ids, reason)
        assert len({tuple(ids) for ids in g.response_ids}) == 3  # three different draws of a random model


def test_the_same_seed_gives_the_same_samples_whatever_the_batch(policy):
    settings = SamplingSettings(n=2, max_new_tokens=8, seed=5)
    together = list(policy.generate(prompts(), settings))
    # Each row draws from its own generator, so only its own logits matter; a row's logits are the same in any
    # batch up to float rounding, which would flip a draw only where two perturbed scores tie to ~1e-6.
    alone = [g for p in prompts() for g in policy.generate([p], settings)]
    assert ids_of(alone) == ids_of(together)
    assert ids_of(policy.generate(prompts(), settings)) == ids_of(together)
    other_seed = list(policy.generate(prompts(), SamplingSettings(n=2, max_new_tokens=8, seed=6)))
    assert ids_of(other_seed) != ids_of(together)


def test_temperature_zero_is_greedy(policy):
    gens = list(policy.generate(prompts(2), SamplingSettings(n=2, max_new_tokens=6, temperature=0.0)))
    for g in gens:
        assert g.response_ids[0] == g.response_ids[1]
        ids = torch.tensor([g.prompt_ids])
        with torch.no_grad():
            plain = policy.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=6)
        assert g.response_ids[0] == plain[0, ids.shape[1]:].tolist()[: len(g.response_ids[0])]


def test_top_p_narrows_the_draws(policy):
    wide = list(policy.generate(prompts(2), SamplingSettings(n=4, max_new_tokens=4, seed=3)))
    narrow = list(policy.generate(prompts(2), SamplingSettings(n=4, max_new_tokens=4, seed=3, top_p=1e-6)))
    greedy = list(policy.generate(prompts(2), SamplingSettings(n=4, max_new_tokens=4, temperature=0)))
    assert ids_of(narrow) == ids_of(greedy) != ids_of(wide)  # a nucleus of one token is the greedy pick


def test_the_models_own_generation_defaults_do_not_apply(policy_dir, policy):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    model.generation_config.repetition_penalty = 5.0
    model.generation_config.no_repeat_ngram_size = 1
    model.generation_config.do_sample = True
    other = LocalPolicy(model, AutoTokenizer.from_pretrained(policy_dir), precision="fp32")
    settings = SamplingSettings(n=2, max_new_tokens=8, seed=2)
    assert ids_of(other.generate(prompts(), settings)) == ids_of(policy.generate(prompts(), settings))


def test_a_prompt_over_the_context_is_a_clear_error(policy):
    long = Prompt("long", user_prompt("word " * 300))
    with pytest.raises(RewardkitError, match="prompt 'long' is .* over the policy's context of 256"):
        list(policy.generate([long], SamplingSettings(n=1, max_new_tokens=4)))


def test_an_unknown_policy_is_a_clear_error(tmp_path):
    with pytest.raises(RewardkitError, match="cannot load .* as a causal language model"):
        LocalPolicy.from_pretrained(tmp_path / "no-such-model")


def test_the_shared_prefill_gives_the_samples_of_n_separate_rows(policy, monkeypatch):
    settings = SamplingSettings(n=3, max_new_tokens=8, seed=9)
    shared = list(policy.generate(prompts(), settings))
    monkeypatch.setattr(policy, "prefill", lambda *args: None)  # generate computes each of the n rows itself
    # The prompt's KV cache computed once or n times: the same values up to float rounding (see above).
    assert ids_of(policy.generate(prompts(), settings)) == ids_of(shared)
