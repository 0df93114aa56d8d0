"""Pre-train LXMERT-S with an MSP curriculum; with no arguments, T→P→S on the built-in synthetic world.

    accelerate launch recipes/pretrain.py
    accelerate launch recipes/pretrain.py --config recipes/configs/msp_paper.yaml --data_dir /data/lxmert
    accelerate launch --multi_gpu --num_processes 8 recipes/pretrain.py --config ... --bf16 --report_to wandb

Re-running a command resumes it. At the end it prints where the Hub-ready folder and the loss plot are and,
when the last stage trains ITM and the data has a Flickr30k-style retrieval corpus, scores on its test split
with no fine-tuning, in percent with the chance level beside each: held-out ITM accuracy (every caption with
its image and with another) and zero-shot retrieval recall. A model with the VSC head ranks by the
contrastive similarity of its embeddings (no cross-modal pass), then re-ranks the top --rerank_top_k by ITM
(the cross-modal encoder); with --all_pairs it is also ranked by ITM on every pair (the paper's protocol) to
show how much of that recall the re-ranking keeps. A model without VSC is ranked by ITM on every pair. The
model card (<output_dir>/hub/README.md) records the same scores. --push_to_hub then uploads that folder
(only that folder) to --hub_model_id.

Every `TrainingArguments` field is a flag too, as in transformers' example scripts (each also spelled with
hyphens), and a key of the curriculum's `training:` section. The command line wins over the file. The
fields of a stage's schedule (--learning_rate, --num_train_epochs, --max_steps, --per_device_train_batch_size,
--gradient_accumulation_steps, --warmup_steps as a fraction) then set every stage's; in `training:` they are
a default for the stages that give none. The fields the run sets itself (each stage's folder, the save
strategy, the device, ...) are refused with the reason.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lxmert_s_msp.cli import check_output_dir, run
from lxmert_s_msp.evaluation.retrieval import DEFAULT_RERANK_TOP_K
from lxmert_s_msp.evaluation.zero_shot import ZeroShotSettings
from lxmert_s_msp.hub.upload import hub_upload, push_folder
from lxmert_s_msp.recipe_arguments import given_values, parse_dataclasses, recipe_parser
from lxmert_s_msp.training.curriculum import STAGE_ARGUMENTS, load_curriculum
from lxmert_s_msp.training.launch import distributed_state
from lxmert_s_msp.training.pretraining import run_curriculum

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "synthetic.yaml"
DEFAULT_OUTPUT_DIR = Path("outputs/pretrain")


@dataclass
class PretrainRecipeArguments:
    """The recipe's own flags; every `TrainingArguments` field is a flag too."""

    config: Path = field(default=DEFAULT_CONFIG, metadata={"help": "curriculum YAML (default: %(default)s)"})
    data_dir: Path | None = field(
        default=None, metadata={"help": "a prepared data folder, replacing the config's data"}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "train again the stages whose folder holds results of other settings, and replace a "
            "synthetic world of other settings (by default such a run is refused, naming what changed; the "
            "same settings resume)"
        },
    )
    retrieval_split: str = field(
        default="test", metadata={"help": "split of corpora/flickr30k for the zero-shot scores"}
    )
    rerank_top_k: int = field(
        default=DEFAULT_RERANK_TOP_K,
        metadata={
            "help": "zero-shot retrieval of a model with VSC: candidates per query re-ranked by ITM "
            "(default: %(default)s; 0: no re-ranking)"
        },
    )
    all_pairs: bool = field(
        default=False,
        metadata={
            "help": "zero-shot retrieval of a model with VSC: also rank by ITM on every pair (slow: every "
            "image with every caption through the cross-modal encoder)"
        },
    )


_EVERY_STAGE = "every stage's {} (default: each stage's own, from the curriculum)"
# TrainingArguments fields the recipe reads itself, or reads with a meaning of its own (the rest, when given,
# replace the curriculum's `training:` values).
RECIPE_TRAINING_FIELDS = {
    "output_dir": f"default: {DEFAULT_OUTPUT_DIR}",
    **{name: _EVERY_STAGE.format(key) for name, key in STAGE_ARGUMENTS.items()},
    "per_device_train_batch_size": "every stage's batch per process: its global batch_size is this x the "
    "processes x the accumulation steps (default: each stage's own batch_size, from the curriculum)",
    "warmup_steps": "every stage's warm-up, a fraction of its steps below 1 (default: each stage's own "
    "warmup_ratio, from the curriculum)",
    "max_steps": "every stage's optimizer steps, instead of its epochs (default: none)",
    "seed": "default: the curriculum's training.seed (0)",
    "report_to": "Trainer loggers, or 'none' (default: the curriculum's, tensorboard)",
    "resume_from_checkpoint": "a checkpoint-<step> folder of an unfinished stage of --output_dir to continue "
    "that stage from (default: re-running a command resumes from the last complete checkpoint by itself)",
    "push_to_hub": "upload <output_dir>/hub when done (only that folder)",
    "hub_model_id": "default: the output folder's name",
    "hub_token": "default: the stored login or HF_TOKEN",
    "hub_private_repo": "create the repository private",
}
# Given TrainingArguments fields the recipe handles itself instead of passing to the curriculum.
READ_BY_THE_RECIPE = {
    "output_dir",
    "resume_from_checkpoint",
    "push_to_hub",
    "hub_model_id",
    "hub_token",
    "hub_private_repo",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = recipe_parser(
        PretrainRecipeArguments,
        RECIPE_TRAINING_FIELDS,
        __doc__,
        usage="%(prog)s [--config CONFIG] [--data_dir DATA_DIR] [options]",
        others="other TrainingArguments fields, replacing the curriculum's training: values",
    )
    recipe, training = parse_dataclasses(parser, argv)
    given = given_values(parser, argv)
    args = argparse.Namespace(**vars(recipe))
    if args.rerank_top_k < 0:
        parser.error(
            f"--rerank_top_k: expected 0 (no re-ranking) or more candidates, got {args.rerank_top_k}"
        )
    args.output_dir = Path(training.output_dir) if "output_dir" in given else DEFAULT_OUTPUT_DIR
    resume = training.resume_from_checkpoint
    args.resume_from_checkpoint = None if resume in (None, "True", "true") else Path(resume)
    # as parsed: plain values that the stage records hold as JSON and `TrainingArguments` takes again
    args.training_overrides = {
        name: given[name] for name in sorted(given.keys() - set(vars(recipe)) - READ_BY_THE_RECIPE)
    }
    args.hub_upload = hub_upload(parser, training, args.output_dir)
    check_output_dir(parser, args.output_dir)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    state = distributed_state()
    curriculum = load_curriculum(args.config, args.data_dir, args.training_overrides, state.num_processes)
    schedule = {name: value for name, value in args.training_overrides.items() if name in STAGE_ARGUMENTS}
    if schedule:
        state.print(
            "Every stage's schedule from the command line, over the curriculum's: "
            + ", ".join(f"--{name} {value}" for name, value in schedule.items())
        )
    result = run_curriculum(
        curriculum,
        args.output_dir,
        ZeroShotSettings(args.retrieval_split, args.rerank_top_k, args.all_pairs),
        overwrite_output_dir=args.overwrite_output_dir,
        resume_from_checkpoint=args.resume_from_checkpoint,
    )
    if not state.is_main_process:
        return
    print(f"Hub-ready folder: {result.hub_folder}")
    if result.plot is not None:
        print(f"Loss curves:      {result.plot}")
    print(result.zero_shot.summary())
    if args.hub_upload is not None:
        message = f"LXMERT-S pre-trained with the {curriculum.path.name} curriculum"
        print(f"Pushed to the Hub: {push_folder(result.hub_folder, args.hub_upload, message)}")


if __name__ == "__main__":
    run(main)
