"""The `rewardkit` command: a thin Typer layer over the library, one module per command group.

Every command turns its flags into library calls. Errors caused by user input (RewardkitError) are printed
as one line naming the file, line and field, with exit code 2; they never surface as a traceback.
"""

from __future__ import annotations

from rewardkit.cli.common import app, split_example

# Each module registers its commands on `app`; the order here is the order of `rewardkit --help`.
from rewardkit.cli import score, evaluate, sample, overopt, overopt_prepare, overopt_rl, serve, data, ensemble, train, machine  # noqa: E402,F401  isort: skip

__all__ = ["app", "main", "split_example"]


def main() -> None:
    app(prog_name="rewardkit")

