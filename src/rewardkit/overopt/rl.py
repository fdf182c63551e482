"""The RL over-optimization curve (EVALUATION §9): TRL's GRPO against a proxy, with the gold score, the proxy
score and KL(pi || pi_0) measured on held-out prompts every `eval_every` steps, fitted with
R_RL(d) = d (alpha - beta log d), d = sqrt(KL).

    runs = rl_study(cfg, scorers)   # one run per (proxy, KL penalty) into OUT/rl/<proxy>-beta<b>/

A measurement samples `eval_samples` responses for each of the first `eval_prompts` prompts (held out from
training) from the current policy, with the same seed at every step: the curves then differ by what the
policy learned, not by which samples were drawn. KL is the mean over the samples of
sum_t log pi(y_t) - log pi_0(y_t), both from one teacher-forced function (`sequence_logprobs`), so the policy
at step 0 has KL exactly 0. Rows go to OUT/rl/RUN/curve.jsonl as they are measured. TRL saves a checkpoint
at every measurement; an interrupted run resumes from the last one and keeps the rows up to it, and a finished
run (RUN/run.json) is skipped.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rewardkit.errors import RewardkitError
from rewardkit.overopt.bon import fit_rl

RUN_DONE = "run.json"
RUN_SETTINGS = "settings.json"


def check_same_run(path: Path, made: dict[str, Any]) -> None:
    """Refuse to continue a run folder made with other settings (named, with both values)."""
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = [f"{k}: {before.get(k)!r} then, {made.get(k)!r} now" for k in sorted(set(before) | set(made))
               if before.get(k) != made.get(k)]
    if changed:
        raise RewardkitError(f"{path.parent} was made with other settings ({'; '.join(changed)}): give another "
                             "--out, or delete that folder to run it again")


def sequence_logprobs(model, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                      batch: int = 4) -> list[float]:
    """(rows,) sum over each completion's tokens of log p(token | prompt, earlier tokens), teacher-forced
    in fp32 with right padding."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(prompt_ids), batch):
        prompts, completions = prompt_ids[start:start + batch], completion_ids[start:start + batch]
        rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None].to(device))[..., 0]
        for i, (p, c) in enumerate(zip(prompts, completions)):
            out.append(float(logp[i, len(p) - 1:len(p) - 1 + len(c)].sum()))  # position t predicts token t+1
    return out


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (0 for one value)."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def measure(model, tokenizer, reference, prompts, gold, proxy, settings, step: int) -> dict[str, Any]:
    """One row of the curve: gold, proxy and KL of the current policy on `prompts` (see the module docstring).
    The model's generation config and training mode are restored after sampling."""
    from rewardkit.data.record import Response
    from rewardkit.models.scorer import ScoreItem
    from rewardkit.sampling.local import LocalPolicy
    from rewardkit.sampling.settings import SamplingSettings

    saved, training = model.generation_config, model.training
    try:
        policy = LocalPolicy(model, tokenizer, precision="fp32", device=next(model.parameters()).device)
        sampling = SamplingSettings(n=settings.eval_samples, temperature=settings.temperature,
                                    max_new_tokens=settings.max_new_tokens, seed=settings.seed)
        generations = [g for start in range(0, len(prompts), 8)
                       for g in policy.generate(prompts[start:start + 8], sampling)]
        prompt_rows = [g.prompt_ids for g in generations for _ in g.texts]
        completion_rows = [ids for g in generations for ids in g.response_ids]
        kl = np.subtract(sequence_logprobs(model, prompt_rows, completion_rows),
                         sequence_logprobs(reference, prompt_rows, completion_rows))
    finally:
        model.generation_config = saved
        model.train(training)
    items = [ScoreItem(p.messages, [Response(t) for t in g.texts]) for p, g in zip(prompts, generations)]
    golds = [r for res in gold.score(items) for r in res.rewards]
    proxies = [r for res in proxy.score(items) for r in res.rewards]
    row = {"step": step}
    for name, values in (("kl", kl), ("gold", golds), ("proxy", proxies)):
        row[name], row[f"{name}_se"] = mean_se(values)
    row["tokens"] = float(np.mean([len(c) for c in completion_rows]))
    return row


def proxy_objective(scorer, name: str):
    """The proxy an RL run optimises: a proxy by its name, or an ensemble under one aggregator ("ens wco")."""
    from rewardkit.models.ensemble import EnsembleScorer, check_aggregator

    base, _, aggregator = name.partition(" ")
    if not aggregator:
        return scorer
    if not isinstance(scorer, EnsembleScorer):
        raise RewardkitError(f"rl proxy {name!r}: {base!r} is not an ensemble, so it has no aggregator")
    check_aggregator(aggregator)
    objective = copy.copy(scorer)
    objective.aggregator, objective.lam = aggregator, None  # the aggregator's default lambda
    return objective


def run_name(proxy: str, beta: float) -> str:
    return f"{proxy.replace(' ', '-')}-beta{beta:g}"


def rl_run(policy: str, gold, proxy, prompts, settings, beta: float, out_dir: Path,
           on_row: Callable[[dict], Any] | None = None, on_step: Callable[[int], Any] | None = None,
           identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GRPO run against `proxy` (see the module docstring); returns RUN/run.json's content: the curve's
    rows, TRL's per-step log, the seconds spent and the step it resumed from. on_row: each new measurement;
    on_step: the global step after each training step (the trainer's own printing is off). identity: what
    else makes the run (the model specs), kept in RUN/settings.json with the settings: a rerun that differs is
    refused rather than mixed into the old curve."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, ProgressCallback, TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    from rewardkit.integrations.trl import policy_checkpoint, reward_function
    from rewardkit.io import append_jsonl, atomic_write_json, keep_steps_upto

    made = {**settings.model_dump(exclude={"proxies", "betas"}), "beta": beta, "policy": policy,
            **(identity or {})}
    check_same_run(out_dir / RUN_SETTINGS, made)
    done = out_dir / RUN_DONE
    if done.is_file():
        return {**json.loads(done.read_text(encoding="utf-8")), "skipped": True}
    if len(prompts) <= settings.eval_prompts:
        raise RewardkitError(f"{len(prompts)} prompts: the first {settings.eval_prompts} are held out for the "
                             "measurements, so none is left to train on (give more prompts, or lower "
                             "rl.eval_prompts)")
    eval_prompts, train_prompts = prompts[:settings.eval_prompts], prompts[settings.eval_prompts:]
    path = policy_checkpoint(policy)
    tokenizer = AutoTokenizer.from_pretrained(path)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    checkpoints = out_dir / "checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    curve = out_dir / "curve.jsonl"
    resumed = int(Path(last).name.split("-")[-1]) if last else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / RUN_SETTINGS, made)
    rows = keep_steps_upto(curve, resumed)  # rows measured after the last checkpoint are measured again

    class Curve(TrainerCallback):
        def record(self, model, step):
            if any(r["step"] == step for r in rows):
                return
            row = measure(model, tokenizer, reference, eval_prompts, gold, proxy, settings, step)
            rows.append(row)
            append_jsonl(curve, row)
            if on_row is not None:
                on_row(row)

        def on_train_begin(self, args, state, control, model=None, **kw):
            if state.global_step == 0:
                self.record(model, 0)

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % settings.eval_every == 0 or state.global_step == state.max_steps:
                self.record(model, state.global_step)
            if on_step is not None:
                on_step(state.global_step)

    config = GRPOConfig(
        output_dir=str(checkpoints), max_steps=settings.steps, learning_rate=settings.lr, beta=beta,
        per_device_train_batch_size=settings.prompts_per_step * settings.generations,
        num_generations=settings.generations, max_completion_length=settings.max_new_tokens,
        temperature=settings.temperature, logging_steps=1, save_steps=settings.eval_every, save_total_limit=1,
        report_to=[], seed=settings.seed, use_cpu=not torch.cuda.is_available(), bf16=False,
        shuffle_dataset=False)
    started = time.perf_counter()
    trainer = GRPOTrainer(model=path, reward_funcs=[reward_function(proxy, name="proxy", empty_reward=0.0)],
                          args=config, processing_class=tokenizer, callbacks=[Curve()],
                          train_dataset=Dataset.from_list([{"prompt": p.messages} for p in train_prompts]))
    for printer in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(printer)
    trainer.train(resume_from_checkpoint=last)
    rows.sort(key=lambda r: r["step"])
    info = {"steps": settings.steps, "beta": beta, "seconds": time.perf_counter() - started,
            "resumed_from": resumed, "rows": rows, "log": trainer.state.log_history}
    atomic_write_json(done, info)
    return {**info, "skipped": False}


def curve_summary(rows: Sequence[dict]) -> dict[str, Any]:
    """A run's curve normalised to step 0 (gold and proxy minus their step-0 values, d = sqrt(max(KL, 0))),
    its fit R_RL(d) = d (alpha - beta log d) on the gold, the peak and the last point."""
    rows = sorted(rows, key=lambda r: r["step"])
    if not rows or rows[0]["step"] != 0:
        raise RewardkitError("an RL curve starts with its step-0 measurement")
    g0, p0 = rows[0]["gold"], rows[0]["proxy"]
    d = [math.sqrt(max(r["kl"], 0.0)) for r in rows]
    gold = [r["gold"] - g0 for r in rows]
    proxy = [r["proxy"] - p0 for r in rows]
    fit = fit_rl(d, gold) if len(rows) >= 3 else None
    peak = int(np.argmax(gold))
    return {"step": [r["step"] for r in rows], "d": d, "gold": gold, "proxy": proxy,
            "gold_se": [r["gold_se"] for r in rows], "proxy_se": [r["proxy_se"] for r in rows],
            "kl": [r["kl"] for r in rows], "tokens": [r.get("tokens") for r in rows],
            "fit": None if fit is None else {"alpha": fit.alpha, "beta": fit.beta, "d_star": fit.d_star,
                                             "r_star": fit.r_star, "rmse": fit.rmse,
                                             "extrapolated": fit.extrapolated},
            "peak": {"step": rows[peak]["step"], "d": d[peak], "gold": gold[peak]},
            "final": {"step": rows[-1]["step"], "d": d[-1], "gold": gold[-1], "proxy": proxy[-1]}}


def rl_study(cfg, scorers: dict, on_row: Callable[[str, dict], Any] | None = None,
             on_step: Callable[[str, int], Any] | None = None) -> dict[str, Any]:
    """Every (objective, beta) run of cfg.rl, then the report dict {"runs": [...], ...}. scorers: "gold" and
    every proxy of cfg, loaded. on_row(run, row) and on_step(run, step) follow each run (rl_run)."""
    from rewardkit.data.prompts import load_prompts

    settings = cfg.rl
    if cfg.policy is None or cfg.prompts is None:
        raise RewardkitError("the RL runs need a policy and prompts (--policy, --prompts or the config's)")
    names = settings.proxies or list(cfg.proxies)
    for name in names:
        if name.partition(" ")[0] not in cfg.proxies:
            raise RewardkitError(f"rl proxy {name!r} is not one of the proxies ({', '.join(cfg.proxies)})")
    objectives = {name: proxy_objective(scorers[name.partition(" ")[0]], name) for name in names}
    prompts = load_prompts(cfg.prompts, format=cfg.format, limit=cfg.limit)
    runs = []
    for name, objective in objectives.items():
        for beta in settings.betas:
            label = run_name(name, beta)
            identity = {"gold": cfg.gold, "objective": name, "proxy": cfg.proxies[name.partition(" ")[0]],
                        "prompts": cfg.prompts, "format": cfg.format, "limit": cfg.limit,
                        "precision": cfg.precision, "max_length": cfg.max_length}
            info = rl_run(cfg.policy, scorers["gold"], objective, prompts, settings, beta,
                          Path(cfg.out) / "rl" / label, identity=identity,
                          on_row=None if on_row is None else (lambda row, label=label: on_row(label, row)),
                          on_step=None if on_step is None else (lambda step, label=label: on_step(label, step)))
            runs.append({"run": label, "objective": name, "beta": beta, "seconds": info["seconds"],
                         "skipped": info["skipped"], **curve_summary(info["rows"])})
    return {"gold_model": cfg.gold, "policy": cfg.policy, "prompts": cfg.prompts,
            "settings": settings.model_dump(), "runs": runs}
