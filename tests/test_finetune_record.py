"""`lxmert_s_msp.training.finetune_record`: what a fine-tuning folder records of the run that trained it, and
which changes a run into that folder is refused for (the recipe end to end: tests/test_finetune.py)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import datasets
import pytest
from test_finetune import _save_checkpoint

from lxmert_s_msp.data.downstream_data import DownstreamData, retrieval_split
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.training.downstream_tasks import TASKS
from lxmert_s_msp.training.finetune_record import (
    OutputFolderError,
    check_output_folder,
    claim_output_folder,
    finetune_record,
)
from lxmert_s_msp.training.finetuning import FinetuneSettings

SETTINGS = FinetuneSettings(max_steps=3, batch_size=8, report_to=["none"])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


@pytest.fixture(scope="module")
def checkpoint(world, tmp_path_factory) -> Path:
    return _save_checkpoint(world, tmp_path_factory.mktemp("pretrained"), ["mlm", "itm"], seed=1)


def _record(world: Path, model: str, settings: FinetuneSettings = SETTINGS, task: str = "vqa") -> dict:
    return finetune_record(TASKS[task], model, None, DownstreamData.open(world), settings.report(6))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seed": 1}, "seed: 0 -> 1"),
        ({"learning_rate": 1e-4}, "learning_rate: 5e-05 -> 0.0001"),
        ({"head_learning_rate": 1e-2}, "head_learning_rate: 0.001 -> 0.01"),
        ({"batch_size": 16}, "batch_size: 8 -> 16"),
        ({"max_steps": 4}, "max_steps: 3 -> 4"),
        ({"training_overrides": {"weight_decay": 0.1}}, "training_overrides: {} -> {'weight_decay': 0.1}"),
    ],
)
def test_each_setting_that_changes_the_weights_is_named_in_the_refusal(
    world, checkpoint, tmp_path, change, named
):
    claim_output_folder(tmp_path, _record(world, str(checkpoint)), overwrite=False)
    other = _record(world, str(checkpoint), dataclasses.replace(SETTINGS, **change))
    with pytest.raises(OutputFolderError, match=f"another run \\(finetune_settings.json\\): {named}\\. Pass"):
        check_output_folder(tmp_path, other, overwrite=False)
    check_output_folder(tmp_path, other, overwrite=True)


def test_settings_that_change_no_weight_are_not_recorded(world, checkpoint, tmp_path):
    claim_output_folder(tmp_path, _record(world, str(checkpoint)), overwrite=False)
    logged = {"logging_steps": 1, "dataloader_num_workers": 2, "resume_from_checkpoint": "checkpoint-2"}
    same = dataclasses.replace(SETTINGS, report_to=["tensorboard"], training_overrides=logged)
    check_output_folder(tmp_path, _record(world, str(checkpoint), same), overwrite=False)


def test_new_weights_in_the_checkpoint_folder_and_a_rebuilt_corpus_are_changes(world, checkpoint, tmp_path):
    claim_output_folder(tmp_path / "out", _record(world, str(checkpoint)), overwrite=False)
    retrained = _save_checkpoint(world, tmp_path / "retrained", ["mlm", "itm"], seed=2)
    moved = shutil.copytree(checkpoint, tmp_path / "moved")
    shutil.copy(retrained / "model.safetensors", moved / "model.safetensors")
    with pytest.raises(OutputFolderError, match=r"model: '\S+' -> '\S+moved'; model_files changed\."):
        check_output_folder(tmp_path / "out", _record(world, str(moved)), overwrite=False)

    rebuilt = shutil.copytree(world, tmp_path / "world")
    corpus = rebuilt / "corpora" / "vqa_train"
    rows = datasets.load_from_disk(str(corpus))
    rows.select(range(len(rows) - 1)).save_to_disk(str(tmp_path / "fewer"))  # one question fewer
    shutil.rmtree(corpus)
    shutil.copytree(tmp_path / "fewer", corpus)
    shutil.copy(world / "corpora" / "vqa_train" / "answers.json", corpus)
    with pytest.raises(OutputFolderError, match=r"\): corpora changed\. Pass"):
        check_output_folder(tmp_path / "out", _record(rebuilt, str(checkpoint)), overwrite=False)


def test_what_datasets_caches_beside_a_corpus_changes_nothing(world, checkpoint):
    """Selecting retrieval's splits writes `cache-*.arrow` files into `corpora/flickr30k`: a run that did so
    must not find its own folder recorded with other data."""
    before = _record(world, str(checkpoint), task="retrieval")
    retrieval_split(world, "val")
    assert list((world / "corpora" / "flickr30k").glob("cache-*.arrow"))
    assert _record(world, str(checkpoint), task="retrieval") == before


def test_a_fresh_model_records_the_tokenizer_it_is_built_with(world, tmp_path):
    claim_output_folder(tmp_path, _record(world, "none"), overwrite=False)
    other = shutil.copytree(world, tmp_path / "world")
    config = other / "tokenizer" / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"do_lower_case": true', '"do_lower_case": false'))
    assert '"do_lower_case": false' in config.read_text()
    with pytest.raises(OutputFolderError, match=r"\): tokenizer changed\. Pass"):
        check_output_folder(tmp_path, _record(other, "none"), overwrite=False)
