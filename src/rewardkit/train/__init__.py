"""Training: a typed config, one Accelerate loop for every loss, and checkpoints that resume exactly."""

from rewardkit.train.config import DataSource, LoraSettings, TrainConfig, load_config, save_config
from rewardkit.train.loop import TrainResult, train

__all__ = ["DataSource", "LoraSettings", "TrainConfig", "TrainResult", "load_config", "save_config", "train"]
