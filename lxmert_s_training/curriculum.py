"""The MSP curriculum as a YAML file: data, model, training settings and the stages in order.

```yaml
base: msp_paper.yaml          # optional: start from another file (path relative to this one) ...
order: [sentence, token]      # ... and optionally run only these of its stages, in this order
data:
  dir: /data/lxmert           # store/, corpora/<name>/, objects_vocab.txt, attributes_vocab.txt
  tokenizer: bert-base-uncased
  # or  synthetic: {images: 1000, seed: 0}   -> the built-in synthetic world
model: {hidden_size: 768}     # LxmertSConfig fields; vocabulary sizes come from the data
training: {seed: 0, optimizer_state: restart, bf16: false, torch_compile: false}
stages:
  - name: token
    corpus: tokens            # or `sources: [{corpus: tokens, tasks: [...]}, ...]` to mix corpora
    tasks: [mlm, mrfr, moc, ifrs]
    epochs: 10
    batch_size: 64            # global: split over processes and accumulation steps
    learning_rate: 1.0e-5
    max_length: 72            # text tokens, [CLS] and [SEP] included (default: LXMERT's 20)
    mlm_class_word_probability: 0.3   # optional: MLM rate of class-name words (the phrase stage, §3.2)
remove_tasks: [ifrs]          # optional: drop tasks from every stage (Table 4's "-IFRS" rows) ...
replace_tasks: {itm_hs: itm}  # ... or swap them ("ITM instead of ITM_HS")
```

A `base` is merged key by key (mappings recursively, everything else replaced), so an ordering or a task
removal of Table 4 is a few lines on top of the paper's schedule. Every error names the file and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassError

from modeling_lxmert_s import PRETRAINING_TASKS, LxmertSConfig
from processing.synthetic import WorldSettings


class CurriculumError(ValueError):
    """A curriculum file that cannot be run; the message names the file and the field."""


@dataclass(frozen=True)
class DataConfig:
    """Where the stage corpora come from: a prepared folder (`dir`) or the synthetic world."""

    dir: str | None = None
    synthetic: dict[str, Any] | None = None
    tokenizer: str | None = None  # default: <dir>/tokenizer when present, else bert-base-uncased


@dataclass(frozen=True)
class TrainingConfig:
    """Settings shared by every stage."""

    seed: int = 0
    # "restart": a fresh optimizer per stage (our choice: the paper does not say); "carry": Adam's moments
    # follow each parameter
    optimizer_state: Literal["restart", "carry"] = "restart"
    optim: str = "adamw_torch"
    weight_decay: float = 0.0  # 0 makes AdamW the paper's Adam
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = "linear"
    bf16: bool = False
    torch_compile: bool = False
    activation_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    dataloader_num_workers: int = 0
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    mlm_probability: float = 0.15
    region_mask_probability: float = 0.15
    triplet_shuffle_probability: float = 0.05
    mismatch_probability: float = 0.5


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
    max_length: int = 20  # text tokens with [CLS] and [SEP]; longer texts are cut, and counted
    mlm_class_word_probability: float | None = None  # MLM rate of class-name words; others: mlm_probability

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


def load_curriculum(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Curriculum:
    """Read and check a curriculum file; `data_dir` replaces its data source with a prepared folder."""
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
    training = _check_training(_build(TrainingConfig, raw.get("training") or {}, where, "training"), where)
    positions = model.get("max_position_embeddings", 512)
    stages = [
        _stage(entry, where, f"stages[{i}]", positions) for i, entry in enumerate(_list(raw, "stages", where))
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
    try:
        LxmertSConfig(**model)
    except (StrictDataclassError, ValueError) as error:
        raise CurriculumError(f"{where}: model: {error.__cause__ or error}") from error
    return model


def _check_training(training: TrainingConfig, where: str) -> TrainingConfig:
    for name in ("logging_steps", "save_steps", "save_total_limit"):
        if getattr(training, name) <= 0:
            raise CurriculumError(
                f"{where}: training.{name}: must be positive, got {getattr(training, name)}"
            )
    for name in ("dataloader_num_workers", "weight_decay", "max_grad_norm"):
        if getattr(training, name) < 0:
            raise CurriculumError(
                f"{where}: training.{name}: must not be negative, got {getattr(training, name)}"
            )
    for name in (
        "mlm_probability",
        "region_mask_probability",
        "triplet_shuffle_probability",
        "mismatch_probability",
    ):
        if not 0 <= getattr(training, name) <= 1:
            raise CurriculumError(
                f"{where}: training.{name}: must be in [0, 1], got {getattr(training, name)}"
            )
    return training


def _read_with_base(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise CurriculumError(f"{path}: no such curriculum file")
    if path.resolve() in seen:
        raise CurriculumError(f"{path}: `base` files form a cycle: {[str(p) for p in seen]}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
    _check_tasks(stage, where, at)
    for name in ("epochs", "batch_size", "learning_rate", "gradient_accumulation_steps"):
        if getattr(stage, name) <= 0:
            raise CurriculumError(f"{where}: {at}.{name}: must be positive, got {getattr(stage, name)}")
    if not 0 <= stage.warmup_ratio < 1:
        raise CurriculumError(f"{where}: {at}.warmup_ratio: must be in [0, 1), got {stage.warmup_ratio}")
    if not 3 <= stage.max_length <= positions:
        raise CurriculumError(
            f"{where}: {at}.max_length: must be between 3 ([CLS] word [SEP]) and the model's "
            f"{positions} positions, got {stage.max_length}"
        )
    if stage.mlm_class_word_probability is not None and not 0 <= stage.mlm_class_word_probability <= 1:
        raise CurriculumError(
            f"{where}: {at}.mlm_class_word_probability: must be in [0, 1], "
            f"got {stage.mlm_class_word_probability}"
        )
    return stage


def _check_tasks(stage: StageConfig, where: str, at: str) -> None:
    for i, source in enumerate(stage.sources):
        unknown = [task for task in source.tasks if task not in PRETRAINING_TASKS]
        if unknown or not source.tasks:
            raise CurriculumError(
                f"{where}: {at}.sources[{i}].tasks: expected tasks from {list(PRETRAINING_TASKS)}, "
                f"got {source.tasks}"
            )
    try:  # the model's own rules on which tasks go together (one ITM variant, WPG with matched pairs, ...)
        LxmertSConfig(pretraining_tasks=stage.tasks)
    except StrictDataclassClassValidationError as error:
        raise CurriculumError(f"{where}: {at}: {error.__cause__ or error}") from error
    if stage.mlm_class_word_probability is not None and "mlm" not in stage.tasks:
        raise CurriculumError(
            f"{where}: {at}.mlm_class_word_probability: set, but the stage has no 'mlm' task"
        )


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
    absent = [
        name
        for name, f in fields.items()
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if absent:
        raise CurriculumError(f"{where}: {at}: missing {absent}")
    return cls(**raw)


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
