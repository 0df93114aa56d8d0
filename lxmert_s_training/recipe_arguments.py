"""What the recipes' `HfArgumentParser` command lines share: which flags a command line actually gave."""

from __future__ import annotations

import argparse


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations the command line sets, as opposed to those left at their defaults: a recipe's own
    defaults (the paper's epochs, seed 0, ...) replace `TrainingArguments`' only where no flag was given."""
    saved = {action: action.default for action in parser._actions}
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    try:
        return set(vars(parser.parse_known_args(argv)[0]))
    finally:
        for action, default in saved.items():
            action.default = default
