"""What a fine-tuning run's weights depend on, recorded in its output folder, so that a run never silently
replaces another's results: the fine-tuning counterpart of a pre-training stage's `stage_settings.json`.

`<output_dir>/finetune_settings.json` holds the task, the model it starts from (the checkpoint folder and
its files' content; with `model="none"`, the folder the architecture comes from, or the data's tokenizer),
the data it trains and keeps its best epoch on (the task's corpora and the feature store) and every setting
of the schedule. A run with the same record goes on in the folder as before (the same command trains again,
`--resume_from_checkpoint` continues); one with another record, or a folder holding results but no record,
is refused, naming what differs, unless `overwrite` (`--overwrite_output_dir`), which first removes what
a run and its evaluations wrote there (`RUN_OUTPUTS`), so that no evaluation of the old model stays beside
the new one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from accelerate import PartialState

from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.store import HARD_NEGATIVES_FILE, atomic_write_text
from lxmert_s_msp.evaluation.downstream import DownstreamTask
from lxmert_s_msp.training.stage_record import NOT_IN_RESULT, store_digest

RECORD = "finetune_settings.json"
# What a fine-tuning run (`finetuning.finetune`) and `recipes/evaluate_checkpoint.py` write into an output
# folder, as glob patterns.
RUN_OUTPUTS = (
    RECORD,
    "hub",
    "hub.partial",
    "checkpoints",
    "metrics.json",
    "eval-*.json",
    "predictions-*.json",
)
WEIGHTS_SUFFIXES = {".safetensors", ".bin"}


class OutputFolderError(ValueError):
    """An output folder holds another run's results; the message says what differs and what to do."""


def _trains(path: Path, weights: bool) -> bool:
    """Whether a file can change what a run trains: not a model's card, nor a saved corpus's `state.json`
    (a fingerprint that differs between two builds of the same rows) or the caches `datasets` writes beside
    it (`cache-*.arrow`, of a filter on the corpus); without `weights`, no weight file either."""
    ignored = path.name in ("README.md", "state.json") or path.name.startswith("cache-")
    return path.is_file() and not ignored and (weights or path.suffix not in WEIGHTS_SUFFIXES)


def files_digest(folder: Path, weights: bool = True) -> str:
    """The content of the files of `folder` that can change what a run trains (`_trains`)."""
    hasher = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if _trains(path, weights):
            with open(path, "rb") as handle:
                hasher.update(f"{path.name}:{hashlib.file_digest(handle, 'sha256').hexdigest()}".encode())
    return hasher.hexdigest()


def _model_source(model: str, config_from: str | Path | None, data: DownstreamData) -> dict[str, str | None]:
    """Where the weights, or with `model="none"` the architecture and tokenizer, come from, and their
    content."""
    tokenizer = data.folder / "tokenizer"
    fresh = model == "none" and config_from is None
    return {
        "model": model if model == "none" else str(Path(model).resolve()),
        "model_files": None if model == "none" else files_digest(Path(model)),
        "config_from": None if config_from is None else str(Path(config_from).resolve()),
        "config_from_files": None if config_from is None else files_digest(Path(config_from), weights=False),
        "tokenizer": (files_digest(tokenizer) if tokenizer.is_dir() else "bert-base-uncased")
        if fresh
        else None,
    }


def finetune_record(
    task: DownstreamTask,
    model: str,
    config_from: str | Path | None,
    data: DownstreamData,
    schedule: dict[str, Any],
) -> dict[str, Any]:
    """Everything a fine-tuning run's weights depend on, as JSON values. `schedule`: the run's settings
    (`FinetuneSettings.report`), of which `training_overrides` keeps only the fields that change the
    result."""
    store = data.store.path
    overrides = {
        name: value
        for name, value in schedule["training_overrides"].items()
        if name not in NOT_IN_RESULT | {"resume_from_checkpoint"}
    }
    record = {
        "task": task.name,
        **_model_source(model, config_from, data),
        "corpora": {folder.name: files_digest(folder) for folder in task.data.corpus_folders(data)},
        "store": store_digest(store, (store / HARD_NEGATIVES_FILE).is_file()),
        **schedule,
        "training_overrides": overrides,
    }
    return json.loads(json.dumps(record, default=str))  # as read back: lists, enum values


def _differences(recorded: dict[str, Any], record: dict[str, Any]) -> list[str]:
    changed = [key for key in record.keys() | recorded.keys() if recorded.get(key) != record.get(key)]
    return [
        f"{key} changed"
        if key.endswith("files") or key in ("corpora", "store", "tokenizer")
        else f"{key}: {recorded.get(key)!r} -> {record.get(key)!r}"
        for key in sorted(changed)
    ]


def _run_outputs(output_dir: Path) -> list[Path]:
    return sorted({path for pattern in RUN_OUTPUTS for path in output_dir.glob(pattern)})


def check_output_folder(output_dir: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse an output folder that holds results of another fine-tuning run (or results without a record
    of what trained them), unless `overwrite`."""
    if overwrite or not _run_outputs(output_dir):
        return
    record_file = output_dir / RECORD
    recorded = json.loads(record_file.read_text()) if record_file.is_file() else None
    if recorded == record:
        return
    held = ", ".join(path.name for path in _run_outputs(output_dir))
    why = "; ".join(_differences(recorded, record)) if recorded else f"no {RECORD} says what trained them"
    raise OutputFolderError(
        f"{output_dir} holds the results of another run ({held}): {why}. Pass --overwrite_output_dir to "
        "replace them (the folder's model, checkpoints, metrics and evaluations of that model), or choose "
        "another --output_dir"
    )


def claim_output_folder(output_dir: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Check `output_dir` on every process (`check_output_folder`); then, on the main process, remove the
    results of another run when `overwrite` asks, and record `record` there before anything trains."""
    check_output_folder(output_dir, record, overwrite)
    state = PartialState()
    if state.is_main_process:
        record_file = output_dir / RECORD
        same = record_file.is_file() and json.loads(record_file.read_text()) == record
        if not same:
            for path in _run_outputs(output_dir):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(record_file, json.dumps(record, indent=1, sort_keys=True))
    state.wait_for_everyone()
