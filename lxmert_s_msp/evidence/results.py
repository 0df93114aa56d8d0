"""What the evidence recipes (`experiments/msp_evidence.py`, `experiments/msp_stages.py`) share: their common
arguments and world, results cached as json files, and mean ± std cells for their tables."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.store import atomic_write_text
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.training.curriculum import Curriculum, load_curriculum
from lxmert_s_msp.training.finetuning import HEAD_LEARNING_RATE, PAPER_LEARNING_RATE, FinetuneSettings


def evidence_parser(description: str, output_dir: str) -> argparse.ArgumentParser:
    """--seeds, --output-dir, the synthetic world's size and the fine-tuning learning rates and steps, which
    every evidence recipe takes."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-dir", type=Path, default=Path(output_dir))
    parser.add_argument("--world-images", type=int, default=WorldSettings().images)
    parser.add_argument("--world-feature-dim", type=int, default=WorldSettings().feature_dim)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=PAPER_LEARNING_RATE,
        help="fine-tuning, of the pre-trained parameters; default the paper's",
    )
    parser.add_argument(
        "--head-learning-rate",
        type=float,
        default=HEAD_LEARNING_RATE,
        help="fine-tuning, of the new task head (with no pre-training: of every parameter); default "
        "recipes/finetune.py's, %(default)s",
    )
    parser.add_argument("--max-steps", type=int, help="steps per fine-tuning run (a smoke run)")
    return parser


def evidence_world(args: argparse.Namespace) -> DownstreamData:
    """The one synthetic world every run of an evidence recipe shares: `<output-dir>/world`."""
    settings = WorldSettings(images=args.world_images, feature_dim=args.world_feature_dim)
    return DownstreamData.open(generate_world(args.output_dir / "world", settings))


def finetune_settings(args: argparse.Namespace, epochs: float | None, seed: int = 0) -> FinetuneSettings:
    """A fine-tuning run of an evidence recipe: `evidence_parser`'s rates and steps, logging to no tracker."""
    return FinetuneSettings(
        epochs=epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        head_learning_rate=args.head_learning_rate,
        seed=seed,
        report_to=["none"],
    )


def seeded_curriculum(config: Path, data: DownstreamData, seed: int) -> Curriculum:
    """The curriculum file on `data` with `seed` for every stage, logging to no tracker."""
    return load_curriculum(config, data_dir=data.folder, overrides={"seed": seed, "report_to": ["none"]})


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    """The json result at `path`, computed and written (atomically) only if absent: a killed or repeated run
    redoes only what has no result yet."""
    if not path.is_file():
        atomic_write_text(path, json.dumps(compute(), indent=2))
    return json.loads(path.read_text())


def mean_std(values: Sequence[float], digits: int = 1) -> str:
    """'mean ± sample std' of a table cell; one value alone, '—' for none."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
