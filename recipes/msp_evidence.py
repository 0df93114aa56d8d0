"""Does MSP help? Downstream scores after no pre-training, after S only and after T→P→S, over seeds.

    python recipes/msp_evidence.py --seeds 0 1 2                       # the synthetic world, paper epochs
    python recipes/msp_evidence.py --epochs retrieval=1                # the small model on a CPU

For every seed: pre-train the S curriculum (`recipes/configs/synthetic_s.yaml`) and the T→P→S one
(`synthetic.yaml`) with that seed; score zero-shot retrieval on the test split; fine-tune VQA, NLVR2 and
retrieval from each checkpoint and from no pre-training (the same architecture, fresh weights) with that
seed; score each on the test split. Every result is a json file under --output-dir, written when it is
done, so a re-run skips what is finished. At the end the mean ± std over seeds is printed as a markdown
table and written to <output-dir>/results.md. All conditions share one world (`<output-dir>/world`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from processing.store import atomic_write_text
from training.finetuning import TASKS, DownstreamData, evaluate_checkpoint, finetune
from training.pretraining import run_curriculum
from training.results import cached_json, evidence_parser, evidence_world, mean_std, seeded_curriculum

CONFIGS = Path(__file__).parent / "configs"
CURRICULA = {"S": CONFIGS / "synthetic_s.yaml", "T→P→S": CONFIGS / "synthetic.yaml"}
CONDITIONS = ("none", *CURRICULA)
DOWNSTREAM = ("vqa", "nlvr2", "retrieval")
COLUMNS = (
    ("vqa", "vqa_accuracy", "VQA acc"),
    ("nlvr2", "accuracy", "NLVR2 acc"),
    ("zero_shot", "image_r1", "ZS IR R@1"),
    ("zero_shot", "image_r5", "ZS IR R@5"),
    ("zero_shot", "image_r10", "ZS IR R@10"),
    ("zero_shot", "text_r1", "ZS TR R@1"),
    ("zero_shot", "text_r5", "ZS TR R@5"),
    ("zero_shot", "text_r10", "ZS TR R@10"),
    ("retrieval", "image_r1", "IR R@1"),
    ("retrieval", "image_r5", "IR R@5"),
    ("retrieval", "image_r10", "IR R@10"),
    ("retrieval", "text_r1", "TR R@1"),
    ("retrieval", "text_r5", "TR R@5"),
    ("retrieval", "text_r10", "TR R@10"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = evidence_parser(__doc__, "outputs/evidence")
    parser.add_argument(
        "--curricula", nargs=2, type=Path, metavar=("S", "TPS"), help="replace the two configs"
    )
    parser.add_argument(
        "--epochs", nargs="*", default=[], metavar="TASK=N", help="fine-tuning epochs, default the paper's"
    )
    return parser.parse_args(argv)


def run_seed(seed: int, args: argparse.Namespace, data: DownstreamData, epochs: dict[str, float]) -> dict:
    """{condition: {task: test metrics}} for one seed."""
    out = args.output_dir / f"seed{seed}"
    curricula = dict(zip(CURRICULA, args.curricula, strict=True)) if args.curricula else CURRICULA
    checkpoints = {"none": "none"}
    for condition, config in curricula.items():
        curriculum = seeded_curriculum(config, data, seed)
        folder = out / f"pretrain-{condition.replace('→', '')}"
        checkpoints[condition] = str(run_curriculum(curriculum, folder).hub_folder)
    results: dict[str, dict] = {}
    for condition, checkpoint in checkpoints.items():
        tag = condition.replace("→", "")
        scores = results.setdefault(condition, {})
        if checkpoint != "none":
            scores["zero_shot"] = cached_json(
                out / f"{tag}-zero_shot.json",
                lambda c=checkpoint: (
                    evaluate_checkpoint(TASKS["retrieval"], c, data, "test", zero_shot=True).metrics
                ),
            )
        for task in DOWNSTREAM:

            def train_and_test(task: str = task, checkpoint: str = checkpoint, tag: str = tag) -> dict:
                tuned = finetune(
                    TASKS[task],
                    checkpoint,
                    data,
                    out / f"{tag}-{task}",
                    # no pre-training: the architecture and processor of the T→P→S checkpoint, fresh weights
                    config_from=checkpoints["T→P→S"] if checkpoint == "none" else None,
                    epochs=epochs.get(task),
                    learning_rate=args.learning_rate,
                    head_learning_rate=args.head_learning_rate,
                    seed=seed,
                    max_steps=args.max_steps,
                    report_to=["none"],
                )
                return evaluate_checkpoint(TASKS[task], tuned.hub_folder, data, "test").metrics

            scores[task] = cached_json(out / f"{tag}-{task}.json", train_and_test)
    return results


def results_table(per_seed: dict[int, dict]) -> str:
    """Mean ± std over seeds (in %) of every condition x column; '—' where a condition has no such score."""
    lines = [
        "| pre-training | " + " | ".join(title for _, _, title in COLUMNS) + " |",
        "| --- |" + " ---: |" * len(COLUMNS),
    ]
    for condition in CONDITIONS:
        cells = []
        for task, metric, _ in COLUMNS:
            values = [
                100 * seed[condition][task][metric] for seed in per_seed.values() if task in seed[condition]
            ]
            cells.append(mean_std(values))
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    epochs = {}
    for item in args.epochs:
        task, _, value = item.partition("=")
        if task not in DOWNSTREAM or not value:
            raise SystemExit(f"--epochs: expected TASK=N with TASK in {DOWNSTREAM}, got {item!r}")
        epochs[task] = float(value)
    data = evidence_world(args)
    per_seed = {seed: run_seed(seed, args, data, epochs) for seed in args.seeds}
    table = results_table(per_seed)
    settings = (
        f"Seeds {args.seeds}; fine-tuning epochs {epochs or 'the paper defaults'}, learning rate "
        f"{args.learning_rate} (new heads {args.head_learning_rate}); test split; in %."
    )
    atomic_write_text(args.output_dir / "results.md", f"{settings}\n\n{table}\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
