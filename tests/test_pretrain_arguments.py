"""`recipes/pretrain.py` speaks transformers' `TrainingArguments`: every field is a flag (with its hyphen
spelling) and a key of the curriculum's `training:`; the command line wins, a schedule field in every stage;
the stage records tell a run with other flags from one with the same; `--resume_from_checkpoint` continues a
stage from the checkpoint it names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from recipe_modules import load_recipe
from safetensors.torch import load_file
from tiny_curriculum import ONE_EPOCH_PHRASE as PHRASE
from tiny_curriculum import ONE_EPOCH_TOKEN as TOKEN
from tiny_curriculum import write_tiny_curriculum

from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.training.curriculum import CurriculumError
from lxmert_s_msp.training.stage_record import RECORD, StageMismatchError
from lxmert_s_msp.training.trainer import COMPLETE_MARKER


@pytest.fixture(scope="module")
def pretrain():
    return load_recipe("pretrain")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


def _config(folder: Path, world: Path, stages: list[dict], **training) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_tiny_curriculum(folder, stages, data={"dir": str(world)}, **training)


def test_flags_in_both_spellings_and_only_the_given_ones_reach_the_curriculum(pretrain):
    args = pretrain.parse_args(
        ["--config", "c.yaml", "--data-dir", "d", "--output-dir", "o", "--all-pairs", "--rerank_top_k", "5"]
        + ["--learning-rate", "2e-4", "--adam_beta2", "0.98", "--max_steps", "3", "--seed", "4"]
    )
    assert (args.config, args.data_dir, args.output_dir) == (Path("c.yaml"), Path("d"), Path("o"))
    assert (args.all_pairs, args.rerank_top_k, args.resume_from_checkpoint) == (True, 5, None)
    assert args.training_overrides == {"adam_beta2": 0.98, "learning_rate": 2e-4, "max_steps": 3, "seed": 4}
    default = pretrain.parse_args([])
    assert (default.output_dir, default.training_overrides, default.hub_upload) == (
        Path("outputs/pretrain"),
        {},
        None,
    )
    assert pretrain.parse_args(
        ["--resume_from_checkpoint", "o/1-token/checkpoint-4"]
    ).resume_from_checkpoint == (Path("o/1-token/checkpoint-4"))
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--hub_model_id", "me/model"])  # without --push_to_hub
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--rerank_top_k", "-1"])


def test_the_command_line_sets_every_stage_and_the_records_tell_other_flags_apart(
    tmp_path, world, pretrain, capsys
):
    config = _config(tmp_path, world, [TOKEN, PHRASE], save_steps=100)
    out = tmp_path / "out"
    flags = ["--config", str(config), "--output_dir", str(out), "--report_to", "none"]
    schedule = ["--max_steps", "2", "--learning_rate", "2e-4"]
    optimizer = ["--adam_beta2", "0.9", "--seed", "3", "--lr_scheduler_type", "cosine"]
    pretrain.main([*flags, *schedule, *optimizer])
    printed = capsys.readouterr().out
    assert "from the command line, over the curriculum's: --learning_rate 0.0002, --max_steps 2" in printed
    assert "2 steps (max_steps) of batch 8: 2 optimizer steps" in printed
    for stage in ("1-token", "2-phrase"):
        state = json.loads((out / stage / "final" / "trainer_state.json").read_text())
        assert state["global_step"] == 2  # the curriculum's epochs would be 4 and 8 steps
        rates = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
        assert rates and max(rates) <= 2e-4  # the curriculum's 1e-3 would log 5e-4 at the first step
        record = json.loads((out / stage / RECORD).read_text())
        assert (record["stage"]["learning_rate"], record["stage"]["max_steps"]) == (2e-4, 2)
        training = record["training"]
        assert (training["adam_beta2"], training["seed"], training["lr_scheduler_type"]) == (0.9, 3, "cosine")
        assert "report_to" not in training  # logging does not change the weights

    # the same flags again: nothing trains; the curriculum's own schedule is another result, refused
    pretrain.main([*flags, *schedule, *optimizer])
    assert "finished by an earlier run with the same settings" in capsys.readouterr().out
    with pytest.raises(StageMismatchError, match=r"stage\.max_steps: 2 -> None"):
        pretrain.main([*flags, "--learning_rate", "2e-4", *optimizer])
    with pytest.raises(StageMismatchError, match=r"training\.adam_beta2: 0\.9 -> None"):
        pretrain.main([*flags, *schedule, *optimizer[2:]])


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--use_cpu"], r"--use_cpu: set by the run: the device comes from the launch"),
        (["--save_strategy", "epoch"], r"--save_strategy: set by the run: 'steps'"),
        (
            ["--eval_strategy", "steps"],
            r"--eval_strategy: set by the run: pre-training has no evaluation set",
        ),
        (["--learning_rate", "0"], r"--learning_rate: must be positive, got 0\.0"),
        (["--warmup_steps", "100"], r"--warmup_steps: a stage's warm-up is a fraction of its steps"),
        (["--max_steps", "0"], r"--max_steps: must be positive, or -1 for none, got 0"),
    ],
)
def test_flags_the_run_cannot_take_are_refused_before_anything_runs(tmp_path, world, pretrain, flag, message):
    config = _config(tmp_path, world, [TOKEN])
    with pytest.raises(CurriculumError, match=message):
        pretrain.main(["--config", str(config), "--output_dir", str(tmp_path / "out"), *flag])
    assert not (tmp_path / "out").exists()


def test_transformers_own_rules_on_training_fields_are_checked_before_the_first_stage(
    tmp_path, world, pretrain
):
    config = _config(tmp_path, world, [TOKEN, PHRASE], lr_scheduler_type="sideways")
    with pytest.raises(
        CurriculumError, match=r"curriculum\.yaml: stage 'token': sideways is not a valid SchedulerType"
    ):
        pretrain.main(["--config", str(config), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "1-token").exists()


def test_resume_from_checkpoint_continues_the_stage_from_the_checkpoint_it_names(
    tmp_path, world, pretrain, capsys
):
    config = _config(tmp_path, world, [TOKEN], save_steps=2)
    out = tmp_path / "out"
    flags = ["--config", str(config), "--output_dir", str(out), "--max_steps", "4"]
    pretrain.main(flags)
    final = out / "1-token" / "final"
    reference = load_file(final / "model.safetensors")
    checkpoint = out / "1-token" / "checkpoint-2"

    with pytest.raises(ValueError, match="its stage is finished"):
        pretrain.main([*flags, "--resume_from_checkpoint", str(checkpoint)])
    elsewhere = tmp_path / "elsewhere" / "checkpoint-2"
    shutil.copytree(checkpoint, elsewhere)
    shutil.rmtree(final)  # as if the run had been stopped after its last checkpoint
    with pytest.raises(ValueError, match="not a checkpoint of this run's stages"):
        pretrain.main([*flags, "--resume_from_checkpoint", str(elsewhere)])
    unfinished = out / "1-token" / "checkpoint-3"
    shutil.copytree(checkpoint, unfinished)
    (unfinished / COMPLETE_MARKER).unlink()
    with pytest.raises(ValueError, match="an unfinished checkpoint"):
        pretrain.main([*flags, "--resume_from_checkpoint", str(unfinished)])
    shutil.rmtree(unfinished)

    capsys.readouterr()
    pretrain.main([*flags, "--resume_from_checkpoint", str(checkpoint)])
    assert "resuming from checkpoint-2" in capsys.readouterr().out  # not the newer checkpoint-4
    resumed = load_file(final / "model.safetensors")
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(reference[name], resumed[name]) for name in reference)
    state = json.loads((final / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4]
