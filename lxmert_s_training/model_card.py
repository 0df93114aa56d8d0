"""The Hub-ready folder a curriculum ends with: weights, config, modeling code, processor and model card."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from lxmert_s_training.curriculum import Curriculum
from lxmert_s_training.retrieval import as_percent
from lxmert_s_training.stage_data import PretrainingData
from lxmert_s_training.zero_shot import ZeroShotScores
from modeling_lxmert_s import LxmertSForPreTraining
from processing.store import atomic_write_text, replace_folder

if TYPE_CHECKING:
    from lxmert_s_training.pretraining import StageResult


def write_hub_folder(
    curriculum: Curriculum,
    data: PretrainingData,
    results: Sequence[StageResult],
    out: Path,
    score: Callable[[Path], ZeroShotScores] | None = None,
) -> ZeroShotScores | None:
    """`save_pretrained` of the last stage's model and of its processor (both with their code, so
    `trust_remote_code=True` loads them where this package is not installed) plus `README.md`. Atomic.
    The processor has the last stage's text length, which fine-tuning from the folder then uses. `score` reads
    the saved folder before the card is written, so that the card, written once, records its scores."""
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    model = LxmertSForPreTraining.from_pretrained(results[-1].folder)
    model.save_pretrained(work)
    data.processor(curriculum.stages[-1].max_length).save_pretrained(work)
    scores = None if score is None else score(work)
    atomic_write_text(work / "README.md", model_card(curriculum, data, results, model, scores))
    replace_folder(work, out)
    return scores


def _data_description(curriculum: Curriculum, data: PretrainingData) -> str:
    if curriculum.data.synthetic is not None:
        settings = ", ".join(f"{key}={value}" for key, value in curriculum.data.synthetic.items())
        origin = (
            "the built-in synthetic world (`processing/synthetic.py`"
            + (f"; {settings}" if settings else "; default settings")
            + "): simulated detector regions with Visual Genome-style phrases and COCO-style captions"
        )
    else:
        origin = f"the prepared data folder `{curriculum.data.dir}`"
    return (
        f"Pre-trained on {origin}. Image side: {len(data.store):,} images, {data.store.num_regions} regions "
        f"of {data.store.feature_dim}-d features each; text: tokenizer of {len(data.tokenizer):,} "
        "word pieces, each stage's text length in the table below."
    )


def _stage_rows(curriculum: Curriculum, data: PretrainingData, results: Sequence[StageResult]) -> list[str]:
    rows = [
        "| stage | corpus (rows) | tasks | text tokens | epochs | batch | lr | optimizer steps "
        "| final losses |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage, result in zip(curriculum.stages, results, strict=True):
        corpora = ", ".join(f"{s.corpus} ({len(data.corpus(s.corpus)):,})" for s in stage.sources)
        losses = ", ".join(
            f"{key.removeprefix('loss/')} {value:.4g}" for key, value in result.final_losses.items()
        )
        rows.append(
            f"| {stage.name} | {corpora} | {' '.join(stage.tasks)} | {stage.max_length} | {stage.epochs:g} | "
            f"{stage.batch_size} | {stage.learning_rate:g} | {result.global_step} | {losses} |"
        )
    return rows


# Each ranking in the card's table: how it ranks, and which path its scores come from.
CARD_RANKINGS = {
    "contrastive": ("by contrastive similarity", "contrastive path (VSC embeddings, no cross-modal pass)"),
    "reranked": (
        "top {k} by contrastive similarity, re-ranked by ITM log-odds + VSC logit",
        "contrastive path, then the cross-modal encoder (ITM) added to it on the top {k}",
    ),
    "all_pairs": ("by ITM on every pair", "cross-modal encoder (ITM)"),
}


def _zero_shot_section(scores: ZeroShotScores) -> list[str]:
    lines = ["## Zero-shot evaluation", ""]
    if scores.skipped is not None:
        return [*lines, f"Not scored: {scores.skipped}.", ""]
    retrieval, itm = scores.retrieval, scores.itm
    image, text = retrieval.recall_names("image"), retrieval.recall_names("text")
    ks = " / ".join(name.removeprefix("image_r") for name in image)
    lines += [
        f"Held-out pairs of the `{retrieval.split}` split of the retrieval corpus (`corpora/flickr30k`: "
        f"{retrieval.images} images, {retrieval.captions} captions), no fine-tuning; in percent, with what a "
        "random guess or ranking scores. Two paths score a pair: the **contrastive path** compares the VSC "
        "text and image embeddings (`get_text_features` · `get_image_features`), which see no cross-modal "
        "layer, so one matrix product ranks every pair; the **cross-modal encoder** runs the pair through "
        "the cross-modality layers and scores it with the ITM head. Text retrieval (TR) ranks "
        + (
            "every caption, a hit when any of the image's captions is in the top K"
            if retrieval.text_retrieval == "all_captions"
            else "each image's first caption"
        )
        + "; image retrieval (IR) ranks the images for every caption.",
        "",
        "| score | from | value (%) | chance (%) |",
        "| --- | --- | --- | --- |",
        f"| ITM accuracy, each of {itm.captions} captions with its image and with another | cross-modal "
        f"encoder (ITM) | {100 * itm.accuracy:.1f} | 50 |",
    ]
    for ranking, recalls in retrieval.rankings.items():
        how, source = (part.format(k=retrieval.rerank_top_k) for part in CARD_RANKINGS[ranking])
        for kind, names in (("IR", image), ("TR", text)):
            lines.append(
                f"| {kind} R@{ks}, {how} | {source} | {as_percent(recalls, names)} | "
                f"{as_percent(retrieval.chance, names)} |"
            )
    if kept := retrieval.kept():
        for kind, names in (("IR", image), ("TR", text)):
            lines.append(
                f"| {kind} R@{ks}: share of the all-pairs recall the re-ranking keeps | – | "
                f"{as_percent(kept, names)} | – |"
            )
    return [*lines, ""]


def model_card(
    curriculum: Curriculum,
    data: PretrainingData,
    results: Sequence[StageResult],
    model: LxmertSForPreTraining,
    scores: ZeroShotScores | None = None,
) -> str:
    """The Hub model card; with `scores`, a section of the held-out scores and where each comes from."""
    config = model.config
    order = " → ".join(stage.name for stage in curriculum.stages)
    parameters = sum(p.numel() for p in model.lxmert.parameters())
    resolved = {
        "data": {k: v for k, v in vars(curriculum.data).items() if v is not None},
        "model": curriculum.model,
        "training": vars(curriculum.training),
        "stages": [
            {
                **{k: v for k, v in vars(stage).items() if k != "sources"},
                "sources": [vars(source) for source in stage.sources],
            }
            for stage in curriculum.stages
        ],
    }
    lines = [
        "---",
        "library_name: transformers",
        "tags: [lxmert, lxmert-s, msp, vision-language, multi-stage-pre-training]",
        "---",
        "",
        "# LXMERT-S pre-trained with MSP",
        "",
        "LXMERT-S (LXMERT with only its cross-modality encoder) pre-trained with multi-stage pre-training "
        f"(MSP; Liu, Feng, Wang, ACL-IJCNLP 2021): {order}.",
        "",
        "## How to load",
        "",
        "```python",
        "from transformers import AutoModel, AutoModelForPreTraining, AutoProcessor",
        "",
        'processor = AutoProcessor.from_pretrained("path/to/this/folder", trust_remote_code=True)',
        'model = AutoModel.from_pretrained("path/to/this/folder", trust_remote_code=True)  # the encoder',
        'heads = AutoModelForPreTraining.from_pretrained("path/to/this/folder", trust_remote_code=True)',
        f"# features: (regions, {config.visual_feat_dim}) RoI features; boxes: (regions, 4) pixel corners",
        'inputs = processor(text=["a red car"], visual_feats=[features], boxes=[boxes],',
        "                   image_sizes=[(height, width)])",
        "pooled = model(**inputs).pooled_output",
        "```",
        "",
        "## Model",
        "",
        f"{config.num_layers} cross-modality layers, hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} attention heads, {parameters:,} encoder parameters; "
        f"pre-training heads kept: {', '.join(config.pretraining_tasks)}. All settings: `config.json`.",
        "",
        "## Data",
        "",
        _data_description(curriculum, data),
        "",
        "## Curriculum",
        "",
        *_stage_rows(curriculum, data, results),
        "",
        f"Each stage started from the previous stage's weights; optimizer state: "
        f"{curriculum.training.optimizer_state}. Final losses are the last logged training values "
        "(mean over the last logging window).",
        "",
        f"The curriculum (`{curriculum.path}`, resolved):",
        "",
        "```yaml",
        yaml.safe_dump(resolved, sort_keys=False).rstrip(),
        "```",
        "",
        *([] if scores is None else _zero_shot_section(scores)),
    ]
    return "\n".join(lines)
