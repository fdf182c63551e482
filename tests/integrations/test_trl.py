"""The rewardkit reward function inside TRL's own trainers: real GRPOTrainer and RLOOTrainer steps on CPU."""

import sys
from pathlib import Path

import pytest

trl = pytest.importorskip("trl", reason="TRL is the optional extra rewardkit[rl] (make test installs it)")

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))  # serve_helpers

from rewardkit.data.record import Response  # noqa: E402
from rewardkit.errors import RewardkitError  # noqa: E402
from rewardkit.integrations.trl import reward_function  # noqa: E402
from rewardkit.models.reward_model import RewardModel  # noqa: E402
from rewardkit.models.rm_scorer import RewardModelScorer  # noqa: E402
from rewardkit.models.scorer import ScoreItem  # noqa: E402

TOL = dict(rel=1e-5, abs=1e-6)  # fp32, a packed row per prompt against one row per response
PROMPTS = ["Hi there", "What is the capital of France?", "Explain why the sky is blue.", "Add two numbers."]


class Recording:
    """Stands in for the reward function's CompletionRewards and keeps what each call got and gave."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, prompts, completions):
        rewards = self.inner(prompts, completions)
        self.calls.append((list(prompts), list(completions), rewards))
        return rewards

    def truncated_fraction(self):
        return self.inner.truncated_fraction()


@pytest.fixture(scope="module")
def rm_dir(llama_dir, tmp_path_factory):
    model = RewardModel.from_pretrained(llama_dir)
    model.meta.normalization = {"mean": -0.1, "std": 0.02}
    return model.save_pretrained(tmp_path_factory.mktemp("trl-rm") / "rm")


def alone(scorer, prompt, completion) -> float:
    """The library's score of one pair, scored by itself."""
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    text = completion if isinstance(completion, str) else completion[-1]["content"]
    return scorer.score([ScoreItem(messages, [Response(text)])])[0].rewards[0]


def test_two_grpo_steps(qwen2_dir, rm_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    rf = reward_function(str(rm_dir), precision="fp32")
    rf.rewards = recording = Recording(rf.rewards)
    # An extra column that TRL passes to reward functions as a keyword: it must be accepted and ignored.
    data = Dataset.from_list([{"prompt": p, "source": f"row {i}"} for i, p in enumerate(PROMPTS)])
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=2, logging_steps=1, report_to=[], use_cpu=True,
                      bf16=False, save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=str(qwen2_dir), reward_funcs=[rf], args=args, train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(qwen2_dir))
    trainer.train()

    logs = [h for h in trainer.state.log_history if "rewards/rewardkit/mean" in h]
    assert [h["step"] for h in logs] == [1, 2]
    assert len(recording.calls) == 2
    scorer = RewardModelScorer(RewardModel.from_pretrained(rm_dir), precision="fp32")
    for log, (prompts, completions, rewards) in zip(logs, recording.calls):
        assert len(completions) == 4 and all(isinstance(c, str) for c in completions)
        assert set(prompts) <= set(PROMPTS)
        # TRL logs the mean of what the function returned ...
        assert log["rewards/rewardkit/mean"] == pytest.approx(sum(rewards) / len(rewards), **TOL)
        assert log["rewardkit/truncated"] == 0.0
        # ... and what it returned is each pair's own library score.
        for p, c, r in zip(prompts, completions, rewards):
            if c:
                assert r == pytest.approx(alone(scorer, p, c), **TOL)


def test_an_rloo_step_on_conversational_data(qwen2_dir, rm_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RLOOConfig, RLOOTrainer

    rf = reward_function(str(rm_dir), precision="fp32", name="hh_rm", empty_reward=0.0)
    rf.rewards = recording = Recording(rf.rewards)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    args = RLOOConfig(output_dir=str(tmp_path / "rloo"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=1, logging_steps=1, report_to=[], use_cpu=True,
                      bf16=False, save_strategy="no", seed=0)
    trainer = RLOOTrainer(model=str(qwen2_dir), reward_funcs=[rf], args=args, train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(qwen2_dir))
    trainer.train()
    assert any("rewards/hh_rm/mean" in h for h in trainer.state.log_history)
    (prompts, completions, rewards), = recording.calls
    assert all(isinstance(p, list) and isinstance(c, list) for p, c in zip(prompts, completions))
    scorer = RewardModelScorer(RewardModel.from_pretrained(rm_dir), precision="fp32")
    for p, c, r in zip(prompts, completions, rewards):
        assert r == pytest.approx(alone(scorer, p, c) if c[-1]["content"] else 0.0, **TOL)


def test_a_served_model_behind_the_function(rm_dir):
    """A `rewardkit serve` URL as the model: the same rewards as in-process, and normalised with the
    server's stats."""
    from serve_helpers import server_in_thread

    from rewardkit.serve.app import create_app

    scorer = RewardModelScorer(RewardModel.from_pretrained(rm_dir), precision="fp32")
    prompts, completions = ["Hi there", "Hi there", "Add two numbers."], ["Hello!", "Go away.", "Two plus two."]
    local = reward_function(scorer)(prompts=prompts, completions=completions)
    with server_in_thread(create_app(scorer)) as url:
        remote = reward_function(url)(prompts=prompts, completions=completions, trainer_state=None)
        normalized = reward_function(url, normalize=True)(prompts=prompts, completions=completions)
    assert remote == pytest.approx(local, **TOL)
    assert normalized == pytest.approx([(r + 0.1) / 0.02 for r in local], rel=1e-4)


def test_names_and_bad_input(rm_dir):
    rf = reward_function(str(rm_dir), precision="fp32")
    assert rf.__name__ == "rewardkit"
    assert reward_function(str(rm_dir), name="hh-v2").__name__ == "hh-v2"
    with pytest.raises(RewardkitError, match="becomes a metric key"):
        reward_function(str(rm_dir), name="my reward")
    with pytest.raises(RewardkitError, match="prompts= and completions="):
        rf(completions=["x"])
    with pytest.raises(RewardkitError, match="completion 1: expected text or a list of messages, got dict"):
        rf(prompts=["a", "b"], completions=["x", {"content": "y"}])
    with pytest.raises(RewardkitError, match="completion 0 is empty"):
        rf(prompts=["a"], completions=[""])
    with pytest.raises(RewardkitError):
        reward_function("/no/such/model/dir")


def test_policy_checkpoint_passes_a_plain_folder_through(qwen2_dir):
    from rewardkit.integrations.trl import policy_checkpoint

    # (a packaged GGUF backbone becomes its cached plain checkpoint: tests/models/test_gguf_cache.py)
    assert policy_checkpoint(str(qwen2_dir)) == str(qwen2_dir)
