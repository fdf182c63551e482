"""Training checkpoints: the model as a normal rewardkit checkpoint, plus what an exact resume needs.

    OUTPUT/last/            model files (loadable by RewardModel.from_pretrained and, merged, transformers)
    OUTPUT/last/trainer/    optimizer.pt, scheduler.pt, rng.pt (every process's RNG states), state.json; a
                            finished run's last checkpoint has no optimizer.pt (nothing resumes from it, and
                            it is twice the model's size)
    OUTPUT/best/            model files of the best evaluation so far

Each directory is written whole into a temporary sibling and renamed into place, so a crash leaves the
previous checkpoint, never a half-written one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rewardkit.io import atomic_directory
from rewardkit.models.reward_model import RewardModel

TRAINER_DIR = "trainer"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model: RewardModel, *, optimizer=None, scheduler=None,
                    rng_states: list[dict] | None = None, state: dict | None = None,
                    config_yaml: str | None = None, state_dict: dict | None = None) -> None:
    """Write a checkpoint directory atomically (main process only). `state_dict`: the model's weights as
    gathered from all processes when they are sharded."""
    with atomic_directory(path) as tmp:
        model.write_files(tmp, state_dict=state_dict)
        if config_yaml is not None:
            (tmp / "train_config.yaml").write_text(config_yaml)
        if state is not None:
            trainer = tmp / TRAINER_DIR
            trainer.mkdir()
            if optimizer is not None:
                torch.save(optimizer.state_dict(), trainer / "optimizer.pt")
            torch.save(scheduler.state_dict(), trainer / "scheduler.pt")
            torch.save(rng_states, trainer / "rng.pt")
            (trainer / "state.json").write_text(json.dumps(state, indent=2) + "\n")


def has_trainer_state(path: Path) -> bool:
    return (path / TRAINER_DIR / "state.json").is_file()


def load_trainer_state(path: Path) -> tuple[dict, dict | None, dict, list[dict]]:
    """(state, optimizer state dict (None where a finished run saved none), scheduler state dict, RNG states
    per process)."""
    trainer = path / TRAINER_DIR
    state = json.loads((trainer / "state.json").read_text())
    saved = trainer / "optimizer.pt"
    optimizer = torch.load(saved, weights_only=False) if saved.is_file() else None
    scheduler = torch.load(trainer / "scheduler.pt", weights_only=False)
    rngs = torch.load(trainer / "rng.pt", weights_only=False)
    return state, optimizer, scheduler, rngs
