"""Model spec strings: every kind of Scorer from one string, and clear errors for bad ones."""

import pytest

from rewardkit.data.record import Response
from rewardkit.data.synthetic import gold_reward
from rewardkit.errors import RewardkitError
from rewardkit.models import FunctionScorer, RewardModelScorer, ScoreItem, load_scorer
from rewardkit.models.implicit import ImplicitRewardScorer
from rewardkit.models.spec import named_specs, split_options


def test_python_spec_builds_the_callables_scorer():
    scorer = load_scorer("python:rewardkit.data.synthetic:gold_scorer")
    assert isinstance(scorer, FunctionScorer)
    prompt = [{"role": "user", "content": "How do I water a fern?"}]
    responses = [Response("Water it weekly; keep the soil moist."), Response("no")]
    [result] = scorer.score([ScoreItem(prompt, responses)])
    assert result.rewards == [gold_reward(prompt, r) for r in responses]


@pytest.mark.parametrize("spec, message", [
    ("python:os:getcwd", "not a Scorer"),
    ("python:os", "python:MODULE:CALLABLE"),
    ("python:no_such_module_xyz:f", "no_such_module_xyz"),
    ("python:os:no_such_function", "no_such_function"),
])
def test_bad_python_specs_are_clear_errors(spec, message):
    with pytest.raises(RewardkitError, match=message):
        load_scorer(spec)


def test_reward_model_and_dpo_specs(llama_dir):
    assert isinstance(load_scorer(str(llama_dir), precision="fp32"), RewardModelScorer)
    dpo = load_scorer(f"dpo:{llama_dir}@{llama_dir}?beta=0.5", precision="fp32")
    assert isinstance(dpo, ImplicitRewardScorer)
    assert dpo.describe()["beta"] == 0.5
    free = load_scorer(f"dpo:{llama_dir}?mode=avg", precision="fp32")
    assert free.describe()["mode"] == "avg"


def test_split_options_types_and_errors():
    assert split_options("dpo:p@r?beta=0.2&mode=sum", "dpo:", {"beta": float, "mode": str}) == (
        "p@r", {"beta": 0.2, "mode": "sum"})
    with pytest.raises(RewardkitError, match="not a float"):
        split_options("dpo:p?beta=x", "dpo:", {"beta": float})
    with pytest.raises(RewardkitError, match="names no model"):
        split_options("dpo:?beta=1", "dpo:", {"beta": float})


def test_named_specs():
    assert named_specs(["a=minilm", "judge:http://h/v1?model=x", "b=dpo:p@r"]) == [
        ("a", "minilm"), ("judge:http://h/v1?model=x", "judge:http://h/v1?model=x"), ("b", "dpo:p@r")]
    with pytest.raises(RewardkitError, match="two models are named 'a'"):
        named_specs(["a=minilm", "a=smollm2"])


def test_a_server_url_is_a_remote_scorer():
    """An http(s) URL names a running `rewardkit serve`; nothing is contacted until it scores."""
    from rewardkit.client import RewardClient

    scorer = load_scorer("http://127.0.0.1:9/", precision="auto", batch_tokens=16384, share_prefix=None)
    assert isinstance(scorer, RewardClient) and scorer.base_url == "http://127.0.0.1:9"
    with pytest.raises(RewardkitError, match="max_length, precision cannot be set for a served model"):
        load_scorer("https://rm.example:8000", precision="bf16", max_length=128)
