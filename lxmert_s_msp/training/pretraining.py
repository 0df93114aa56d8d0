"""Run an MSP curriculum: the stages in order, each from the previous one's weights, resumable at any point.

Output folder:

    <out>/.lock                held by the run writing the folder (`folder_lock`): a second run is refused,
                               naming it
    <out>/world/               the synthetic world, when the curriculum uses it
    <out>/<i>-<stage>/         checkpoint-<step>/ (the Trainer's, marked when complete), runs/ (TensorBoard),
                               final/ (the stage's model, its trainer state with the log history, optimizer
                               state when carried)
    <out>/hub/                 the last stage's model, code, processor and model card: ready for the Hub
    <out>/loss_curves.png      every task's loss over the whole curriculum, stage boundaries marked
    <out>/log_history.json     the stages' log histories, with the curriculum-wide step
    <out>/zero_shot_scores.json
                               when asked, the Hub model's held-out scores (`zero_shot.py`), which its
                               card records; a re-run reuses them while the model, the data they score
                               and the scoring code stay the same (`zero_shot.scores_key`)

A stage is done when its `final/` exists (written to a temporary folder and renamed). Re-running the same
command skips done stages and resumes the current one from its last complete checkpoint, so a killed run
loses at most `save_steps` steps and ends with the same number of optimizer steps as an uninterrupted one.
Each stage folder records what its result depends on (`stage_record.py`): a re-run with other settings
or data is refused before anything trains, unless `overwrite_output_dir` asks to train those stages again
(and to replace a synthetic world of other settings).
Everything a later stage needs (its corpora, their images in the store, its batch split, its hard
negatives) is checked before the first stage starts.
"""

from __future__ import annotations

import json
import re
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType
from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from lxmert_s_msp.checkpoints import RESUME_REMEDY, check_weights, load_model
from lxmert_s_msp.data.folder_lock import check_not_locked, folder_lock
from lxmert_s_msp.data.hard_negatives import load_hard_negatives
from lxmert_s_msp.data.store import atomic_write_text
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world, world_lock_file
from lxmert_s_msp.data.tokenizer import tokenizer_digest
from lxmert_s_msp.evaluation.zero_shot import (
    ZERO_SHOT_SCORES,
    ZeroShotSettings,
    check_zero_shot_data,
    zero_shot_scores,
)
from lxmert_s_msp.hub.model_card import write_hub_folder
from lxmert_s_msp.training.curriculum import Curriculum, CurriculumError, StageConfig
from lxmert_s_msp.training.loss_plot import plot_loss_curves
from lxmert_s_msp.training.stage_data import PretrainingData, StageData, stage_data
from lxmert_s_msp.training.stage_record import check_stage_folder, claim_stage_folder, stage_settings
from lxmert_s_msp.training.stage_results import CurriculumResult, StageResult
from lxmert_s_msp.training.trainer import (
    COMPLETE_MARKER,
    OPTIMIZER_STATE,
    TRAINER_STATE,
    MSPTrainer,
    last_complete_checkpoint,
    per_device_batch_size,
    save_trained_model,
)
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining, tasks_need

FINAL = "final"
LOG_HISTORY = "log_history.json"
LOCK_FILE = ".lock"


def output_lock(output_dir: Path) -> AbstractContextManager[None]:
    """The output folder's lock (`folder_lock`), held by the main process for the whole run: a second run
    into the folder is refused, naming the first."""
    if not PartialState().is_main_process:
        return nullcontext()
    return folder_lock(
        output_dir / LOCK_FILE,
        f"the output folder {output_dir}",
        "wait for it to end, or choose another --output_dir",
    )


def data_folder(curriculum: Curriculum, output_dir: Path, overwrite: bool = False) -> Path:
    """The prepared data folder, generating the synthetic world (once, on the main process) when asked;
    `overwrite` replaces a world of other settings. A data folder that is a world still being generated is
    refused, naming its generator."""
    if curriculum.data.dir is not None:
        folder = Path(curriculum.data.dir)
        check_not_locked(
            world_lock_file(folder), f"the data folder {folder}", "wait for its generation to end"
        )
        return folder
    state = PartialState()
    world = output_dir / "world"
    with state.main_process_first():
        if state.is_main_process:
            generate_world(world, WorldSettings(**curriculum.data.synthetic), overwrite=overwrite)
    return world


def stage_folder(output_dir: Path, index: int, stage: StageConfig) -> Path:
    """Where the `index`-th stage (from 1) trains: `<output_dir>/<index>-<name>`."""
    return output_dir / f"{index}-{stage.name}"


def stage_model(
    curriculum: Curriculum, data: PretrainingData, stage: StageConfig, previous: Path | None
) -> LxmertSForPreTraining:
    """The stage's model: the previous stage's weights (shared heads included) plus fresh heads it adds."""
    if previous is not None:
        return load_model(LxmertSForPreTraining, previous, pretraining_tasks=stage.tasks)
    settings = {**curriculum.model, **data.model_sizes(), "pretraining_tasks": stage.tasks}
    return LxmertSForPreTraining(LxmertSConfig(**settings))


def training_arguments(
    curriculum: Curriculum, stage: StageConfig, folder: Path, unused_parameters: bool = False
) -> TrainingArguments:
    """The stage's `TrainingArguments`: the curriculum's fields (`TrainingConfig.arguments`), the stage's
    schedule, and what the run sets itself. The stage's batch size is global (split over processes, steps).
    `unused_parameters`: some parameters get no gradient (`parameters_without_gradient`), which DDP must
    be told."""
    given = curriculum.training.arguments
    per_device = per_device_batch_size(stage.batch_size, stage.gradient_accumulation_steps)
    save_total_limit = given.get("save_total_limit")
    return TrainingArguments(
        **{
            "dataloader_pin_memory": torch.cuda.is_available(),
            **given,
            "output_dir": str(folder),
            "use_cpu": PartialState().device.type == "cpu",
            "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": stage.gradient_accumulation_steps,
            "num_train_epochs": stage.epochs,
            "max_steps": -1 if stage.max_steps is None else stage.max_steps,
            "learning_rate": stage.learning_rate,
            "warmup_steps": stage.warmup_ratio,
            "save_strategy": "steps",
            # the newest may be unfinished when killed
            "save_total_limit": None if save_total_limit is None else max(2, save_total_limit),
            "remove_unused_columns": False,
            # a mixed stage leaves the heads of the sources not in a batch without gradients
            "ddp_find_unused_parameters": len(stage.sources) > 1 or unused_parameters,
        }
    )


class Announce(TrainerCallback):
    """Print a stage's line once training begins, when the `Trainer` has counted its optimizer steps."""

    def __init__(self, template: str):
        self.template = template

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:  # above the progress bar the Trainer has just drawn
            tqdm.write(self.template.format(steps=state.max_steps))


def parameters_without_gradient(
    model: LxmertSForPreTraining, trained: StageData, batch_size: int
) -> list[str]:
    """The parameters no loss of the stage reaches, found by one forward and backward pass on a batch of
    its data (RNG state restored, gradients cleared): a pooler that none of the token stage's losses reads,
    say. The heads give every parameter they use a gradient, zero when a batch selects nothing (MLM with no
    token chosen), so what is unused here is unused in every batch of a single-corpus stage."""
    rows = [trained.dataset[index] for index in range(min(batch_size, len(trained.dataset)))]
    with torch.random.fork_rng():
        batch = trained.collator(rows, seed=0)  # rows straight from the dataset: no epoch / index to seed by
        model.train()
        model(**batch).loss.backward()
    unused = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    model.zero_grad(set_to_none=True)
    return unused


def unused_by_data_parallel(
    heading: str, model: LxmertSForPreTraining, trained: StageData, stage: StageConfig, batch_size: int
) -> list[str]:
    """With several processes and one corpus, the parameters no task of the stage reaches, which DDP must be
    told to expect without gradients (announced); none otherwise."""
    state = PartialState()
    if state.num_processes <= 1 or len(stage.sources) != 1:
        return []
    unused = parameters_without_gradient(model, trained, batch_size)
    if unused:
        state.print(
            f"{heading}: no task of the stage reaches {len(unused)} parameter tensors "
            f"({', '.join(sorted({name.rsplit('.', 1)[0] for name in unused}))}): DDP is told to "
            "expect parameters without gradients"
        )
    return unused


def run_stage(
    curriculum: Curriculum,
    data: PretrainingData,
    index: int,
    stage: StageConfig,
    folder: Path,
    previous: Path | None,
    resume_from: Path | None = None,
) -> StageResult:
    """Train the stage in `folder` unless it is finished, resuming from `resume_from` when given, else from
    the folder's last complete checkpoint."""
    state = PartialState()
    final = folder / FINAL
    heading = f"Stage {index}/{len(curriculum.stages)} {stage.name!r}"
    if final.is_dir():
        state.print(f"{heading}: finished by an earlier run with the same settings, not trained again")
    else:
        set_seed(curriculum.training.seed + index)
        model = stage_model(curriculum, data, stage, previous)
        trained = stage_data(data, stage, curriculum.training, seed=curriculum.training.seed + index)
        arguments = training_arguments(curriculum, stage, folder)
        unused = unused_by_data_parallel(
            heading, model, trained, stage, arguments.per_device_train_batch_size
        )
        carried = None
        if curriculum.training.optimizer_state == "carry" and previous is not None:
            carried = torch.load(previous / OPTIMIZER_STATE, weights_only=True)
        trainer = MSPTrainer(
            model=model,
            args=training_arguments(curriculum, stage, folder, unused_parameters=bool(unused)),
            train_dataset=trained.dataset,
            data_collator=trained.collator,
            processing_class=trained.processor,  # saved beside every checkpoint and final model
            initial_optimizer_state=carried,
            source_lengths=trained.source_lengths,
        )
        checkpoint = resume_from
        if checkpoint is None:
            with state.main_process_first():
                checkpoint = last_complete_checkpoint(folder)
        if checkpoint is not None:
            check_weights(checkpoint, RESUME_REMEDY)
        announcement = (
            f"{heading}: tasks {', '.join(stage.tasks)}; {len(trained.dataset):,} examples, {stage.length} "
            f"of batch {stage.batch_size}: {{steps:,}} optimizer steps"
            + (f"; resuming from {checkpoint.name}" if checkpoint else "")
        )
        trainer.add_callback(Announce(announcement))
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        save_trained_model(trainer, final, curriculum.training.optimizer_state == "carry")
    trainer_state = json.loads((final / TRAINER_STATE).read_text())
    return StageResult(
        name=stage.name,
        folder=final,
        log_history=trainer_state["log_history"],
        global_step=trainer_state["global_step"],
        final_losses=final_losses(trainer_state["log_history"]),
    )


def final_losses(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of the total and of each task's loss."""
    losses: dict[str, float] = {}
    for entry in log_history:
        losses.update(
            {key: value for key, value in entry.items() if key == "loss" or key.startswith("loss/")}
        )
    return losses


def check_stages(
    curriculum: Curriculum,
    data: PretrainingData,
    output_dir: Path,
    overwrite_output_dir: bool = False,
) -> list[dict[str, Any]]:
    """Check what every stage needs before the first one trains, and that each stage folder holds nothing
    of other settings; returns each stage's settings record (`lxmert_s_msp.training.stage_record`)."""
    records: list[dict[str, Any]] = []
    tokenizer = tokenizer_digest(data.tokenizer)
    for index, stage in enumerate(curriculum.stages, start=1):
        try:  # the batch split, and `TrainingArguments`' own rules on the fields the curriculum gives
            training_arguments(curriculum, stage, stage_folder(output_dir, index, stage))
        except ValueError as error:
            raise CurriculumError(f"{curriculum.path}: stage {stage.name!r}: {error}") from error
        for source in stage.sources:
            data.corpus(source.corpus)  # present, and its rows point at this store's images
            if tasks_need(source.tasks, "hard_negatives"):
                load_hard_negatives(data.store.path)
        previous = records[-1] if records else None
        records.append(stage_settings(curriculum, stage, data.folder, tokenizer, previous))
        check_stage_folder(
            stage_folder(output_dir, index, stage), records[-1], stage.name, overwrite_output_dir
        )
    return records


def resumed_stage(curriculum: Curriculum, output_dir: Path, checkpoint: Path) -> int:
    """The stage (numbered from 1) that `checkpoint` continues: it must be a complete `checkpoint-<step>`
    folder of an unfinished stage of `output_dir`."""
    folders = {
        stage_folder(output_dir, index, stage).resolve(): index
        for index, stage in enumerate(curriculum.stages, start=1)
    }
    folder = checkpoint.resolve().parent
    problem = None
    if not checkpoint.is_dir():
        problem = "no such folder"
    elif folder not in folders or not re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-\d+", checkpoint.name):
        names = ", ".join(f"{output_dir / path.name}/{PREFIX_CHECKPOINT_DIR}-<step>" for path in folders)
        problem = f"not a checkpoint of this run's stages ({names})"
    elif not (checkpoint / COMPLETE_MARKER).is_file():
        problem = "an unfinished checkpoint (its run was stopped while writing it)"
    elif (folder / FINAL).is_dir():
        problem = f"its stage is finished ({folder / FINAL}): there is nothing to continue"
    if problem is not None:
        raise ValueError(f"--resume_from_checkpoint {checkpoint}: {problem}")
    return folders[folder]


def run_curriculum(
    curriculum: Curriculum,
    output_dir: str | Path,
    zero_shot: ZeroShotSettings | None = None,
    overwrite_output_dir: bool = False,
    resume_from_checkpoint: Path | None = None,
) -> CurriculumResult:
    """Every stage in order, then the Hub folder, the merged log and the loss plot (main process). With
    `zero_shot`, the Hub model's held-out ITM accuracy and zero-shot retrieval (`zero_shot.py`), which
    its card then records; scored on the main process while the others wait. A stage folder that holds
    results of other settings is refused, or with `overwrite_output_dir` trained again (a synthetic world of
    other settings replaced). A stage resumes from its last complete checkpoint, or the one
    `resume_from_checkpoint` names (`resumed_stage`). One run at a time writes `output_dir`
    (`output_lock`)."""
    output_dir = Path(output_dir)
    with output_lock(output_dir):
        return _run_curriculum(
            curriculum, output_dir, zero_shot, overwrite_output_dir, resume_from_checkpoint
        )


def _run_curriculum(
    curriculum: Curriculum,
    output_dir: Path,
    zero_shot: ZeroShotSettings | None,
    overwrite_output_dir: bool,
    resume_from_checkpoint: Path | None,
) -> CurriculumResult:
    state = PartialState()
    if curriculum.training.optimizer_state == "carry" and state.distributed_type == DistributedType.FSDP:
        raise ValueError(
            f"{curriculum.path}: training.optimizer_state: 'carry' needs whole (unsharded) optimizer states; "
            "under FSDP use 'restart'"
        )
    folder = data_folder(curriculum, output_dir, overwrite_output_dir)
    data = PretrainingData.open(folder, curriculum.data.tokenizer)
    if zero_shot is not None:
        check_zero_shot_data(folder, zero_shot, curriculum.stages[-1].tasks)
    records = check_stages(curriculum, data, output_dir, overwrite_output_dir)
    resumed = None
    if resume_from_checkpoint is not None:
        resumed = resumed_stage(curriculum, output_dir, Path(resume_from_checkpoint))
    results: list[StageResult] = []
    previous = None
    for index, (stage, record) in enumerate(zip(curriculum.stages, records, strict=True), start=1):
        trained_in = stage_folder(output_dir, index, stage)
        with state.main_process_first():
            if state.is_main_process:
                claim_stage_folder(trained_in, record, stage.name, overwrite_output_dir)
        resume_from = Path(resume_from_checkpoint) if index == resumed else None
        result = run_stage(curriculum, data, index, stage, trained_in, previous, resume_from)
        results.append(result)
        previous = result.folder
    hub, plot = output_dir / "hub", output_dir / "loss_curves.png"
    scores = None
    if state.is_main_process:
        merged = merged_log_history(results)
        atomic_write_text(output_dir / LOG_HISTORY, json.dumps(merged, indent=1))
        score = None
        if zero_shot is not None:
            cache = output_dir / ZERO_SHOT_SCORES
            score = partial(zero_shot_scores, data_folder=folder, settings=zero_shot, cache=cache)
        scores = write_hub_folder(curriculum, data, results, hub, score)
        try:  # after the Hub folder: a figure never stands between a run and its model
            plot_loss_curves(merged, [(result.name, offset) for result, offset in _offsets(results)], plot)
        except ValueError as error:
            print(f"Loss curves: not drawn, {error}")
            plot = None
    state.wait_for_everyone()
    return CurriculumResult(data_folder=folder, stages=results, hub_folder=hub, plot=plot, zero_shot=scores)


def _offsets(results: list[StageResult]) -> list[tuple[StageResult, int]]:
    offsets, step = [], 0
    for result in results:
        offsets.append((result, step))
        step += result.global_step
    return offsets


def merged_log_history(results: list[StageResult]) -> list[dict[str, Any]]:
    """All stages' training logs in one list, each entry with its stage and curriculum-wide step."""
    return [
        {**entry, "stage": result.name, "curriculum_step": offset + entry["step"]}
        for result, offset in _offsets(results)
        for entry in result.log_history
        if "loss" in entry
    ]
