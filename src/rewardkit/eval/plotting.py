"""The two steps every report plot shares: a figure that touches no global state, and an atomic PNG write."""

from __future__ import annotations

import os
from pathlib import Path

from rewardkit.io import atomic_open


def new_figure(width: float, height: float):
    """A Figure on an Agg canvas, not pyplot: no global backend switch, no figure registry to leak into."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG atomically: a reader never sees half an image."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path
