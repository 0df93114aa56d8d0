"""The table of downstream tasks: every entry carries all its parts and they fit together, and fine-tuning
and evaluation read nothing else of a task: a new entry, and nothing else, is a new task."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from tiny_curriculum import TINY_MODEL

from lxmert_s_msp.data.downstream_data import DownstreamData, LabelledCorpora, TaskSplits
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.evaluation.downstream import ClassificationScorer, RetrievalScorer, evaluate_checkpoint
from lxmert_s_msp.training.downstream_tasks import TASKS
from lxmert_s_msp.training.finetuning import FinetuneSettings, finetune
from lxmert_s_msp.training.sampling import IndexedRows
from modeling_lxmert_s import LxmertSConfig, LxmertSForVisualReasoning, LxmertSPreTrainedModel
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


@pytest.fixture(scope="module")
def architecture(world, tmp_path_factory) -> Path:
    """A tiny model's config and processor, which `finetune` with `model="none"` trains from scratch."""
    folder = tmp_path_factory.mktemp("architecture")
    processor = LxmertSProcessor(load_tokenizer(world / "tokenizer"))
    LxmertSConfig(**TINY_MODEL, vocab_size=len(processor.tokenizer), visual_feat_dim=32).save_pretrained(
        folder
    )
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_carries_all_its_parts(name):
    task = TASKS[name]
    assert task.name == name and task.epochs > 0
    assert issubclass(task.model_class, LxmertSPreTrainedModel)
    assert isinstance(task.data, TaskSplits) and callable(task.collator)
    assert isinstance(task.scorer, ClassificationScorer | RetrievalScorer)
    assert all(task.hub_dataset) and all(task.hub_task)
    # a task scored after every epoch keeps its best one by the metric it computes; retrieval has none
    metrics = task.scorer.training_metrics()
    assert task.metric == (None if metrics is None else metrics.name)


@pytest.mark.parametrize("name", ["vqa", "nlvr2", "retrieval"])  # GQA: no corpus in the synthetic world
def test_each_task_s_rows_batch_into_a_loss_of_its_model(world, architecture, name):
    task, data = TASKS[name], DownstreamData.open(world)
    processor = LxmertSProcessor.from_pretrained(architecture)
    labels = task.data.labels(data)
    config = LxmertSConfig.from_pretrained(architecture, **task.data.head_settings(labels))
    train = task.data.split(data, "train")
    rows = IndexedRows(task.data.training_rows(train))  # as the Trainer reads them: seeded by epoch and index
    batch = task.collator(data, processor, train, labels, 0)([rows[0, index] for index in range(4)])
    output = task.model_class(config)(**batch)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)


def test_a_new_task_is_one_entry(world, architecture, tmp_path):
    """A task that is in no table, on corpora of its own, fine-tuned and evaluated with no other change."""
    data_folder = tmp_path / "data"
    (data_folder / "corpora").mkdir(parents=True)
    (data_folder / "store").symlink_to(world / "store")
    for split in ("train", "val", "test"):
        (data_folder / "corpora" / f"toy_{split}").symlink_to(world / "corpora" / f"nlvr2_{split}")
    # NLVR2's model, collator and scorer on corpora of its own, with labels of its own
    data_part, hub_dataset = LabelledCorpora("toy", ("no", "yes")), ("me/toy", "Toy")
    toy = dataclasses.replace(TASKS["nlvr2"], name="toy", epochs=1, data=data_part, hub_dataset=hub_dataset)
    data = DownstreamData.open(data_folder)
    settings = FinetuneSettings(max_steps=2, batch_size=4, report_to=["none"])
    result = finetune(toy, "none", data, tmp_path / "toy", settings, config_from=architecture)

    report = json.loads(result.metrics_file.read_text())
    assert (report["task"], report["global_step"], set(report["metrics"])) == ("toy", 2, {"loss", "accuracy"})
    assert LxmertSForVisualReasoning.from_pretrained(result.hub_folder).config.id2label == {0: "no", 1: "yes"}
    assert ModelCard.load(result.hub_folder / "README.md").data.model_name == "lxmert-s-toy"
    evaluation = evaluate_checkpoint(toy, result.hub_folder, data, "test", device="cpu")
    test_rows = len(toy.data.split(data, "test"))
    assert evaluation.metrics["accuracy"] * test_rows == round(evaluation.metrics["accuracy"] * test_rows)
    line = toy.scorer.summary(evaluation, toy, data, "test")
    assert line == f"toy on test, in %: accuracy {100 * evaluation.metrics['accuracy']:.1f} (chance 50.0)"
