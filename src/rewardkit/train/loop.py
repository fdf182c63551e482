"""The training recipe: setup, data, model, optimizer, train, save — on Hugging Face Accelerate.

The same code runs on a CPU, one GPU, or many processes (`accelerate launch`, DDP/FSDP/DeepSpeed). The loss is
chosen by config (rewardkit.losses); this loop never knows which one it is.

Every record counts once in the loss, whatever its number of responses, and every process, micro-step and
process count computes the same global batch mean: micro-batch losses are scaled by their share of the
global batch (times the process count, since DDP averages gradients over processes).

Multi-objective models (METHODS.md §2) train one head per objective: a record's comparisons train the head of
the objective its data file (or meta["objective"]) names, with the configured loss; attribute ratings named
like an objective train that head by masked MSE; both in one run add up (attribute_weight). Learned static
combination weights are trained online, by BT on the combined score of detached head outputs, so the heads
are frozen as far as the weights' loss goes (§2.2). The ODIN length head (§3.1) adds r_L to every head in the
preference loss and the de-correlation and orthogonality terms, over each micro-batch gathered from every
process (the global batch when grad_accum = 1).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from rewardkit.attention import restore_attention, use_fast_attention
from rewardkit.fused import restore_layers, use_fused_layers
from rewardkit.errors import RewardkitError
from rewardkit.io import append_jsonl, keep_steps_upto
from rewardkit.losses import (
    bradley_terry,
    compute_loss,
    masked_mse,
    odin_length_loss,
    odin_orthogonality,
    step_bce,
)
from rewardkit.models.reward_model import RewardModel
from rewardkit.precision import compute_context, compute_dtype, resolve_precision
from rewardkit.batching import Planner
from rewardkit.train.batches import build_examples, collate_examples, epoch_batches, fill, forward_parts, shard
from rewardkit.train.checkpoint import (
    has_trainer_state,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from rewardkit.train.config import DataSource, TrainConfig

# Fields that may change between an interrupted run and its resumption without changing the trajectory.
RESUME_FREE_FIELDS = {"progress", "log_every", "log_with", "eval_every", "save_every", "eval_data", "eval_split",
                      "fast_attention", "fused_layers", "compile", "share_prefix", "batch_tokens"}


@dataclass
class TrainResult:
    output: Path
    steps: int
    records_trained: int  # record visits (pairs for pairwise data) summed over steps
    train_seconds: float
    final_eval: dict | None = None
    best_accuracy: float | None = None
    resumed_from: int = 0
    history: list[dict] = field(default_factory=list)


class NonFiniteLoss(RewardkitError):
    pass


def train(config: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train a reward model as `config` says and return where it went and how it did.

    `on_step(step, metrics)` is called after every optimizer step (and after that step's checkpoint).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, broadcast_object_list, gather_object

    # -- setup ---------------------------------------------------------------------------------------------
    heads = config.ensemble.heads if config.ensemble is not None else None
    if config.ensemble is not None and heads is None:
        raise RewardkitError("config: 'ensemble' with separate backbones trains several models: use "
                             "rewardkit.train.train_members (the CLI does), not train()")
    out = Path(config.output)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              log_with=None if config.log_with == "none" else config.log_with,
                              project_dir=str(out))
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if sharded and (config.length_head or config.combination == "learned"):
        raise RewardkitError("length_head and learned combination weights read parameters outside the forward "
                             "pass, which FSDP and DeepSpeed shard; train them with DDP or one process")
    precision = resolve_precision(config.precision, accelerator.device)
    if world > 1:  # "auto" may be a probe timed per process: every rank computes in the main process's choice
        precision = broadcast_object_list([precision])[0]
    resume_state = _resume_point(out, config)
    torch.manual_seed(config.seed)

    # -- data (before the model: bad data fails in seconds) -------------------------------------------------
    train_records, train_info = load_training_data(config.data_sources(), config, config.split)
    eval_records, eval_info = (load_training_data(config.eval_sources(), config, config.eval_split)
                               if config.eval_data else ([], {}))

    # -- model ---------------------------------------------------------------------------------------------
    source = out / "last" if resume_state else config.model
    process = _process_settings(config, train_records)
    model = RewardModel.from_pretrained(source, max_length=config.max_length, seed=config.seed,
                                        objectives=config.model_objectives(), length_head=config.length_head,
                                        step_separator=process.separator if process else None,
                                        # a detected (not configured) process model keeps a checkpoint's rule
                                        step_aggregation=config.process.aggregation if config.process else None)
    if model.meta.is_process and config.process is None:  # as the checkpoint or the defaults say
        from rewardkit.train.config import ProcessSettings

        process = ProcessSettings(aggregation=model.meta.step_aggregation)
    if process is not None and not model.meta.is_process:
        raise RewardkitError(f"{source} is an outcome reward model; a process reward model trains from a "
                             "backbone or a process model's checkpoint")
    objectives = _check_objectives(model, config, source)
    n_obj = len(objectives)
    if config.lora is not None and model.meta.lora is None:
        model.enable_lora(**config.lora.model_dump())
    if heads is not None and config.ensemble.backbone == "frozen":
        model.freeze_backbone()
    _set_combination(model, config, resumed=resume_state is not None)
    learned = model.combiner is not None
    examples, unusable = build_examples(train_records, model, objectives, config.attribute_scale,
                                        every_objective=_head_weights(config) if heads else None,
                                        process=process is not None,
                                        last_step_only=bool(process and process.last_step_only))
    if not examples and process is not None:
        raise RewardkitError("no training record has a labelled step")
    if not examples:
        raise RewardkitError("no training record has a usable preference label"
                             + (f" or a rating for one of the objectives {objectives}" if n_obj > 1 else ""))
    if learned and not any(ex.has_pairs for ex in examples):
        raise RewardkitError("combination 'learned' trains the weights on preference pairs, and the data has none")
    # Per-term metrics and provenance appear only where there is more than the one preference loss, so a
    # single-objective run logs and saves exactly what it always did.
    detailed = n_obj > 1 or config.length_head or any(ex.targets for ex in examples)
    terms = (["step"] if process else ["pref"]) + (["attr"] if any(ex.targets for ex in examples) else []) + (
        ["combination"] if learned else []) + (["length", "orth"] if config.length_head else [])
    truncated = sum(e.truncated > 0 for ex in examples for e in ex.encoded)
    teacher = _teacher_scores(config, train_records, accelerator.device) if config.teacher else None

    # The plan is checked on the plain model, before any wrapper shards it.
    planner = Planner(model, batch_tokens=config.batch_tokens, share_prefix=config.share_prefix)

    # -- optimizer -----------------------------------------------------------------------------------------
    params = [p for n, p in model.named_parameters() if p.requires_grad and n != "combiner"]
    # The fused kernel is several times faster per step than the per-tensor loop on both CPU and GPU.
    groups: list = params if not learned else [
        {"params": params},
        {"params": [model.combiner], "lr": config.combination_lr, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay,
                                  fused=accelerator.device.type in ("cpu", "cuda"))
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    core: RewardModel = accelerator.unwrap_model(model)
    # Dropout stays off (eval mode) while training: it would make the responses of one pair see different
    # networks, and reward models are trained without it (METHODS.md §1.1).
    model.eval()
    if config.fast_attention and accelerator.device.type == "cpu":
        use_fast_attention(core.hf_model)  # CPU flash attention's backward is slow on short sequences
    if config.fused_layers and accelerator.device.type == "cpu":
        use_fused_layers(core.hf_model)  # one pass for RMSNorm and the gated MLP product, each way
    if config.compile:
        core.compile_backbone()

    # bf16 copies of the weights in each pass (fp32 master weights); sharded backends cast their own shards.
    core.compute_dtype = None if sharded else compute_dtype(precision)
    step, start_epoch, start_batch, best = 0, 0, 0, None
    if resume_state and sharded:
        raise RewardkitError("resuming under FSDP or DeepSpeed is not supported yet (the optimizer state is "
                             "sharded); resume with DDP, or start a new --output")
    if resume_state:
        state, opt_state, sched_state, rngs = load_trainer_state(out / "last")
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
        elif not state.get("finished"):
            raise RewardkitError(f"{out / 'last'} has no optimizer state to resume from; delete {out} to start over")
        scheduler.load_state_dict(sched_state)
        set_rng_state(rngs[rank])
        step, start_epoch, start_batch, best = (state["step"], state["epoch"], state["next_batch"],
                                                state.get("best_accuracy"))
        if learned and "combination_raw" in state:  # exact, where meta.weights went through softplus
            with torch.no_grad():
                core.combiner.copy_(torch.tensor(state["combination_raw"], dtype=core.combiner.dtype))
    loss_params = config.loss_params()
    config_yaml = yaml.safe_dump(config.model_dump(), sort_keys=False)
    metrics_path = out / "metrics.jsonl"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.yaml").write_text(config_yaml)
        keep_steps_upto(metrics_path, step)
        if accelerator.trackers == [] and config.log_with != "none":
            accelerator.init_trackers("rewardkit", config=_flat_config(config))
    core.meta.training = {"data": _plain(config.data), "split": config.split, "records": len(examples),
                          "fingerprint": train_info["fingerprint"], "loss": config.loss, "seed": config.seed}
    if process is not None:
        core.meta.training["process"] = process.model_dump()  # as configured; the resolved separator is in meta
    counts = _objective_counts(examples, objectives)
    if detailed:
        core.meta.training.update({"objectives": counts, "attribute_weight": config.attribute_weight,
                                   "attribute_scale": config.attribute_scale, "length_head": config.length_head})

    def gathered_weights() -> dict | None:
        """Full weights from every process where they are sharded (FSDP, DeepSpeed); None otherwise."""
        return accelerator.get_state_dict(model) if sharded else None

    def checkpoint(name: str, *, with_state: bool, epoch: int, next_batch: int) -> None:
        rngs = gather_object([rng_state()]) if with_state else None
        weights = gathered_weights()
        finished = step >= total_steps  # the run's last checkpoint: nothing will resume from its optimizer state
        if main:
            state = {"step": step, "epoch": epoch, "next_batch": next_batch, "best_accuracy": best,
                     "total_steps": total_steps, "finished": finished} if with_state else None
            if state is not None and learned:
                state["combination_raw"] = core.combiner.detach().cpu().tolist()
            save_checkpoint(out / name, core, optimizer=None if finished else optimizer, scheduler=scheduler,
                            rng_states=rngs, state=state, config_yaml=config_yaml, state_dict=weights)
        accelerator.wait_for_everyone()

    def run_eval() -> dict | None:
        nonlocal best
        report = None
        if main and eval_records:
            report = evaluate_model(core, eval_records, accelerator.device, precision, eval_info)
        accelerator.wait_for_everyone()
        report = gather_object([report])[0] if world > 1 else report
        if report is not None and report.get("accuracy") is not None:
            if best is None or report["accuracy"] > best:
                best = report["accuracy"]
                weights = gathered_weights()
                if main:
                    save_checkpoint(out / "best", core, config_yaml=config_yaml, state_dict=weights)
                accelerator.wait_for_everyone()
        return report

    # -- train ---------------------------------------------------------------------------------------------
    if main:
        _print(f"training on {len(examples)} records ({unusable} without a usable label, {truncated} "
               f"responses truncated to {config.max_length} tokens), {total_steps} steps, {world} "
               f"process(es), precision {precision}, "
               f"{'shared-prefix packed' if planner.packed else 'padded'} batches"
               + (", already finished: nothing to do" if step >= total_steps else
                  f", resuming at step {step}" if step else ""))
        if process is not None:
            n_labelled = sum(ex.n_step_labels for ex in examples)
            _print(f"process reward model: {n_labelled} labelled steps"
                   + (" (the outcome, on each solution's last step)" if process.last_step_only else "")
                   + f", separator {core.meta.step_separator!r}, aggregation {core.meta.step_aggregation}")
        if detailed:
            _print(_describe_objectives(counts, core, config, _ignored_attributes(train_records, objectives)))
    history: list[dict] = []
    records_trained, train_seconds = 0, 0.0
    last_eval: dict | None = None
    progress = _progress(config.progress and main, total_steps, step)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            batches = epoch_batches(examples, config.batch_size, _data_seed(config), epoch)
            first = start_batch if epoch == start_epoch else 0
            for b in range(first, len(batches)):
                if step >= total_steps:
                    break
                t0 = time.perf_counter()
                global_batch = fill(batches[b], world * config.grad_accum)
                micro_batches = shard(global_batch, world, rank, config.grad_accum)
                # Every term is normalised over the global batch: preference records, attribute ratings.
                n_pref = sum(examples[j].has_pairs for j in global_batch)
                n_ratings = sum(examples[j].n_ratings for j in global_batch)
                n_steps = sum(examples[j].n_step_labels for j in global_batch)
                loss_sum = torch.zeros((), device=accelerator.device)
                term_sums = torch.zeros(len(terms), device=accelerator.device)
                tokens = 0
                # Token budgets may cut a micro-batch into several forward passes; only the last one syncs
                # gradients. Sharded backends gather weights per forward, so every rank must run the same
                # number: there a micro-batch is one forward pass. So it is with a length head, whose
                # correlation term gathers each micro-batch from every process.
                passes = [part for micro in micro_batches for part in (
                    [micro] if sharded or config.length_head else forward_parts(examples, micro, planner))]
                for i, part in enumerate(passes):
                    sync = nullcontext() if i == len(passes) - 1 else accelerator.no_sync(model)
                    with sync:
                        plan, labels = collate_examples([examples[j] for j in part], planner, teacher, n_obj)
                        with compute_context(precision, accelerator.device):
                            outputs = model(**plan.to(accelerator.device).model_inputs(), all_outputs=True)
                        r_obj, r_len = core.split_outputs(outputs.float())  # (n_responses, n_obj), (n_responses,)
                        labels = labels.to(accelerator.device)
                        local, shared, parts = _pass_loss(
                            core, config, loss_params, labels, r_obj, r_len, n_pref, n_ratings, accelerator,
                            n_steps)
                        # local terms are this process's share of a global mean (DDP averages, hence * world);
                        # shared ones are already global (gathered), the same on every process.
                        accelerator.backward(local * world + shared if shared is not None else local * world)
                        loss_sum += local.detach() + (shared.detach() / world if shared is not None else 0.0)
                        term_sums += torch.stack([parts.get(t, torch.zeros((), device=accelerator.device))
                                                  for t in terms]).detach()
                        tokens += plan.real_tokens
                global_loss = accelerator.reduce(loss_sum, "sum").item()
                if not math.isfinite(global_loss):
                    raise NonFiniteLoss(
                        f"loss became {global_loss} at step {step + 1} (epoch {epoch + 1}); stopped before "
                        f"applying it. The last good checkpoint is {out / 'last'} (step {_saved_step(out)}). "
                        "Lower the learning rate or check the data.")
                grad_norm = None
                if config.max_grad_norm is not None:
                    grad_norm = float(accelerator.clip_grad_norm_(params, config.max_grad_norm))
                    if not math.isfinite(grad_norm):
                        raise NonFiniteLoss(
                            f"gradient norm became {grad_norm} at step {step + 1}; stopped before applying it. "
                            f"The last good checkpoint is {out / 'last'} (step {_saved_step(out)}).")
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                seconds = time.perf_counter() - t0
                train_seconds += seconds
                records_trained += len(batches[b])
                metrics = {"step": step, "epoch": epoch + 1, "loss": global_loss, "lr": scheduler.get_last_lr()[0],
                           "grad_norm": grad_norm, "records_per_s": len(batches[b]) / seconds,
                           "tokens": int(accelerator.reduce(torch.tensor(tokens, device=accelerator.device),
                                                            "sum").item())}
                if detailed:
                    term_values = accelerator.reduce(term_sums, "sum").tolist()
                    metrics.update({f"loss_{t}": v for t, v in zip(terms, term_values)})
                    if n_obj > 1:
                        metrics.update({f"weight_{name}": w for name, w in zip(objectives,
                                                                                core.combination_weights())})
                at_epoch_end = b == len(batches) - 1 or step >= total_steps
                due_eval = (config.eval_every and step % config.eval_every == 0) or (
                    not config.eval_every and at_epoch_end)
                if due_eval:
                    last_eval = run_eval()
                    if last_eval is not None:
                        metrics["eval_accuracy"] = last_eval.get("accuracy")
                        for name, per in (last_eval.get("objectives") or {}).items():
                            metrics[f"eval_accuracy_{name}"] = per.get("accuracy")
                due_save = due_eval or (config.save_every and step % config.save_every == 0) or step >= total_steps
                if due_save:
                    last_of_epoch = b == len(batches) - 1  # resume at the next batch, or the next epoch's first
                    checkpoint("last", with_state=True, epoch=epoch + last_of_epoch,
                               next_batch=0 if last_of_epoch else b + 1)
                history.append(metrics)
                if main:
                    append_jsonl(metrics_path, metrics)
                    if config.log_with != "none":
                        accelerator.log({k: v for k, v in metrics.items() if v is not None}, step=step)
                    if progress is not None:
                        progress.update(metrics)
                if on_step is not None:
                    on_step(step, metrics)
            if step >= total_steps:
                break
    finally:
        if progress is not None:
            progress.close()
        restore_attention(core.hf_model)
        restore_layers(core.hf_model)
        core.compile_backbone(False)
    accelerator.end_training()
    return TrainResult(out, step, records_trained, train_seconds, last_eval, best,
                       resumed_from=resume_state.get("step", 0) if resume_state else 0, history=history)


# -- pieces ------------------------------------------------------------------------------------------------------
def _pass_loss(core: RewardModel, config: TrainConfig, loss_params: dict, labels, r_obj: torch.Tensor,
               r_len: torch.Tensor | None, n_pref: int, n_ratings: int, accelerator, n_steps: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    """One forward pass's loss: (local, shared, per-term values for the log).

    A process model's outputs are one logit per step read; its loss is the step BCE, normalised by the global
    batch's labelled steps (n_steps).

    local: this process's part of the global-batch mean of the preference, attribute and combination terms.
    shared: the ODIN terms, computed over the micro-batch gathered from every process (None without a length
    head), weighted per micro-step.
    r_obj: per-objective rewards (n_responses, n_objectives); r_len: the length head (n_responses,) or None.
    """
    n_obj = r_obj.shape[1]
    zero = torch.zeros((), device=r_obj.device)
    local, parts = zero, {}
    if labels.steps is not None:
        step = step_bce(r_obj[:, 0], labels.steps, labels.step_mask, denominator=n_steps)
        local = local + step
        parts["step"] = step
    if labels.pairs is not None:
        share = labels.n_pref / n_pref
        pair_rewards = r_obj + r_len[:, None] if r_len is not None else r_obj  # ODIN ranks r_Q + r_L
        inputs = labels.pairs.to(r_obj.device, rewards=pair_rewards.flatten())
        pref = compute_loss(config.loss, inputs, **loss_params)
        if labels.pair_mass is not None:  # bootstrap counts: sum(w * l) over this pass's records, not the mean
            pref = pref * (labels.pair_mass / labels.n_pref) if labels.pair_mass > 0 else 0.0 * r_obj.sum()
        pref = pref * share
        local = local + pref
        parts["pref"] = pref
        if core.combiner is not None:
            # BT on s = w^T r with the heads detached: only the weights learn from it (METHODS.md §2.2).
            s = core.combine(r_obj.detach())  # (n_responses,)
            comb = bradley_terry(s[inputs.winner // n_obj] - s[inputs.loser // n_obj], inputs.weight) * share
            local = local + comb
            parts["combination"] = comb
    elif core.combiner is not None:
        local = local + 0.0 * core.combiner.sum()  # every parameter takes part in every backward (DDP)
    if labels.targets is not None:
        attr = masked_mse(r_obj, labels.targets, labels.target_mask, denominator=n_ratings)
        local = local + config.attribute_weight * attr
        parts["attr"] = attr
    shared = None
    if r_len is not None:
        quality, length_out, lengths = _gather_with_grad(
            [r_obj, r_len[:, None], labels.lengths[:, None]], accelerator)
        len_term = odin_length_loss(quality, length_out[:, 0], lengths[:, 0])
        weight = core.head_layer.weight  # (n_obj + 1, hidden): the quality heads, then the length head
        orth = odin_orthogonality(weight[:n_obj].float(), weight[n_obj].float())
        shared = (config.length_weight * len_term + config.orthogonal_weight * orth) / config.grad_accum
        world = accelerator.num_processes
        parts["length"] = len_term.detach() / (config.grad_accum * world)  # summed over processes in the log
        parts["orth"] = orth.detach() / (config.grad_accum * world)
    return local, shared, parts


def _gather_with_grad(tensors: list[torch.Tensor], accelerator) -> list[torch.Tensor]:
    """Each (n_i, d) tensor concatenated over every process in rank order, gradients flowing back to each
    process's own rows (their sum over processes). Processes may hold different n_i."""
    if accelerator.num_processes == 1:
        return tensors
    from torch.distributed.nn.functional import all_gather

    sizes = accelerator.gather(torch.tensor([tensors[0].shape[0]], device=tensors[0].device)).tolist()
    out = []
    for t in tensors:
        padded = torch.nn.functional.pad(t, (0, 0, 0, max(sizes) - t.shape[0]))
        out.append(torch.cat([g[:n] for g, n in zip(all_gather(padded), sizes)]))
    return out


def _process_settings(config: TrainConfig, records):
    """The config's process settings; else, when every record carries step labels and no other label, the
    defaults (a process reward model is what such data trains). None: an outcome model."""
    if config.process is not None:
        return config.process
    from rewardkit.train.config import ProcessSettings

    def steps_only(r) -> bool:
        return bool(r.step_labels) and not r.comparisons() and not r.attributes

    n_steps = sum(bool(r.step_labels) for r in records)
    if records and all(steps_only(r) for r in records):
        if config.objectives and len(config.objectives) > 1 or config.length_head:
            raise RewardkitError("the data has step labels only: a process reward model, which has one "
                                 "objective and no length head")
        return ProcessSettings()
    if n_steps:
        raise RewardkitError(f"{n_steps} of {len(records)} training records have step labels and the others "
                             "preference or attribute labels: a model trains on one kind. Train a process reward "
                             "model on the step-labelled files (process: {...}), or an outcome model without them")
    return None


def _check_objectives(model: RewardModel, config: TrainConfig, source) -> list[str]:
    """The model's objectives, which must be the config's when it names some, and its length head."""
    have, want = model.meta.objectives, config.model_objectives()
    if want is not None and have != want:
        raise RewardkitError(f"{source} has the objectives {have}, but the config asks for {want}; "
                             "train from a backbone to get new heads")
    if model.meta.length_head != config.length_head:
        raise RewardkitError(f"{source} {'has' if model.meta.length_head else 'has no'} length head, but the "
                             f"config says length_head={config.length_head}; train from a backbone to change it")
    return list(have)


def _head_weights(config: TrainConfig) -> Callable:
    """A shared-backbone ensemble's weight of each record in each head's loss: 1 (heads differ by their
    initialisation), or Poisson(1) counts that are a pure function of (seed, record id, head) (an online
    bootstrap, the same on resumption and on every process)."""
    from rewardkit.train.members import poisson_counts

    k = config.ensemble.members
    if config.ensemble.vary == "bootstrap":
        return lambda record: poisson_counts(record.id, config.seed, k)
    return lambda record: [1] * k


def _set_combination(model: RewardModel, config: TrainConfig, resumed: bool) -> None:
    """The combination a multi-objective model is trained and saved with: fixed weights from the config (else
    the checkpoint's, else equal), or static weights learned from there. A resumed run keeps its own."""
    names = model.meta.objectives
    if len(names) == 1:
        return
    if config.weights is not None and not resumed:
        model.meta.weights = [float(config.weights[n]) for n in names]
    elif model.meta.weights is None:
        model.meta.weights = [1.0 / len(names)] * len(names)
    model.meta.combination = config.combination
    if config.combination == "learned":
        model.enable_learned_combination(config.combination_nonnegative)


def _objective_counts(examples, objectives: list[str]) -> dict[str, dict[str, int]]:
    counts = {name: {"preference_records": 0, "ratings": 0} for name in objectives}
    for ex in examples:
        if ex.has_pairs:
            for j, w in ex.objective_weights(len(objectives)):
                counts[objectives[j]]["preference_records"] += w > 0
        for row in ex.targets or []:
            for name, v in zip(objectives, row):
                counts[name]["ratings"] += v is not None
    return counts


def _ignored_attributes(records, objectives: list[str]) -> list[str]:
    names = {k for r in records for attrs in (r.attributes or []) for k in (attrs or {})}
    return sorted(names - set(objectives))


def _describe_objectives(counts: dict, model: RewardModel, config: TrainConfig, ignored: list[str]) -> str:
    heads = ", ".join(f"{name} ({c['preference_records']} preference records, {c['ratings']} ratings)"
                      for name, c in counts.items())
    lines = [f"objectives: {heads}"]
    if len(counts) > 1:
        weights = ", ".join(f"{n} {w:.3g}" for n, w in zip(counts, model.combination_weights()))
        lines.append(f"combination {model.meta.combination}: {weights}"
                     + (f" (learned at lr {config.combination_lr})" if model.combiner is not None else ""))
    if config.length_head:
        lines.append(f"ODIN length head: lambda_L {config.length_weight}, lambda_O {config.orthogonal_weight}")
    if ignored:
        lines.append(f"attributes that name no objective, ignored: {', '.join(ignored)}")
    return "\n".join(lines)


def _plain(entries: list) -> list:
    """Data entries as JSON: paths stay strings, tagged files become {path, objective}."""
    return [e if isinstance(e, str) else e.model_dump(exclude_none=True) for e in entries]


def _data_seed(config: TrainConfig) -> int:
    return config.seed if config.data_seed is None else config.data_seed


def load_training_data(sources: list[str | DataSource], config: TrainConfig, split: str):
    """Records of every file (agreed split applied per file); a file's name becomes the subset of records
    that have none, so per-file accuracy shows up in the report, and a file's objective tag becomes the
    objective of records that name none."""
    from rewardkit.data import load_split

    if not sources:
        raise RewardkitError("config: field 'data': no training data given")
    records, skipped = [], 0
    digest = hashlib.sha256()
    for src in sources:
        src = src if isinstance(src, DataSource) else DataSource(path=str(src))
        path = src.path
        result = load_split(path, split, config.format, config.field_map, skip_bad=config.skip_bad,
                            **({"format_options": config.format_options} if config.format_options else {}))
        part = result.records
        name = Path(path).parent.name if Path(path).name.startswith(("train.", "test.")) else Path(path).stem
        for r in part:
            r.meta.setdefault("subset", name)
            if src.objective is not None:
                r.meta.setdefault("objective", src.objective)
            digest.update(json.dumps(r.to_json(), sort_keys=True, default=str).encode())
        records.extend(part)
        skipped += result.skipped
    return records, {"skipped": skipped, "fingerprint": digest.hexdigest()[:16]}


def evaluate_model(model: RewardModel, records, device, precision: str, info: dict) -> dict:
    """The spine's evaluation (strict accuracy, calibration, length bias) on the held-out records."""
    from rewardkit.eval import evaluate
    from rewardkit.models.rm_scorer import RewardModelScorer

    previous = model.compute_dtype
    try:
        scorer = RewardModelScorer(model, device=device, precision=precision)
        results = scorer.score(records)
        report = evaluate(records, results, scorer.describe(), skipped=info.get("skipped", 0))
        if model.meta.is_process and report.get("steps"):
            report["accuracy"] = report["steps"]["step_accuracy"]  # what picks the best checkpoint
        return report
    finally:  # training goes on with its own setting, and without the scorer's cached weight copies
        model.compute_dtype = previous
        model.clear_cast_cache()


def _teacher_scores(config: TrainConfig, records, device) -> dict[str, list[float]]:
    from rewardkit.models.rm_scorer import RewardModelScorer

    scorer = RewardModelScorer.from_pretrained(config.teacher, device=device, precision=config.precision)
    return {r.id: res.rewards for r, res in zip(records, scorer.score(records))}


def _resume_point(out: Path, config: TrainConfig) -> dict | None:
    """The saved state to resume from, if OUTPUT/last holds one made with the same trajectory settings."""
    last = out / "last"
    if not has_trainer_state(last):
        return None
    saved_path = last / "train_config.yaml"
    saved = yaml.safe_load(saved_path.read_text()) if saved_path.is_file() else {}
    current = config.model_dump()
    changed = sorted(k for k in current if k not in RESUME_FREE_FIELDS and saved.get(k) != current[k])
    if changed:
        raise RewardkitError(f"{out} holds a run with different settings ({', '.join(changed)}); use another "
                             "--output, or delete it to start over")
    return json.loads((last / "trainer" / "state.json").read_text())


def _saved_step(out: Path) -> int:
    try:
        return json.loads((out / "last" / "trainer" / "state.json").read_text())["step"]
    except (OSError, KeyError, json.JSONDecodeError):
        return 0


def _flat_config(config: TrainConfig) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.model_dump().items()}


def _print(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message, highlight=False)


class _Progress:
    def __init__(self, total: int, done: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=Console(stderr=True))
        self.task = self.bar.add_task("train", total=total, completed=done, info="")
        self.bar.start()

    def update(self, m: dict) -> None:
        info = f"loss {m['loss']:.4f}" + (f" acc {m['eval_accuracy']:.3f}" if m.get("eval_accuracy") else "")
        self.bar.update(self.task, completed=m["step"], info=info)

    def close(self) -> None:
        self.bar.stop()


def _progress(enabled: bool, total: int, done: int) -> _Progress | None:
    return _Progress(total, done) if enabled else None
