"""The transformers `Trainer` plus what a stage of MSP pre-training (`MSPTrainer`) and a fine-tuning run
(`FinetuningTrainer`) need.

Both are `IndexedRowsTrainer`s: their training rows carry their epoch and dataset index, which seed each
batch's random draws (`lxmert_s_msp/training/sampling.py`), so a resumed run trains exactly the batches of an
uninterrupted one.

`MSPTrainer`:

- Per-task losses. A stage optimises the weighted sum of several task losses (MLM, MRFR, MOC and the
  stage's own task); the sum alone hides which task learns. The model returns each active task's loss in
  `output.losses`; this trainer averages them over a logging window (every micro-batch of gradient
  accumulation, every process) and logs them next to `loss` as `loss/<task>`, so they reach TensorBoard
  and whatever `report_to` names, and stay in `trainer.state.log_history`.
- Checkpoints a killed run can trust. The `Trainer` writes a checkpoint's files one after another; this
  one marks a checkpoint finished (`COMPLETE_MARKER`, written atomically) after every process has saved,
  and `last_complete_checkpoint` only returns marked ones.
- Optimizer state across stages: `optimizer_state_by_name` / `initial_optimizer_state` carry Adam's
  moments from one stage's model to the next by parameter name (heads a stage adds start fresh).
- Mixed-corpus stages: with `source_lengths`, batches are drawn by `SourceBlockSampler`, one corpus each.
- The last step is always logged (`LogLastStep`), so a stage shorter than `logging_steps` still leaves its
  per-task losses in the log history.

`FinetuningTrainer`: the parameters a checkpoint did not provide (a new task head) train at their own
learning rate, `FinetuningArguments.head_learning_rate`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.data_loader import SeedableRandomSampler
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from lxmert_s_msp.data.store import atomic_write_text, replace_folder
from lxmert_s_msp.training.sampling import EpochIndices, IndexedRows
from lxmert_s_msp.training.stage_data import SourceBlockSampler

COMPLETE_MARKER = "checkpoint_complete"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer_state.pt"


class IndexedRowsTrainer(Trainer):
    """A `Trainer` whose training rows carry their epoch and dataset index (`sampling.py`), from which
    the collators seed each batch's draws: a resumed run, DataLoader workers and the processes of a
    data-parallel run collate exactly the batches of one uninterrupted process."""

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        dataset = IndexedRows(self.train_dataset)
        self._epoch_indices = EpochIndices(self._index_sampler(dataset))
        return self._get_dataloader(
            dataset=dataset,
            description="Training",
            batch_size=self._train_batch_size,
            sampler_fn=lambda _: self._epoch_indices,
            is_training=True,
        )

    def _run_epoch(self, model: nn.Module, epoch: int, *args: Any, **kwargs: Any) -> Any:
        # The Trainer's `set_epoch` on the loader does not reach the sampler of a resumed data-parallel run
        # (accelerate's skipping wrapper around its per-process shard): set it here, before every epoch.
        self._epoch_indices.set_epoch(epoch)
        return super()._run_epoch(model, epoch, *args, **kwargs)

    def _index_sampler(self, dataset: Dataset) -> Sampler[int]:
        """The order of an epoch's indices: shuffled by the run's data seed and the epoch."""
        seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
        return SeedableRandomSampler(data_source=dataset, data_seed=seed)


class MSPTrainer(IndexedRowsTrainer):
    """A `Trainer` for `LxmertSForPreTraining` that logs the per-task losses.

    The stage collators need the raw corpus columns (`image_index`, `text`), which the `Trainer` would
    drop as "unused" because the model's forward takes its labels as `**labels`: pass
    `TrainingArguments(remove_unused_columns=False)`.

    `initial_optimizer_state` ({parameter name: Adam state}, from `optimizer_state_by_name`) seeds the new
    optimizer's state; `source_lengths` (sizes of the concatenated corpora of a mixed stage) makes every
    per-device batch come from one corpus.
    """

    def __init__(
        self,
        *args: Any,
        initial_optimizer_state: dict[str, dict[str, Any]] | None = None,
        source_lengths: list[int] | None = None,
        **kwargs: Any,
    ):
        self.initial_optimizer_state = initial_optimizer_state
        self.source_lengths = source_lengths
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
        self.add_callback(LogLastStep())

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

    def _index_sampler(self, dataset: Dataset) -> Sampler[int]:
        if self.source_lengths is None:
            return super()._index_sampler(dataset)
        return SourceBlockSampler(self.source_lengths, self.args.per_device_train_batch_size, self.args.seed)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model)
        if self.initial_optimizer_state is not None:
            for name, parameter in self.accelerator.unwrap_model(self.model).named_parameters():
                state = self.initial_optimizer_state.get(name)
                if state is not None and parameter.requires_grad:
                    optimizer.state[parameter] = {
                        key: value.to(parameter.device) if torch.is_tensor(value) else value
                        for key, value in state.items()
                    }
        return optimizer

    def optimizer_state_by_name(self) -> dict[str, dict[str, Any]]:
        """The optimizer's per-parameter state keyed by parameter name, for the next stage's model."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate wraps it
        return {
            name: {
                key: value.detach().cpu() if torch.is_tensor(value) else value for key, value in state.items()
            }
            for name, parameter in self.accelerator.unwrap_model(self.model).named_parameters()
            if (state := optimizer.state.get(parameter))
        }

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every process has written its RNG state
        if self.args.should_save:
            folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            atomic_write_text(folder / COMPLETE_MARKER, f"{self.state.global_step}\n")


class LogLastStep(TrainerCallback):
    """Log at the last optimizer step too: with `logging_steps` above a stage's step count the `Trainer` would
    log no training loss at all, and the stage would leave no losses to report or plot."""

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control


@dataclass(kw_only=True)
class FinetuningArguments(TrainingArguments):
    """`TrainingArguments` plus the learning rate of the parameters the checkpoint did not provide, so that it
    is saved with the other settings (`training_args.bin`, the loggers' hyper-parameters)."""

    head_learning_rate: float = field(
        metadata={"help": "learning rate of the newly initialised parameters; the rest: learning_rate"}
    )


class FinetuningTrainer(IndexedRowsTrainer):
    """A `Trainer` whose newly initialised parameters train at `args.head_learning_rate`, the loaded ones at
    `args.learning_rate` (`args`: `FinetuningArguments`).

    At one learning rate, fine-tuning a pre-trained encoder under a fresh task head fails both ways: a rate
    that moves the untrained head lets its first gradients wipe out what pre-training put in the encoder; one
    that keeps the encoder leaves the head near its initial guesses. Hence discriminative learning rates
    (ULMFiT, Howard & Ruder 2018; LP-FT, Kumar et al. 2022). `new_parameters` names the fresh parameters as
    `from_pretrained` reports them (the model's `fresh_parameters` and the missing keys). The optimizer is
    the `Trainer`'s own, its weight-decay groups each split in two by learning rate; the scheduler scales
    every group by one factor.
    """

    def __init__(self, *args: Any, new_parameters: Collection[str], **kwargs: Any):
        self.new_parameters = frozenset(new_parameters)
        super().__init__(*args, **kwargs)
        unknown = self.new_parameters - {name for name, _ in self.model.named_parameters()}
        if unknown:
            raise ValueError(f"new_parameters: {sorted(unknown)} are not parameters of the model")

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is not None:
            return self.optimizer
        optimizer = super().create_optimizer(model)
        new = {
            id(parameter)
            for name, parameter in self.accelerator.unwrap_model(self.model).named_parameters()
            if name in self.new_parameters
        }
        decay_groups = list(optimizer.param_groups)
        optimizer.param_groups.clear()
        # The loaded parameters' groups first: the Trainer logs the first group's learning rate.
        for fresh in (False, True):
            for group in decay_groups:
                parameters = [p for p in group["params"] if (id(p) in new) == fresh]
                rate = self.args.head_learning_rate if fresh else group["lr"]
                if parameters:
                    optimizer.add_param_group({**group, "params": parameters, "lr": rate})
        return optimizer


def per_device_batch_size(batch_size: int, accumulation_steps: int = 1, where: str = "batch_size") -> int:
    """A global batch size split over the processes and the gradient-accumulation steps; `where` names the
    setting in the error when it does not split evenly."""
    processes = PartialState().num_processes
    per_device, remainder = divmod(batch_size, processes * accumulation_steps)
    if remainder or per_device == 0:
        raise ValueError(
            f"{where}: {batch_size} is not divisible by {processes} processes x "
            f"{accumulation_steps} accumulation steps"
        )
    return per_device


def last_complete_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint of `folder` that was completely written; unfinished ones are removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    complete = []
    for checkpoint in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = checkpoint.name.rsplit("-", 1)[-1]
        if not (checkpoint.is_dir() and step.isdigit()):
            continue
        if (checkpoint / COMPLETE_MARKER).is_file():
            complete.append((int(step), checkpoint))
        else:
            shutil.rmtree(checkpoint)
    return max(complete)[1] if complete else None


def save_trained_model(
    trainer: Trainer,
    final: Path,
    carry_optimizer: bool = False,
    card: str | None = None,
    training_state: bool = True,
) -> None:
    """Save a trained model, its processor and, with `training_state`, the trainer's state and the
    `Trainer`'s `training_args.bin` (and, for MSPTrainer, optionally its optimizer state by parameter name,
    and a model `card` as README.md) into `final` atomically: built under a temporary name, then renamed.
    Every process takes part (sharded models gather their weights); the main one writes."""
    state = PartialState()
    work = final.with_name(final.name + ".partial")
    if state.is_main_process:
        shutil.rmtree(work, ignore_errors=True)
    state.wait_for_everyone()
    trainer.save_model(str(work))
    optimizer_state = trainer.optimizer_state_by_name() if carry_optimizer else None
    if state.is_main_process:
        if training_state:
            trainer.state.save_to_json(str(work / TRAINER_STATE))
        else:  # a folder to upload holds the model only (the Trainer pickles its arguments there)
            (work / TRAINING_ARGS_NAME).unlink(missing_ok=True)
        if optimizer_state is not None:
            torch.save(optimizer_state, work / OPTIMIZER_STATE)
        if card is not None:
            (work / "README.md").write_text(card)
        replace_folder(work, final)
    state.wait_for_everyone()
