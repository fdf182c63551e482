"""CompletionRewards: an RL trainer's flat (prompt, completion) lists scored by any Scorer."""

import math

import pytest

from rewardkit.data.record import Response
from rewardkit.errors import RewardkitError
from rewardkit.integrations.rewards import CompletionRewards, conversation, group_by_prompt, load_reward_scorer
from rewardkit.models.reward_model import RewardModel
from rewardkit.models.rm_scorer import RewardModelScorer
from rewardkit.models.scorer import FunctionScorer, ScoreItem

# The same arithmetic in a different batch layout (one packed row per prompt vs one row per response) rounds
# differently in fp32: ~1e-7 relative on these tiny models.
TOL = dict(rel=1e-5, abs=1e-6)


class RecordingScorer:
    """Returns each response's length as its reward and keeps the items it was asked, to see the grouping."""

    def __init__(self):
        self.calls = []

    def score(self, items):
        from rewardkit.models.scorer import ScoreResult

        self.calls.append(items)
        return [ScoreResult(rewards=[float(len(r.content)) for r in it.responses]) for it in items]

    def describe(self):
        return {"name": "recording"}


def test_standard_and_conversational_pairs():
    assert conversation("Hi", "Hello", 0) == ([{"role": "user", "content": "Hi"}], "Hello")
    prompt = [{"role": "system", "content": "Be kind"}, {"role": "user", "content": "Hi"}]
    completion = [{"role": "assistant", "content": "Let me look."}, {"role": "user", "content": "ok"},
                  {"role": "assistant", "content": "Hello"}]
    messages, response = conversation(prompt, completion, 0)
    assert response == "Hello"
    assert messages == prompt + completion[:2]  # turns before the last join the prompt


@pytest.mark.parametrize("prompt, completion, message", [
    ("Hi", 3, "completion 4: expected text or a list of messages, got int"),
    (7, "x", "prompt 4: expected text or a list of {role, content} messages, got int"),
    ("Hi", [], "completion 4 is an empty list"),
    ("Hi", [{"role": "user", "content": "x"}], "completion 4: its last message must be the assistant's"),
    ("Hi", [{"role": "bot", "content": "x"}], "completion 4, message 0"),
    ("Hi", [{"role": "assistant"}], "completion 4, message 0"),
])
def test_bad_pairs_name_the_item(prompt, completion, message):
    with pytest.raises(RewardkitError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
                       .replace("}", r"\}")):
        conversation(prompt, completion, 4)


def test_completions_of_one_prompt_are_one_item_in_input_order():
    pairs = [([{"role": "user", "content": p}], c) for p, c in
             [("a", "1"), ("b", "22"), ("a", "333"), ("b", "4444"), ("c", "55555")]]
    grouped = group_by_prompt(pairs)
    assert [it.prompt[0]["content"] for it in grouped.items] == ["a", "b", "c"]
    assert [[r.content for r in it.responses] for it in grouped.items] == [["1", "333"], ["22", "4444"], ["55555"]]
    assert grouped.where == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0)]


def test_rewards_come_back_in_completion_order_with_one_call():
    scorer = RecordingScorer()
    rewards = CompletionRewards(scorer)(["a", "b", "a", "b"], ["x", "yy", "zzz", "wwww"])
    assert rewards == [1.0, 2.0, 3.0, 4.0]
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 2  # two prompts, two items


def test_empty_completion_is_an_error_unless_given_a_reward():
    scorer = RecordingScorer()
    with pytest.raises(RewardkitError, match="completion 1 is empty"):
        CompletionRewards(scorer)(["a", "a"], ["x", ""])
    assert scorer.calls == []  # nothing was scored
    assert CompletionRewards(scorer, empty_reward=-5.0)(["a", "a"], ["x", ""]) == [1.0, -5.0]


def test_mismatched_lengths_and_non_lists():
    rewards = CompletionRewards(RecordingScorer())
    with pytest.raises(RewardkitError, match="2 prompts for 1 completions"):
        rewards(["a", "b"], ["x"])
    with pytest.raises(RewardkitError, match="must be lists"):
        rewards("a", "x")


def test_not_a_scorer():
    with pytest.raises(RewardkitError, match="expected a Scorer"):
        CompletionRewards(lambda p, r: 0.0)


def test_rewards_equal_the_library_scores_of_each_pair(qwen2_dir):
    """Grouping by prompt must not mix up responses: each reward is that pair's own score."""
    scorer = RewardModelScorer(RewardModel.from_pretrained(qwen2_dir), precision="fp32")
    prompts = ["Hi there", "What is the capital of France?", "Hi there", "What is the capital of France?"]
    completions = ["Hello!", "Paris.", "Go away.", "The capital of France is Paris, of course."]
    got = CompletionRewards(scorer)(prompts, completions)
    for p, c, r in zip(prompts, completions, got):
        alone = scorer.score([ScoreItem([{"role": "user", "content": p}], [Response(c)])])[0].rewards[0]
        assert r == pytest.approx(alone, **TOL)
    assert len(set(got)) == 4


def test_objective_and_normalization(llama_dir, tmp_path):
    model = RewardModel.from_pretrained(llama_dir, objectives=["helpful", "harmless"])
    model.meta.normalization = {"mean": 0.5, "std": 2.0}
    model.save_pretrained(tmp_path / "rm")
    scorer = load_reward_scorer(str(tmp_path / "rm"), precision="fp32")
    prompts, completions = ["Hi", "Hi"], ["Hello!", "Bye."]
    results = scorer.score([ScoreItem([{"role": "user", "content": "Hi"}], [Response(c) for c in completions])])[0]
    harmless = CompletionRewards(scorer, objective="harmless")(prompts, completions)
    assert harmless == pytest.approx(results.objectives["harmless"], **TOL)
    normalized = CompletionRewards(scorer, normalize=True)(prompts, completions)
    assert normalized == pytest.approx([(r - 0.5) / 2.0 for r in results.rewards], **TOL)
    with pytest.raises(RewardkitError, match="objectives are helpful, harmless"):
        CompletionRewards(scorer, objective="honest")
    with pytest.raises(RewardkitError, match="do not apply to one objective"):
        CompletionRewards(scorer, objective="harmless", normalize=True)


def test_normalize_needs_stored_stats():
    with pytest.raises(RewardkitError, match="no stored normalization stats"):
        CompletionRewards(FunctionScorer(lambda p, r: 1.0), normalize=True)


def test_truncated_fraction(qwen2_dir):
    scorer = RewardModelScorer(RewardModel.from_pretrained(qwen2_dir, max_length=48), precision="fp32")
    rewards = CompletionRewards(scorer)
    values = rewards(["Hi", "Hi"], ["Hello", "word " * 40])
    assert all(math.isfinite(v) for v in values)
    assert rewards.truncated_fraction() == 0.5


def test_loading_options_apply_to_specs_only():
    with pytest.raises(RewardkitError, match="apply when the model is a spec"):
        load_reward_scorer(RecordingScorer(), precision="fp32")
    with pytest.raises(RewardkitError):
        load_reward_scorer("python:no_such_module:make")
