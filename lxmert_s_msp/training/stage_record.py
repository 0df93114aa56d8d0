"""What a stage's result depends on, recorded in its folder so that a re-run never reuses another setting's.

A stage folder's `stage_settings.json` holds the settings that determine the stage's weights: the stage's
resolved config, the training settings that change the optimisation, the model section, the data it reads
(its corpora's content, the store's images, every file of the saved tokenizer, the hard negatives it draws
ITM_HS negatives from) and the previous stage's record, whose own inputs it thereby inherits. A re-run with
the same settings resumes or skips the stage; one with different settings is refused, naming what changed,
unless the user asks to overwrite (`--overwrite_output_dir`, as in transformers), which trains the stage
again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from lxmert_s_msp.data.corpus_builders import corpus_digest
from lxmert_s_msp.data.store import HARD_NEGATIVES_FILE, atomic_write_text, files_digest
from lxmert_s_msp.training.curriculum import Curriculum, StageConfig
from modeling_lxmert_s import tasks_need

RECORD = "stage_settings.json"
# `TrainingArguments` fields that change how a run is logged, saved, fed or uploaded, not the weights it ends
# with. Every other field is recorded: an unknown one counts as changing the result.
NOT_IN_RESULT = {
    "logging_steps",
    "logging_strategy",
    "logging_first_step",
    "logging_nan_inf_filter",
    "log_level",
    "log_level_replica",
    "log_on_each_node",
    "report_to",
    "run_name",
    "project",
    "trackio_space_id",
    "trackio_bucket_id",
    "trackio_static_space_id",
    "disable_tqdm",
    "skip_memory_metrics",
    "include_num_input_tokens_seen",
    "save_steps",
    "save_total_limit",
    "save_only_model",
    "save_on_each_node",
    "dataloader_num_workers",
    "dataloader_prefetch_factor",
    "dataloader_persistent_workers",
    "dataloader_pin_memory",
    "dataloader_multiprocessing_context",
    "ddp_timeout",
    "torch_empty_cache_steps",
}
TRAINING_ARGUMENT_DEFAULTS = {
    f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    for f in dataclasses.fields(TrainingArguments)
}


class StageMismatchError(ValueError):
    """A stage folder holds results of other settings; the message says which and what to do."""


def store_digest(store: Path, with_hard_negatives: bool) -> str:
    """The store's images and their order, its array shapes, and its hard negatives when the stage draws
    them. The features themselves (gigabytes) are not read: a store is rewritten, never edited in place."""
    files = sorted(store.glob("*.json"))
    if with_hard_negatives:
        files.append(store / HARD_NEGATIVES_FILE)
    shapes = {path.name: path.stat().st_size for path in sorted(store.glob("*.npy"))}
    return files_digest(files) + hashlib.sha256(json.dumps(shapes, sort_keys=True).encode()).hexdigest()[:16]


def stage_settings(
    curriculum: Curriculum,
    stage: StageConfig,
    data_folder: Path,
    tokenizer: str,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything the stage's weights depend on, as JSON-ready values; `tokenizer`: the tokenizer's digest
    (`lxmert_s_msp.data.tokenizer.tokenizer_digest`)."""
    own = dataclasses.asdict(curriculum.training)
    training = {
        **{key: value for key, value in own.items() if key != "arguments"},
        **{  # a field given at transformers' default is the same setting as one not given
            key: value
            for key, value in curriculum.training.arguments.items()
            if key not in NOT_IN_RESULT and value != TRAINING_ARGUMENT_DEFAULTS.get(key, dataclasses.MISSING)
        },
    }
    corpora = {source.corpus for source in stage.sources}
    return {
        "stage": dataclasses.asdict(stage),
        "training": training,
        "model": curriculum.model,
        "data": {
            "corpora": {name: corpus_digest(data_folder / "corpora" / name) for name in sorted(corpora)},
            "store": store_digest(data_folder / "store", tasks_need(stage.tasks, "hard_negatives")),
            "tokenizer": tokenizer,
        },
        "previous_stage": None if previous is None else digest_of(previous),
    }


def digest_of(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _differences(old: Any, new: Any, at: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += _differences(old.get(key), new.get(key), f"{at}.{key}" if at else str(key))
        return found
    return [] if old == new else [f"{at}: {old!r} -> {new!r}" if len(repr(old)) < 60 else f"{at} changed"]


def _recorded(folder: Path) -> tuple[bool, dict[str, Any] | None]:
    """Whether `folder` holds anything, and the settings it records."""
    record = folder / RECORD
    holds = folder.is_dir() and any(folder.iterdir())
    return holds, json.loads(record.read_text()) if record.is_file() else None


def check_stage_folder(folder: Path, settings: dict[str, Any], name: str, overwrite: bool) -> bool:
    """Refuse a stage folder that holds results of other settings (or no record of its settings), unless
    `overwrite`; the message names what changed. Returns whether the folder already records `settings`."""
    holds, recorded = _recorded(folder)
    if holds and recorded != settings and not overwrite:
        changes = "; ".join(_differences(recorded, settings)) if recorded else f"no {RECORD} in it"
        raise StageMismatchError(
            f"stage {name!r}: {folder} holds results of other settings ({changes}). Pass "
            "--overwrite_output_dir to train this stage and the later ones again, or choose another "
            "--output_dir"
        )
    return recorded == settings


def claim_stage_folder(folder: Path, settings: dict[str, Any], name: str, overwrite: bool) -> None:
    """Record `settings` in `folder` before the stage trains there; with `overwrite`, results of other
    settings are deleted first. Main process only, after `check_stage_folder` on every process."""
    if check_stage_folder(folder, settings, name, overwrite):
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    atomic_write_text(folder / RECORD, json.dumps(settings, indent=1, sort_keys=True))
