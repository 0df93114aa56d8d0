"""Evaluate a checkpoint on a split of VQA v2, GQA, NLVR2 or Flickr30k retrieval.

    python recipes/evaluate_checkpoint.py --task vqa --model outputs/finetune-vqa/hub --split test
    python recipes/evaluate_checkpoint.py --task retrieval --model outputs/pretrain/hub --split test \
        --zero_shot
    python recipes/evaluate_checkpoint.py --task retrieval --model outputs/finetune-retrieval/hub \
        --split test --all_pairs
    python recipes/evaluate_checkpoint.py --task gqa --model /ckpt/gqa/hub --split val --data_dir /data/lxmert

--zero-shot ranks retrieval pairs by the ITM score of a pre-training checkpoint, with no fine-tuning (the
paper's zero-shot retrieval). A checkpoint with the VSC head ranks in two stages: every pair by the
contrastive similarity of its text and image embeddings (no cross-modal pass), then each query's top
--rerank_top_k candidates (default 16) by the ITM score of the cross-modal encoder. --all_pairs adds the
paper's protocol, ITM on every pair, and how much of its recall the re-ranking keeps; --rerank_top_k 0 ranks
by ITM on every pair only, as a checkpoint without VSC always does. Text retrieval ranks every caption (the
standard 1k images x 5k captions) unless --text-retrieval first_caption asks for the released LXMERT-S code's
protocol (each image against the first caption of every image, 1k x 1k), which the paper's TR numbers use;
image retrieval is the same in both. Retrieval prints each ranking's recall in percent, chance beside it.

Flags are parsed by transformers' `HfArgumentParser` (underscore spellings, hyphens accepted too); of the
`TrainingArguments` flags, evaluation reads --output_dir and --per_device_eval_batch_size and refuses the
others, which would change nothing here.

Prints the metrics in percent and writes them, as fractions, to <output_dir>/eval-<task>-<split>.json
(zero-shot: eval-retrieval-<split>-zero-shot.json, beside a fine-tuned model's own); VQA and GQA also write
every question's predicted answer to predictions-<task>-<split>.json, which is all an unlabelled test split
yields. The default output dir is the folder that holds the model folder, e.g. outputs/finetune-vqa for
outputs/finetune-vqa/hub: nothing is added to the folder one uploads, and an --output_dir inside a model
folder is refused.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from lxmert_s_msp.cli import check_output_dir, run
from lxmert_s_msp.data.downstream_data import DownstreamData, default_data_folder
from lxmert_s_msp.data.store import atomic_write_text
from lxmert_s_msp.evaluation.downstream import Evaluation, evaluate_checkpoint
from lxmert_s_msp.evaluation.retrieval import TEXT_RETRIEVAL_PROTOCOLS
from lxmert_s_msp.recipe_arguments import (
    TRAINING_FIELDS,
    add_retrieval_ranking_arguments,
    check_data_dir,
    check_retrieval_ranking_arguments,
    given_flags,
    parse_dataclasses,
    recipe_parser,
)
from lxmert_s_msp.training.downstream_tasks import TASKS

EVAL_BATCH_SIZE = 256


@dataclass
class EvaluateRecipeArguments:
    """The recipe's own flags; `TrainingArguments` adds --output_dir and --per_device_eval_batch_size."""

    task: str = field(metadata={"choices": sorted(TASKS)})
    model: Path = field(metadata={"help": "a checkpoint folder with its processor"})
    split: str = field(metadata={"choices": ["val", "test"]})
    zero_shot: bool = field(
        default=False, metadata={"help": "retrieval by a pre-training checkpoint's ITM score"}
    )
    data_dir: Path | None = field(
        default=None,
        metadata={"help": "prepared data folder (default: the synthetic world, outputs/pretrain/world)"},
    )
    text_retrieval: str = field(
        default="all_captions",
        metadata={
            "choices": sorted(TEXT_RETRIEVAL_PROTOCOLS),
            "help": "retrieval: the captions text retrieval ranks (default: all_captions)",
        },
    )


# The TrainingArguments fields evaluation reads, with this recipe's meaning and default.
READ_TRAINING_FIELDS = {
    "output_dir": "where the json files go (default: the folder holding the model folder, so that they are "
    "not uploaded with it)",
    "per_device_eval_batch_size": f"questions or sentences per forward pass (default {EVAL_BATCH_SIZE})",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = recipe_parser(
        EvaluateRecipeArguments,
        READ_TRAINING_FIELDS,
        __doc__,
        usage="%(prog)s --task TASK --model MODEL --split {val,test} [options]",
        others=None,  # refused: they would change nothing here
    )
    add_retrieval_ranking_arguments(parser)
    recipe, training, ranking = parse_dataclasses(parser, argv)
    given = given_flags(parser, argv)
    unused = sorted((given & TRAINING_FIELDS) - set(READ_TRAINING_FIELDS))
    if unused:
        parser.error(
            f"--{unused[0]}: evaluation reads only --output_dir and --per_device_eval_batch_size of the "
            "TrainingArguments flags"
        )
    args = argparse.Namespace(**vars(recipe), **vars(ranking))
    # beside the model folder by default: nothing is added to it
    args.output_dir = Path(training.output_dir) if "output_dir" in given else args.model.parent
    args.batch_size = training.per_device_eval_batch_size if "per_device_eval_batch_size" in given else None
    args.batch_size = EVAL_BATCH_SIZE if args.batch_size is None else args.batch_size
    if args.text_retrieval != "all_captions" and args.task != "retrieval":
        parser.error("--text_retrieval is a retrieval protocol: use it with --task retrieval")
    check_retrieval_ranking_arguments(parser, args)
    if args.zero_shot and args.task != "retrieval":
        parser.error("--zero_shot is retrieval by the ITM score: use it with --task retrieval")
    check_data_dir(parser, TASKS[args.task], args.data_dir)
    check_output_dir(parser, args.output_dir)
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
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = f"{task.name}-{args.split}" + ("-zero-shot" if args.zero_shot else "")
    report = {
        "task": task.name,
        "model": str(args.model),
        "data": str(data.folder),
        "split": args.split,
        "zero_shot": args.zero_shot,
        "text_retrieval": None if evaluation.retrieval is None else args.text_retrieval,
        "metrics": evaluation.metrics,
        **evaluation.report(),
    }
    atomic_write_text(args.output_dir / f"eval-{name}.json", json.dumps(report, indent=2))
    if evaluation.predictions is not None:
        atomic_write_text(args.output_dir / f"predictions-{name}.json", json.dumps(evaluation.predictions))
    print(task.scorer.summary(evaluation, task, data, args.split))
    if evaluation.retrieval is not None and "contrastive" not in evaluation.retrieval.rankings:
        print(f"({args.model} has no VSC head: ITM ranked every pair)")
    print(f"Written to {args.output_dir / f'eval-{name}.json'}")
    return evaluation


if __name__ == "__main__":
    run(main)
