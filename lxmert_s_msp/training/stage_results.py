"""What a curriculum run gives back: each finished stage and the run as a whole.

Apart from the runner (`pretraining.py`) so that the Hub folder's model card (`lxmert_s_msp.hub.model_card`),
which the runner writes, can read them without importing the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxmert_s_msp.evaluation.zero_shot import ZeroShotScores


@dataclass
class StageResult:
    """A finished stage: where its model is and what it logged."""

    name: str
    folder: Path
    log_history: list[dict[str, Any]]
    global_step: int
    final_losses: dict[str, float] = field(default_factory=dict)


@dataclass
class CurriculumResult:
    data_folder: Path
    stages: list[StageResult]
    hub_folder: Path
    plot: Path | None  # None when the logs held no per-task losses to draw
    zero_shot: ZeroShotScores | None = None  # when asked, on the main process
