"""What the recipes' `HfArgumentParser` command lines share: which flags a command line actually gave, the
retrieval ranking options of fine-tuning and evaluation, and the data folder a task needs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from lxmert_s_msp.evaluation.downstream import DownstreamTask
from lxmert_s_msp.evaluation.retrieval import DEFAULT_RERANK_TOP_K


def given_values(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, Any]:
    """The destinations the command line sets, as opposed to those left at their defaults, with their parsed
    values (before a dataclass's `__post_init__` turns them into objects): a recipe's own defaults (the
    paper's epochs, seed 0, ...) replace `TrainingArguments`' only where no flag was given."""
    saved = {action: action.default for action in parser._actions}
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    try:
        return vars(parser.parse_known_args(argv)[0])
    finally:
        for action, default in saved.items():
            action.default = default


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    return set(given_values(parser, argv))


def recipe_parser(recipe: type, training_help: Mapping[str, str], description: str) -> HfArgumentParser:
    """An `HfArgumentParser` over a recipe's dataclass and `TrainingArguments`, the `TrainingArguments` fields
    the recipe reads helped with the recipe's own meaning and default (`training_help`)."""
    parser = HfArgumentParser(
        (recipe, TrainingArguments),
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for action in parser._actions:
        if action.dest in training_help:
            action.help = training_help[action.dest]
    return parser


def add_retrieval_ranking_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipes' options of retrieval's rankings (`evaluation.downstream.RetrievalOptions`)."""
    parser.add_argument(
        "--rerank_top_k",
        "--rerank-top-k",
        type=int,
        default=DEFAULT_RERANK_TOP_K,
        metavar="K",
        help="retrieval with a VSC checkpoint: candidates per query re-scored by ITM after the contrastive "
        "ranking (default: %(default)s; 0: ITM on every pair)",
    )
    parser.add_argument(
        "--all_pairs",
        "--all-pairs",
        action="store_true",
        help="retrieval: also rank by ITM on every pair (the paper's protocol, which the plain recall names "
        "then report)",
    )


def check_retrieval_ranking_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.rerank_top_k != DEFAULT_RERANK_TOP_K or args.all_pairs) and args.task != "retrieval":
        parser.error(
            "--rerank_top_k and --all_pairs choose retrieval rankings: use them with --task retrieval"
        )
    if args.rerank_top_k < 0:
        parser.error(
            f"--rerank_top_k: expected 0 (ITM on every pair) or more candidates, got {args.rerank_top_k}"
        )


def check_data_dir(parser: argparse.ArgumentParser, task: DownstreamTask, data_dir: Path | None) -> None:
    """A task the synthetic world (the default data) lacks needs --data_dir."""
    if data_dir is None and task.data.not_in_world is not None:
        parser.error(task.data.not_in_world)
