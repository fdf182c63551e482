"""Frozen backbone features: run the backbone once, keep what every head and gate reads, cache it on disk.

A reward head is a linear map of one vector per response, the *score feature*: the input of the model's
output layer (the last Linear with one output per objective, the layer `RewardModel` keeps in fp32). For a
causal backbone that is the final hidden state at the response's last real token; for an encoder it is what
the classifier reads (BERT: the pooled [CLS] state). Features are captured with a forward pre-hook on that
layer while `RewardModel.forward` runs exactly as it does for scoring, so `head(features)` is the model's
score by construction, whatever the backbone family, plan, precision or PEFT wrapper.

The gate (METHODS §2.3) reads one *prompt feature* per item, the prompt-end state:

- causal backbones: the final hidden state at the prompt's last token (the token before the first response
  token) of the item's first response. Causal attention makes it the state a prompt-only pass would give,
  so it costs nothing: its flat position is added to the plan's `score_index` and read in the same pass.
- encoders attend both ways, so a state inside the full sequence would depend on the response; the prompt
  feature is the score feature of the prompt alone (`[CLS] prompt [SEP]` for BERT), one extra short pass.

`Features.save` writes a directory (`features.safetensors` + `features.json`) atomically; `Features.load`
checks the file's hash and shapes, and, given a model, that the cache was computed by that backbone.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rewardkit.batching import DEFAULT_BATCH_TOKENS, Planner, budget_batches, plan_padded
from rewardkit.errors import ModelError
from rewardkit.io import atomic_directory
from rewardkit.models.reward_model import RewardModel
from rewardkit.precision import compute_context, compute_dtype, default_device, resolve_precision
from rewardkit.text import Encoded, special_layout

FEATURES_FILE = "features.safetensors"
FEATURES_META = "features.json"
FEATURES_VERSION = 1


class FeatureCacheError(ModelError):
    """A feature cache that is missing, corrupt, or was computed by another model or from other data."""


# -- the model's output layer and fingerprint -----------------------------------------------------------------
def output_layer(model: RewardModel) -> nn.Linear:
    """The layer that emits the rewards: the last Linear with one output per model output (the same rule as
    `RewardModel`'s fp32 output layer; under PEFT, the trainable copy of the head). Its outputs are the
    objectives in order, then any extra output the model declares (`meta.n_outputs`, e.g. a length head)."""
    n_out = getattr(model.meta, "n_outputs", len(model.meta.objectives))
    linears = [m for m in model.model.modules() if isinstance(m, nn.Linear) and m.out_features == n_out]
    if not linears:
        raise ModelError(f"cannot find the reward head: no Linear layer with {n_out} output(s) in the model")
    return linears[-1]


def head_parameters(model: RewardModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own objective heads as (weight (J, H), bias (J,)) float32 tensors on the CPU (bias zeros if
    none): one row per objective, in `meta.objectives` order (a length head's row is not a score)."""
    head = output_layer(model)
    J = len(model.meta.objectives)
    weight = head.weight.detach().float().cpu()[:J].clone()
    bias = head.bias.detach().float().cpu()[:J].clone() if head.bias is not None else torch.zeros(J)
    return weight, bias


def model_fingerprint(model: RewardModel) -> str:
    """A short hash of what the features depend on: every backbone parameter's name, shape, dtype and a strided
    sample of up to 4096 of its values (not all of them, so a 7B model hashes in well under a second), plus the
    text settings (template, score rule, max length). The reward head is left out: features do not depend on
    it, so one cache serves any head."""
    head_ids = {id(p) for p in output_layer(model).parameters()}
    h = hashlib.sha256()
    meta = model.meta
    settings = {"score_rule": meta.score_rule, "text_mode": meta.text_mode, "append_eos": meta.append_eos,
                "max_length": meta.max_length, "padding_side": meta.padding_side,
                "chat_template": model.text.chat_template if meta.text_mode == "chat" else None,
                "vocab": len(model.tokenizer)}
    h.update(json.dumps(settings, sort_keys=True).encode())
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            if id(p) in head_ids:
                continue
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            sample = flat[::step][:4096].float().cpu().numpy()
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            h.update(sample.tobytes())
    return h.hexdigest()[:32]


def data_fingerprint(encoded: Sequence[Sequence[Encoded]]) -> str:
    """A hash of the token ids (and boundaries) of every response, in order: identifies the data a cache
    was built from, after templating and truncation."""
    h = hashlib.sha256()
    for group in encoded:
        h.update(b"|")
        for e in group:
            h.update(np.asarray(e.input_ids, dtype=np.int64).tobytes())
            h.update(f":{e.response_start}:{e.token_type_ids is not None};".encode())
    return h.hexdigest()[:32]


# -- the cached features --------------------------------------------------------------------------------------
@dataclass
class Features:
    """Backbone features of a list of items (each a prompt and its responses), flattened response by response.

    response_features: (n_responses, h) float32, the score feature of every response, item by item.
    prompt_features:   (n_items, h) float32 prompt-end features, or None when not computed.
    response_tokens:   (n_responses,) int64, each response's length in tokens (template excluded).
    offsets:           (n_items + 1,) int64; item i's responses are rows offsets[i]:offsets[i + 1].
    ids:               one id per item (the record's id, else its index).
    objectives:        the objective names of the model the features were computed with (its head's rows).
    """

    response_features: torch.Tensor
    prompt_features: torch.Tensor | None
    response_tokens: torch.Tensor
    offsets: torch.Tensor
    ids: list[str]
    objectives: list[str]
    model_fingerprint: str
    data_fingerprint: str
    precision: str = "fp32"
    extract_seconds: float | None = field(default=None, compare=False)

    @property
    def n_items(self) -> int:
        return len(self.ids)

    @property
    def n_responses(self) -> int:
        return int(self.response_features.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.response_features.shape[1])

    def rows(self, item: int, response: int | None = None) -> int | slice:
        """Row(s) of `response_features` for an item (all its responses) or one of its responses."""
        start, end = int(self.offsets[item]), int(self.offsets[item + 1])
        if response is None:
            return slice(start, end)
        if not 0 <= response < end - start:
            raise IndexError(f"item {item} has {end - start} responses, not {response + 1}")
        return start + response

    def item_of_rows(self) -> torch.Tensor:
        """(n_responses,) long: the item each response row belongs to."""
        counts = self.offsets[1:] - self.offsets[:-1]
        return torch.repeat_interleave(torch.arange(self.n_items), counts)

    # -- files ------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache as a directory (features.safetensors + features.json), atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"response_features": self.response_features.float().contiguous(),
                   "response_tokens": self.response_tokens.long().contiguous(),
                   "offsets": self.offsets.long().contiguous()}
        if self.prompt_features is not None:
            tensors["prompt_features"] = self.prompt_features.float().contiguous()
        with atomic_directory(path) as tmp:
            save_file(tensors, str(tmp / FEATURES_FILE))
            meta = {"format_version": FEATURES_VERSION, "kind": "rewardkit-features",
                    "model_fingerprint": self.model_fingerprint, "data_fingerprint": self.data_fingerprint,
                    "objectives": self.objectives, "precision": self.precision, "hidden_size": self.hidden_size,
                    "n_items": self.n_items, "n_responses": self.n_responses,
                    "has_prompt_features": self.prompt_features is not None,
                    "tensors_sha256": _sha256(tmp / FEATURES_FILE), "ids": self.ids}
            (tmp / FEATURES_META).write_text(json.dumps(meta) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, model: RewardModel | None = None,
             fingerprint: str | None = None) -> Features:
        """Read a cache written by `save`. Raises FeatureCacheError when it is missing or corrupt, or when
        `model` (or an explicit `fingerprint`) is given and the cache was computed by a different backbone."""
        from safetensors.torch import load_file

        path = Path(path)
        meta_path, tensor_path = path / FEATURES_META, path / FEATURES_FILE
        if not meta_path.is_file() or not tensor_path.is_file():
            raise FeatureCacheError(f"{path}: not a feature cache (expected {FEATURES_META} and {FEATURES_FILE})")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FeatureCacheError(f"{meta_path}: corrupt feature cache metadata ({e})") from e
        if not isinstance(meta, dict) or meta.get("kind") != "rewardkit-features":
            raise FeatureCacheError(f"{meta_path}: not a rewardkit feature cache")
        if meta.get("format_version", 0) > FEATURES_VERSION:
            raise FeatureCacheError(f"{meta_path}: format_version {meta['format_version']} is newer than this "
                                    f"rewardkit understands ({FEATURES_VERSION}); upgrade rewardkit")
        expected = fingerprint or (model_fingerprint(model) if model is not None else None)
        if expected is not None and meta.get("model_fingerprint") != expected:
            raise FeatureCacheError(
                f"{path}: this feature cache was computed by a different model (fingerprint "
                f"{meta.get('model_fingerprint')}, this model {expected}); delete it or point at a new cache")
        if _sha256(tensor_path) != meta.get("tensors_sha256"):
            raise FeatureCacheError(f"{tensor_path}: corrupt feature cache (its hash does not match "
                                    f"{FEATURES_META}); delete it and extract again")
        try:
            t = load_file(str(tensor_path))
            features = cls(
                response_features=t["response_features"], prompt_features=t.get("prompt_features"),
                response_tokens=t["response_tokens"], offsets=t["offsets"], ids=[str(i) for i in meta["ids"]],
                objectives=list(meta["objectives"]), model_fingerprint=meta["model_fingerprint"],
                data_fingerprint=meta["data_fingerprint"], precision=meta.get("precision", "fp32"))
        except Exception as e:  # a truncated file, a missing tensor or field
            raise FeatureCacheError(f"{path}: corrupt feature cache ({type(e).__name__}: {e})") from e
        problems = features._shape_problems(meta)
        if problems:
            raise FeatureCacheError(f"{path}: corrupt feature cache ({problems})")
        return features

    def _shape_problems(self, meta: dict[str, Any]) -> str | None:
        n_items, n_resp = meta.get("n_items"), meta.get("n_responses")
        if self.offsets.shape != (n_items + 1,) or int(self.offsets[-1]) != n_resp:
            return "offsets do not match the item and response counts"
        if self.response_features.shape != (n_resp, meta.get("hidden_size")):
            return "response_features has the wrong shape"
        if self.response_tokens.shape != (n_resp,):
            return "response_tokens has the wrong shape"
        if meta.get("has_prompt_features") != (self.prompt_features is not None):
            return "prompt_features missing"
        if self.prompt_features is not None and self.prompt_features.shape != (n_items, meta["hidden_size"]):
            return "prompt_features has the wrong shape"
        if len(self.ids) != n_items:
            return "ids do not match the item count"
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# -- running the backbone --------------------------------------------------------------------------------------
def encode_items(model: RewardModel, items: Sequence[Any]) -> list[list[Encoded]]:
    """Every (prompt, response) of every item (a ScoreItem or PreferenceRecord), as the model's scorer
    encodes them."""
    return [[model.text.encode(it.prompt, r.content) for r in it.responses] for it in items]


@contextmanager
def computing_in(model: RewardModel, precision: str) -> Iterator[None]:
    """Run the model in `precision` ("fp32" or "bf16", resolved) and restore its compute dtype after."""
    before = model.compute_dtype
    model.compute_dtype = compute_dtype(precision)
    try:
        yield
    finally:
        model.compute_dtype = before


@torch.inference_mode()
def backbone_features(model: RewardModel, encoded: Sequence[Sequence[Encoded]], *, planner: Planner,
                      precision: str, device: torch.device,
                      prompt_features: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Score features (n_responses, h) of every encoded sequence, group by group, and the prompt-end feature
    (n_groups, h) of every group (None unless `prompt_features`), float32 on the CPU.

    One pass per planned batch, the same plans the model's scorer uses. A group with no sequences gets no
    rows and a zero prompt feature.
    """
    head = output_layer(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    causal = model.meta.score_rule == "last_token"
    sizes = [len(g) for g in encoded]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    h = int(head.in_features)
    out = torch.zeros(int(starts[-1]), h)
    prompts = torch.zeros(len(encoded), h) if prompt_features else None
    try:
        todo = [i for i, g in enumerate(encoded) if g]
        for part in planner.batches([encoded[i] for i in todo]):
            batch = [todo[k] for k in part]
            groups = [encoded[i] for i in batch]
            plan = planner.plan(groups)
            inputs = plan.model_inputs()
            n = int(plan.score_index.numel())
            if causal and prompt_features:
                inputs["score_index"] = torch.cat([plan.score_index, _prompt_end_index(plan.score_index, groups)])
            rows = _run(model, inputs, captured, precision, device)
            if rows.shape[0] != n + (len(groups) if causal and prompt_features else 0):
                raise ModelError(f"the reward head read {rows.shape[0]} rows for {n} sequences: this model's "
                                 "forward pass is not one the frozen-feature path understands")
            k = 0
            for i, g in zip(batch, groups):
                out[starts[i]: starts[i] + len(g)] = rows[k: k + len(g)]
                k += len(g)
            if causal and prompt_features:
                prompts[batch] = rows[n:]
        if prompt_features and not causal:
            _encoder_prompt_features(model, encoded, todo, planner, captured, precision, device, prompts)
    finally:
        hook.remove()
    return out, prompts


def _run(model: RewardModel, inputs: dict[str, torch.Tensor], captured: list[torch.Tensor], precision: str,
         device: torch.device) -> torch.Tensor:
    captured.clear()
    inputs = {k: v.to(device) for k, v in inputs.items()}
    with compute_context(precision, device):
        model(**inputs)
    if len(captured) != 1:
        raise ModelError(f"the reward head ran {len(captured)} times in one forward pass; expected once")
    rows = captured[0]
    return rows.reshape(-1, rows.shape[-1]).float().cpu()


def _prompt_end_index(score_index: torch.Tensor, groups: Sequence[Sequence[Encoded]]) -> torch.Tensor:
    """(n_groups,) flat positions of each group's prompt-end token: token `response_start - 1` of its first
    sequence. In every plan (padded either side, or packed with a shared prefix) a group's first sequence is
    laid out contiguously and ends at its score position, so token t sits at `end - (len - 1) + t`."""
    out, k = [], 0
    for g in groups:
        first = g[0]
        end = int(score_index[k])
        out.append(end - (len(first.input_ids) - 1) + max(first.response_start - 1, 0))
        k += len(g)
    return torch.tensor(out, dtype=torch.long)


def _encoder_prompt_features(model: RewardModel, encoded, todo, planner: Planner, captured, precision, device,
                             prompts: torch.Tensor) -> None:
    """Score features of each group's prompt alone (an encoder's prompt feature), in padded batches."""
    suffix = special_layout(model.tokenizer, pair=False)[2]
    alone = {}
    for i in todo:
        e = encoded[i][0]
        ids = list(e.input_ids[: max(e.response_start, 1)])
        if suffix and ids[-len(suffix):] != suffix:
            ids += suffix
        types = [0] * len(ids) if e.token_type_ids is not None else None
        alone[i] = Encoded(ids, types, len(ids), 0)
    widths = [len(alone[i].input_ids) for i in todo]
    for part in budget_batches(widths, planner.batch_tokens, rows=[1] * len(todo),
                               max_items=planner.max_batch_size):
        batch = [todo[k] for k in part]
        plan = plan_padded([alone[i] for i in batch], planner.pad_id, planner.padding_side)
        prompts[batch] = _run(model, plan.model_inputs(), captured, precision, device)


def _item_ids(items: Sequence[Any]) -> list[str]:
    return [str(getattr(it, "id", None) or i) for i, it in enumerate(items)]


def extract_features(model: RewardModel, items: Sequence[Any], *, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                     precision: str = "auto", device: str | torch.device | None = None,
                     prompt_features: bool = True, share_prefix: bool | None = None,
                     max_batch_size: int | None = 64, cache: str | os.PathLike | None = None) -> Features:
    """Features of every response of every item (ScoreItems or PreferenceRecords), computed once.

    The model moves to `device` (default: CUDA when available) and computes in `precision` ("auto": bf16
    where it is fast), with the same batch plans as its scorer. `cache`: a directory; when it holds features
    of this backbone and these items they are loaded instead of computed; when it holds another model's
    features, or other items', or is a non-empty directory of something else, FeatureCacheError says so
    (nothing is overwritten); otherwise the new features are saved there.
    """
    encoded = encode_items(model, items)
    fingerprint = model_fingerprint(model)
    data = data_fingerprint(encoded)
    if cache is not None and (Path(cache) / FEATURES_META).exists():
        cached = Features.load(cache, fingerprint=fingerprint)
        if cached.data_fingerprint != data:
            raise FeatureCacheError(f"{cache}: this feature cache was computed from other items (or another "
                                    "template or max length); delete it or point at a new cache")
        if prompt_features and cached.prompt_features is None:
            raise FeatureCacheError(f"{cache}: this feature cache has no prompt features; delete it and extract "
                                    "again with prompt_features=True")
        return cached
    if cache is not None and Path(cache).exists() and (not Path(cache).is_dir() or any(Path(cache).iterdir())):
        raise FeatureCacheError(f"{cache}: exists and is not a feature cache; saving there would replace it "
                                "(point cache at a new directory)")
    dev = torch.device(device) if device is not None else default_device()
    model.to(dev).eval()
    resolved = resolve_precision(precision, dev)
    planner = Planner(model, batch_tokens=batch_tokens, share_prefix=share_prefix, max_batch_size=max_batch_size)
    t0 = time.perf_counter()
    with computing_in(model, resolved):
        feats, prompts = backbone_features(model, encoded, planner=planner, precision=resolved, device=dev,
                                           prompt_features=prompt_features)
    sizes = [len(g) for g in encoded]
    features = Features(
        response_features=feats, prompt_features=prompts,
        response_tokens=torch.tensor([e.response_tokens for g in encoded for e in g], dtype=torch.long),
        offsets=torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.long),
        ids=_item_ids(items), objectives=list(model.meta.objectives), model_fingerprint=fingerprint,
        data_fingerprint=data, precision=resolved, extract_seconds=time.perf_counter() - t0)
    if cache is not None:
        features.save(cache)
    return features
