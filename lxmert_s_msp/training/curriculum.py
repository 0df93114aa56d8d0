"""The MSP curriculum as a YAML file: data, model, training settings and the stages in order.

```yaml
base: msp_paper.yaml          # optional: start from another file (path relative to this one) ...
order: [sentence, token]      # ... and optionally run only these of its stages, in this order
data:
  dir: /data/lxmert           # store/, corpora/<name>/, objects_vocab.txt, attributes_vocab.txt
  tokenizer: bert-base-uncased
  # or  synthetic: {images: 1000, seed: 0}   -> the built-in synthetic world
model: {hidden_size: 768}     # LxmertSConfig fields; vocabulary sizes come from the data
training: {seed: 0, optimizer_state: restart, bf16: true}   # MSP's settings, any TrainingArguments field
stages:
  - name: token
    corpus: tokens            # or `sources: [{corpus: tokens, tasks: [...]}, ...]` to mix corpora
    tasks: [mlm, mrfr, moc, ifrs]
    epochs: 10
    batch_size: 64            # global: split over processes and accumulation steps
    learning_rate: 1.0e-5
    max_length: 72            # text tokens, [CLS] and [SEP] included (default: LXMERT's 20)
    mlm_class_word_probability: 0.3   # optional: MLM rate of class-name words (the phrase stage, §3.2)
    mlm_relation_word_probability: 0.5  # optional: MLM rate of spatial relation words ("left", "above")
    mlm_relation_subject_probability: 0.5  # optional: rate at which MLM hides a relation's subject whole
    binding_negatives: false  # optional, with itm_vsc: captions with the words bound to their objects changed
    region_negatives: false   # optional, with itm_vsc: images with a named object's attribute changed
    relation_side_confidence: 0.5  # optional, with rpt: point at all so detected on the relation's side
remove_tasks: [ifrs]          # optional: drop tasks from every stage (Table 4's "-IFRS" rows) ...
replace_tasks: {itm_hs: itm}  # ... or swap them ("ITM instead of ITM_HS")
```

A `base` is merged key by key (mappings recursively, everything else replaced), so an ordering or a task
removal of Table 4 is a few lines on top of the paper's schedule. Every error names the file and the field.
The file is read as YAML 1.2 reads numbers (`1e-3` is a number; PyYAML's YAML 1.1 wants `1.0e-3`), a key
given twice in one mapping is an error (YAML loaders keep the last silently), numbers must be finite, and a
stage's name, which names its folder, is one safe path component (`STAGE_NAME`).

`training:` takes MSP's own settings (`TrainingConfig`) and every `TrainingArguments` field, as transformers'
example scripts do, except those the run sets itself (`SET_BY_THE_RUN_ARGUMENTS`). The fields of a stage's
schedule (`STAGE_ARGUMENTS`: learning rate, epochs, steps, batch, accumulation, warm-up) are there a default
for the stages that do not give their own. `TrainingArguments` fields given on the command line
(`overrides`) win over the file: a schedule field then applies to every stage.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml
from huggingface_hub.errors import StrictDataclassError
from transformers import TrainingArguments

from lxmert_s_msp.data.synthetic import WorldSettings
from modeling_lxmert_s import PRETRAINING_TASKS, LxmertSConfig, check_pretraining_tasks


class CurriculumError(ValueError):
    """A curriculum file that cannot be run; the message names the file and the field."""


# A stage's name names its folder, <output_dir>/<i>-<name>: one path component that cannot climb out of the
# output folder (`..`, `/`), hide (a leading dot), read as a flag (a leading hyphen) or need quoting.
STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
STAGE_NAME_RULE = (
    "use at most 100 letters, digits, '.', '_' and '-', starting with a letter or a digit (it names the "
    "stage's folder, <output_dir>/<i>-<name>)"
)


class CurriculumLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's numbers (`1e-3`, which YAML 1.1 reads as a string) and no key
    given twice in one mapping (which it would silently resolve to the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be replaced
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice, on lines {seen[key]} and {line}: remove one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


CurriculumLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(frozen=True)
class DataConfig:
    """Where the stage corpora come from: a prepared folder (`dir`) or the synthetic world."""

    dir: str | None = None
    synthetic: dict[str, Any] | None = None
    tokenizer: str | None = None  # default: <dir>/tokenizer when present, else bert-base-uncased


# The recipe's defaults where they differ from `TrainingArguments`': seed 0 as every recipe here; the plain
# AdamW kernel every measured run used (transformers 5 defaults to the fused one); logs and checkpoints sized
# for stages of minutes; the two newest checkpoints (the newest may be unfinished when a run is killed);
# TensorBoard logs.
RECIPE_ARGUMENT_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "optim": "adamw_torch",
    "logging_steps": 10,
    "save_steps": 200,
    "save_total_limit": 2,
    "report_to": ["tensorboard"],
}
# `TrainingArguments` fields of a stage's schedule, and the stage key each sets. A warm-up is a fraction of
# the stage's steps (`warmup_steps` below 1, as `TrainingArguments` reads it); a batch given per device is
# multiplied by the processes and the accumulation steps into the stage's global `batch_size`.
STAGE_ARGUMENTS = {
    "learning_rate": "learning_rate",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "warmup_steps": "warmup_ratio",
    "per_device_train_batch_size": "batch_size",
}
_BY_THE_COMMAND_LINE = "a choice of the command line (recipes/pretrain.py --{name}), not of the curriculum"
_NO_EVALUATION = "pre-training has no evaluation set: the held-out scores come once, at the end"
# `TrainingArguments` fields the run sets itself, and why.
SET_BY_THE_RUN_ARGUMENTS = {
    "output_dir": "each stage trains in <--output_dir>/<i>-<stage>",
    "use_cpu": "the device comes from the launch (`accelerate launch --cpu` for the CPU)",
    "remove_unused_columns": "the collators read every column",
    "ddp_find_unused_parameters": "the run finds the parameters a stage's losses do not reach",
    "save_strategy": "'steps': a killed run resumes from its last checkpoint",
    "resume_from_checkpoint": _BY_THE_COMMAND_LINE,
    "push_to_hub": _BY_THE_COMMAND_LINE,
    "hub_model_id": _BY_THE_COMMAND_LINE,
    "hub_token": _BY_THE_COMMAND_LINE,
    "hub_private_repo": _BY_THE_COMMAND_LINE,
    "hub_strategy": "--push_to_hub uploads the Hub folder once, at the end",
    "hub_always_push": "--push_to_hub uploads the Hub folder once, at the end",
    "hub_revision": "--push_to_hub uploads the Hub folder once, at the end",
    "do_eval": _NO_EVALUATION,
    "eval_strategy": _NO_EVALUATION,
    "eval_steps": _NO_EVALUATION,
    "eval_on_start": _NO_EVALUATION,
    "load_best_model_at_end": _NO_EVALUATION,
    "metric_for_best_model": _NO_EVALUATION,
}


@dataclass(frozen=True)
class TrainingConfig:
    """Settings shared by every stage: MSP's own, and `TrainingArguments` fields (`arguments`: the recipe's
    defaults, then the file's `training:`, then the command line's)."""

    # "restart": a fresh optimizer per stage (our choice: the paper does not say); "carry": Adam's moments
    # follow each parameter
    optimizer_state: Literal["restart", "carry"] = "restart"
    mlm_probability: float = 0.15
    region_mask_probability: float = 0.15
    triplet_shuffle_probability: float = 0.05
    mismatch_probability: float = 0.5
    arguments: dict[str, Any] = field(default_factory=lambda: dict(RECIPE_ARGUMENT_DEFAULTS))

    @property
    def seed(self) -> int:
        return self.arguments.get("seed", RECIPE_ARGUMENT_DEFAULTS["seed"])


# A stage's MLM rates of particular words, beside `TrainingConfig.mlm_probability`; each needs an 'mlm' task.
MLM_RATES = (
    "mlm_class_word_probability", "mlm_relation_word_probability", "mlm_relation_subject_probability"
)  # fmt: skip


@dataclass(frozen=True)
class Source:
    """One corpus of a stage and the tasks its batches train."""

    corpus: str
    tasks: list[str]


@dataclass(frozen=True)
class StageConfig:
    """One stage: its corpora and tasks, and its schedule."""

    name: str
    sources: list[Source]
    epochs: float
    batch_size: int
    learning_rate: float
    warmup_ratio: float = 0.0
    gradient_accumulation_steps: int = 1
    max_steps: int | None = None  # optimizer steps, instead of `epochs` (TrainingArguments' max_steps)
    max_length: int = 20  # text tokens with [CLS] and [SEP]; longer texts are cut, and counted
    mlm_class_word_probability: float | None = None  # MLM rate of class-name words; others: mlm_probability
    mlm_relation_word_probability: float | None = None  # MLM rate of spatial relation words
    mlm_relation_subject_probability: float | None = None  # rate of hiding a relation's subject whole
    binding_negatives: bool = False  # ITM_VSC also scores each caption's binding negative
    region_negatives: bool = False  # ... and each image with a named object's attribute changed
    relation_side_confidence: float | None = None  # RPT: every region so sure on the relation's side

    @property
    def length(self) -> str:
        """How long the stage trains, as `TrainingArguments` reads it: `max_steps` if given, else `epochs`."""
        if self.max_steps is None:
            return f"{self.epochs:g} epochs"
        return f"{self.max_steps:,} steps (max_steps)"

    @property
    def tasks(self) -> list[str]:
        """Every task of the stage, in first-seen order: the heads the stage's model carries."""
        return list(dict.fromkeys(task for source in self.sources for task in source.tasks))


@dataclass(frozen=True)
class Curriculum:
    path: Path
    data: DataConfig
    model: dict[str, Any]
    training: TrainingConfig
    stages: list[StageConfig]


def load_curriculum(
    path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    processes: int = 1,
) -> Curriculum:
    """Read and check a curriculum file; `data_dir` replaces its data source with a prepared folder, and
    `overrides` (`TrainingArguments` fields given on the command line) its training settings, a schedule
    field in every stage; a batch per device counts `processes` processes."""
    path = Path(path)
    raw = _read_with_base(path, seen=())
    where = str(path)
    known = {"data", "model", "training", "stages", "order", "remove_tasks", "replace_tasks"}
    _refuse_unknown(raw, known, where, "")
    data = _build(DataConfig, raw.get("data") or {}, where, "data")
    if data_dir is not None:
        data = dataclasses.replace(data, dir=str(data_dir), synthetic=None)
    if (data.dir is None) == (data.synthetic is None):
        raise CurriculumError(f"{where}: data: give exactly one of `dir` and `synthetic`")
    if data.synthetic is not None:
        _build(WorldSettings, data.synthetic, where, "data.synthetic")
    model = _model(raw.get("model") or {}, where)
    overrides = dict(overrides or {})
    training, stage_defaults = _training(raw.get("training") or {}, overrides, where)
    stage_overrides = {name: value for name, value in overrides.items() if name in STAGE_ARGUMENTS}
    positions = model.get("max_position_embeddings", 512)
    stages = [
        _stage(
            _scheduled(entry, stage_defaults, stage_overrides, processes), where, f"stages[{i}]", positions
        )
        for i, entry in enumerate(_list(raw, "stages", where))
    ]
    if "order" in raw:
        stages = _ordered(stages, raw["order"], where)
    if "remove_tasks" in raw or "replace_tasks" in raw:
        stages = _changed_tasks(stages, raw.get("remove_tasks") or [], raw.get("replace_tasks") or {}, where)
    if not stages:
        raise CurriculumError(f"{where}: stages: a curriculum needs at least one stage")
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise CurriculumError(f"{where}: stages: names must be unique, got {names}")
    return Curriculum(path=path, data=data, model=model, training=training, stages=stages)


# `LxmertSConfig` fields the run sets itself: the sizes the data fixes (`PretrainingData.model_sizes`) and the
# heads of each stage.
SET_BY_THE_RUN = {
    "vocab_size": "the tokenizer's size",
    "num_object_labels": "objects_vocab.txt",
    "num_attr_labels": "attributes_vocab.txt",
    "visual_feat_dim": "the feature store",
    "pretraining_tasks": "each stage's tasks",
}


def _model(model: Any, where: str) -> dict[str, Any]:
    """The `model:` section, checked against `LxmertSConfig`'s fields, their types and its own rules."""
    if not isinstance(model, dict):
        raise CurriculumError(f"{where}: model: expected a mapping of LxmertSConfig fields, got {model!r}")
    hints = inspect.get_annotations(LxmertSConfig, eval_str=True)
    for name, value in model.items():
        if name in SET_BY_THE_RUN:
            raise CurriculumError(
                f"{where}: model.{name}: set by the run from {SET_BY_THE_RUN[name]}; remove it"
            )
        if name not in hints:
            close = difflib.get_close_matches(str(name), hints, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise CurriculumError(
                f"{where}: model: unknown key {name!r}; {hint}LxmertSConfig's fields are "
                f"{sorted(set(hints) - set(SET_BY_THE_RUN))}"
            )
        if not _matches(value, hints[name]):
            raise CurriculumError(f"{where}: model.{name}: expected {_describe(hints[name])}, got {value!r}")
        _refuse_non_finite(value, f"{where}: model.{name}")
    try:
        LxmertSConfig(**model)
    except (StrictDataclassError, ValueError) as error:
        raise CurriculumError(f"{where}: model: {error.__cause__ or error}") from error
    return model


TRAINING_ARGUMENT_TYPES = get_type_hints(TrainingArguments)
_POSITIVE = ("must be positive", lambda value: value > 0)
_NOT_NEGATIVE = ("must not be negative", lambda value: value >= 0)
# Values `TrainingArguments` takes that a run cannot use, refused before anything trains.
ARGUMENT_RULES = {
    "learning_rate": _POSITIVE,
    "num_train_epochs": _POSITIVE,
    "gradient_accumulation_steps": _POSITIVE,
    "per_device_train_batch_size": _POSITIVE,
    "max_steps": ("must be positive, or -1 for none", lambda value: value > 0 or value == -1),
    "warmup_steps": (
        "a stage's warm-up is a fraction of its steps: must be in [0, 1)",
        lambda value: 0 <= value < 1,
    ),
    "logging_steps": _POSITIVE,
    "save_steps": _POSITIVE,
    "save_total_limit": (
        "must be positive, or null to keep every checkpoint",
        lambda value: value is None or value > 0,
    ),
    "dataloader_num_workers": _NOT_NEGATIVE,
    "weight_decay": _NOT_NEGATIVE,
    "max_grad_norm": _NOT_NEGATIVE,
}
PROBABILITIES = (
    "mlm_probability",
    "region_mask_probability",
    "triplet_shuffle_probability",
    "mismatch_probability",
)


def _training(raw: Any, overrides: dict[str, Any], where: str) -> tuple[TrainingConfig, dict[str, Any]]:
    """The `training:` section, the command line's `TrainingArguments` fields over the file's; also the
    schedule fields it gives the stages (`STAGE_ARGUMENTS`)."""
    if not isinstance(raw, dict):
        raise CurriculumError(f"{where}: training: expected a mapping, got {raw!r}")
    own = {f.name for f in dataclasses.fields(TrainingConfig)} - {"arguments"}
    for name, value in raw.items():
        if name not in own:
            _check_argument(name, value, f"{where}: training.{name}", own)
    for name, value in overrides.items():
        _check_argument(name, value, f"--{name}", set())
    arguments = {
        **RECIPE_ARGUMENT_DEFAULTS,
        **{name: value for name, value in raw.items() if name not in own and name not in STAGE_ARGUMENTS},
        **{name: value for name, value in overrides.items() if name not in STAGE_ARGUMENTS},
    }
    settings = {name: value for name, value in raw.items() if name in own}
    training = _build(TrainingConfig, {**settings, "arguments": arguments}, where, "training")
    for name in PROBABILITIES:
        if not 0 <= getattr(training, name) <= 1:
            raise CurriculumError(
                f"{where}: training.{name}: must be in [0, 1], got {getattr(training, name)}"
            )
    return training, {name: value for name, value in raw.items() if name in STAGE_ARGUMENTS}


def _check_argument(name: str, value: Any, at: str, own: set[str]) -> None:
    """A `TrainingArguments` field of `training:` or of the command line: one the run leaves to the user,
    of its type, with a value the run can use."""
    if name in SET_BY_THE_RUN_ARGUMENTS:
        raise CurriculumError(f"{at}: set by the run: {SET_BY_THE_RUN_ARGUMENTS[name].format(name=name)}")
    if name not in TRAINING_ARGUMENT_TYPES:
        close = difflib.get_close_matches(name, [*own, *TRAINING_ARGUMENT_TYPES], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CurriculumError(
            f"{at}: neither a TrainingArguments field nor one of MSP's settings {sorted(own)}{hint}"
        )
    if not _matches(value, TRAINING_ARGUMENT_TYPES[name]):
        raise CurriculumError(f"{at}: expected {_describe(TRAINING_ARGUMENT_TYPES[name])}, got {value!r}")
    _refuse_non_finite(value, at)
    if name in ARGUMENT_RULES:
        rule, holds = ARGUMENT_RULES[name]
        if not holds(value):
            raise CurriculumError(f"{at}: {rule}, got {value!r}")


def _scheduled(entry: Any, defaults: dict[str, Any], overrides: dict[str, Any], processes: int) -> Any:
    """A stage entry with `training:`'s schedule fields where it gives none and the command line's over its
    own, in the stage's keys (`STAGE_ARGUMENTS`)."""
    if not isinstance(entry, dict):
        return entry
    entry = dict(entry)
    for given, replace in ((defaults, False), (overrides, True)):
        for name, value in given.items():
            key = STAGE_ARGUMENTS[name]
            if name == "per_device_train_batch_size" or not (replace or key not in entry):
                continue
            entry[key] = None if name == "max_steps" and value == -1 else value
    for given, replace in ((defaults, False), (overrides, True)):
        accumulation = entry.get("gradient_accumulation_steps", 1)
        per_device = given.get("per_device_train_batch_size")
        if (
            per_device is not None
            and (replace or "batch_size" not in entry)
            and isinstance(accumulation, int)
        ):
            entry["batch_size"] = per_device * processes * accumulation
    return entry


def _read_with_base(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise CurriculumError(f"{path}: no such curriculum file")
    if path.resolve() in seen:
        raise CurriculumError(f"{path}: `base` files form a cycle: {[str(p) for p in seen]}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=CurriculumLoader) or {}
    except yaml.YAMLError as error:
        raise CurriculumError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise CurriculumError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = _read_with_base(path.parent / base, (*seen, path.resolve()))
    if "stages" in raw:  # a file that lists its own stages does not reorder its base's
        parent.pop("order", None)
    return _merge(parent, raw)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _list(raw: dict[str, Any], key: str, where: str) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise CurriculumError(f"{where}: {key}: expected a list, got {value!r}")
    return value


def _stage(entry: Any, where: str, at: str, positions: int) -> StageConfig:
    if not isinstance(entry, dict):
        raise CurriculumError(f"{where}: {at}: expected a mapping, got {entry!r}")
    entry = dict(entry)
    if "sources" in entry:
        if "corpus" in entry or "tasks" in entry:
            raise CurriculumError(f"{where}: {at}: give either `corpus` + `tasks` or `sources`, not both")
        sources = entry.pop("sources")
        if not isinstance(sources, list) or not sources:
            raise CurriculumError(f"{where}: {at}.sources: expected a non-empty list, got {sources!r}")
    else:
        sources = [{"corpus": entry.pop("corpus", None), "tasks": entry.pop("tasks", None)}]
    built = [_build(Source, source, where, f"{at}.sources[{i}]") for i, source in enumerate(sources)]
    stage = _build(StageConfig, {**entry, "sources": built}, where, at)
    if not STAGE_NAME.fullmatch(stage.name):
        raise CurriculumError(
            f"{where}: {at}.name: {stage.name!r} is not a single folder name: {STAGE_NAME_RULE}"
        )
    _check_tasks(stage, where, at)
    for name in ("epochs", "batch_size", "learning_rate", "gradient_accumulation_steps"):
        if getattr(stage, name) <= 0:
            raise CurriculumError(f"{where}: {at}.{name}: must be positive, got {getattr(stage, name)}")
    if stage.max_steps is not None and stage.max_steps <= 0:
        raise CurriculumError(f"{where}: {at}.max_steps: must be positive, got {stage.max_steps}")
    if not 0 <= stage.warmup_ratio < 1:
        raise CurriculumError(f"{where}: {at}.warmup_ratio: must be in [0, 1), got {stage.warmup_ratio}")
    if not 3 <= stage.max_length <= positions:
        raise CurriculumError(
            f"{where}: {at}.max_length: must be between 3 ([CLS] word [SEP]) and the model's "
            f"{positions} positions, got {stage.max_length}"
        )
    for name in (*MLM_RATES, "relation_side_confidence"):
        if getattr(stage, name) is not None and not 0 <= getattr(stage, name) <= 1:
            raise CurriculumError(f"{where}: {at}.{name}: must be in [0, 1], got {getattr(stage, name)}")
    return stage


def _check_tasks(stage: StageConfig, where: str, at: str) -> None:
    for i, source in enumerate(stage.sources):
        unknown = [task for task in source.tasks if task not in PRETRAINING_TASKS]
        if unknown or not source.tasks:
            raise CurriculumError(
                f"{where}: {at}.sources[{i}].tasks: expected tasks from {list(PRETRAINING_TASKS)}, "
                f"got {source.tasks}"
            )
    try:  # the registry's rules on which tasks go together (one ITM variant, WPG with matched pairs, ...)
        check_pretraining_tasks(stage.tasks)
    except ValueError as error:
        raise CurriculumError(f"{where}: {at}: {error}") from error
    for name in MLM_RATES:
        if getattr(stage, name) is not None and "mlm" not in stage.tasks:
            raise CurriculumError(f"{where}: {at}.{name}: set, but the stage has no 'mlm' task")
    for name in ("binding_negatives", "region_negatives"):
        if getattr(stage, name) and "itm_vsc" not in stage.tasks:
            raise CurriculumError(
                f"{where}: {at}.{name}: set, but the stage has no 'itm_vsc' task, which scores them"
            )
    if stage.relation_side_confidence is not None and "rpt" not in stage.tasks:
        raise CurriculumError(f"{where}: {at}.relation_side_confidence: set, but the stage has no 'rpt' task")


def _changed_tasks(stages: list[StageConfig], remove: Any, replace: Any, where: str) -> list[StageConfig]:
    """Every stage with the tasks of `remove_tasks` dropped and those of `replace_tasks` swapped."""
    if not isinstance(remove, list) or not all(task in PRETRAINING_TASKS for task in remove):
        raise CurriculumError(
            f"{where}: remove_tasks: expected a list of tasks from {list(PRETRAINING_TASKS)}, got {remove!r}"
        )
    if not isinstance(replace, dict) or not all(
        old in PRETRAINING_TASKS and new in PRETRAINING_TASKS for old, new in replace.items()
    ):
        raise CurriculumError(
            f"{where}: replace_tasks: expected a mapping between tasks of {list(PRETRAINING_TASKS)}, "
            f"got {replace!r}"
        )
    present = {task for stage in stages for task in stage.tasks}
    absent = [task for task in [*remove, *replace] if task not in present]
    if absent:
        raise CurriculumError(f"{where}: remove_tasks / replace_tasks: no stage has the tasks {absent}")
    changed = []
    for i, stage in enumerate(stages):
        sources = [
            dataclasses.replace(
                source, tasks=[replace.get(task, task) for task in source.tasks if task not in remove]
            )
            for source in stage.sources
        ]
        stage = dataclasses.replace(stage, sources=sources)
        _check_tasks(stage, where, f"stages[{i}] ({stage.name}) after remove_tasks / replace_tasks")
        changed.append(stage)
    return changed


def _ordered(stages: list[StageConfig], order: Any, where: str) -> list[StageConfig]:
    by_name = {stage.name: stage for stage in stages}
    if not isinstance(order, list) or not all(isinstance(name, str) for name in order):
        raise CurriculumError(f"{where}: order: expected a list of stage names, got {order!r}")
    missing = [name for name in order if name not in by_name]
    if missing:
        raise CurriculumError(f"{where}: order: no stage named {missing}; the stages are {list(by_name)}")
    return [by_name[name] for name in order]


def _refuse_unknown(raw: dict[str, Any], known: set[str], where: str, at: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        prefix = f"{at}: " if at else ""
        raise CurriculumError(f"{where}: {prefix}unknown keys {unknown}; expected some of {sorted(known)}")


def _build(cls: type, raw: Any, where: str, at: str) -> Any:
    """`cls(**raw)` after checking names and simple types, so a typo fails here and not mid-run."""
    if not isinstance(raw, dict):
        raise CurriculumError(f"{where}: {at}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _refuse_unknown(raw, set(fields), where, at)
    hints = get_type_hints(cls)
    for name, value in raw.items():
        if not _matches(value, hints[name]):
            raise CurriculumError(f"{where}: {at}.{name}: expected {_describe(hints[name])}, got {value!r}")
        _refuse_non_finite(value, f"{where}: {at}.{name}")
    absent = [
        name
        for name, f in fields.items()
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if absent:
        raise CurriculumError(f"{where}: {at}: missing {absent}")
    return cls(**raw)


def _refuse_non_finite(value: Any, at: str) -> None:
    """`.inf` and `.nan` are YAML floats that pass every comparison a rule makes (`nan > 0` is false, so is
    `nan <= 0`) and fail later, deep in training."""
    if isinstance(value, float) and not math.isfinite(value):
        raise CurriculumError(f"{at}: must be a finite number, got {value}")


def _matches(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (list, dict):
        return isinstance(value, origin) and (
            origin is dict or all(_matches(item, get_args(hint)[0]) for item in value)
        )
    if get_args(hint) and origin is not None:  # Optional / unions
        return any(_matches(value, option) for option in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " or ".join(repr(option) for option in get_args(hint))
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
