"""Evaluation: pure metrics over score differences, the report builder and the report writer."""

from rewardkit.eval.evaluate import evaluate
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
from rewardkit.eval.report import plot_reliability, render_markdown, write_report

__all__ = [
    "Reliability",
    "average_ranks",
    "brier",
    "ece",
    "evaluate",
    "fit_temperature",
    "length_split_accuracy",
    "mce",
    "nll",
    "pearson",
    "plot_reliability",
    "reliability",
    "render_markdown",
    "sigmoid",
    "spearman",
    "strict_accuracy",
    "tie_rate",
    "write_report",
]
