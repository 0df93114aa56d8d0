"""The per-task loss curves of a whole curriculum in one PNG, with the stage boundaries marked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lxmert_s_msp.plotting import plt, save_figure


def plot_loss_curves(
    log_history: Sequence[dict[str, Any]], stage_starts: Sequence[tuple[str, int]], out: str | os.PathLike
) -> Path:
    """One line per task (`loss/<task>` entries against `curriculum_step`), log scale since the tasks' losses
    differ by orders of magnitude; a dashed line and the stage's name where each stage begins. Atomic."""
    out = Path(out)
    tasks = sorted({key for entry in log_history for key in entry if key.startswith("loss/")})
    if not tasks:
        raise ValueError(
            "log_history: no per-task losses (`loss/<task>`) to plot; was logging_steps too large?"
        )
    figure, axes = plt.subplots(figsize=(10, 5.5))
    for task in tasks:
        points = [(entry["curriculum_step"], entry[task]) for entry in log_history if task in entry]
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, marker="." if len(points) < 30 else None, label=task.removeprefix("loss/"))
    for name, start in stage_starts:
        axes.axvline(start, color="0.4", linestyle="--", linewidth=1)
        axes.annotate(
            name,
            (start, 1),
            xycoords=("data", "axes fraction"),
            xytext=(4, -14),
            textcoords="offset points",
            color="0.25",
        )
    axes.set_yscale("log")
    axes.set_xlabel("optimizer step (whole curriculum)")
    axes.set_ylabel("training loss")
    axes.set_title("MSP per-task losses")
    axes.legend(loc="upper right", ncols=2)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, out)
