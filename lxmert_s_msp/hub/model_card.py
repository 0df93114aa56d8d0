"""Model cards (`huggingface_hub.ModelCard`: a metadata header with `model-index`, then markdown) of the
three folders the project writes for the Hub: the pre-trained model a curriculum ends with (its whole folder:
weights, config, modeling code, processor and card), a fine-tuned model and a converted LXMERT checkpoint.
Cards name data and checkpoints by Hub id or folder name, never by a local absolute path."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from faster_rcnn_vg import DEFAULT_DETECTOR
from lxmert_s_msp.checkpoints import load_model
from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.store import atomic_write_text, replace_folder
from lxmert_s_msp.evaluation.downstream import DownstreamTask, Evaluation
from lxmert_s_msp.evaluation.retrieval import as_percent
from lxmert_s_msp.evaluation.zero_shot import ZeroShotScores
from lxmert_s_msp.training.curriculum import Curriculum, Source, StageConfig
from lxmert_s_msp.training.downstream_tasks import TASKS
from lxmert_s_msp.training.stage_data import PretrainingData
from lxmert_s_msp.training.stage_results import StageResult
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

LICENSE = "apache-2.0"
TAGS = ["lxmert", "lxmert-s", "msp", "vision-language", "multi-stage-pre-training"]
# The real pre-training data: Visual Genome's phrases and objects, COCO's captions (the paper's §4.1).
PRETRAINING_DATASETS = ["ranjaykrishna/visual_genome", "HuggingFaceM4/COCO"]
SYNTHETIC_DATASET = "synthetic-world"  # `lxmert_s_msp/data/synthetic.py`; no Hub dataset
PACKAGE = "lxmert-s-msp"
MSP_CITATION = """@inproceedings{liu2021msp,
  title = {Multi-stage Pre-training over Simplified Multimodal Pre-training Models},
  author = {Liu, Tongtong and Feng, Fangxiang and Wang, Xiaojie},
  booktitle = {Proceedings of the 59th Annual Meeting of the Association for Computational Linguistics and the
               11th International Joint Conference on Natural Language Processing (ACL-IJCNLP 2021)},
  year = {2021},
  eprint = {2107.14596},
  archivePrefix = {arXiv}
}"""
LXMERT_CITATION = """@inproceedings{tan2019lxmert,
  title = {{LXMERT}: Learning Cross-Modality Encoder Representations from Transformers},
  author = {Tan, Hao and Bansal, Mohit},
  booktitle = {Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing and the
               9th International Joint Conference on Natural Language Processing (EMNLP-IJCNLP)},
  year = {2019},
  eprint = {1908.07490},
  archivePrefix = {arXiv}
}"""


def render_card(data: ModelCardData, body: Sequence[str]) -> str:
    """The card's text: `data` as its YAML header, then `body`'s lines."""
    return str(ModelCard("\n".join(["---", data.to_yaml(), "---", "", *body])))


def is_synthetic_world(data_folder: Path) -> bool:
    """Whether a data folder is `lxmert_s_msp/data/synthetic.py`'s world (which writes `world.json`), whose
    data no Hub dataset holds."""
    return (data_folder / "world.json").is_file()


def hub_id(source: str) -> str | None:
    """`source` when it names a Hub repository rather than a local folder (the card's `base_model`)."""
    return None if Path(source).exists() or source == "none" else source


def features_section(config: LxmertSConfig, processor: LxmertSProcessor) -> list[str]:
    """The model's input: which region features it expects and how to get them."""
    return [
        "## Inputs: region features",
        "",
        f"The model reads detector regions, not pixels: per image up to {processor.num_regions} regions, "
        f"each a {config.visual_feat_dim}-d RoI feature and a box (pixel corners, normalised by the "
        "processor with the image size). LXMERT's features come from the bottom-up-attention Faster R-CNN "
        f"(`{DEFAULT_DETECTOR}`): `python -m lxmert_s_msp.data.extract` runs it on images, "
        "`python -m lxmert_s_msp.data.features import` reads obj36 TSV / .npz files, and a processor with an "
        "image processor takes `images=` directly.",
        "",
    ]


def project_url() -> str | None:
    """The address of this package's code, as its installed metadata declares it (setup.cfg's `url`); None
    when it declares none or runs uninstalled."""
    try:
        fields = metadata.metadata(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    urls = [
        fields.get("Home-page"),
        *(entry.split(", ")[-1] for entry in fields.get_all("Project-URL") or []),
    ]
    return next((url for url in urls if url and url != "UNKNOWN"), None)


def code_section(recipe: str) -> list[str]:
    """Where the code is: the model's, in this folder, and the package whose `recipe` wrote the folder."""
    url = project_url()
    package = f"[`{PACKAGE}`]({url})" if url else f"The `{PACKAGE}` package"
    return [
        "## Code",
        "",
        "The model's code is in this folder: [`configuration_lxmert_s.py`](configuration_lxmert_s.py), "
        "[`modeling_lxmert_s.py`](modeling_lxmert_s.py) (the models and their pre-training heads) and "
        "[`processing_lxmert_s.py`](processing_lxmert_s.py), with the files they import; "
        f"`trust_remote_code=True` runs it. {package} wrote the folder, with `{recipe}`.",
        "",
    ]


def citation_section() -> list[str]:
    return [
        "## Citation",
        "",
        "MSP and LXMERT-S, and LXMERT, whose cross-modality encoder LXMERT-S keeps:",
        "",
        "```bibtex",
        MSP_CITATION,
        "",
        LXMERT_CITATION,
        "```",
        "",
    ]


def intended_use_section(synthetic: bool, processor: LxmertSProcessor, config: LxmertSConfig) -> list[str]:
    """What the model is for and where it fails; a model of the synthetic world is useless on real data."""
    lines = ["## Intended use and limitations", ""]
    if synthetic:
        return [
            *lines,
            "**A model of the synthetic world, useless on real images and text.** It was trained on the "
            "built-in synthetic world (`lxmert_s_msp/data/synthetic.py`), a test of the pipeline: its region "
            f"features are simulated detector output ({config.visual_feat_dim}-d) and its tokenizer has "
            f"{len(processor.tokenizer):,} word pieces, built from the world's own texts. Real detector "
            "features are not distributed like the simulated ones, and most English words are outside that "
            "vocabulary. Use it to check that the code runs end to end and to compare curricula on the "
            "synthetic world; for real use, pre-train on real data or convert an LXMERT checkpoint "
            "(`recipes/convert_lxmert_checkpoint.py`).",
            "",
        ]
    return [
        *lines,
        "For research on vision-language models: the pooled image-text representation, and the starting "
        "point of fine-tuning on VQA, GQA, NLVR2 or image-text retrieval (`recipes/finetune.py`). It reads "
        f"the regions of one detector, bottom-up attention's Faster R-CNN (`{DEFAULT_DETECTOR}`, up to "
        f"{processor.num_regions} per image), and English text through its "
        f"{len(processor.tokenizer):,}-piece WordPiece tokenizer: features of another detector are out of "
        "its distribution. It carries what its training data carries, Visual Genome's and COCO's images and "
        "English annotations, with their biases about who and what appears where and how it is described; "
        "it was not evaluated for uses that decide about people.",
        "",
    ]


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
    try:
        model = load_model(LxmertSForPreTraining, results[-1].folder)
        model.save_pretrained(work)
        processor = data.processor(curriculum.stages[-1].max_length)
        processor.save_pretrained(work)
        scores = None if score is None else score(work)
        atomic_write_text(work / "README.md", model_card(curriculum, data, results, model, processor, scores))
    except Exception:  # no half folder left beside the output (a kill's is removed by the next run, above)
        shutil.rmtree(work, ignore_errors=True)
        raise
    replace_folder(work, out)
    return scores


def _data_description(curriculum: Curriculum, data: PretrainingData) -> str:
    if curriculum.data.synthetic is not None:
        settings = ", ".join(f"{key}={value}" for key, value in curriculum.data.synthetic.items())
        origin = (
            "the built-in synthetic world (`lxmert_s_msp/data/synthetic.py`"
            + (f"; {settings}" if settings else "; default settings")
            + "): simulated detector regions with Visual Genome-style phrases and COCO-style captions"
        )
    else:
        origin = f"a prepared data folder (`{Path(curriculum.data.dir).name}`)"
    return (
        f"Pre-trained on {origin}. Image side: {len(data.store):,} images, {data.store.num_regions} regions "
        f"of {data.store.feature_dim}-d features each; text: tokenizer of {len(data.tokenizer):,} "
        "word pieces, each stage's text length in the table below."
    )


def _trained_texts(data: PretrainingData, stage: StageConfig, source: Source) -> str:
    """A source's corpus rows and, when they differ, the texts the stage trained on (a phrase corpus's phrase
    lists are packed into texts of the stage's length)."""
    rows = len(data.corpus(source.corpus))
    texts = len(data.source_texts(source, data.processor(stage.max_length), stage.name))
    trained = f"{rows:,} rows" if texts == rows else f"{rows:,} rows packed into {texts:,} texts"
    return f"{source.corpus} ({trained})"


def _stage_rows(curriculum: Curriculum, data: PretrainingData, results: Sequence[StageResult]) -> list[str]:
    rows = [
        "| stage | corpus | tasks | text tokens | trained for | batch | lr | optimizer steps "
        "| final losses |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage, result in zip(curriculum.stages, results, strict=True):
        corpora = ", ".join(_trained_texts(data, stage, source) for source in stage.sources)
        losses = ", ".join(
            f"{key.removeprefix('loss/')} {value:.4g}" for key, value in result.final_losses.items()
        )
        rows.append(
            f"| {stage.name} | {corpora} | {' '.join(stage.tasks)} | {stage.max_length} | {stage.length} | "
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


def _zero_shot_results(scores: ZeroShotScores | None, dataset: tuple[str, str]) -> list[EvalResult]:
    """The card's `model-index`: held-out ITM accuracy and every ranking's recalls, in percent."""
    if scores is None or scores.skipped is not None:
        return []
    dataset_type, dataset_name = dataset
    split = scores.retrieval.split
    common = {"dataset_type": dataset_type, "dataset_name": dataset_name, "dataset_split": split}
    results = [
        EvalResult(
            task_type="image-text-matching",
            task_name="Held-out image-text matching (zero-shot)",
            metric_type="accuracy",
            metric_name="ITM accuracy",
            metric_value=round(100 * scores.itm.accuracy, 2),
            **common,
        )
    ]
    for name, value in scores.retrieval.ranked_recalls().items():
        results.append(
            EvalResult(
                task_type="image-text-retrieval",
                task_name="Zero-shot image-text retrieval",
                metric_type="recall",
                metric_name=name,
                metric_value=round(100 * value, 2),
                **common,
            )
        )
    return results


def _task_results(
    task: DownstreamTask, metrics: dict[str, float], dataset: tuple[str, str], split: str
) -> list[EvalResult]:
    """A fine-tuned model's `model-index`: its scores on `split`, in percent (the loss left out)."""
    task_type, task_name = task.hub_task
    dataset_type, dataset_name = dataset
    return [
        EvalResult(
            task_type=task_type,
            task_name=task_name,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=name,
            metric_value=round(100 * value, 2),
        )
        for name, value in metrics.items()
        if name != "loss" and not name.startswith("kept_")
    ]


def _pretrained_load_lines(config: LxmertSConfig) -> list[str]:
    return [
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
    ]


def _resolved_curriculum(curriculum: Curriculum) -> dict[str, Any]:
    """The curriculum as it ran, for the card; local folders by name only."""
    data_settings = {k: v for k, v in vars(curriculum.data).items() if v is not None}
    for key in ("dir", "tokenizer"):
        if key in data_settings:
            data_settings[key] = hub_id(data_settings[key]) or Path(data_settings[key]).name
    return {
        "data": data_settings,
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


def model_card(
    curriculum: Curriculum,
    data: PretrainingData,
    results: Sequence[StageResult],
    model: LxmertSForPreTraining,
    processor: LxmertSProcessor,
    scores: ZeroShotScores | None = None,
    model_name: str = "lxmert-s-msp",
) -> str:
    """The Hub model card; with `scores`, a section of the held-out scores and where each comes from, and
    the same scores as its `model-index`."""
    config = model.config
    order = " → ".join(stage.name for stage in curriculum.stages)
    parameters = sum(p.numel() for p in model.lxmert.parameters())
    synthetic = is_synthetic_world(data.folder)
    retrieval_data = (SYNTHETIC_DATASET, "synthetic world") if synthetic else TASKS["retrieval"].hub_dataset
    metadata = ModelCardData(
        model_name=model_name,
        license=LICENSE,
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=TAGS,
        datasets=None if synthetic else PRETRAINING_DATASETS,
        eval_results=_zero_shot_results(scores, retrieval_data) or None,
    )
    lines = [
        "# LXMERT-S pre-trained with MSP",
        "",
        "LXMERT-S (LXMERT with only its cross-modality encoder) pre-trained with multi-stage pre-training "
        f"(MSP; Liu, Feng, Wang, ACL-IJCNLP 2021): {order}.",
        "",
        *intended_use_section(synthetic, processor, config),
        *_pretrained_load_lines(config),
        "## Model",
        "",
        f"{config.num_layers} cross-modality layers, hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} attention heads, {parameters:,} encoder parameters; "
        f"pre-training heads kept: {', '.join(config.pretraining_tasks)}. All settings: `config.json`.",
        "",
        *features_section(config, processor),
        "## Data",
        "",
        _data_description(curriculum, data),
        "",
        "## Curriculum",
        "",
        *_stage_rows(curriculum, data, results),
        "",
        "Corpus: its rows and, where they differ, the texts the stage trained on (phrase lists are packed "
        "into texts of the stage's length); text tokens: that length, [CLS] and [SEP] included; trained for: "
        "epochs over those texts, or optimizer steps. Each stage started from the previous stage's weights; "
        f"optimizer state: {curriculum.training.optimizer_state}. Final losses are the last logged training "
        "values (mean over the last logging window).",
        "",
        f"The curriculum (`{curriculum.path.name}`, resolved):",
        "",
        "```yaml",
        yaml.safe_dump(_resolved_curriculum(curriculum), sort_keys=False).rstrip(),
        "```",
        "",
        *([] if scores is None else _zero_shot_section(scores)),
        *code_section(f"accelerate launch recipes/pretrain.py --config {curriculum.path.name}"),
        *citation_section(),
    ]
    return render_card(metadata, lines)


def _load_lines(model_class: str, auto_class: str | None) -> list[str]:
    loader = (
        f"from transformers import AutoProcessor, {auto_class}\n\nmodel = {auto_class}.from_pretrained("
        '"path/to/this/folder", trust_remote_code=True)'
        if auto_class is not None
        else f"from modeling_lxmert_s import {model_class}  # this repository's package\n"
        "from transformers import AutoProcessor\n\n"
        f'model = {model_class}.from_pretrained("path/to/this/folder")'
    )
    return [
        "## How to load",
        "",
        "```python",
        loader,
        'processor = AutoProcessor.from_pretrained("path/to/this/folder", trust_remote_code=True)',
        "```",
        "",
    ]


NOT_SCORED_ON_TEST = (
    "Test: not scored, as the data folder holds no test split with labels (VQA v2's test answers are not "
    "public: `recipes/evaluate_checkpoint.py --split test` writes the predictions its evaluation server "
    "takes)."
)


def _results_section(
    task: DownstreamTask, data: DownstreamData, scores: Mapping[str, Evaluation]
) -> list[str]:
    """Each split's scores in percent, beside what a model must beat there (the answer priors, chance)."""
    chosen = "the one training ended with" if task.metric is None else "the epoch best on val"
    lines = [
        "## Results",
        "",
        f"In percent. The model is {chosen}; the test split played no part in training or choosing it.",
        "",
        "| split | metric | value (%) | what a model must beat |",
        "| --- | --- | --- | --- |",
    ]
    for split, evaluation in scores.items():
        floors = task.scorer.floors(evaluation, task, data, split)
        lines += [
            f"| {split} | {name} | {100 * value:.1f} | {floors.get(name, '–')} |"
            for name, value in evaluation.metrics.items()
            if name != "loss" and not name.startswith("kept_")
        ]
    lines += ["", *([] if "test" in scores else [NOT_SCORED_ON_TEST, ""])]
    return lines + _by_type_section(scores)


def _by_type_section(scores: Mapping[str, Evaluation]) -> list[str]:
    """VQA accuracy by question type on the last split scored (test when known), each type beside its own
    answer prior: what a mean over types hides."""
    split, evaluation = list(scores.items())[-1]
    breakdown = (evaluation.by_type or {}).get("question_type")
    if not breakdown or len(breakdown) > 12:
        return []
    lines = [
        f"Accuracy by question type on {split}, in percent, beside each type's answer prior (its most "
        "frequent training answer):",
        "",
        "| question type | questions | accuracy (%) | answer prior (%) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, row in breakdown.items():
        prior = f"{100 * row['prior']:.1f} ({row['prior_answer']!r})"
        lines.append(f"| {kind} | {row['questions']} | {100 * row['accuracy']:.1f} | {prior} |")
    return [*lines, ""]


def finetuned_card(
    task: DownstreamTask,
    source: str,
    data: DownstreamData,
    scores: Mapping[str, Evaluation],
    settings: dict[str, Any],
    model: torch.nn.Module,
    processor: LxmertSProcessor,
) -> str:
    """The card of a model fine-tuned on `task` from `source` (a checkpoint folder or Hub id, or "none"),
    with its `scores` by split (val, and test when known) and training `settings`."""
    synthetic = is_synthetic_world(data.folder)
    dataset = (SYNTHETIC_DATASET, "synthetic world") if synthetic else task.hub_dataset
    task_type, task_name = task.hub_task
    base = hub_id(source)
    if source == "none":
        origin = "no pre-training (freshly initialised weights)"
    elif base is not None:
        origin = f"[`{base}`](https://huggingface.co/{base})"
    else:
        origin = f"the local pre-training checkpoint `{Path(source).name}`"
    described = (
        "the built-in synthetic world (`lxmert_s_msp/data/synthetic.py`)"
        if synthetic
        else f"{dataset[1]} (prepared data folder `{data.folder.name}`)"
    )
    auto = "AutoModelForVisualQuestionAnswering" if task_type == "visual-question-answering" else None
    lines = [
        f"# LXMERT-S fine-tuned for {task_name.lower()} ({dataset[1]})",
        "",
        f"LXMERT-S (LXMERT with only its cross-modality encoder) fine-tuned on {described}, from {origin}. "
        + (
            "The model is the one at the end of training, ranked once on val."
            if task.metric is None
            else "The model is the checkpoint of the best val score."
        ),
        "",
        *intended_use_section(synthetic, processor, model.config),
        *_load_lines(type(model).__name__, auto),
        *features_section(model.config, processor),
        "## Training",
        "",
        "| setting | value |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in settings.items()),
        "",
        *_results_section(task, data, scores),
        *code_section(f"recipes/finetune.py --task {task.name}"),
        *citation_section(),
    ]
    metadata = _finetuned_metadata(task, base, dataset, scores, synthetic)
    return render_card(metadata, lines)


def _finetuned_metadata(
    task: DownstreamTask,
    base: str | None,
    dataset: tuple[str, str],
    scores: Mapping[str, Evaluation],
    synthetic: bool,
) -> ModelCardData:
    task_type = task.hub_task[0]
    results = [
        result
        for split, evaluation in scores.items()
        for result in _task_results(task, evaluation.metrics, dataset, split)
    ]
    return ModelCardData(
        model_name=f"lxmert-s-{task.name}",
        license=LICENSE,
        library_name="transformers",
        pipeline_tag=task_type if task_type == "visual-question-answering" else None,
        tags=[*TAGS, task.name],
        base_model=base,
        datasets=None if synthetic else [dataset[0]],
        eval_results=results or None,
    )


def converted_card(source: str, model: LxmertSForPreTraining, processor: LxmertSProcessor) -> str:
    """The card of an LXMERT checkpoint converted to LXMERT-S (`recipes/convert_lxmert_checkpoint.py`)."""
    base = hub_id(source)
    metadata = ModelCardData(
        model_name="lxmert-s-from-lxmert",
        license=LICENSE,
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=[*TAGS, "converted"],
        base_model=base,
    )
    named = f"[`{base}`](https://huggingface.co/{base})" if base else f"`{Path(source).name}`"
    lines = [
        "# LXMERT-S converted from LXMERT",
        "",
        f"The cross-modality encoder and pre-training heads ({', '.join(model.config.pretraining_tasks)}) "
        f"of the LXMERT checkpoint {named}, unchanged; LXMERT's language and object-relationship encoders "
        "and its QA head are dropped (`recipes/convert_lxmert_checkpoint.py`). Not trained further.",
        "",
        *intended_use_section(False, processor, model.config),
        *_load_lines(type(model).__name__, "AutoModelForPreTraining"),
        *features_section(model.config, processor),
        *code_section("recipes/convert_lxmert_checkpoint.py"),
        *citation_section(),
    ]
    return render_card(metadata, lines)
