"""Evaluation: pure metrics over score differences, the report builder and writer, benchmark scoring
(RewardBench v1/v2, RM-Bench, ProcessBench), reward-hacking probes, length bias and scorer comparison."""

from rewardkit.eval.benchmarks import BENCHMARKS, prefix_step_results, score_benchmark
from rewardkit.eval.compare import compare_markdown, compare_scorers, write_comparison
from rewardkit.eval.evaluate import evaluate
from rewardkit.eval.length import LengthCalibratedScorer, LengthCalibration, fit_length_calibration, length_bias
from rewardkit.eval.metrics import (
    Reliability,
    average_ranks,
    brier,
    ece,
    fit_temperature,
    length_split_accuracy,
    mce,
    nll,
    pearson,
    reliability,
    sigmoid,
    spearman,
    strict_accuracy,
    tie_rate,
)
from rewardkit.eval.probes import TRANSFORMS, probe_markdown, run_probes, write_probe_report
from rewardkit.eval.report import plot_reliability, render_markdown, write_report

__all__ = [
    "BENCHMARKS",
    "LengthCalibratedScorer",
    "LengthCalibration",
    "Reliability",
    "TRANSFORMS",
    "average_ranks",
    "brier",
    "compare_markdown",
    "compare_scorers",
    "ece",
    "evaluate",
    "fit_length_calibration",
    "fit_temperature",
    "length_bias",
    "length_split_accuracy",
    "mce",
    "nll",
    "pearson",
    "plot_reliability",
    "prefix_step_results",
    "probe_markdown",
    "reliability",
    "render_markdown",
    "run_probes",
    "score_benchmark",
    "sigmoid",
    "spearman",
    "strict_accuracy",
    "tie_rate",
    "write_comparison",
    "write_probe_report",
    "write_report",
]
