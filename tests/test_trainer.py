"""MSPTrainer: per-task losses in the logs, and gradient accumulation equal to one large batch."""

from __future__ import annotations

import pytest
import torch
from model_inputs import random_inputs, random_labels, tiny_config
from transformers import TrainingArguments

from lxmert_s_msp.training.trainer import MSPTrainer
from modeling_lxmert_s import LxmertSForPreTraining

TASKS = ["mlm", "moc", "itm"]


def _examples(count: int) -> list[dict[str, torch.Tensor]]:
    """Single examples, each with exactly one MLM target, so that every micro-batch averages alike."""
    config = tiny_config(pretraining_tasks=TASKS)
    inputs = random_inputs(config, batch=count, seed=5)
    labels = random_labels(config, inputs)
    labels["mlm_labels"] = torch.full_like(inputs["input_ids"], -100)
    labels["mlm_labels"][:, 1] = inputs["input_ids"][:, 1]
    labels["itm_labels"] = torch.arange(count) % 2
    names = ["mlm_labels", "itm_labels", *(n for n in labels if n.startswith("moc_"))]
    batch = {**inputs, **{name: labels[name] for name in names}}
    return [{name: tensor[i] for name, tensor in batch.items()} for i in range(count)]


def _stack(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The rows' tensors stacked (training adds the epoch and dataset index of each row, plain ints)."""
    return {
        name: torch.stack([row[name] for row in rows]) for name in rows[0] if torch.is_tensor(rows[0][name])
    }


def _trainer(tmp_path, tasks: list[str] = TASKS, **settings) -> MSPTrainer:
    torch.manual_seed(0)
    config = tiny_config(pretraining_tasks=tasks, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    arguments = {
        "output_dir": str(tmp_path),
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "remove_unused_columns": False,
        "disable_tqdm": True,
        **settings,
    }
    return MSPTrainer(
        model=LxmertSForPreTraining(config),
        args=TrainingArguments(**arguments),
        train_dataset=_examples(8),
        data_collator=_stack,
    )


def test_gradient_accumulation_of_4_equals_one_batch_of_4x(tmp_path):
    settings = {"max_steps": 1, "optim": "sgd", "learning_rate": 0.5, "lr_scheduler_type": "constant"}
    accumulated = _trainer(
        tmp_path / "a", per_device_train_batch_size=2, gradient_accumulation_steps=4, **settings
    )
    large = _trainer(tmp_path / "b", per_device_train_batch_size=8, gradient_accumulation_steps=1, **settings)
    before = {name: p.detach().clone() for name, p in large.model.named_parameters()}
    accumulated.train()
    large.train()
    moved = 0
    for (name, a), b in zip(accumulated.model.named_parameters(), large.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
        moved += not torch.equal(b, before[name])
    assert moved > 50  # the step changed the model, so equality is not trivial


def test_per_task_losses_are_logged_and_kept_in_the_state(tmp_path):
    # the model also carries IFRS, whose labels never come: it must not be logged (nor divide by zero)
    trainer = _trainer(
        tmp_path,
        [*TASKS, "ifrs"],
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_steps=1,
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:
        assert "loss/ifrs" not in entry
        task_losses = [entry[f"loss/{task}"] for task in TASKS]
        assert all(value > 0 for value in task_losses)
        # every task is active in every micro-batch with weight 1: the total is the sum of the task means
        assert entry["loss"] == pytest.approx(sum(task_losses), rel=1e-4)


def test_raw_corpus_columns_must_reach_the_collator(tmp_path):
    with pytest.raises(ValueError, match="remove_unused_columns"):
        _trainer(tmp_path, remove_unused_columns=True)
