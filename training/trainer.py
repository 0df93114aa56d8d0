"""`MSPTrainer`: the transformers `Trainer` plus the per-task losses of multi-task MSP pre-training.

A stage of MSP optimises the weighted sum of several task losses (MLM, MRFR, MOC and the stage's own
task); the sum alone hides which task learns. The model returns each active task's loss in
`output.losses`; this trainer averages them over a logging window (every micro-batch of gradient
accumulation, every process) and logs them next to `loss` as `loss/<task>`, so they reach TensorBoard
and whatever `report_to` names, and stay in `trainer.state.log_history`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Trainer


class MSPTrainer(Trainer):
    """A `Trainer` for `LxmertSForPreTraining` that logs the per-task losses.

    The stage collators need the raw corpus columns (`image_index`, `text`), which the `Trainer` would
    drop as "unused" because the model's forward takes its labels as `**labels`: pass
    `TrainingArguments(remove_unused_columns=False)`.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.args.remove_unused_columns:
            raise ValueError(
                "TrainingArguments.remove_unused_columns must be False for MSPTrainer: the stage collator "
                "reads the corpus columns (image_index, text) that the Trainer would remove"
            )
        # One slot per task the model carries, so every process reduces tensors of the same shape even
        # when a task had no labels in some of its micro-batches.
        self._tasks = list(self.accelerator.unwrap_model(self.model).config.pretraining_tasks)
        self._task_loss_sums = torch.zeros(len(self._tasks), device=self.args.device)
        self._task_loss_counts = torch.zeros(len(self._tasks), device=self.args.device)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        if outputs.loss is None:
            raise ValueError(
                f"the batch holds no labels of the model's tasks {self._tasks}; it has {sorted(inputs)}"
            )
        if model.training:
            for task, value in outputs.losses.items():
                self._task_loss_sums[self._tasks.index(task)] += value.detach().float()
                self._task_loss_counts[self._tasks.index(task)] += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every process reaches it at the same step
            logs.update(self._window_task_losses())
        super().log(logs, start_time)

    def _window_task_losses(self) -> dict[str, float]:
        """Mean of each task's loss over the micro-batches since the last log, over all processes."""
        sums = self.accelerator.reduce(self._task_loss_sums, "sum")
        counts = self.accelerator.reduce(self._task_loss_counts, "sum")
        means = {
            f"loss/{task}": (total / count).item()
            for task, total, count in zip(self._tasks, sums, counts, strict=True)
            if count > 0
        }
        self._task_loss_sums.zero_()
        self._task_loss_counts.zero_()
        return means
