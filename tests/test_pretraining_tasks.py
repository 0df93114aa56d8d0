"""The task registry `PRETRAINING_TASKS`: every task has all its parts, and a new task is one head class and
one registry line (its collator piece beside it) with nothing else changed."""

from __future__ import annotations

import inspect

import pytest
import torch
from model_inputs import tiny_config
from test_collators import FEATURE_DIM, OBJECT_VOCAB, corpus_rows, processor, store  # noqa: F401 (fixtures)
from torch import nn
from torch.nn import functional as F

from lxmert_s_msp.data.collators import MSPCollator
from modeling_lxmert_s import (
    PRETRAINING_TASKS,
    EncoderFeatures,
    LxmertSForPreTraining,
    PretrainingBatch,
    PretrainingHead,
    PretrainingTask,
)
from modeling_lxmert_s.modeling_lxmert_s import ENCODER_PASSES

NEEDS = {"object_vocab", "hard_negatives"}


@pytest.mark.parametrize("name", list(PRETRAINING_TASKS))
def test_every_registered_task_has_all_its_parts(name):
    task = PRETRAINING_TASKS[name]
    assert task.name == name
    assert issubclass(task.head, PretrainingHead) and task.head.label_names
    for method in ("check_labels", "forward"):  # the base class's raise NotImplementedError
        assert getattr(task.head, method) is not getattr(PretrainingHead, method), (name, method)
    assert callable(task.piece) and list(inspect.signature(task.piece).parameters) == ["batch"]
    assert task.passes <= set(ENCODER_PASSES)
    assert set(task.requires or {}) <= set(PRETRAINING_TASKS)
    assert task.needs <= NEEDS
    # a task shares a head module only with tasks of the same labels' family (the module's own task)
    assert task.module_name in PRETRAINING_TASKS
    shared = PRETRAINING_TASKS[task.module_name].head
    assert task.head is shared or issubclass(task.head, shared)


def test_every_encoder_pass_has_its_method():
    for name in ENCODER_PASSES:
        assert callable(getattr(LxmertSForPreTraining, f"_{name}_pass"))
    assert {name for task in PRETRAINING_TASKS.values() for name in task.passes} == set(ENCODER_PASSES)


class RegionCountHead(PretrainingHead):
    """A toy task: how many of the 36 slots hold a real region, regressed from the pooled output."""

    label_names = ("region_count_labels",)

    def __init__(self, config):
        super().__init__()
        self.score = nn.Linear(config.hidden_size, 1)

    def check_labels(self, labels, checks):
        checks.features(
            "region_count_labels", labels["region_count_labels"][:, None], checks.per_row.then(1, "1")
        )

    def forward(self, features: EncoderFeatures, labels):
        return F.mse_loss(self.score(features.pooled_output).squeeze(-1), labels["region_count_labels"])


def count_regions(batch: PretrainingBatch) -> None:
    batch.labels["region_count_labels"] = batch.regions["visual_attention_mask"].float().mean(1)


def test_a_new_task_is_one_head_class_and_one_registry_line(monkeypatch, store, processor, tmp_path):  # noqa: F811
    monkeypatch.setitem(PRETRAINING_TASKS, "count", PretrainingTask("count", RegionCountHead, count_regions))

    collator = MSPCollator(store, processor, ["mlm", "count"], object_vocab=OBJECT_VOCAB)
    batch = collator(corpus_rows(), seed=0)
    real = batch["visual_attention_mask"].float().mean(1)
    assert torch.equal(batch["region_count_labels"], real)
    assert "mlm_labels" in batch

    config = tiny_config(
        visual_feat_dim=FEATURE_DIM, vocab_size=len(processor.tokenizer), pretraining_tasks=["mlm", "count"]
    )
    model = LxmertSForPreTraining(config)
    output = model(**batch)
    assert set(output.losses) == {"mlm", "count"}
    assert torch.allclose(output.loss, output.losses["mlm"] + output.losses["count"])
    output.loss.backward()
    assert model.heads["count"].score.weight.grad.abs().sum() > 0
    # the task's labels are checked by its head, and a model without the task refuses them
    with pytest.raises(ValueError, match="region_count_labels"):
        model(**{**batch, "region_count_labels": batch["region_count_labels"][:2]})
    with pytest.raises(ValueError, match=r"'region_count_labels' are labels for task\(s\) \['count'\]"):
        LxmertSForPreTraining(tiny_config(visual_feat_dim=FEATURE_DIM, pretraining_tasks=["mlm"]))(**batch)
