"""bf16 compute with fp32 master weights: RewardModel.compute_dtype."""

import pytest
import torch

from rewardkit.batching import plan_padded
from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem
from rewardkit.data.record import Response

PROMPT = [{"role": "user", "content": "Which is the capital of France?"}]
ANSWERS = ["Paris.", "It is Paris, on the Seine.", "I think it might be Lyon."]


def rewards_and_grads(model, dtype):
    model.zero_grad(set_to_none=True)
    model.compute_dtype = dtype
    plan = plan_padded([model.text.encode(PROMPT, a) for a in ANSWERS], model.tokenizer.pad_token_id)
    rewards = model(**plan.model_inputs())[:, 0]
    (rewards * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return rewards.detach(), grads


@pytest.mark.parametrize("family", ["llama_dir", "bert_dir"])
def test_bf16_compute_keeps_fp32_weights_and_close_gradients(family, request):
    model = RewardModel.from_pretrained(request.getfixturevalue(family))
    want, want_grads = rewards_and_grads(model, None)
    got, got_grads = rewards_and_grads(model, torch.bfloat16)
    assert got.dtype == torch.float32  # the output layer computes in fp32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the master weights stay fp32
    assert set(got_grads) == set(want_grads)  # every parameter gets its gradient through the casts
    assert all(g.dtype == torch.float32 for g in got_grads.values())
    # bf16 has ~3 significant digits; measured 2e-3 (llama) and 4e-3 (bert) on these tiny models
    assert (got - want).abs().max() < 2e-2
    flat = lambda g: torch.cat([v.flatten() for v in g.values()])  # noqa: E731
    assert (flat(got_grads) - flat(want_grads)).norm() / flat(want_grads).norm() < 5e-2
    assert (got - want).abs().max() > 0  # it did compute in bf16


def test_scoring_cache_follows_weight_updates(llama_dir):
    model = RewardModel.from_pretrained(llama_dir)
    scorer = RewardModelScorer(model, device="cpu", precision="bf16")
    items = [ScoreItem(PROMPT, [Response(a) for a in ANSWERS])]
    before = scorer.score(items)[0].rewards
    # bit-exact: the same scorer's same call again, on its cached bf16 copies (same values, plans and threads)
    assert scorer.score(items)[0].rewards == before
    with torch.no_grad():
        for p in model.hf_model.base_model.parameters():
            p.mul_(1.5)  # an optimizer step, in place
    after = scorer.score(items)[0].rewards
    assert after != pytest.approx(before, abs=1e-3)
    model.compute_dtype = None
    fresh = RewardModelScorer(model, device="cpu", precision="fp32").score(items)[0].rewards
    assert after == pytest.approx(fresh, abs=5e-2)  # the bf16 answer is the updated model's
