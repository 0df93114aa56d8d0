"""Does MSP help, and do the alignment tasks? Downstream scores after no pre-training and after four
curricula with equal optimizer-step budgets, over seeds.

    python experiments/msp_evidence.py --seeds 0 1 2 --epochs retrieval=1  # the synthetic world, paper epochs

The conditions: no pre-training (fresh weights, the default curriculum's architecture); S and T→P→S with the
paper's tasks (`synthetic_paper_tasks_s.yaml`, `synthetic_paper_tasks.yaml`); S and T→P→S with the alignment
tasks added (`synthetic_s.yaml`, `synthetic.yaml`, the default). For every seed: pre-train each curriculum
with that seed and score it with no fine-tuning (held-out ITM accuracy; zero-shot retrieval by VSC similarity,
re-ranked by ITM and by ITM on every pair, `lxmert_s_msp.evaluation.zero_shot`); fine-tune VQA, NLVR2 and
retrieval from each checkpoint and from no pre-training with that seed; score each on the test split
(fine-tuned retrieval by ITM on every pair, the paper's protocol, whatever heads the model has). Every result
is a json file under --output-dir, written when it is done, so a re-run skips what is finished. At the end
the mean ± std over seeds is printed as a markdown table and written to <output-dir>/results.md. All
conditions share one world (`<output-dir>/world`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.store import atomic_write_text
from lxmert_s_msp.evidence.results import (
    NO_PRETRAINING,
    epochs_by_task,
    evidence_parser,
    evidence_world,
    finetune_settings,
    mean_std,
    pretrain_and_score,
)

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
CURRICULA = {
    "S": CONFIGS / "synthetic_paper_tasks_s.yaml",
    "T→P→S": CONFIGS / "synthetic_paper_tasks.yaml",
    "S + align": CONFIGS / "synthetic_s.yaml",
    "T→P→S + align": CONFIGS / "synthetic.yaml",
}
ARCHITECTURE = "T→P→S + align"  # whose architecture and processor the no-pre-training condition fine-tunes
CONDITIONS = (NO_PRETRAINING, *CURRICULA)
DOWNSTREAM = ("vqa", "nlvr2", "retrieval")
COLUMNS = (
    ("vqa", "vqa_accuracy", "VQA acc"),
    ("nlvr2", "accuracy", "NLVR2 acc"),
    ("zero_shot", "itm_accuracy", "ZS ITM acc"),
    ("zero_shot", "contrastive_image_r1", "ZS IR R@1 VSC"),
    ("zero_shot", "reranked_image_r1", "ZS IR R@1 re-ranked"),
    ("zero_shot", "all_pairs_image_r1", "ZS IR R@1 ITM"),
    ("zero_shot", "contrastive_text_r1", "ZS TR R@1 VSC"),
    ("zero_shot", "reranked_text_r1", "ZS TR R@1 re-ranked"),
    ("zero_shot", "all_pairs_text_r1", "ZS TR R@1 ITM"),
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
        "--curricula",
        nargs=len(CURRICULA),
        type=Path,
        metavar=tuple(name.replace("→", "").replace(" + ", "+") for name in CURRICULA),
        help="replace the four configs",
    )
    parser.add_argument(
        "--epochs", nargs="*", default=[], metavar="TASK=N", help="fine-tuning epochs, default the paper's"
    )
    return parser.parse_args(argv)


def run_seed(seed: int, args: argparse.Namespace, data: DownstreamData, epochs: dict[str, float]) -> dict:
    """{condition: {task: test metrics}} for one seed."""
    curricula = dict(zip(CURRICULA, args.curricula, strict=True)) if args.curricula else CURRICULA
    return pretrain_and_score(
        curricula,
        data,
        args.output_dir / f"seed{seed}",
        seed,
        DOWNSTREAM,
        lambda task: finetune_settings(args, epochs.get(task), seed),
        ARCHITECTURE,
    )


def results_table(per_seed: dict[int, dict]) -> str:
    """Mean ± std over seeds (in %) of every condition x column; '—' where a condition has no such score (no
    zero-shot score without pre-training, no contrastive ranking without the VSC head)."""
    lines = [
        "| pre-training | " + " | ".join(title for _, _, title in COLUMNS) + " |",
        "| --- |" + " ---: |" * len(COLUMNS),
    ]
    for condition in CONDITIONS:
        cells = []
        for task, metric, _ in COLUMNS:
            values = [
                100 * seed[condition][task][metric]
                for seed in per_seed.values()
                if metric in seed[condition].get(task, {})
            ]
            cells.append(mean_std(values))
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    try:
        epochs = epochs_by_task(args.epochs, DOWNSTREAM)
    except ValueError as error:
        raise SystemExit(str(error)) from None
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
