"""What the recipes' `HfArgumentParser` command lines share: which flags a command line actually gave."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from transformers import HfArgumentParser, TrainingArguments


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
