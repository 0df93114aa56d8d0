"""What the evidence recipes (`experiments/msp_evidence.py`, `msp_stages.py`, `table4.py`) share: their common
arguments and world, pre-training and scoring a set of curricula, results cached as json files, and mean ±
std cells for their tables."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.store import atomic_write_text
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.evaluation.downstream import evaluate_checkpoint
from lxmert_s_msp.evaluation.zero_shot import ZeroShotSettings
from lxmert_s_msp.training.curriculum import Curriculum, load_curriculum
from lxmert_s_msp.training.downstream_tasks import TASKS
from lxmert_s_msp.training.finetuning import (
    HEAD_LEARNING_RATE,
    PAPER_LEARNING_RATE,
    FinetuneSettings,
    finetune,
)
from lxmert_s_msp.training.pretraining import run_curriculum

NO_PRETRAINING = "none"


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


def evidence_world(args: argparse.Namespace, folder: Path | None = None, **settings: Any) -> DownstreamData:
    """The one synthetic world the runs of an evidence recipe share (`folder`, default `<output-dir>/world`),
    `settings` other `WorldSettings` fields."""
    world = WorldSettings(images=args.world_images, feature_dim=args.world_feature_dim, **settings)
    return DownstreamData.open(generate_world(folder or args.output_dir / "world", world))


def epochs_by_task(items: Sequence[str], tasks: Sequence[str]) -> dict[str, float]:
    """`--epochs TASK=N ...` as {task: epochs}; a ValueError names the first item that is not TASK=N with TASK
    one of `tasks`."""
    epochs = {}
    for item in items:
        task, _, value = item.partition("=")
        try:
            epochs[task] = float(value)
        except ValueError:
            task = None
        if task not in tasks:
            raise ValueError(f"--epochs: expected TASK=N with TASK in {tuple(tasks)}, got {item!r}")
    return epochs


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


def tag(condition: str) -> str:
    """A condition as a file name: 'T→P→S + align' -> 'TPS-align'."""
    return condition.replace("→", "").replace(" + ", "-")


def pretrain_and_score(
    curricula: Mapping[str, Path],
    data: DownstreamData,
    out: Path,
    seed: int,
    downstream: Sequence[str],
    settings: Callable[[str], FinetuneSettings],
    architecture: str,
) -> dict[str, dict[str, dict]]:
    """{condition: {"zero_shot" or task: test metrics}} for one seed, the conditions being no pre-training
    (`NO_PRETRAINING`, fine-tuned from fresh weights of `architecture`'s configuration and processor) and each
    curriculum pre-trained with `seed` on `data` (scored with no fine-tuning: held-out ITM accuracy and
    zero-shot retrieval, re-ranked and by ITM on every pair). Every `downstream` task is fine-tuned from each
    (`settings(task)`) and scored on the test split, retrieval by ITM on every pair (the paper's protocol,
    whatever heads the model has). Results are json files under `out`, so a re-run skips what is done."""
    checkpoints: dict[str, str] = {NO_PRETRAINING: NO_PRETRAINING}
    results: dict[str, dict] = {NO_PRETRAINING: {}}
    for condition, config in curricula.items():
        pretrained = run_curriculum(
            seeded_curriculum(config, data, seed),
            out / f"pretrain-{tag(condition)}",
            ZeroShotSettings(all_pairs=True),
        )
        checkpoints[condition] = str(pretrained.hub_folder)
        results[condition] = {
            "zero_shot": cached_json(out / f"{tag(condition)}-zero_shot.json", pretrained.zero_shot.metrics)
        }
    for condition, checkpoint in checkpoints.items():
        for task in downstream:

            def train_and_test(
                task: str = task, checkpoint: str = checkpoint, name: str = tag(condition)
            ) -> dict:
                tuned = finetune(
                    TASKS[task],
                    checkpoint,
                    data,
                    out / f"{name}-{task}",
                    settings(task),
                    config_from=checkpoints[architecture] if checkpoint == NO_PRETRAINING else None,
                )
                return evaluate_checkpoint(
                    TASKS[task], tuned.hub_folder, data, "test", all_pairs=True
                ).metrics

            results[condition][task] = cached_json(out / f"{tag(condition)}-{task}.json", train_and_test)
    return results


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
