"""A Scorer over frozen backbone features: per-objective linear heads and their combination, and the one-call fit.

`FrozenHeadsScorer` runs the backbone once per `score` call (the model's own batch plans, prefix sharing
included), applies J linear heads to the score features, and combines the J rewards into one:

- "fixed":  given weights w, r = Σ_j w_j r'_j;
- "learned": learned static weights (METHODS §2.2), applied the same way;
- "gate":   g = gate(prompt-end feature) per item (METHODS §2.3), r = Σ_j g_j r'_j;

where r' is r after the optional verbosity de-correlation (r'_j = r_j − λ_j r_v, r'_v ≡ 0), or r itself.

Each ScoreResult carries `objectives` (the raw head outputs r_j, one list per objective) and `weights`: the
weights *on those raw scores* that produced `rewards`, so Σ_j weights[j] · objectives[j] = rewards always
holds. Without de-correlation they are w (or, for the gate, the item's gate output g; the gate reads the
prompt only, so all responses of an item share it). With de-correlation they are T w (T g): w_j for j ≠ v and
−Σ_{j≠v} λ_j w_j on the verbosity objective.

`fit_frozen_heads` builds one from records in one call: features (from a cache when given), a BT head per
objective from its pairwise records, ridge heads from attribute ratings, then the combination.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rewardkit.batching import DEFAULT_BATCH_TOKENS, Planner
from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import DataError, ModelError
from rewardkit.io import atomic_directory, json_ready
from rewardkit.models.reward_model import COMBINATIONS as MODEL_COMBINATIONS
from rewardkit.models.reward_model import META_FILE, RewardModel
from rewardkit.models.scorer import ScoreItem, ScoreResult
from rewardkit.multiobjective.features import (
    Features,
    backbone_features,
    computing_in,
    encode_items,
    extract_features,
    head_parameters,
    model_fingerprint,
    output_layer,
)
from rewardkit.multiobjective.gating import TAU, Decorrelation, GatingNetwork, decorrelate, fit_gate
from rewardkit.multiobjective.heads import RIDGE_ALPHAS, fit_bt_head, fit_ridge, fit_static_weights
from rewardkit.precision import default_device, resolve_precision

FROZEN_META = "frozen_heads.json"
FROZEN_TENSORS = "heads.safetensors"
FROZEN_VERSION = 1
COMBINATIONS = (*MODEL_COMBINATIONS, "gate")  # the model's own kinds, plus the prompt-conditioned gate


class FrozenHeadsScorer:
    """Per-objective linear heads on a frozen backbone, combined by fixed or learned weights or a gate.

    heads: (J, H) one row per objective (H: the model's score-feature size); bias: (J,) (default zeros).
    weights: (J,) or {name: w} for "fixed" (default 1/J each) and "learned". gate: a GatingNetwork for "gate".
    decorrelation: a Decorrelation applied before combining. backbone: how `save` refers to the backbone
    (default: the model's checkpoint path or base model name).
    """

    def __init__(self, model: RewardModel, heads, objectives: Sequence[str], *, bias=None,
                 combination: str = "fixed", weights=None, gate: GatingNetwork | None = None,
                 decorrelation: Decorrelation | None = None, device: str | torch.device | None = None,
                 precision: str = "auto", batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_batch_size: int | None = 64, share_prefix: bool | None = None, backbone: str | None = None,
                 fit_report: FitReport | None = None):
        self.objectives = list(objectives)
        J = len(self.objectives)
        if J == 0 or len(set(self.objectives)) != J:
            raise ModelError(f"objectives must be distinct names, got {self.objectives}")
        self.heads = torch.as_tensor(heads, dtype=torch.float32).detach().cpu()
        h = output_layer(model).in_features
        if self.heads.shape != (J, h):
            raise ModelError(f"heads must have shape ({J}, {h}) (objectives x the backbone's feature size), "
                             f"got {tuple(self.heads.shape)}")
        self.bias = torch.zeros(J) if bias is None else torch.as_tensor(bias, dtype=torch.float32).detach().cpu()
        if self.bias.shape != (J,):
            raise ModelError(f"bias must have shape ({J},), got {tuple(self.bias.shape)}")
        if combination not in COMBINATIONS:
            raise ModelError(f"combination must be one of {COMBINATIONS}, got {combination!r}")
        self.combination = combination
        self.weights = None
        if combination in ("fixed", "learned"):
            if weights is None and combination == "learned":
                raise ModelError("a static combination needs its learned weights (see fit_static_weights)")
            self.weights = self._weight_vector(weights)
        self.gate = gate
        if combination == "gate":
            if gate is None:
                raise ModelError("a gate combination needs a GatingNetwork (see fit_gate)")
            if (gate.in_features, gate.n_objectives) != (h, J):
                raise ModelError(f"the gate maps {gate.in_features} features to {gate.n_objectives} weights; this "
                                 f"scorer needs {h} to {J}")
            gate.eval()
        if decorrelation is not None and len(decorrelation.lambdas) != J:
            raise ModelError(f"the de-correlation has {len(decorrelation.lambdas)} lambdas for {J} objectives")
        self.decorrelation = decorrelation
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.precision = resolve_precision(precision, self.device)
        self.planner = Planner(self.model, batch_tokens=batch_tokens, share_prefix=share_prefix,
                               max_batch_size=max_batch_size)
        self.backbone = backbone or default_backbone_reference(model)
        self.fit_report = fit_report

    def _weight_vector(self, weights) -> torch.Tensor:
        J = len(self.objectives)
        if weights is None:
            return torch.full((J,), 1.0 / J)
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(self.objectives))
            if unknown:
                raise ModelError(f"weights for unknown objective(s) {unknown}; objectives are {self.objectives}")
            weights = [float(weights.get(name, 0.0)) for name in self.objectives]
        w = torch.as_tensor(weights, dtype=torch.float32).detach().cpu().reshape(-1)
        if w.shape != (J,):
            raise ModelError(f"weights need one value per objective ({J}), got {w.numel()}")
        return w

    @classmethod
    def from_model(cls, model: RewardModel, **kwargs) -> FrozenHeadsScorer:
        """The model's own head as frozen heads (its objectives; fixed weights from its meta, else 1/J): the
        same scores as `RewardModelScorer`, through the frozen-feature path."""
        weight, bias = head_parameters(model)
        kwargs.setdefault("weights", model.meta.weights)
        return cls(model, weight, model.meta.objectives, bias=bias, **kwargs)

    # -- scoring ---------------------------------------------------------------------------------------------
    def rewards_of(self, features: torch.Tensor) -> torch.Tensor:
        """Per-objective rewards (n, J) of score features (n, H)."""
        return features.float() @ self.heads.T + self.bias

    def combination_weights(self, prompt_features: torch.Tensor | None, n_items: int) -> torch.Tensor:
        """(n_items, J) weights on the raw per-objective rewards (see the module docstring)."""
        if self.combination == "gate":
            with torch.no_grad():
                w = self.gate(prompt_features.float())
        else:
            w = self.weights.expand(n_items, -1)
        return self.decorrelation.effective_weights(w) if self.decorrelation is not None else w

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """One ScoreResult per item, in order (rewards, objectives, weights, token counts)."""
        encoded = encode_items(self.model, items)
        with computing_in(self.model, self.precision):
            feats, prompts = backbone_features(self.model, encoded, planner=self.planner, precision=self.precision,
                                               device=self.device, prompt_features=self.combination == "gate")
        R = self.rewards_of(feats)  # (n_responses, J)
        W = self.combination_weights(prompts, len(encoded))  # (n_items, J)
        out, k = [], 0
        for i, row in enumerate(encoded):
            r = R[k: k + len(row)]
            k += len(row)
            rewards = (r @ W[i]).tolist()
            out.append(ScoreResult(
                rewards=rewards, objectives={name: r[:, j].tolist() for j, name in enumerate(self.objectives)},
                weights={name: float(W[i, j]) for j, name in enumerate(self.objectives)},
                response_tokens=[e.response_tokens for e in row], truncated=[e.truncated for e in row]))
        return out

    def describe(self) -> dict[str, Any]:
        meta = self.model.meta
        return {
            "kind": "frozen_heads", "name": self.backbone, "objectives": self.objectives,
            "combination": self.combination,
            "weights": None if self.weights is None else dict(zip(self.objectives, self.weights.tolist())),
            "decorrelation": None if self.decorrelation is None else self.decorrelation.to_json(),
            "precision": self.precision, "device": str(self.device), "max_length": meta.max_length,
            "padding_side": meta.padding_side, "score_rule": meta.score_rule, "text_mode": meta.text_mode,
            "chat_template": meta.chat_template if meta.text_mode == "chat" else None,
            "append_eos": meta.append_eos, "quantization": None,
            "batch_plan": "shared-prefix packed" if self.planner.packed else "padded",
        }

    # -- saving ----------------------------------------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike, *, copy_backbone: bool = False) -> Path:
        """Write heads (and gate) as safetensors plus `frozen_heads.json`, atomically. The backbone is referred
        to by `self.backbone` (a path or name), or copied into `backbone/` when `copy_backbone`."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        tensors = {"heads.weight": self.heads.contiguous(), "heads.bias": self.bias.contiguous()}
        if self.weights is not None:
            tensors["weights"] = self.weights.contiguous()
        if self.gate is not None:
            tensors.update({f"gate.{k}": v.detach().cpu().contiguous() for k, v in self.gate.state_dict().items()})
        meta = {
            "format_version": FROZEN_VERSION, "kind": "rewardkit-frozen-heads", "objectives": self.objectives,
            "combination": self.combination, "backbone": "backbone" if copy_backbone else self.backbone,
            "backbone_copied": copy_backbone, "model_fingerprint": model_fingerprint(self.model),
            "gate": self.gate.config() if self.gate is not None else None,
            "decorrelation": self.decorrelation.to_json() if self.decorrelation is not None else None,
            "fit_report": json_ready(self.fit_report.to_json()) if self.fit_report is not None else None,
        }
        with atomic_directory(out_dir) as tmp:
            save_file(tensors, str(tmp / FROZEN_TENSORS))
            if copy_backbone:
                self.model.save_pretrained(tmp / "backbone")
            (tmp / FROZEN_META).write_text(json.dumps(meta, indent=2) + "\n")
        return out_dir

    @classmethod
    def load(cls, path: str | os.PathLike, *, model: RewardModel | None = None, **kwargs) -> FrozenHeadsScorer:
        """A scorer saved by `save`. The backbone is `model` when given, else loaded from the saved reference
        (or copy); either way it must be the backbone the heads were fitted on (ModelError otherwise)."""
        from safetensors.torch import load_file

        path = Path(path)
        meta_path = path / FROZEN_META
        if not meta_path.is_file() or not (path / FROZEN_TENSORS).is_file():
            raise ModelError(f"{path}: not a frozen-heads directory (expected {FROZEN_META} and {FROZEN_TENSORS})")
        try:
            meta = json.loads(meta_path.read_text())
            tensors = load_file(str(path / FROZEN_TENSORS))
        except Exception as e:
            raise ModelError(f"{path}: corrupt frozen-heads directory ({type(e).__name__}: {e})") from e
        if meta.get("format_version", 0) > FROZEN_VERSION:
            raise ModelError(f"{meta_path}: format_version {meta['format_version']} is newer than this rewardkit "
                             f"understands ({FROZEN_VERSION}); upgrade rewardkit")
        if model is None:
            ref = meta.get("backbone")
            if not ref:
                raise ModelError(f"{meta_path}: no backbone reference; pass the model it was fitted on")
            model = RewardModel.from_pretrained(path / ref if meta.get("backbone_copied") else ref)
            kwargs.setdefault("backbone", None if meta.get("backbone_copied") else ref)
        if model_fingerprint(model) != meta.get("model_fingerprint"):
            raise ModelError(f"{path}: these heads were fitted on a different backbone than the model given "
                             "(its fingerprint differs)")
        gate = None
        if meta.get("gate"):
            gate = GatingNetwork(**{k: v for k, v in meta["gate"].items()})
            gate.load_state_dict({k[len("gate."):]: v for k, v in tensors.items() if k.startswith("gate.")})
        decorrelation = Decorrelation.from_json(meta["decorrelation"]) if meta.get("decorrelation") else None
        report = FitReport.from_json(meta["fit_report"]) if meta.get("fit_report") else None
        return cls(model, tensors["heads.weight"], meta["objectives"], bias=tensors["heads.bias"],
                   combination=meta["combination"], weights=tensors.get("weights"), gate=gate,
                   decorrelation=decorrelation, fit_report=report, **kwargs)


def default_backbone_reference(model: RewardModel) -> str | None:
    """How a saved scorer refers to its backbone: the directory the model was loaded from when that is a
    rewardkit checkpoint, else the base model name it was built from (a packaged short name, path or hub id)."""
    loaded_from = getattr(model.hf_model, "name_or_path", None) or None
    if loaded_from and (Path(loaded_from) / META_FILE).is_file():
        return str(Path(loaded_from).resolve())
    ref = model.meta.base_model or loaded_from
    if ref and Path(ref).exists():
        return str(Path(ref).resolve())
    return ref


# -- the one-call fit ------------------------------------------------------------------------------------------
@dataclass
class FitReport:
    """What `fit_frozen_heads` did and how long it took.

    extract_seconds: backbone feature extraction (None when the features came from the cache).
    fit_seconds: every head plus the combination, on the cached features (the number the issue asks for).
    heads: per objective {"kind": "bt" | "ridge", "n", "l2" | "alpha", "train_accuracy" | "train_mse"}.
    combination: {"kind", "train_accuracy", ...}. accuracy: strict accuracy of the combined reward on the
    training pairs, overall and per objective.
    """

    n_items: int
    n_responses: int
    n_pairs: int
    cache_hit: bool
    extract_seconds: float | None
    heads_seconds: float
    combination_seconds: float
    fit_seconds: float
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    combination: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FitReport:
        return cls(**data)


@dataclass
class _Pairs:
    winner: list[int] = field(default_factory=list)  # rows of Features.response_features
    loser: list[int] = field(default_factory=list)
    item: list[int] = field(default_factory=list)
    p: list[float] = field(default_factory=list)
    objective: list[str | None] = field(default_factory=list)


def _collect(records: Sequence[PreferenceRecord], features: Features,
             objective_of: Callable[[PreferenceRecord], str | None]):
    pairs = _Pairs()
    ratings: dict[str, dict[int, float]] = {}  # objective -> response row -> rating
    for i, rec in enumerate(records):
        obj = objective_of(rec)
        for c in rec.comparisons():
            pairs.winner.append(features.rows(i, c.winner))
            pairs.loser.append(features.rows(i, c.loser))
            pairs.item.append(i)
            pairs.p.append(float(c.p))
            pairs.objective.append(obj)
        for k, attrs in enumerate(rec.attributes or []):
            for name, value in (attrs or {}).items():
                if value is not None:
                    ratings.setdefault(name, {})[features.rows(i, k)] = float(value)
    return pairs, ratings


def _accuracy(delta: torch.Tensor) -> float:
    return float((delta > 0).float().mean()) if delta.numel() else float("nan")


def fit_frozen_heads(model: RewardModel, train_records: Sequence[PreferenceRecord],
                     objective_of_record: str | Callable[[PreferenceRecord], str | None] | None, *,
                     objectives: Sequence[str] | None = None, combination: str = "learned", weights=None,
                     verbosity: str | None = None, tau: float = TAU, nonneg: bool = False,
                     cache: str | os.PathLike | None = None, precision: str = "auto",
                     device: str | torch.device | None = None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                     ridge_alphas=RIDGE_ALPHAS, bt_l2: float | str = "auto", gate_steps: int | None = None,
                     gate_options: dict[str, Any] | None = None, seed: int = 42) -> FrozenHeadsScorer:
    """Fit per-objective heads and their combination on frozen features, in one call.

    objective_of_record: the objective a record's pairwise label speaks to (a name for all records, or a
      function of the record; None: the record's pairs feed the combination only). Pairs come from
      `record.comparisons()` (chosen, ranking, scores, votes, soft labels).
    Attribute ratings (`record.attributes`, None = missing) give ridge heads (METHODS §2.1); an objective
      with ratings gets a ridge head even when pairs also name it, and those pairs still feed the combination.
      Every other objective gets a BT head from its pairs.
    objectives: the heads' names and order (default: in order of appearance, pairwise objectives first);
      rated attributes not listed are left out.
    combination: "fixed" (`weights`, default 1/J), "learned" (static weights, w ≥ 0 when `nonneg`) or "gate"; the
      learned ones are fitted by BT on all training pairs. verbosity: an objective name to de-correlate the
      others from (METHODS §2.3, reference set = the training responses), before any combination.
    cache: a feature-cache directory (see `extract_features`): reused when it matches, written when absent.
    gate_steps (default: 2000 on a GPU, 200 on a CPU) and gate_options (other `fit_gate` arguments, e.g.
      hidden_dim, lr) configure the gate; bt_l2 and ridge_alphas the heads (see `fit_bt_head`, `fit_ridge`).

    Returns the scorer; `scorer.fit_report` (saved with it) holds the times and training accuracies.
    """
    if combination not in COMBINATIONS:
        raise ModelError(f"combination must be one of {COMBINATIONS}, got {combination!r}")
    records = list(train_records)
    if callable(objective_of_record):
        objective_of = objective_of_record
    else:
        objective_of = lambda _rec, _name=objective_of_record: _name  # noqa: E731
    cache_hit = cache is not None and (Path(cache) / "features.json").exists()
    features = extract_features(model, records, batch_tokens=batch_tokens, precision=precision, device=device,
                                prompt_features=True, cache=cache)
    fit_device = torch.device(device) if device is not None else default_device()
    X = features.response_features.to(fit_device)
    pairs, ratings = _collect(records, features, objective_of)

    t0 = time.perf_counter()
    names = list(objectives) if objectives is not None else list(dict.fromkeys(
        [o for o in pairs.objective if o is not None] + list(ratings)))
    if not names:
        raise DataError("no objective to fit: no record names an objective and none has attribute ratings")
    unknown = sorted({o for o in pairs.objective if o is not None} - set(names))
    if unknown:
        raise DataError(f"records name objective(s) {unknown} that are not in objectives {names}")
    W = torch.zeros(len(names), features.hidden_size)
    head_info: dict[str, dict[str, Any]] = {}
    rated = [n for n in names if n in ratings]
    if rated:
        rows = sorted({r for n in rated for r in ratings[n]})
        where = {r: k for k, r in enumerate(rows)}
        Y = torch.full((len(rows), len(rated)), float("nan"))
        for j, n in enumerate(rated):
            for r, value in ratings[n].items():
                Y[where[r], j] = value
        ridge = fit_ridge(X[rows], Y, torch.isfinite(Y), alphas=ridge_alphas, seed=seed)
        for j, n in enumerate(rated):
            W[names.index(n)] = ridge.weight[j].cpu()
            labelled = torch.isfinite(Y[:, j])
            pred = X[rows][labelled.to(fit_device)].float() @ ridge.weight[j].to(fit_device)
            mse = float(((pred.cpu() - Y[labelled, j]) ** 2).mean())
            head_info[n] = {"kind": "ridge", "n": int(ridge.n_labels[j]), "alpha": float(ridge.alpha[j]),
                            "train_mse": mse}
    winners, losers = torch.tensor(pairs.winner, dtype=torch.long), torch.tensor(pairs.loser, dtype=torch.long)
    p_all = torch.tensor(pairs.p)
    objective_arr = np.array([o if o is not None else "" for o in pairs.objective], dtype=object)
    for j, n in enumerate(names):
        if n in ratings:
            continue
        sel = torch.from_numpy(np.flatnonzero(objective_arr == n))
        if not len(sel):
            raise DataError(f"objective {n!r} has no labels: no pairwise record names it and no record rates it")
        fit = fit_bt_head(X[winners[sel]], X[losers[sel]], p=p_all[sel], l2=bt_l2, seed=seed)
        W[j] = fit.weight.cpu()
        head_info[n] = {"kind": "bt", "n": len(sel), "l2": fit.l2, "train_accuracy": fit.train_accuracy}
    heads_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    R = features.response_features @ W.T  # (n_responses, J)
    decorrelation = decorrelate(R, names.index(verbosity), tau) if verbosity is not None else None
    Rp = decorrelation.apply(R) if decorrelation is not None else R
    gate = None
    combo: dict[str, Any] = {"kind": combination}
    if combination != "fixed" and not len(winners):
        raise DataError(f"a {combination} combination is learned from pairs, and no record has a pairwise label")
    if combination == "learned":
        fit = fit_static_weights(Rp[winners], Rp[losers], nonneg, p=p_all)
        weights = fit.weights
        combo.update(train_accuracy=fit.train_accuracy, weights=dict(zip(names, weights.tolist())))
    elif combination == "gate":
        options = {"steps": gate_steps, **(gate_options or {})}
        prompts = features.prompt_features[torch.tensor(pairs.item, dtype=torch.long)]
        gfit = fit_gate(prompts, Rp[winners], Rp[losers], p=p_all,
                        device=str(fit_device) if fit_device.type == "cuda" else None, **options)
        gate = gfit.gate
        combo.update(train_accuracy=gfit.train_accuracy, losses=gfit.losses, steps=gfit.steps)
    combination_seconds = time.perf_counter() - t1

    scorer = FrozenHeadsScorer(model, W, names, combination=combination, weights=weights, gate=gate,
                               decorrelation=decorrelation, device=device, precision=features.precision,
                               batch_tokens=batch_tokens)
    # Training accuracy of the combined reward, overall and per objective.
    if len(winners):
        item_weights = scorer.combination_weights(features.prompt_features, features.n_items)  # (n_items, J)
        rewards = (R * item_weights[features.item_of_rows()]).sum(-1)
        delta = rewards[winners] - rewards[losers]
        accuracy = {"all": _accuracy(delta)}
        for n in names:
            sel = torch.from_numpy(objective_arr == n)
            if sel.any():
                accuracy[n] = _accuracy(delta[sel])
    else:
        accuracy = {}
    scorer.fit_report = FitReport(
        n_items=features.n_items, n_responses=features.n_responses, n_pairs=len(winners), cache_hit=cache_hit,
        extract_seconds=None if cache_hit else features.extract_seconds, heads_seconds=heads_seconds,
        combination_seconds=combination_seconds, fit_seconds=heads_seconds + combination_seconds,
        heads=head_info, combination=combo, accuracy=accuracy)
    return scorer
