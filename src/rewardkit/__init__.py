"""rewardkit: train, evaluate, stress-test and serve reward models."""

__version__ = "0.1.0"
