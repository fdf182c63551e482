"""What report writers share: a figure that touches no global state, an atomic PNG write, and the
JSON + Markdown + plot triple of files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rewardkit.io import atomic_open, atomic_write_json, atomic_write_text


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


def write_report_files(report: dict[str, Any], out_dir: str | os.PathLike, stem: str,
                       render: Callable[..., str], plot: Callable[[dict[str, Any], Path], Any]) -> dict[str, Path]:
    """STEM.json, STEM.md (`render(report, image="STEM.png")`) and STEM.png (`plot(report, path)`) in
    `out_dir`, each atomically: a crash leaves the old file or none, never half of one.
    Returns {"json", "markdown", "plot"} paths."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md", "plot": out_dir / f"{stem}.png"}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["markdown"], render(report, image=paths["plot"].name))
    plot(report, paths["plot"])
    return paths
