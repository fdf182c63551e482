"""Training: a typed config, one Accelerate loop for every loss, and checkpoints that resume exactly."""

from rewardkit.train.config import DataSource, EnsembleSettings, LoraSettings, TrainConfig, load_config, save_config
from rewardkit.train.loop import TrainResult, train
from rewardkit.train.members import MembersResult, train_members

__all__ = ["DataSource", "EnsembleSettings", "LoraSettings", "MembersResult", "TrainConfig", "TrainResult",
           "load_config", "save_config", "train", "train_members"]
