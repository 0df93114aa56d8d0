"""What the recipes' `HfArgumentParser` command lines share: their --help (the recipe's own flags first, then
the `TrainingArguments` fields grouped), their parse errors, which flags a command line actually gave, the
retrieval ranking options of fine-tuning and evaluation, and the data folder a task needs."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from lxmert_s_msp.evaluation.downstream import DownstreamTask
from lxmert_s_msp.evaluation.retrieval import DEFAULT_RERANK_TOP_K

TRAINING_FIELDS = {item.name for item in fields(TrainingArguments) if item.init}


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


def recipe_parser(
    recipe: type,
    read_fields: Mapping[str, str],
    description: str,
    usage: str,
    others: str | None,
) -> HfArgumentParser:
    """An `HfArgumentParser` over a recipe's dataclass and `TrainingArguments`. Its --help lists the recipe's
    own flags first, then the `TrainingArguments` fields the recipe reads, helped with the recipe's meaning
    and default (`read_fields`), then the other fields under the title `others` (None: not listed, as the
    recipe refuses them). `usage`: the usage line, which would otherwise list every field."""
    parser = HfArgumentParser(
        (recipe, TrainingArguments),
        description=description,
        usage=usage,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    read = parser.add_argument_group("TrainingArguments fields with this recipe's meaning and default")
    rest = None if others is None else parser.add_argument_group(others)
    own = parser._optionals._group_actions
    for action in [action for action in own if action.dest in TRAINING_FIELDS]:
        own.remove(action)
        if action.dest in read_fields:
            action.help = read_fields[action.dest]
            read._group_actions.append(action)
        elif rest is not None:
            rest._group_actions.append(action)
    return parser


def parse_dataclasses(parser: HfArgumentParser, argv: Sequence[str] | None) -> tuple[Any, ...]:
    """`parse_args_into_dataclasses`, with its refusals (an unknown flag, a value `TrainingArguments` does
    not take) as command-line errors: one line, no traceback."""
    try:
        *parsed, unknown = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except ValueError as error:
        parser.error(str(error))
    if unknown:
        flags = [argument.split("=")[0] for argument in unknown if argument.startswith("-")]
        close = difflib.get_close_matches(flags[0], parser._option_string_actions, n=1) if flags else []
        hint = f" (did you mean {close[0]}?)" if close else ""
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return tuple(parsed)


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
