"""The over-optimization lab's config: one YAML file for the best-of-n study and the RL runs.

`rewardkit overopt prepare` writes it, `rewardkit overopt --config FILE` and `rewardkit overopt rl --config
FILE` read it; every command-line flag overrides its field. Paths are read as given (relative to where the
command runs, as in training configs).

    gold: runs/overopt-gold/best
    proxies: {minilm-1000: runs/overopt/proxies/minilm-1000/best, ens: runs/hh-ens}
    policy: smollm2
    prompts: ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz
    n_max: 64
    out: runs/overopt
    rl: {steps: 30, eval_every: 5, betas: [0.04, 0.0]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rewardkit.errors import RewardkitError
from rewardkit.settings_file import read_yaml_mapping, validation_message


class RLSettings(BaseModel):
    """GRPO runs against each proxy (rewardkit.overopt.rl): gold, proxy and KL measured every `eval_every`
    steps on `eval_prompts` held-out prompts, `eval_samples` samples each."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(30, ge=1, description="GRPO steps per run")
    eval_every: int = Field(5, ge=1, description="measure gold, proxy and KL every this many steps (and at 0)")
    betas: list[float] = Field([0.04, 0.0], min_length=1, description="KL penalties: one run per beta and proxy")
    proxies: list[str] | None = Field(None, description="the proxies to run against (default: every proxy)")
    lr: float = Field(5e-6, gt=0)
    prompts_per_step: int = Field(4, ge=1)
    generations: int = Field(4, ge=2, description="completions per prompt (GRPO's group)")
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0)
    eval_prompts: int = Field(16, ge=1, description="the first prompts, held out from training")
    eval_samples: int = Field(4, ge=1, description="samples per held-out prompt at each measurement")
    seed: int = 0

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: list[float]) -> list[float]:
        if any(b < 0 for b in value):
            raise ValueError("a KL penalty is >= 0")
        if len(set(value)) != len(value):
            raise ValueError(f"betas repeat: {value}")
        return value


class OverOptConfig(BaseModel):
    """The best-of-n study (`rewardkit overopt`) and the RL runs (`rewardkit overopt rl`) over one gold model
    and its proxies; field names are the command's flags."""

    model_config = ConfigDict(extra="forbid")
    gold: str = Field(description="the gold reward model (any --model spec)")
    proxies: dict[str, str] = Field(min_length=1, description="NAME: SPEC of every proxy")
    out: str = Field(description="folder for the samples, the score cache and the reports")
    n_max: int | None = Field(None, ge=1, description="the largest n of best-of-n")
    samples: str | None = None
    policy: str | None = None
    prompts: str | None = None
    format: str | None = None
    limit: int | None = Field(None, ge=1)
    pool: int | None = Field(None, ge=1, description="samples per prompt (default n_max)")
    aggregators: list[str] = ["mean", "wco", "uwo"]
    resamples: int = Field(1000, ge=1)
    length_calibration: dict[str, str] = {}
    endpoint: str | None = None
    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(128, ge=1)
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    precision: str = "auto"
    max_length: int | None = Field(None, ge=1)
    batch_tokens: int = Field(16384, ge=1)
    rl: RLSettings = RLSettings()

    @field_validator("proxies")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        if "gold" in value:
            raise ValueError("'gold' names the gold model; name the proxy otherwise")
        return value


def load_overopt_config(path: str | Path | None = None, **fields: Any) -> OverOptConfig:
    """The config file (optional) with the fields that are not None laid over it; `rl` (a dict) is merged
    field by field. Every problem is a RewardkitError naming the file and the field."""
    base = read_yaml_mapping(path) if path is not None else {}
    given = {k: v for k, v in fields.items() if v is not None}
    if isinstance(given.get("rl"), dict) and isinstance(base.get("rl"), dict):
        given["rl"] = {**base["rl"], **{k: v for k, v in given["rl"].items() if v is not None}}
    try:
        return OverOptConfig(**{**base, **given})
    except ValidationError as e:
        raise RewardkitError(validation_message(e, Path(path) if path is not None else None)) from None


def save_overopt_config(config: OverOptConfig, path: str | Path) -> Path:
    from rewardkit.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.model_dump(exclude_defaults=True), sort_keys=False))
    return Path(path)
