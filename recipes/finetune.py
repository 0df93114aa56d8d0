"""Fine-tune LXMERT-S on VQA v2, GQA, NLVR2 or Flickr30k retrieval (MSP paper §4.2).

    python recipes/finetune.py --task vqa --model outputs/pretrain/hub
    python recipes/finetune.py --task nlvr2 --model none --model_config_from outputs/pretrain/hub
    python recipes/finetune.py --task gqa --model /ckpt/hub --data_dir /data/lxmert
    accelerate launch --multi_gpu --num_processes 8 recipes/finetune.py --task vqa --model ... --data_dir ...

The paper's settings by default: Adam at 5e-5, batch 32, epochs VQA 6, GQA 5, NLVR2 8, retrieval 8; and, our
choice as the paper gives no schedule, LXMERT's linear warm-up over the first 10% of the steps, then linear
decay. Also our choice, where the paper has one learning rate: the new task head (the parameters the
checkpoint does not provide) trains at --head_learning_rate, 1e-3, and the pre-trained rest at
--learning_rate; both follow the same schedule. Every `TrainingArguments` field is a flag too, as in
transformers' example scripts (--num_train_epochs, --max_steps, --seed, --report_to, --bf16, ...; each also
spelled with hyphens): the recipe's defaults above stand where no flag is given.
Without --data_dir the data is the synthetic world of `recipes/pretrain.py`'s default run (generated when
absent), which has every task but GQA. Writes <output_dir>/hub (the best model on val + processor + model
card, `from_pretrained` loads it; --push_to_hub uploads it, and only it), <output_dir>/metrics.json (its val
metrics), <output_dir>/checkpoints and <output_dir>/finetune_settings.json (what trained the folder: the same
command again trains there again, another one is refused, naming what differs, unless
--overwrite_output_dir replaces the folder's results and the evaluations of its old model).
Retrieval ranks val once, at the end, as `recipes/evaluate_checkpoint.py` does: in two stages from a
checkpoint with the VSC head (--rerank_top_k, --all_pairs), by ITM on every pair otherwise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState

from lxmert_s_msp.cli import check_output_dir, run
from lxmert_s_msp.data.downstream_data import DownstreamData, default_data_folder
from lxmert_s_msp.evaluation.downstream import RetrievalOptions
from lxmert_s_msp.hub.upload import hub_upload, push_folder
from lxmert_s_msp.recipe_arguments import (
    add_retrieval_ranking_arguments,
    check_data_dir,
    check_retrieval_ranking_arguments,
    given_flags,
    parse_dataclasses,
    recipe_parser,
)
from lxmert_s_msp.training.downstream_tasks import TASKS
from lxmert_s_msp.training.finetuning import (
    HEAD_LEARNING_RATE,
    PAPER_BATCH_SIZE,
    PAPER_LEARNING_RATE,
    FinetuneResult,
    FinetuneSettings,
    finetune,
    finetune_problem,
)
from lxmert_s_msp.training.launch import use_every_core


@dataclass
class FinetuneRecipeArguments:
    """The recipe's own flags. Every `TrainingArguments` field is a flag too, as in transformers' example
    scripts (`--output_dir`, `--learning_rate`, `--num_train_epochs`, `--max_steps`, `--seed`, `--report_to`,
    `--push_to_hub`, `--bf16`, ...; each also spelled with hyphens)."""

    task: str = field(metadata={"choices": sorted(TASKS)})
    model: str = field(
        metadata={
            "help": "a pre-training checkpoint folder with its processor (e.g. outputs/pretrain/hub), or "
            "'none' to train from scratch"
        }
    )
    model_config_from: Path | None = field(
        default=None,
        metadata={
            "help": "with --model none: take the architecture and processor of this checkpoint folder, so "
            "that no pre-training is compared on the same model (default: LxmertSConfig's sizes, the data's "
            "tokenizer)"
        },
    )
    data_dir: Path | None = field(
        default=None,
        metadata={"help": "prepared data folder (default: the synthetic world, outputs/pretrain/world)"},
    )
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": f"global, split over the processes; default {PAPER_BATCH_SIZE}, the paper's "
            "(--per_device_train_batch_size sets it per process instead)"
        },
    )
    head_learning_rate: float = field(
        default=HEAD_LEARNING_RATE,
        metadata={
            "help": "of the parameters --model does not provide (the new task head; with --model none, every "
            f"parameter). Default {HEAD_LEARNING_RATE}, our choice: the paper trains everything at one rate, "
            "but VQA on the synthetic world from a pre-trained small model stayed at the answer prior "
            "(~41%%) with one rate, 1e-3 or 5e-5, and reached 55-57%% with the head at 1e-3 and the encoder "
            "at 5e-5"
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "replace the results of another run in --output_dir (its model, checkpoints, metrics and "
            "evaluation files); by default such a run is refused, naming what differs, and the same settings "
            "train there again"
        },
    )


# TrainingArguments fields the recipe reads itself (the rest, when given, go to the Trainer as given).
RECIPE_TRAINING_FIELDS = {
    "output_dir": "default: outputs/finetune-<task>",
    "learning_rate": f"of the parameters loaded from --model; default {PAPER_LEARNING_RATE}, the paper's",
    "num_train_epochs": "default: the paper's for the task",
    "max_steps": "stop after this many optimizer steps (overrides --num_train_epochs)",
    "seed": "default: 0",
    "report_to": "Trainer loggers, or 'none'; default: tensorboard",
    "per_device_train_batch_size": "instead of --batch_size: the batch of each process",
    "push_to_hub": "upload <output_dir>/hub when done (only that folder)",
    "hub_model_id": "default: the output folder's name",
    "hub_token": "default: the stored login or HF_TOKEN",
    "hub_private_repo": "create the repository private",
}
# Flags of the names `finetune_problem` gives.
PROBLEM_FLAGS = {
    "epochs": "--num_train_epochs",
    "config_from": "--model_config_from",
    "batch_size": "--batch_size",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = recipe_parser(
        FinetuneRecipeArguments,
        RECIPE_TRAINING_FIELDS,
        __doc__,
        usage="%(prog)s --task TASK --model MODEL [options]",
        others="other TrainingArguments fields, passed to the Trainer as given (transformers' meaning)",
    )
    add_retrieval_ranking_arguments(parser)
    recipe, training, ranking = parse_dataclasses(parser, argv)
    given = given_flags(parser, argv)
    args = argparse.Namespace(**vars(recipe), **vars(ranking))
    check_retrieval_ranking_arguments(parser, args)
    if args.model_config_from is not None and args.model != "none":
        parser.error("--model_config_from goes with --model none (a checkpoint brings its own architecture)")
    check_data_dir(parser, TASKS[args.task], args.data_dir)
    if "per_device_train_batch_size" in given:
        if args.batch_size is not None:
            parser.error("--batch_size (global) and --per_device_train_batch_size: give one")
        args.batch_size = training.per_device_train_batch_size * PartialState().num_processes
    args.batch_size = PAPER_BATCH_SIZE if args.batch_size is None else args.batch_size
    args.output_dir = (
        Path(training.output_dir) if "output_dir" in given else Path(f"outputs/finetune-{args.task}")
    )
    args.learning_rate = training.learning_rate
    args.epochs = training.num_train_epochs if "num_train_epochs" in given else None
    args.max_steps = training.max_steps if "max_steps" in given else None
    args.seed = training.seed if "seed" in given else 0
    args.report_to = training.report_to if "report_to" in given else ["tensorboard"]
    args.training_overrides = {
        name: getattr(training, name)
        for name in sorted(given - set(RECIPE_TRAINING_FIELDS))
        if hasattr(training, name)
    }
    args.settings = FinetuneSettings(
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        head_learning_rate=args.head_learning_rate,
        seed=args.seed,
        report_to=args.report_to,
        training_overrides=args.training_overrides,
    )
    problem = finetune_problem(args.model, args.model_config_from, args.settings)
    if problem is not None:
        name, why = problem
        parser.error(f"{PROBLEM_FLAGS.get(name, '--' + name)}: {why}")
    args.hub_upload = hub_upload(parser, training, args.output_dir)
    check_output_dir(parser, args.output_dir)
    return args


def main(argv: list[str] | None = None) -> FinetuneResult:
    args = parse_args(argv)
    use_every_core(PartialState())
    task = TASKS[args.task]
    data = DownstreamData.open(args.data_dir or default_data_folder())
    ranking = RetrievalOptions(rerank_top_k=args.rerank_top_k, all_pairs=args.all_pairs)
    result = finetune(
        task,
        args.model,
        data,
        args.output_dir,
        args.settings,
        config_from=args.model_config_from,
        ranking=ranking,
        overwrite_output_dir=args.overwrite_output_dir,
    )
    if PartialState().is_main_process:
        print(task.scorer.summary(result.evaluation, task, data, "val"))
        if result.test_evaluation is not None:  # the kept model on a labelled test split, for its card
            print(task.scorer.summary(result.test_evaluation, task, data, "test"))
        print(f"Hub-ready folder: {result.hub_folder}")
        print(f"Metrics:          {result.metrics_file}")
        if args.hub_upload is not None:
            message = f"LXMERT-S fine-tuned on {task.name} from {Path(args.model).name}"
            print(f"Pushed to the Hub: {push_folder(result.hub_folder, args.hub_upload, message)}")
    return result


if __name__ == "__main__":
    run(main)
