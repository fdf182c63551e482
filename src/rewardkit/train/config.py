"""The training config: one typed object, loadable from YAML, every field overridable with key=value.

It is validated completely before any model loads, so a typo fails in a second with the field and the
reason, not after minutes of loading. The resolved config is saved with every checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rewardkit.errors import RewardkitError
from rewardkit.settings_file import load_settings


class LoraSettings(BaseModel):
    """LoRA adapters on the backbone (PEFT); the reward head is always fully trained and saved."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"


class ProcessSettings(BaseModel):
    """A process reward model (METHODS.md §4): one P(step correct) per reasoning step, trained on step labels
    with binary cross-entropy (soft labels allowed), unlabeled steps masked."""

    model_config = ConfigDict(extra="forbid")
    separator: str = Field("auto", description="text after every step, where its score is read ('auto': a "
                           "newline, or [SEP] for tokenizers that drop whitespace)")
    aggregation: Literal["product", "min", "mean", "last"] = Field("min", description="how step scores become "
                                                                     "the solution's reward")
    last_step_only: bool = Field(False, description="train on the solution's outcome at its last step only "
                                 "(an outcome model with the same layout)")


class EnsembleSettings(BaseModel):
    """Train several members that differ by `vary`, and write their ensemble manifest (rewardkit.train.members).

    vary: "seed" (head initialisation and data order), "order" (data order only, one initialisation), or
    "bootstrap" (each member trains on a resample of the training records drawn with replacement; one
    initialisation).

    backbone: "separate" trains K whole models, one after another. "shared" and "frozen" train one model with K
    heads in one pass (the backbone fine-tuned, fully or with `lora`, or frozen with only the heads learning),
    so the ensemble costs about one forward pass. There the heads differ by their initialisation ("seed") or
    by an online bootstrap ("bootstrap": each record weighs Poisson(1) times in each head's loss); one pass
    has one data order, so "order" needs separate members.
    """

    model_config = ConfigDict(extra="forbid")
    members: int = Field(5, ge=2, description="how many members (or heads) to train")
    vary: Literal["seed", "order", "bootstrap"] = "seed"
    backbone: Literal["separate", "shared", "frozen"] = Field(
        "separate", description="separate models, or K heads on one shared (trained) or frozen backbone")
    aggregator: Literal["mean", "wco", "uwo", "mean_minus_std"] = Field(
        "mean", description="the manifest's aggregator (any can be chosen at scoring time too)")

    @property
    def heads(self) -> list[str] | None:
        """The objective names of a shared-backbone ensemble's heads (None for separate members)."""
        return None if self.backbone == "separate" else [f"head{i}" for i in range(self.members)]


class DataSource(BaseModel):
    """A data file whose preference labels speak to one objective of a multi-objective model.

    In YAML: `data: [{path: helpful.jsonl, objective: helpfulness}, ...]`. A plain path is a DataSource with
    no objective. A record's own meta["objective"] overrides the file's.
    """

    model_config = ConfigDict(extra="forbid")
    path: str
    objective: str | None = None


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # what to train
    model: str = Field("minilm", description="backbone or reward model: directory, hub id or 'minilm'")
    data: list[str | DataSource] = Field(default_factory=list, description="training data files (any supported "
                                         "format): paths, or {path, objective} for multi-objective runs")
    format: str | None = None
    field_map: dict[str, str] | None = None
    format_options: dict[str, Any] | None = Field(None, description="options of the data format, e.g. "
                                                  "{neutral: 0.0} for PRM800K's neutral steps")
    split: Literal["all", "train"] = Field("all", description="'train' keeps the agreed first 80% of each file")
    skip_bad: bool = False
    eval_data: list[str | DataSource] = Field(default_factory=list, description="held-out files; an "
                                              "objective tag gives per-objective accuracy")
    eval_split: Literal["all", "test"] = "all"
    output: str = "runs/train"

    # objective
    loss: str = "bt"
    eps: float = Field(0.1, description="label noise for the smoothed and robust losses")
    tau: float = Field(1.0, gt=0, description="teacher temperature for distill_soft")
    center: float = Field(0.0, ge=0, description="reward-centering coefficient (0 = off)")
    teacher: str | None = Field(None, description="teacher reward model for the distill_* losses")

    # multi-objective (METHODS.md §2) and length de-biasing (§3.1)
    objectives: list[str] | None = Field(None, description="one head per name (None: the model's own; one "
                                         "'reward' objective for a new head)")
    combination: Literal["fixed", "learned"] = Field("fixed", description="how objectives combine into the one "
                                                     "reward: fixed weights, or static weights learned with BT "
                                                     "on the combined score (heads detached)")
    weights: dict[str, float] | None = Field(None, description="combination weights per objective (fixed), or "
                                             "the starting point (learned); default equal")
    combination_nonnegative: bool = Field(True, description="learned weights stay >= 0 (softplus)")
    combination_lr: float = Field(1e-2, gt=0, description="learning rate of the learned combination weights")
    attribute_weight: float = Field(1.0, ge=0, description="weight of the masked attribute-regression loss "
                                    "(records' attributes named like an objective) next to the preference loss")
    attribute_scale: Literal["none", "helpsteer"] = Field("none", description="'helpsteer': 0-4 ratings are "
                                                          "trained as (y + 0.5) / 5")
    length_head: bool = Field(False, description="ODIN: a hidden length head r_L, trained with the quality "
                              "heads as r_Q + r_L and de-correlated from them; scores use r_Q only. Pearson runs "
                              "over each micro-batch from every process, so a micro-batch is one forward pass "
                              "(raise grad_accum to fit memory; the global batch when grad_accum = 1)")
    length_weight: float = Field(1.0, ge=0, description="ODIN lambda_L: |rho(r_Q, len)| - rho(r_L, len)")
    orthogonal_weight: float = Field(1.0, ge=0, description="ODIN lambda_O: |w_Q . w_L| of the head weights")

    # process reward models (METHODS.md §4)
    process: ProcessSettings | None = Field(None, description="train a process reward model (None: one is "
                                            "trained, with these defaults, when the data has step labels and "
                                            "nothing else)")

    # optimisation
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    lr: float = Field(3e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    batch_size: int = Field(16, ge=1, description="records (pairs) per optimizer step, over all processes")
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_length: int = Field(512, ge=8)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    fast_attention: bool = Field(True, description="CPU: SDPA's forward with a recompute backward "
                                                     "(rewardkit.attention; a compiled kernel in bf16, any "
                                                     "length), same gradients")
    fused_layers: bool = Field(True, description="CPU, bf16: RMSNorm and SiLU-gated MLPs of Llama-style "
                                                   "backbones through fused kernels, and linear layers' weight "
                                                   "gradients straight to fp32 (rewardkit.fused), same math")
    compile: bool = Field(False, description="torch.compile the backbone (inductor, dynamic shapes): faster "
                          "steps after a compile that takes minutes, so for long runs (2-core CPU, SmolLM2: "
                          "1.23x per step after ~330 s of compiling; bench/compile_gain.py)")
    share_prefix: bool | None = Field(None, description="causal backbones: one packed row per record, its "
                                      "responses sharing the prompt's tokens (None: wherever the model passes "
                                      "the equivalence check)")
    batch_tokens: int = Field(16384, ge=64, description="most tokens per forward pass; a larger micro-batch "
                              "is split into several passes with the same gradient")
    seed: int = 0
    data_seed: int | None = Field(None, description="seed of the data order alone (None: seed)")
    lora: LoraSettings | None = None
    ensemble: EnsembleSettings | None = Field(None, description="train members of an ensemble instead of one "
                                              "model (see EnsembleSettings)")

    # bookkeeping
    eval_every: int = Field(0, ge=0, description="evaluate every N steps (0: at the end of each epoch)")
    save_every: int = Field(0, ge=0, description="save the 'last' checkpoint every N steps (0: with each eval)")
    log_every: int = Field(10, ge=1)
    log_with: Literal["none", "tensorboard", "wandb"] = "none"
    progress: bool = True

    @field_validator("data", "eval_data", mode="before")
    @classmethod
    def _paths(cls, v: Any) -> Any:
        v = [v] if isinstance(v, (str, os.PathLike, dict)) else v
        return [str(x) if isinstance(x, os.PathLike) else x for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        from rewardkit.losses import validate_loss

        validate_loss(self.loss, **self.loss_params())
        if self.loss.startswith("distill") and not self.teacher:
            raise ValueError(f"loss {self.loss!r} needs a teacher model (teacher=PATH)")
        if self.log_with != "none" and not _installed(self.log_with):
            raise ValueError(f"log_with {self.log_with!r} needs the {self.log_with} package: "
                             f"pip install {self.log_with}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        self._check_objectives()
        self._check_heads()
        return self

    def _check_heads(self) -> None:
        """A shared-backbone ensemble is one run whose objectives are its heads."""
        heads = self.ensemble.heads if self.ensemble else None
        if heads is None:
            return
        backbone, vary = self.ensemble.backbone, self.ensemble.vary
        if vary == "order":
            raise ValueError(f"ensemble.vary 'order' needs separate members: {backbone} heads train in one pass, "
                             "which sees one data order (use vary: seed or bootstrap)")
        if self.objectives is not None or self.length_head or self.combination != "fixed" or self.weights:
            raise ValueError(f"a {backbone}-backbone ensemble's objectives are its heads: leave objectives, "
                             "weights, combination and length_head unset")
        if self.process is not None:
            raise ValueError("a process reward model has one head; train its ensemble with backbone: separate")
        if any(src.objective for src in self.data_sources()):
            raise ValueError(f"a {backbone}-backbone ensemble trains every head on every record: remove the "
                             "data files' objective tags")
        if backbone == "frozen" and self.lora is not None:
            raise ValueError("ensemble.backbone 'frozen' trains the heads only; LoRA adapters need backbone: shared")
        if vary == "bootstrap" and self.loss in ("kwise", "plackett_luce"):
            raise ValueError(f"loss {self.loss!r} does not weight its rankings, so it cannot train bootstrap "
                             "heads; use a pairwise loss or vary: seed")

    def model_objectives(self) -> list[str] | None:
        """The objectives the model is built with: a shared-backbone ensemble's heads, else `objectives`."""
        heads = self.ensemble.heads if self.ensemble else None
        return heads or self.objectives

    def _check_objectives(self) -> None:
        names = self.objectives
        if names is not None:
            if not names or not all(isinstance(n, str) and n.strip() for n in names):
                raise ValueError("objectives must be a non-empty list of names")
            if len(set(names)) != len(names):
                raise ValueError(f"objectives must be distinct, got {names}")
            if "_length" in names:
                raise ValueError("'_length' is reserved for the length head")
        tagged = {src.objective for src in self.data_sources() + self.eval_sources() if src.objective}
        if tagged and names is None:
            raise ValueError(f"data objective(s) {sorted(tagged)} need the objectives field (objectives: [...])")
        unknown = sorted(tagged - set(names or []))
        if unknown:
            raise ValueError(f"data objective(s) {unknown} are not among the objectives {names}")
        if self.weights is not None:
            if names is None or set(self.weights) != set(names):
                raise ValueError(f"weights must give one number per objective ({names}), got {sorted(self.weights)}")
            if self.combination == "learned" and self.combination_nonnegative and min(self.weights.values()) <= 0:
                raise ValueError("weights must be > 0 to start non-negative learned weights")
        if self.combination == "learned" and (names is None or len(names) < 2):
            raise ValueError("combination 'learned' needs two or more objectives")

    def data_sources(self) -> list[DataSource]:
        """The training files, each with its objective (None when the file names none)."""
        return [_source(x) for x in self.data]

    def eval_sources(self) -> list[DataSource]:
        return [_source(x) for x in self.eval_data]

    def data_paths(self) -> list[str]:
        return [src.path for src in self.data_sources()]


    def loss_params(self) -> dict[str, float]:
        """The parameters the chosen loss takes (eps, tau, center), from this config."""
        from rewardkit.losses import LOSSES

        objective = LOSSES.get(self.loss)
        names = objective.defaults if objective is not None else {}
        return {name: getattr(self, name) for name in names}


def _source(entry: str | DataSource) -> DataSource:
    return entry if isinstance(entry, DataSource) else DataSource(path=str(entry))


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                **fields: Any) -> TrainConfig:
    """YAML file (optional), then keyword fields (CLI flags), then `key=value` overrides, in that order.

    Override keys may be dotted (`lora.r=8`); values are parsed as YAML (`lr=1e-4`, `lora=null`).
    Every problem is a RewardkitError naming the field.
    """
    return load_settings(TrainConfig, path, overrides, **fields)


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    from rewardkit.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.model_dump(), sort_keys=False))
