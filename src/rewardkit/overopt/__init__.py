"""The over-optimization lab (EVALUATION §8-9): how far a proxy reward model can be pushed, by best-of-n or RL,
before a gold reward model says it misleads, and which conservative objective helps.

bon: the unbiased best-of-n estimator from one pool, the best-of-n KL and the Gao et al. fits (pure math).
pool: the prompts and their samples, and every model's scores of them, cached and resumable.
study: gold and proxy curves per objective (ensembles: one per aggregator), fits, mitigation, hacks.
report: report.json, report.md, bon_curves.png, mitigation.png.
"""
