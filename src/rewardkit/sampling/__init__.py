"""Policy sampling: n responses per prompt from a local causal LM or an OpenAI-compatible endpoint, written as
generic records with the policy's token ids, resumable, optionally scored as they come (`rewardkit sample`).

    from rewardkit.sampling import sample

    sample("smollm2", "prompts.txt", "samples.jsonl", n=4, max_new_tokens=64, seed=0, score="runs/demo/train/best")

Modules: settings (what is asked, per-prompt seeds, the Policy protocol), local (transformers `generate`),
endpoint (vLLM / SGLang / OpenAI-compatible servers), run (the resumable file, scoring as it goes). Prompts
files are read by rewardkit.data.prompts.
"""

from rewardkit.data.prompts import Prompt, load_prompts
from rewardkit.sampling.run import (
    Progress, SampleSummary, SamplingError, load_policy, sample, sample_to_file, token_id_reason,
)
from rewardkit.sampling.settings import Generation, Policy, SamplingSettings, prompt_seed, sample_seed

__all__ = [
    "Generation", "Policy", "Progress", "Prompt", "SampleSummary", "SamplingError", "SamplingSettings",
    "load_policy", "load_prompts", "prompt_seed", "sample", "sample_seed", "sample_to_file", "token_id_reason",
]
