"""A rewardkit reward model as a TRL reward function (GRPOTrainer, RLOOTrainer: `reward_funcs`).

    from trl import GRPOConfig, GRPOTrainer
    from rewardkit.integrations.trl import reward_function

    trainer = GRPOTrainer(model=policy, reward_funcs=[reward_function("runs/hh/best")], args=GRPOConfig(...),
                          train_dataset=prompts)

Why not hand TRL the checkpoint's path instead? TRL then scores it its own way: `prompt + completion` as one
text (the chat template only for conversational data), tokenized without special tokens, right-padded, the
classifier's first logit. An encoder loses the [CLS]/[SEP] it was trained with and a causal model may be read at
another token than in training (docs/rl.md measures how far that drifts). The reward function scores exactly as
`rewardkit score` does, and faster: completions of one prompt share its tokens, batches are planned by tokens.

TRL calls a reward function with keyword arguments: `prompts`, `completions`, `completion_ids`, every other
dataset column, and `trainer_state`, `log_extra`, `log_metric`. Only the first two are read; the rest are
accepted and ignored, so any dataset works. When TRL passes `log_metric`, the share of responses that
truncation shortened is logged as `rewardkit/truncated`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewardkit.errors import RewardkitError
from rewardkit.integrations.rewards import CompletionRewards, load_reward_scorer
from rewardkit.models.scorer import Scorer


class TRLRewardFunction:
    """A callable for `reward_funcs`. Its `__name__` (TRL's log key, `rewards/<name>/mean`) is fixed when it is
    made, so runs and their logs line up."""

    def __init__(self, rewards: CompletionRewards, name: str):
        self.rewards = rewards
        self.__name__ = name

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None,
                 **ignored: Any) -> list[float]:
        if prompts is None or completions is None:
            raise RewardkitError("a reward function needs prompts= and completions= (TRL passes both)")
        rewards = self.rewards(prompts, completions)
        log_metric = ignored.get("log_metric")
        truncated = self.rewards.truncated_fraction()
        if callable(log_metric) and truncated is not None:
            log_metric("rewardkit/truncated", truncated)
        return rewards

    def __repr__(self) -> str:
        return f"TRLRewardFunction({self.__name__!r}, {self.rewards.scorer.describe().get('name')!r})"


def reward_function(model: str | Scorer, *, objective: str | None = None, normalize: bool = False,
                    empty_reward: float | None = None, name: str | None = None, **options: Any
                    ) -> TRLRewardFunction:
    """A TRL reward function that scores with `model`: a model spec (a checkpoint directory, a hub id,
    'judge:...', 'dpo:...', 'python:MODULE:CALLABLE', or the http(s) URL of a `rewardkit serve`) or a Scorer.

    objective:    score with this objective of a multi-objective model.
    normalize:    standardise with the model's stored mean and std.
    empty_reward: reward for an empty completion (default: an error naming it).
    name:         the function's `__name__` in TRL's logs (default 'rewardkit', or 'rewardkit_<objective>').
    options:      loading options of a spec (max_length, precision, batch_tokens, share_prefix, ...).
    """
    scorer = load_reward_scorer(model, **options)
    rewards = CompletionRewards(scorer, objective=objective, normalize=normalize, empty_reward=empty_reward)
    default = "rewardkit" if objective is None else f"rewardkit_{objective}"
    label = name or default
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", label):
        raise RewardkitError(f"name {label!r}: use letters, digits and _ . : - (it becomes a metric key)")
    return TRLRewardFunction(rewards, label)


def policy_checkpoint(name: str) -> str:
    """A causal LM folder TRL can load: a local folder or hub id as it is, a packaged GGUF backbone (smollm2)
    as its cached plain checkpoint (TRL's trainers need full-precision weights to train)."""
    from rewardkit.models.gguf import dequantized_checkpoint
    from rewardkit.models.reward_model import resolve_model

    path, gguf_file = resolve_model(name)
    if gguf_file is None:
        return path
    plain = dequantized_checkpoint(path, gguf_file)
    if plain is None:
        raise RewardkitError(f"policy {name!r}: its GGUF file could not be converted to a plain checkpoint")
    return str(plain)
