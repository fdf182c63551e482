"""`compile: true` (RewardModel.compile_backbone) trains the same model as the plain loop: same losses step by
step, same saved weights' scores, and the backbone is plain again after train() returns."""

import json

import pytest
import torch

from tiny import save_causal_backbone, toy_pairs, write_jsonl

from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem
from rewardkit.data.record import Response
from rewardkit.train import TrainConfig, train


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_causal_backbone(tmp_path_factory.mktemp("llama-compile"), "llama", add_bos=True)


def _run(backbone, data, out, compile_: bool):
    config = TrainConfig(model=str(backbone), data=[str(data)], output=str(out), batch_size=8, max_steps=3,
                         lr=1e-3, max_length=64, precision="fp32", progress=False, compile=compile_)
    result = train(config)
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return result, losses


def test_compiled_training_matches_the_plain_loop(backbone, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(24))
    _, plain = _run(backbone, data, tmp_path / "plain", False)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    _, compiled = _run(backbone, data, tmp_path / "compiled", True)
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert len(plain) == len(compiled) == 3
    assert compiled == pytest.approx(plain, abs=1e-5)

    items = [ScoreItem([{"role": "user", "content": "Tell me about cats."}],
                       [Response("Thank you for asking!"), Response("No. whatever")])]
    scores = [RewardModelScorer(RewardModel.from_pretrained(tmp_path / run / "last"), precision="fp32")
              .score(items)[0].rewards for run in ("plain", "compiled")]
    assert scores[1] == pytest.approx(scores[0], abs=1e-5)


def test_compile_backbone_can_be_undone(backbone):
    model = RewardModel.from_pretrained(backbone)
    model.compile_backbone()
    assert model.hf_model.base_model._compiled_call_impl is not None
    model.compile_backbone(False)
    assert model.hf_model.base_model._compiled_call_impl is None
    assert set(model.state_dict()) == set(RewardModel.from_pretrained(backbone).state_dict())
