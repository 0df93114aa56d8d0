"""One command-line style (`lxmert_s_msp.cli`, `lxmert_s_msp.recipe_arguments`): a refusal of bad input is
one message and a non-zero exit, never a traceback; --help shows a recipe's own flags first; every command
takes hyphen and underscore spellings; an output folder a command cannot write is refused up front."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_modules import load_recipe

from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data import corpora, hard_negatives
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world

REPO = Path(__file__).resolve().parents[1]
RECIPES = {name: load_recipe(name) for name in ("pretrain", "finetune", "evaluate_checkpoint")}
# Each recipe's least command line, to which a test adds the flag it tries.
LEAST = {
    "pretrain": [],
    "finetune": ["--task", "vqa", "--model", "none"],
    "evaluate_checkpoint": ["--task", "vqa", "--model", "m", "--split", "val"],
}


@pytest.mark.parametrize(
    "error",
    [
        ValueError("--seed: expected an integer"),
        KeyError("store: image '7' is not in the feature store"),
        FileNotFoundError("data/store: no such folder"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_bad_input_prints_its_message_alone_and_exits_1(error, capsys, monkeypatch):
    def main(argv):
        raise error

    monkeypatch.delenv("LXMERT_S_MSP_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exited:
        run(main, [])
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"error: {error.args[0]}\n"  # a KeyError's message without its quotes


def test_a_bug_keeps_its_traceback_and_so_does_a_refusal_when_asked(monkeypatch):
    def buggy(argv):
        return [][0]

    with pytest.raises(IndexError):
        run(buggy, [])

    def refusing(argv):
        raise ValueError("bad")

    monkeypatch.setenv("LXMERT_S_MSP_TRACEBACK", "1")
    with pytest.raises(ValueError, match="bad"):
        run(refusing, [])


@pytest.mark.parametrize(
    ("command", "message"),
    [
        # a 5-frame traceback before: the curriculum's refusal of a field the run sets
        (
            [f"{REPO}/recipes/pretrain.py", "--use_cpu"],
            "error: --use_cpu: set by the run: the device comes from",
        ),
        # HfArgumentParser's raw ValueError before
        (
            [f"{REPO}/recipes/finetune.py", "--task", "vqa", "--model", "none", "--epochs", "1"],
            "finetune.py: error: unrecognized arguments: --epochs 1 (did you mean --num_train_epochs?)",
        ),
        # a module's command line, flags spelled with underscores
        (
            ["-m", "lxmert_s_msp.data.corpora", "nlvr2", "--store", "{tmp}/store", "--out", "{tmp}/out"]
            + ["--lxmert", "{tmp}/train.json", "--drop_missing"],
            "error: {tmp}/store is not a finished feature store",
        ),
    ],
    ids=["pretrain", "finetune", "corpora"],
)
def test_a_refusal_on_the_command_line_is_one_message_and_no_traceback(command, message, tmp_path):
    command = [part.format(tmp=tmp_path) for part in command]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    environment.pop("LXMERT_S_MSP_TRACEBACK", None)
    done = subprocess.run(
        [sys.executable, *command], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert message.format(tmp=tmp_path) in done.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "1"], "unrecognized arguments: --epochs 1 (did you mean --num_train_epochs?)"),
        (["--warmup_steps=-1"], "Got warmup_steps = -1.0, Expected value warmup_steps >= 0"),
    ],
)
@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
def test_what_the_argument_parser_refuses_is_a_command_line_error(recipe, flags, message, capsys):
    with pytest.raises(SystemExit) as exited:
        RECIPES[recipe].parse_args([*LEAST[recipe], *flags])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.splitlines()[-1].endswith(f"error: {message}")
    assert len(error.splitlines()) == 2  # the usage line, then the message


def _help(recipe: str, capsys) -> str:
    with pytest.raises(SystemExit):
        RECIPES[recipe].parse_args(["--help"])
    return capsys.readouterr().out


def _entry(shown: str, flag: str) -> int:
    """Where --help lists `flag` (not where its description mentions it)."""
    return re.search(rf"^  {flag}\b", shown, flags=re.MULTILINE).start()


def test_evaluation_s_help_lists_the_flags_it_takes(capsys):
    """It listed every TrainingArguments field (about 200) and took two."""
    shown = _help("evaluate_checkpoint", capsys)
    assert "--weight_decay" not in shown and "--learning_rate" not in shown
    # its own flags first
    assert (
        _entry(shown, "--zero_shot")
        < _entry(shown, "--output_dir")
        < _entry(shown, "--per_device_eval_batch_size")
    )
    assert len(shown.splitlines()) < 80


@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
def test_a_recipe_s_help_shows_its_own_flags_then_the_training_arguments_grouped(recipe, capsys):
    shown = _help(recipe, capsys)
    own = _entry(shown, "--data_dir")
    read = shown.index("TrainingArguments fields with this recipe's meaning and default:")
    others = shown.index("\nother TrainingArguments fields")
    assert own < read < _entry(shown, "--learning_rate") < _entry(shown, "--seed") < others
    assert others < _entry(shown, "--weight_decay") and others < _entry(shown, "--adam_beta2")
    usage, after = shown.splitlines()[:2]
    assert usage.startswith("usage: ") and after == ""  # one line, not every field


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process may not write in: read-only for a user; /sys (whose folders no one creates
    files in) for root, whom permissions do not stop."""
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    return folder if not os.access(folder, os.W_OK) else Path("/sys")


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_an_output_dir_that_is_a_file_or_cannot_be_written_is_refused_up_front(recipe, tmp_path, capsys):
    a_file = tmp_path / "results.json"
    a_file.write_text("{}")
    unwritable = _unwritable(tmp_path)
    cases = {
        a_file: f"{a_file} is a file, not a folder",
        a_file / "run": f"{a_file} is a file, not a folder",
        unwritable / "run": f"cannot write in {unwritable} (",
    }
    for output_dir, message in cases.items():
        with pytest.raises(SystemExit) as exited:
            RECIPES[recipe].parse_args([*LEAST[recipe], "--output_dir", str(output_dir)])
        assert exited.value.code == 2
        assert f"error: --output_dir {output_dir}: {message}" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == sorted([a_file, tmp_path / "read-only"])


def test_every_flag_is_taken_with_underscores_too():
    """As `python -m lxmert_s_msp.*` commands are built: sub-commands, shared parents, exclusive groups."""
    parser = argparse.ArgumentParser()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--drop-missing", action="store_true")
    kinds = parser.add_subparsers(dest="kind", required=True)
    vqa = kinds.add_parser("vqa", parents=[common])
    vocabulary = vqa.add_mutually_exclusive_group(required=True)
    vocabulary.add_argument("--answers")
    vocabulary.add_argument("--new-answer-vocab", action="store_true")
    kinds.add_parser("nlvr2", parents=[common])
    accept_underscores(parser)
    args = parser.parse_args(["vqa", "--drop_missing", "--new_answer_vocab"])
    assert (args.drop_missing, args.new_answer_vocab) == (True, True)
    assert parser.parse_args(["nlvr2", "--drop-missing"]).drop_missing
    with pytest.raises(SystemExit):
        parser.parse_args(["vqa", "--answers", "a.json", "--new_answer_vocab"])  # still exclusive


def test_a_module_command_takes_underscore_spellings(tmp_path):
    world = generate_world(tmp_path / "world", WorldSettings(images=40, feature_dim=8))
    hard_negatives.main([str(world / "store"), "--top_m", "3", "--batch_size", "4", "--device", "cpu"])
    assert hard_negatives.load_hard_negatives(world / "store").shape == (40, 3)
    corpus = corpora.main(
        ["nlvr2", "--store", str(world / "store"), "--out", str(tmp_path / "nlvr2")]
        + ["--lxmert", str(world / "nlvr2" / "train.json"), "--drop_missing"]
    )
    assert len(corpus.dataset) > 0
