"""The MSP paper's Table 4 on the built-in world: its rows as curricula made from one base curriculum's
stages, under the paper's protocol or at equal optimizer steps, and the table and plots of their scores.

A row is a stage order of the base (`synthetic.yaml`'s token, phrase and sentence stages: the paper's tasks
plus the alignment tasks, with which this small model learns), one stage mixing the three corpora (T+P+S), or
an order with tasks removed or replaced (§4.6's task rows). On the base's task lists ITM_HS's place is held by
ITM_VSC (ITM on negatives mined from the VSC similarities), so the paper's "−ITM_HS" rows remove ITM_VSC. One
row keeps the paper's task lists alone (`synthetic_paper_tasks.yaml`), to show what they learn here.

Protocols: "paper", each stage with its own epochs (an order with more stages trains longer, as in the paper);
"equal_steps", every row scaled to the optimizer steps of T→P→S under the paper's protocol, each stage keeping
its share of the row's steps (`max_steps`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lxmert_s_msp.data.store import atomic_write_text
from lxmert_s_msp.evidence.results import NO_PRETRAINING, mean_std
from lxmert_s_msp.plotting import plt, save_figure
from lxmert_s_msp.training.curriculum import StageConfig, load_curriculum
from lxmert_s_msp.training.stage_data import PretrainingData

PROTOCOLS = ("paper", "equal_steps")
STAGES = ("token", "phrase", "sentence")
DEFAULT_TASKS, PAPER_TASKS = "default", "paper"


@dataclass(frozen=True)
class Row:
    """A row of Table 4: the base's stages in `order` (or mixed into one stage), tasks removed or replaced in
    every stage, or the sentence stage's tasks set outright; `tasks_of`: the base's task lists or the
    paper's."""

    title: str
    order: tuple[str, ...]
    mixed: bool = False
    remove: tuple[str, ...] = ()
    replace: Mapping[str, str] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None
    tasks_of: str = DEFAULT_TASKS


ROWS = {
    "s": Row("S", ("sentence",)),
    "tps_mixed": Row("T+P+S", STAGES, mixed=True),
    "t_s": Row("T→S", ("token", "sentence")),
    "p_s": Row("P→S", ("phrase", "sentence")),
    "t_p_s": Row("T→P→S", STAGES),
    "s_p_t": Row("S→P→T", ("sentence", "phrase", "token")),
    "p_t_s": Row("P→T→S", ("phrase", "token", "sentence")),
    "s_no_itm_hs": Row("S −ITM_HS (here −ITM_VSC)", ("sentence",), remove=("itm_vsc",)),
    "s_no_itm_hs_tits": Row(
        "S −ITM_HS −TITS (here −ITM_VSC −TITS)", ("sentence",), remove=("itm_vsc", "tits")
    ),
    "s_itm": Row("S with MLM MRFR MOC ITM", ("sentence",), tasks=("mlm", "mrfr", "moc", "itm")),
    "t_s_no_ifrs": Row("T→S −IFRS", ("token", "sentence"), remove=("ifrs",)),
    "p_s_no_titp": Row("P→S −TITP", ("phrase", "sentence"), remove=("titp",)),
    "t_p_s_no_titp": Row("T→P→S −TITP", STAGES, remove=("titp",)),
    "t_p_s_paper_tasks": Row("T→P→S, the paper's tasks only", STAGES, tasks_of=PAPER_TASKS),
}
REFERENCE = "t_p_s"  # whose steps under the paper's protocol every row gets at equal steps


def row_stages(row: Row, base: Sequence[StageConfig]) -> list[StageConfig]:
    """The row's stages, with the base's schedule (paper's protocol)."""
    by_name = {stage.name: stage for stage in base}
    missing = [name for name in row.order if name not in by_name]
    if missing:
        raise ValueError(
            f"row {row.title!r}: the base curriculum has no stage {missing}; it has {list(by_name)}"
        )
    stages = [by_name[name] for name in row.order]
    if row.mixed:
        last = stages[-1]
        stages = [
            dataclasses.replace(
                last,
                name="mixed",
                sources=[source for stage in stages for source in stage.sources],
                max_length=max(stage.max_length for stage in stages),
                mlm_class_word_probability=None,
            )
        ]
    return [_with_tasks(stage, row) for stage in stages]


def _with_tasks(stage: StageConfig, row: Row) -> StageConfig:
    sources = []
    for source in stage.sources:
        tasks = list(row.tasks) if row.tasks is not None else source.tasks
        tasks = [row.replace.get(task, task) for task in tasks if task not in row.remove]
        sources.append(dataclasses.replace(source, tasks=tasks))
    return dataclasses.replace(stage, sources=sources)


def stage_steps(stage: StageConfig, data: PretrainingData) -> int:
    """The optimizer steps the stage trains on one process, as the `Trainer` counts them: batches of a single
    corpus (the last one short), or whole blocks of one corpus each when it mixes corpora."""
    if stage.max_steps is not None:
        return stage.max_steps
    processor = data.processor(stage.max_length)
    lengths = [len(data.source_texts(source, processor, stage.name)) for source in stage.sources]
    batch = stage.batch_size // stage.gradient_accumulation_steps
    if len(lengths) == 1:
        batches = math.ceil(lengths[0] / batch)
    else:
        batches = sum(length // batch for length in lengths)
    return math.ceil(stage.epochs * max(batches // stage.gradient_accumulation_steps, 1))


def at_equal_steps(stages: list[StageConfig], steps: list[int], budget: int) -> list[StageConfig]:
    """The stages with `max_steps` scaled so that they sum to `budget`, each keeping its share."""
    total = sum(steps)
    bounds = [round(budget * sum(steps[: i + 1]) / total) for i in range(len(steps))]
    shares = [bound - previous for bound, previous in zip(bounds, [0, *bounds[:-1]], strict=True)]
    return [
        dataclasses.replace(stage, max_steps=max(share, 1))
        for stage, share in zip(stages, shares, strict=True)
    ]


def stage_entry(stage: StageConfig) -> dict[str, Any]:
    """A stage as a curriculum file lists it."""
    entry = dataclasses.asdict(stage)
    entry["sources"] = [{"corpus": source.corpus, "tasks": list(source.tasks)} for source in stage.sources]
    return {name: value for name, value in entry.items() if value is not None}


@dataclass(frozen=True)
class RowCurriculum:
    """A row under a protocol: its curriculum file and how many optimizer steps each stage trains."""

    row: str
    protocol: str
    path: Path
    steps: list[int]

    @property
    def condition(self) -> str:
        return f"{self.row}-{self.protocol}"


def write_row_curricula(
    rows: Sequence[str],
    protocols: Sequence[str],
    bases: Mapping[str, Path],
    data: PretrainingData,
    folder: Path,
) -> list[RowCurriculum]:
    """Each row under each protocol as a curriculum file in `folder` (the base's data, model and training
    settings; the row's stages); a row the equal-steps protocol leaves as it is (as many steps as T→P→S) is
    written once, under "paper". `bases` maps `DEFAULT_TASKS` and `PAPER_TASKS` to their curriculum files."""
    base_stages = {name: load_curriculum(path).stages for name, path in bases.items()}
    reference = row_stages(ROWS[REFERENCE], base_stages[DEFAULT_TASKS])
    budget = sum(stage_steps(stage, data) for stage in reference)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in rows:
        row = ROWS[name]
        stages = row_stages(row, base_stages[row.tasks_of])
        steps = [stage_steps(stage, data) for stage in stages]
        for protocol in protocols:
            if protocol == "paper":
                written.append(_write_row(name, protocol, stages, steps, bases[row.tasks_of], folder))
            elif sum(steps) != budget or "paper" not in protocols:
                scaled = at_equal_steps(stages, steps, budget)
                scaled_steps = [stage.max_steps for stage in scaled]
                written.append(_write_row(name, protocol, scaled, scaled_steps, bases[row.tasks_of], folder))
    return written


def _write_row(
    name: str, protocol: str, stages: list[StageConfig], steps: list[int], base: Path, folder: Path
) -> RowCurriculum:
    path = folder / f"{name}-{protocol}.yaml"
    curriculum = {
        "base": str(base.resolve()),
        "stages": [stage_entry(stage) for stage in stages],
    }
    text = yaml.safe_dump(curriculum, sort_keys=False, allow_unicode=True)
    protocol_name = protocol.replace("_", " ")
    title = f"# Table 4, {ROWS[name].title}, {protocol_name} protocol: {sum(steps):,} optimizer steps\n"
    atomic_write_text(path, title + text)
    return RowCurriculum(name, protocol, path, steps)


# Table columns: (title, task, metrics averaged); retrieval as the paper reports it, the mean of R@1, 5, 10.
RECALLS = ("r1", "r5", "r10")
COLUMNS = (
    ("VQA", "vqa", ("vqa_accuracy",)),
    ("NLVR2", "nlvr2", ("accuracy",)),
    ("ZS IR", "zero_shot", tuple(f"all_pairs_image_{r}" for r in RECALLS)),
    ("ZS TR", "zero_shot", tuple(f"all_pairs_text_{r}" for r in RECALLS)),
    ("IR", "retrieval", tuple(f"image_{r}" for r in RECALLS)),
    ("TR", "retrieval", tuple(f"text_{r}" for r in RECALLS)),
    ("ZS IR R@1 re-ranked", "zero_shot", ("reranked_image_r1",)),
)


def score(results: Mapping[str, Mapping[str, float]], task: str, metrics: Sequence[str]) -> float | None:
    """The mean of `metrics` of `task` in %, None when the condition has not all of them (no zero-shot score
    without pre-training, no re-ranking without the VSC head)."""
    values = results.get(task, {})
    if not all(metric in values for metric in metrics):
        return None
    return 100 * statistics.mean(values[metric] for metric in metrics)


def seed_scores(
    per_seed: Sequence[Mapping[str, Mapping]], condition: str, task: str, metrics: Sequence[str]
) -> list[float]:
    """`score` of a condition in every seed that has it."""
    values = (score(seed[condition], task, metrics) for seed in per_seed)
    return [value for value in values if value is not None]


def _mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """A plotted point: mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cells(per_seed: Sequence[Mapping[str, Mapping]], condition: str) -> list[str]:
    """Mean ± std over seeds of every column for one condition."""
    return [mean_std(seed_scores(per_seed, condition, task, metrics)) for _, task, metrics in COLUMNS]


def table_markdown(per_seed: Sequence[Mapping[str, Mapping]], curricula: Sequence[RowCurriculum]) -> str:
    """Table 4 in the paper's layout, one block per protocol: no pre-training, then each row in the paper's
    order, its optimizer steps, and mean ± std over the seeds in %; a row the equal-steps protocol leaves as
    it is appears in both blocks with the same numbers."""
    lines = ["| protocol | pre-training | steps | " + " | ".join(title for title, _, _ in COLUMNS) + " |"]
    lines.append("| --- | --- | ---: |" + " ---: |" * len(COLUMNS))
    lines.append("| | none | 0 | " + " | ".join(cells(per_seed, NO_PRETRAINING)) + " |")
    for protocol in dict.fromkeys(curriculum.protocol for curriculum in curricula):
        for name in ROWS:
            chosen = condition_of(curricula, name, protocol)
            if chosen is None:
                continue
            same = " (as paper)" if chosen.protocol != protocol else ""
            steps = f"{sum(chosen.steps):,}{same}"
            lines.append(
                f"| {protocol.replace('_', ' ')} | {ROWS[name].title} | {steps} | "
                + " | ".join(cells(per_seed, chosen.condition))
                + " |"
            )
    return "\n".join(lines)


def condition_of(curricula: Sequence[RowCurriculum], row: str, protocol: str) -> RowCurriculum | None:
    """The curriculum that stands for `row` under `protocol`: its own, or the paper protocol's when the equal
    steps leave the row as it is."""
    of_row = {curriculum.protocol: curriculum for curriculum in curricula if curriculum.row == row}
    if not of_row:
        return None
    return of_row.get(protocol) or of_row.get("paper")


def plot_rows(
    per_seed: Sequence[Mapping[str, Mapping]], curricula: Sequence[RowCurriculum], out: str | os.PathLike
) -> Path:
    """VQA and zero-shot IR (mean R@1/5/10, ITM on every pair) of every row, a bar per protocol, mean ± std
    over seeds; the no-pre-training VQA as a dashed line."""
    protocols = list(dict.fromkeys(curriculum.protocol for curriculum in curricula))
    rows = [name for name in ROWS if condition_of(curricula, name, protocols[0]) is not None]
    figure, panels = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.5), sharey=True)
    width = 0.8 / len(protocols)
    for panel, (title, task, metrics) in zip(panels, (COLUMNS[0], COLUMNS[2]), strict=True):
        for index, protocol in enumerate(protocols):
            points = [
                _mean_and_spread(
                    seed_scores(per_seed, condition_of(curricula, name, protocol).condition, task, metrics)
                    or [0.0]
                )
                for name in rows
            ]
            means, spreads = zip(*points, strict=True)
            positions = [position + index * width for position in range(len(rows))]
            panel.barh(positions, means, width, xerr=spreads, capsize=2, label=protocol.replace("_", " "))
        if task == "vqa":
            none = statistics.mean(seed_scores(per_seed, NO_PRETRAINING, task, metrics))
            panel.axvline(none, color="grey", linestyle="--", label="no pre-training")
        panel.set_xlabel(f"{title}, test (%)")
    panels[0].set_yticks([position + 0.4 - width / 2 for position in range(len(rows))])
    panels[0].set_yticklabels([ROWS[name].title for name in rows], fontsize=8)
    panels[0].invert_yaxis()
    panels[0].legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, out)


def plot_caption_fractions(
    per_fraction: Mapping[float, tuple[Sequence[Mapping[str, Mapping]], Sequence[RowCurriculum]]],
    out: str | os.PathLike,
) -> Path:
    """VQA and zero-shot IR R@1 re-ranked against the share of images with captions, a line per row and
    protocol, mean ± std over seeds."""
    fractions = sorted(per_fraction)
    first = per_fraction[fractions[0]][1]
    lines = list(dict.fromkeys((curriculum.row, curriculum.protocol) for curriculum in first))
    figure, panels = plt.subplots(1, 2, figsize=(11, 4))
    for panel, (title, task, metrics) in zip(panels, (COLUMNS[0], COLUMNS[-1]), strict=True):
        for row, protocol in lines:
            points = []
            for fraction in fractions:
                per_seed, curricula = per_fraction[fraction]
                condition = condition_of(curricula, row, protocol).condition
                points.append(_mean_and_spread(seed_scores(per_seed, condition, task, metrics) or [math.nan]))
            means, spreads = zip(*points, strict=True)
            label = f"{ROWS[row].title}, {protocol.replace('_', ' ')}"
            panel.errorbar(
                [100 * f for f in fractions], means, yerr=spreads, marker="o", capsize=3, label=label
            )
        panel.set_xlabel("training images with captions (%)")
        panel.set_ylabel(f"{title}, test (%)")
    panels[0].legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, out)
