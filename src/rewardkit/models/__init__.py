"""Models: the Scorer protocol and the reward model (backbone + head) that implements it."""

from rewardkit.models.reward_model import (
    RewardModel,
    RewardModelMeta,
    load_tokenizer,
    packaged_models,
    resolve_model_path,
)
from rewardkit.models.rm_scorer import RewardModelScorer
from rewardkit.models.scorer import FunctionScorer, ScoreItem, ScoreResult, Scorer

__all__ = ["FunctionScorer", "RewardModel", "RewardModelMeta", "RewardModelScorer", "ScoreItem", "ScoreResult",
           "Scorer", "load_tokenizer", "packaged_models", "resolve_model_path"]
