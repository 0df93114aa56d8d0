"""The Hub-ready folder a curriculum ends with: weights, config, modeling code, processor and model card."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from modeling_lxmert_s import LxmertSForPreTraining
from processing.store import atomic_write_text, replace_folder
from training.curriculum import Curriculum
from training.stage_data import PretrainingData

if TYPE_CHECKING:
    from training.pretraining import StageResult


def write_hub_folder(
    curriculum: Curriculum,
    data: PretrainingData,
    results: Sequence[StageResult],
    out: Path,
) -> Path:
    """`save_pretrained` of the last stage's model and of its processor (both with their code, so
    `trust_remote_code=True` loads them where this package is not installed) plus `README.md`. Atomic.
    The processor has the last stage's text length, which fine-tuning from the folder then uses."""
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    model = LxmertSForPreTraining.from_pretrained(results[-1].folder)
    model.save_pretrained(work)
    data.processor(curriculum.stages[-1].max_length).save_pretrained(work)
    atomic_write_text(work / "README.md", model_card(curriculum, data, results, model))
    replace_folder(work, out)
    return out


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


def model_card(
    curriculum: Curriculum,
    data: PretrainingData,
    results: Sequence[StageResult],
    model: LxmertSForPreTraining,
) -> str:
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
    ]
    return "\n".join(lines)
