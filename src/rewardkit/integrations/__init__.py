"""rewardkit inside the RL trainers people already run.

    rewardkit.integrations.rewards   CompletionRewards: (prompts, completions) -> one float each, from any Scorer
    rewardkit.integrations.trl       reward_function(): a `reward_funcs` entry for TRL's GRPOTrainer / RLOOTrainer
    rewardkit.integrations.verl      compute_score / compute_score_batch for verl's reward managers

OpenRLHF talks to a reward model over HTTP: `rewardkit serve` answers its `/get_reward` (rewardkit.serve).
"""
