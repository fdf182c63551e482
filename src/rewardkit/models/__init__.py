"""Models: the Scorer protocol, the reward model (backbone + head) and the other Scorers: a DPO policy read as
an implicit reward model and an LLM judge. `load_scorer` builds any of them from one string."""

from rewardkit.models.reward_model import (
    RewardModel,
    RewardModelMeta,
    load_tokenizer,
    packaged_models,
    resolve_model_path,
)
from rewardkit.models.rm_scorer import RewardModelScorer
from rewardkit.models.scorer import FunctionScorer, ScoreItem, ScoreResult, Scorer
from rewardkit.models.spec import load_scorer

__all__ = ["FunctionScorer", "RewardModel", "RewardModelMeta", "RewardModelScorer", "ScoreItem", "ScoreResult",
           "Scorer", "load_scorer", "load_tokenizer", "packaged_models", "resolve_model_path"]
