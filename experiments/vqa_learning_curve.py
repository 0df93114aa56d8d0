"""VQA accuracy by question type after every fine-tuning epoch: does a type stay low for want of training or
for want of grounding?

    python experiments/vqa_learning_curve.py --model outputs/pretrain/hub --epochs 24 --output-dir /tmp/curve

Fine-tunes VQA from `--model` as `recipes/finetune.py` does (the paper's batch and learning rates, the new
head at 1e-3, a linear schedule over all `--epochs`), keeps every epoch's checkpoint, scores each on `--split`
by question type (`lxmert_s_msp.evaluation.downstream.accuracy_by_type`, with each type's answer prior) and
writes `learning_curve.json` and `learning_curve.png` in `--output-dir`. A type whose accuracy still climbs at
the last epoch is under-trained; one flat at its prior from the first epoch on is not learned at all.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.downstream_data import DownstreamData, default_data_folder
from lxmert_s_msp.data.store import atomic_write_text
from lxmert_s_msp.evaluation.downstream import evaluate_checkpoint
from lxmert_s_msp.plotting import plt, save_figure
from lxmert_s_msp.training.downstream_tasks import TASKS
from lxmert_s_msp.training.finetuning import FinetuneSettings, finetune


def epoch_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(optimizer step, folder) of every checkpoint the run kept, in training order."""
    found = [
        (int(match[1]), path)
        for path in folder.glob("checkpoint-*")
        if (match := re.search(r"(\d+)$", path.name))
    ]
    return sorted(found)


def curve(model: str, data: DownstreamData, output_dir: Path, epochs: int, split: str, seed: int) -> dict:
    """Fine-tune for `epochs`, keeping each epoch, and score every epoch's model on `split` by type."""
    settings = FinetuneSettings(
        epochs=epochs, seed=seed, report_to=["none"], training_overrides={"save_total_limit": None}
    )
    finetune(TASKS["vqa"], model, data, output_dir / "finetune", settings)
    points = []
    for epoch, (step, checkpoint) in enumerate(epoch_checkpoints(output_dir / "finetune" / "checkpoints"), 1):
        evaluation = evaluate_checkpoint(TASKS["vqa"], checkpoint, data, split)
        points.append({"epoch": epoch, "step": step, **evaluation.metrics, "by_type": evaluation.by_type})
    return {"model": model, "split": split, "epochs": epochs, "seed": seed, "points": points}


def draw(result: dict, out: Path) -> Path:
    """Accuracy by question type against the epoch, each type's prior dashed in its colour."""
    figure, axes = plt.subplots(figsize=(8, 5))
    points = result["points"]
    epochs = [point["epoch"] for point in points]
    for index, kind in enumerate(points[0]["by_type"]["question_type"]):
        colour = f"C{index}"
        accuracy = [100 * point["by_type"]["question_type"][kind]["accuracy"] for point in points]
        axes.plot(epochs, accuracy, marker=".", color=colour, label=kind)
        prior = 100 * points[0]["by_type"]["question_type"][kind]["prior"]
        axes.axhline(prior, color=colour, linestyle="--", linewidth=1)
    axes.plot(
        epochs, [100 * point["vqa_accuracy"] for point in points], color="black", marker=".", label="all"
    )
    axes.set_xlabel("fine-tuning epoch")
    axes.set_ylabel(f"VQA accuracy on {result['split']} (%)")
    axes.set_title("VQA by question type per epoch (dashed: the type's answer prior)")
    axes.legend()
    return save_figure(figure, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a pre-training checkpoint folder (or none)")
    parser.add_argument("--data-dir", type=Path, help="default: the default run's synthetic world")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, required=True)
    args = accept_underscores(parser).parse_args(argv)
    data = DownstreamData.open(args.data_dir or default_data_folder())
    result = curve(args.model, data, args.output_dir, args.epochs, args.split, args.seed)
    atomic_write_text(args.output_dir / "learning_curve.json", json.dumps(result, indent=2))
    figure = draw(result, args.output_dir / "learning_curve.png")
    print(f"Written {args.output_dir / 'learning_curve.json'} and {figure}")
    for point in result["points"]:
        types = point["by_type"]["question_type"]
        print(
            f"epoch {point['epoch']:>2}: all {100 * point['vqa_accuracy']:5.1f}  "
            + "  ".join(f"{kind} {100 * row['accuracy']:5.1f}" for kind, row in types.items())
        )


if __name__ == "__main__":
    run(main)
