"""What every command line shares (the recipes and the `python -m lxmert_s_msp.*` commands): how a refusal
is printed, the flag spellings they accept, the output folders they may write into. The recipes'
`HfArgumentParser` is `lxmert_s_msp.recipe_arguments`. Standard library only, so that any module's command
line can use it.

A refusal of bad input prints `error: <message>` alone and exits 1 (`run`); a command line argparse cannot
parse prints its usage line and `<command>: error: <message>` and exits 2. Which exceptions are bad input
(`EXPECTED_ERRORS`), by the package's conventions:
- `ValueError`: a value the command cannot use: a flag, a config field, a record of an input file, a
  folder holding another run's results (the package's own refusals, `CurriculumError`, `BadRecordError`,
  `StageMismatchError`, `OutputFolderError`, ..., derive from it);
- `KeyError`: a record, field or image an input lacks (the readers, the feature store and the collators
  raise it with a message naming it);
- `OSError`: a file or folder missing, unreadable or unwritable, a full disk, the Hub unreachable.
Any other exception (`TypeError`, `AttributeError`, `IndexError`, torch's `RuntimeError`, ...) is a bug and
keeps its traceback; so does a refusal when LXMERT_S_MSP_TRACEBACK=1 is set, to see where it was raised.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXPECTED_ERRORS = (ValueError, KeyError, OSError)
TRACEBACK_VARIABLE = "LXMERT_S_MSP_TRACEBACK"
# What makes a folder a model folder, as `from_pretrained` reads it: its config and its weights.
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run a command's `main` as its command line does: bad input (`EXPECTED_ERRORS`) prints its message
    alone and exits 1; a bug raises on, with its traceback."""
    try:
        main(argv)
    except EXPECTED_ERRORS as error:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None


def accept_underscores(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let every hyphenated flag of `parser` and its sub-commands be spelled with underscores too
    (`--num-regions`, `--num_regions`), as the recipes take transformers' underscore names and hyphens."""
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    for action in parser._actions:
        for flag in list(action.option_strings):
            spelling = "--" + flag[2:].replace("-", "_")
            if flag.startswith("--") and spelling not in parser._option_string_actions:
                action.option_strings.append(spelling)
                parser._option_string_actions[spelling] = action
    for sub in subparsers:
        for command in sub.choices.values():
            accept_underscores(command)
    return parser


def model_folder_around(path: Path) -> Path | None:
    """The model folder (config.json and weights) that is or holds `path`, if any."""
    for folder in [path, *path.parents]:
        if (folder / "config.json").is_file() and any((folder / name).is_file() for name in MODEL_WEIGHTS):
            return folder
    return None


def output_dir_problem(output_dir: Path) -> str | None:
    """Why a command cannot write its results into `output_dir`, or None: a file there or above it, a model
    folder around it (what one uploads: results inside it would go with it, or be replaced by its next
    save), a folder it may not write in. Tried by creating and removing a folder in the nearest existing
    one, so that nothing is left behind."""
    path = output_dir.absolute()
    existing = next(folder for folder in [path, *path.parents] if folder.exists())
    if not existing.is_dir():
        return f"--output_dir {output_dir}: {existing} is a file, not a folder"
    if (model := model_folder_around(existing)) is not None:
        return (
            f"--output_dir {output_dir}: {model} is a model folder (config.json and weights), and results in "
            "it would be uploaded with the model; choose a folder outside it"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=existing))
    except OSError as error:
        return f"--output_dir {output_dir}: cannot write in {existing} ({error.strerror})"
    return None


def check_output_dir(parser: argparse.ArgumentParser, output_dir: Path) -> None:
    """Refuse an --output_dir the command cannot write into (`output_dir_problem`) before anything runs."""
    if (problem := output_dir_problem(output_dir)) is not None:
        parser.error(problem)
