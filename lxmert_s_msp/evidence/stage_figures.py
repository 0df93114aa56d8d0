"""The paper's Fig. 3 and 4 (§5): what a model answers, and which caption it retrieves, after each stage;
and downstream quality against pre-training time.

Fig. 3 shows, for a few VQA questions, the three best-scoring answers of a model fine-tuned from each stage's
checkpoint; Fig. 4 shows, for a few images, the caption a retrieval model fine-tuned from each stage ranks
first among all captions of the split. A synthetic image has no pixels: its panel describes its scene (the
world's `scenes.json`), a real image is named by its id.
"""

from __future__ import annotations

import json
import os
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from lxmert_s_msp.checkpoints import load_model
from lxmert_s_msp.data.downstream_collators import QACollator
from lxmert_s_msp.data.store import FeatureStore
from lxmert_s_msp.evaluation.retrieval import match_logit_scorer, score_all_pairs
from lxmert_s_msp.plotting import plt, save_figure
from modeling_lxmert_s import LxmertSForImageTextRetrieval, LxmertSForQuestionAnswering
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor


@dataclass(frozen=True)
class Ranked:
    """One scored candidate: an answer (Fig. 3) or a caption (Fig. 4), and whether it is a right one."""

    text: str
    score: float
    right: bool


def pick_questions(rows: datasets.Dataset, count: int) -> list[int]:
    """Row positions of up to `count` questions of different kinds (their first two words: "what color",
    "how many", "is there", ...), the first of each kind in split order."""
    picked, kinds = [], set()
    for position, question in enumerate(rows["question"]):
        kind = " ".join(question.split()[:2])
        if kind not in kinds:
            kinds.add(kind)
            picked.append(position)
        if len(picked) == count:
            break
    return picked


@torch.no_grad()
def top_answers(
    model_folder: str | Path, store: FeatureStore, rows: Sequence[Mapping], k: int = 3
) -> list[list[Ranked]]:
    """The `k` best answers of a fine-tuned VQA model for each row, best first. The head is trained with
    binary cross-entropy on soft scores, so each answer's sigmoid is its own probability of being right."""
    model = load_model(LxmertSForQuestionAnswering, model_folder).eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    answers = [model.config.id2label[index] for index in range(model.config.num_qa_labels)]
    batch = QACollator(store, processor, answers)(rows)
    logits = model(**{name: value for name, value in batch.items() if name != "labels"}).logits
    scores, indices = torch.sigmoid(logits.float()).topk(k, dim=-1)
    return [
        [
            Ranked(answers[index], score, batch["labels"][row, index].item() > 0)
            for score, index in zip(row_scores.tolist(), row_indices.tolist(), strict=True)
        ]
        for row, (row_scores, row_indices) in enumerate(zip(scores, indices, strict=True))
    ]


@torch.no_grad()
def top_captions(
    model_folder: str | Path, store: FeatureStore, images: datasets.Dataset, picks: Sequence[int]
) -> list[Ranked]:
    """For each picked image (a position in `images`, rows of `retrieval_split`), the caption of the split a
    fine-tuned retrieval model ranks first, with its p(match) (the sigmoid of the match logit)."""
    model = load_model(LxmertSForImageTextRetrieval, model_folder).eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    per_image = images["captions"]
    captions = [caption for texts in per_image for caption in texts]
    owner = [image for image, texts in enumerate(per_image) for _ in texts]
    scores = score_all_pairs(
        match_logit_scorer(model), store, processor, [images[p]["image_index"] for p in picks], captions
    )
    best_scores, best = scores.max(dim=1)
    return [
        Ranked(captions[caption], torch.sigmoid(score).item(), owner[caption] == image)
        for image, caption, score in zip(picks, best.tolist(), best_scores, strict=True)
    ]


def scene_descriptions(data_folder: str | Path) -> dict[str, str]:
    """image id -> "a small green wooden car, ..." from a synthetic world's `scenes.json`; {} elsewhere."""
    path = Path(data_folder) / "scenes.json"
    if not path.is_file():
        return {}
    return {
        scene["image_id"]: ", ".join(
            f"a {item['size']} {item['colour']} {item['material']} {item['category']}"
            for item in scene["objects"]
        )
        for scene in json.loads(path.read_text())
    }


def _image_panel(axes: plt.Axes, image_id: str, scenes: Mapping[str, str], lines: Sequence[str]) -> None:
    axes.axis("off")
    scene = textwrap.fill(scenes.get(image_id, "(no scene description)"), 38)
    text = f"image {image_id}\n{scene}\n\n" + "\n".join(textwrap.fill(line, 38) for line in lines)
    axes.text(0, 1, text, va="top", ha="left", fontsize=8, transform=axes.transAxes)


def _finish(
    figure: plt.Figure, axes: np.ndarray, stages: Sequence[str], title: str, out: str | os.PathLike
) -> Path:
    """Name the stage columns (column 0 shows the image), title the figure and save it."""
    for column, stage in enumerate(stages, start=1):
        axes[0, column].set_title(f"after {stage}")
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, out)


def plot_answers(
    questions: Sequence[Mapping],
    ranked: Mapping[str, Sequence[Sequence[Ranked]]],
    scenes: Mapping[str, str],
    out: str | os.PathLike,
) -> Path:
    """Fig. 3: a row per question (its scene, question and right answers), a bar chart per stage of its
    top answers' scores; right answers green, wrong ones grey."""
    stages = list(ranked)
    figure, axes = plt.subplots(
        len(questions),
        len(stages) + 1,
        figsize=(3.2 * (len(stages) + 1), 2.2 * len(questions)),
        squeeze=False,
    )
    for row, question in enumerate(questions):
        right = ", ".join(
            f"{answer} ({score:.1f})"
            for answer, score in zip(question["answers"], question["scores"], strict=True)
        )
        lines = [f"Q: {question['question']}", f"right: {right or 'none'}"]
        _image_panel(axes[row, 0], question["image_id"], scenes, lines)
        for column, stage in enumerate(stages, start=1):
            top = ranked[stage][row]
            bars = axes[row, column]
            bars.barh(
                range(len(top)),
                [item.score for item in top],
                color=["tab:green" if item.right else "tab:gray" for item in top],
            )
            bars.set_yticks(range(len(top)), [item.text for item in top])
            bars.invert_yaxis()
            bars.set_xlim(0, 1)
    title = "Top-3 answers after each pre-training stage (VQA fine-tuned; green: a right answer)"
    return _finish(figure, axes, stages, title, out)


def plot_captions(
    images: Sequence[Mapping],
    ranked: Mapping[str, Sequence[Ranked]],
    scenes: Mapping[str, str],
    out: str | os.PathLike,
) -> Path:
    """Fig. 4: a row per image (its scene and one of its captions), per stage the caption ranked first, its
    p(match) and whether it is one of the image's own."""
    stages = list(ranked)
    figure, axes = plt.subplots(
        len(images), len(stages) + 1, figsize=(3.4 * (len(stages) + 1), 1.9 * len(images)), squeeze=False
    )
    for row, image in enumerate(images):
        _image_panel(axes[row, 0], image["image_id"], scenes, [f"e.g. {image['captions'][0]}"])
        for column, stage in enumerate(stages, start=1):
            top = ranked[stage][row]
            panel = axes[row, column]
            panel.axis("off")
            verdict = "its own" if top.right else "another image's"
            panel.text(
                0,
                1,
                f"{textwrap.fill(top.text, 34)}\n({verdict}, p={top.score:.3f})",
                va="top",
                ha="left",
                fontsize=8,
                color="tab:green" if top.right else "tab:red",
                transform=panel.transAxes,
            )
    title = "Top-1 retrieved caption after each pre-training stage (retrieval fine-tuned)"
    return _finish(figure, axes, stages, title, out)


def plot_quality_vs_time(
    records: Mapping[str, Mapping[int, Sequence[Mapping]]], out: str | os.PathLike
) -> Path:
    """VQA accuracy after each stage (mean ± std over seeds) against the cumulative pre-training time, a line
    per curriculum; `records[curriculum][seed]` lists the stages' `pretrain_seconds` and `vqa_accuracy`."""
    figure, axes = plt.subplots(figsize=(6.5, 4))
    for name, per_seed in records.items():
        runs = list(per_seed.values())
        stages = range(len(runs[0]))
        times = [statistics.mean(run[p]["pretrain_seconds"] for run in runs) for p in stages]
        accuracy = [[100 * run[p]["vqa_accuracy"] for run in runs] for p in stages]
        means = [statistics.mean(values) for values in accuracy]
        spread = [statistics.stdev(values) if len(values) > 1 else 0.0 for values in accuracy]
        axes.errorbar(times, means, yerr=spread, marker="o", capsize=3, label=name)
        for time, mean, record in zip(times, means, runs[0], strict=True):
            axes.annotate(
                record["stage"], (time, mean), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    axes.set_xlabel("cumulative pre-training time (s)")
    axes.set_ylabel("VQA accuracy, test (%)")
    axes.legend()
    figure.tight_layout()
    return save_figure(figure, out)
