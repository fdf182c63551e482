"""`compile: true` (RewardModel.compile_backbone) trains the same model as the plain loop: same losses step by
step, same saved weights' scores, and the backbone is plain again after train() returns. A compiled scorer
(`RewardModelScorer(compile=True)`, `rewardkit score --compile`) gives the plain scores."""

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


def test_compiled_scorer_gives_the_plain_scores(backbone, tmp_path):
    from typer.testing import CliRunner

    from rewardkit.cli import app

    items = [ScoreItem([{"role": "user", "content": f"Tell me about topic {i}."}],
                       [Response("Thank you for asking!" * (1 + i % 3)), Response("No."), Response("Maybe " * i)])
             for i in range(6)]
    plain = [r.rewards for r in RewardModelScorer(RewardModel.from_pretrained(backbone), precision="fp32").score(items)]
    torch._dynamo.reset()
    compiled_scorer = RewardModelScorer(RewardModel.from_pretrained(backbone), precision="fp32", compile=True)
    assert compiled_scorer.model.hf_model.base_model._compiled_call_impl is not None
    compiled = [r.rewards for r in compiled_scorer.score(items)]
    assert [x for r in compiled for x in r] == pytest.approx([x for r in plain for x in r], abs=1e-5)

    # The CLI flag reaches the scorer; a scorer without a backbone to compile is a clear error.
    rows = write_jsonl(tmp_path / "in.jsonl", toy_pairs(4))
    runner = CliRunner()
    result = runner.invoke(app, ["score", "-m", str(backbone), "-i", str(rows), "-o", str(tmp_path / "out.jsonl"),
                                 "--precision", "fp32", "--compile"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 4
    result = runner.invoke(app, ["score", "-m", "python:builtins:len", "-i", str(rows),
                                 "-o", str(tmp_path / "bad.jsonl"), "--compile"])
    assert result.exit_code == 2 and "compile applies to reward models" in result.output
