"""matplotlib for files only (training machines have no display), and figures written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(figure: plt.Figure, out: str | os.PathLike) -> Path:
    """Write `figure` as a PNG under a temporary name, then rename it to `out`: a killed run never leaves a
    half-written image where a finished one is expected."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(f".{out.name}.partial.png")
    figure.savefig(work, dpi=120)
    plt.close(figure)
    os.replace(work, out)
    return out
