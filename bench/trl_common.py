"""TRL's own reward computation, driven directly: `GRPOTrainer._calculate_rewards` on given completions.

Both benchmarks that compare rewardkit's reward function with TRL's model-id path call the same TRL method, so
what is timed and compared is TRL's code in both cases; only the `reward_funcs` entry differs (a checkpoint path,
which TRL loads as AutoModelForSequenceClassification and runs itself, or rewardkit's reward function). The
policy the trainer needs is a tiny random model on the reward model's vocabulary: it is never run.
"""

from __future__ import annotations

import tempfile
import time

import torch


def reward_harness(reward_func, tokenizer_dir: str):
    """A GRPOTrainer whose only use is `trl_rewards`: `reward_func` is a path or a callable."""
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config)
    args = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="trl-harness-"), per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=4, report_to=[], use_cpu=not torch.cuda.is_available(),
                      bf16=False, save_strategy="no")
    data = Dataset.from_list([{"prompt": "unused"}, {"prompt": "unused"}])
    return GRPOTrainer(model=policy, reward_funcs=[reward_func], args=args, train_dataset=data,
                       processing_class=tokenizer)


def trl_rewards(trainer, prompts: list, completions: list, chunk: int | None = None) -> list[float]:
    """Rewards as TRL's trainer computes them for these completions (one column: one reward function), in
    calls of `chunk` completions (None: one call, as a training batch is)."""
    chunk = chunk or len(completions)
    out: list[float] = []
    for start in range(0, len(completions), chunk):
        p, c = prompts[start: start + chunk], completions[start: start + chunk]
        ids = [[0] for _ in c]  # completion_ids: read only by reward functions that ask for them
        with torch.no_grad():
            rewards = trainer._calculate_rewards([{"prompt": x} for x in p], p, c, ids)
        out.extend(rewards[:, 0].float().cpu().tolist())
    return out


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """Median seconds of `repeats` calls after one warm-up call, and the warm-up's result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], result


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
