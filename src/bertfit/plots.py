"""Figures for the explore plots (``bertfit explore --output-dir``): matplotlib drawn off-screen (Agg), saved as
PNGs of one size. The training report draws its charts as SVG instead (:mod:`bertfit.svg`), so training never
imports matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import IO

__all__ = ["figure", "save_figure", "PLOT_SIZE"]

PLOT_SIZE = (1000, 600)  # pixels of every PNG (width, height)


def figure():
    """A matplotlib figure of :data:`PLOT_SIZE` pixels, drawn off-screen (Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(PLOT_SIZE[0] / 100, PLOT_SIZE[1] / 100), dpi=100)


def save_figure(fig, path: Path | IO[bytes]) -> str:
    """Write ``fig`` as a PNG of exactly :data:`PLOT_SIZE` pixels and close it."""
    import matplotlib.pyplot as plt

    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return str(path)
