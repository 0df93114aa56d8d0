"""Evaluate a checkpoint on a split of VQA v2, GQA, NLVR2 or Flickr30k retrieval.

    python recipes/evaluate_checkpoint.py --task vqa --model outputs/finetune-vqa/hub --split test
    python recipes/evaluate_checkpoint.py --task retrieval --model outputs/pretrain/hub --split test \
        --zero-shot
    python recipes/evaluate_checkpoint.py --task retrieval --model outputs/finetune-retrieval/hub \
        --split test --all-pairs
    python recipes/evaluate_checkpoint.py --task gqa --model /ckpt/gqa/hub --split val --data-dir /data/lxmert

--zero-shot ranks retrieval pairs by the ITM score of a pre-training checkpoint, with no fine-tuning (the
paper's zero-shot retrieval). A checkpoint with the VSC head ranks in two stages: every pair by the
contrastive similarity of its text and image embeddings (no cross-modal pass), then each query's top
--rerank-top-k candidates (default 16) by the ITM score of the cross-modal encoder. --all-pairs adds the
paper's protocol, ITM on every pair, and how much of its recall the re-ranking keeps; --rerank-top-k 0 ranks
by ITM on every pair only, as a checkpoint without VSC always does. Text retrieval ranks every caption (the
standard 1k images x 5k captions) unless --text-retrieval first_caption asks for the released LXMERT-S code's
protocol (each image against the first caption of every image, 1k x 1k), which the paper's TR numbers use;
image retrieval is the same in both. Retrieval prints each ranking's recall in percent, chance beside it.

Prints the metrics in percent and writes them, as fractions, to <output-dir>/eval-<task>-<split>.json
(default output dir: the folder that holds the model folder, e.g. outputs/finetune-vqa for
outputs/finetune-vqa/hub, so nothing is added to the folder one uploads); VQA and GQA also write every
question's predicted answer to predictions-<task>-<split>.json, which is all an unlabelled test split yields.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lxmert_s_training.finetuning import (
    GQA_NEEDS_REAL_DATA,
    TASKS,
    DownstreamData,
    Evaluation,
    add_retrieval_ranking_arguments,
    answer_prior,
    check_retrieval_ranking_arguments,
    default_data_folder,
    evaluate_checkpoint,
    metrics_line,
)
from lxmert_s_training.retrieval import TEXT_RETRIEVAL_PROTOCOLS
from processing.store import atomic_write_text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--model", required=True, type=Path, help="a checkpoint folder with its processor")
    parser.add_argument("--split", required=True, choices=["val", "test"])
    parser.add_argument(
        "--zero-shot", action="store_true", help="retrieval by a pre-training checkpoint's ITM score"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="prepared data folder (default: the synthetic world, outputs/pretrain/world)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="where the json files go (default: the folder holding the model folder, so that they are not "
        "uploaded with it)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="questions or sentences per forward pass")
    parser.add_argument(
        "--text-retrieval",
        choices=sorted(TEXT_RETRIEVAL_PROTOCOLS),
        default="all_captions",
        help="retrieval: the captions text retrieval ranks (default: %(default)s)",
    )
    add_retrieval_ranking_arguments(parser)
    args = parser.parse_args(argv)
    if args.text_retrieval != "all_captions" and args.task != "retrieval":
        parser.error("--text-retrieval is a retrieval protocol: use it with --task retrieval")
    check_retrieval_ranking_arguments(parser, args)
    if args.zero_shot and args.task != "retrieval":
        parser.error("--zero-shot is retrieval by the ITM score: use it with --task retrieval")
    if args.task == "gqa" and args.data_dir is None:
        parser.error(GQA_NEEDS_REAL_DATA)
    return args


def main(argv: list[str] | None = None) -> Evaluation:
    args = parse_args(argv)
    task = TASKS[args.task]
    data = DownstreamData.open(args.data_dir or default_data_folder())
    evaluation = evaluate_checkpoint(
        task,
        args.model,
        data,
        args.split,
        zero_shot=args.zero_shot,
        batch_size=args.batch_size,
        text_retrieval=args.text_retrieval,
        rerank_top_k=args.rerank_top_k,
        all_pairs=args.all_pairs,
    )
    output_dir = args.output_dir or args.model.parent  # beside the model: nothing is added to its folder
    output_dir.mkdir(parents=True, exist_ok=True)
    name = f"{task.name}-{args.split}"
    report = {
        "task": task.name,
        "model": str(args.model),
        "data": str(data.folder),
        "split": args.split,
        "zero_shot": args.zero_shot,
        "text_retrieval": args.text_retrieval if task.name == "retrieval" else None,
        "metrics": evaluation.metrics,
        **evaluation.report(),
    }
    atomic_write_text(output_dir / f"eval-{name}.json", json.dumps(report, indent=2))
    if evaluation.predictions is not None:
        atomic_write_text(output_dir / f"predictions-{name}.json", json.dumps(evaluation.predictions))
    if evaluation.retrieval is not None:
        print(evaluation.retrieval.summary())
        if "contrastive" not in evaluation.retrieval.rankings:
            print(f"({args.model} has no VSC head: ITM ranked every pair)")
    elif evaluation.metrics:
        print(metrics_line(task, args.split, evaluation.metrics, answer_prior(data, task, args.split)))
    else:
        print(f"{task.name} on {args.split}: no labels in this split; predictions written")
    print(f"Written to {output_dir / f'eval-{name}.json'}")
    return evaluation


if __name__ == "__main__":
    main()
