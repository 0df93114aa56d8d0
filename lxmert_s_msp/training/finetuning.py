"""Fine-tune LXMERT-S on a downstream task (MSP paper §4.2) with the transformers `Trainer`: what
`recipes/finetune.py` runs. The task (`lxmert_s_msp.training.downstream_tasks.TASKS`) brings its model, data,
collator and scorer; this module brings the settings, the model to start from and the run's files.

A fine-tuning run writes:

    <out>/checkpoints/        the Trainer's epoch checkpoints (each with training_args.bin) and logs (runs/)
    <out>/hub/                the model that scored best on val (retrieval: the last), its processor and card:
                              what one uploads, so nothing of the training run (no pickle, no trainer state)
    <out>/metrics.json        that model's val metrics (and test's, when the data has a labelled test split),
                              with the run's settings and steps
    <out>/trainer_state.json  the Trainer's state at the end: the log history
    <out>/finetune_settings.json
                              what trained the folder (`finetune_record`), written before training: a run of
                              other settings into the folder is refused, naming what differs, unless it asks
                              to overwrite

The parameters the checkpoint did not provide (the new task head; with `model="none"` all of them) train at
`head_learning_rate`, the loaded ones at `learning_rate`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import set_seed

from lxmert_s_msp.checkpoints import check_weights, load_model
from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.store import atomic_write_text
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.evaluation.downstream import (
    DownstreamTask,
    Evaluation,
    RetrievalOptions,
    ScoredSplit,
    check_fits,
)
from lxmert_s_msp.hub.model_card import finetuned_card
from lxmert_s_msp.training.finetune_record import claim_output_folder, finetune_record
from lxmert_s_msp.training.pretraining import Announce
from lxmert_s_msp.training.trainer import (
    TRAINER_STATE,
    FinetuningArguments,
    FinetuningTrainer,
    per_device_batch_size,
    save_trained_model,
)
from modeling_lxmert_s import LxmertSConfig, LxmertSPreTrainedModel
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

PAPER_LEARNING_RATE = 5e-5
# Our choice (the paper trains every parameter at 5e-5): the newly initialised task head's learning rate.
# VQA on the synthetic world from a pre-trained small model (hidden 128) ended at the answer prior (~41%) with
# one rate either way, 1e-3 (the fresh head's first gradients wipe out the pre-trained encoder) or 5e-5 (the
# head barely moves), and reached 55-57% with the encoder at 5e-5 and the head at 1e-3.
HEAD_LEARNING_RATE = 1e-3
PAPER_BATCH_SIZE = 32
# Our choice, LXMERT's (the paper gives only Adam at 5e-5): BertAdam's linear warm-up over the first 10% of
# the steps, then linear decay.
WARMUP_RATIO = 0.1


@dataclass(frozen=True)
class FinetuneSettings:
    """How `finetune` trains: the paper's settings (§4.4) where it gives them, ours where it does not."""

    epochs: float | None = None  # None: the task's (the paper's)
    max_steps: int | None = None  # stop after this many optimizer steps
    batch_size: int = PAPER_BATCH_SIZE  # global, split over the processes
    learning_rate: float = PAPER_LEARNING_RATE  # of the parameters the checkpoint provides
    head_learning_rate: float = HEAD_LEARNING_RATE  # of the parameters it does not (the new task head)
    seed: int = 0
    report_to: Sequence[str] = ("tensorboard",)
    training_overrides: Mapping[str, Any] = field(default_factory=dict)  # other TrainingArguments fields

    def problem(self) -> tuple[str, str] | None:
        """The first setting that cannot work, and why; None when all can."""
        numbers = ("epochs", "max_steps", "batch_size", "learning_rate", "head_learning_rate")
        for name in numbers:
            value = getattr(self, name)
            if value is not None and value <= 0:
                return name, f"expected a positive number, got {value}"
        return None

    def card_rows(self, epochs: float, steps: int) -> dict[str, Any]:
        """The model card's training table."""
        return {
            "epochs": epochs if self.max_steps is None else f"stopped at max_steps {self.max_steps}",
            "optimizer steps": steps,
            "batch size (global)": self.batch_size,
            "learning rate (pre-trained parameters)": self.learning_rate,
            "learning rate (new parameters)": self.head_learning_rate,
            "schedule": f"linear warm-up over {WARMUP_RATIO:.0%} of the steps, then linear decay",
            "seed": self.seed,
            **self.training_overrides,
        }

    def summary(self, epochs: float, pretrained: bool) -> str:
        """The start-up line's schedule, `epochs` resolved; the optimizer steps are the Trainer's count."""
        length = f"{epochs:g} epochs" if self.max_steps is None else f"{self.max_steps:,} steps (max_steps)"
        rates = (
            f"learning rate {self.learning_rate:g} (pre-trained parameters), {self.head_learning_rate:g} "
            "(new parameters)"
            if pretrained
            else f"learning rate {self.head_learning_rate:g} (every parameter: none is pre-trained)"
        )
        return f"{length} of batch {self.batch_size}: {{steps:,}} optimizer steps; {rates}"

    def report(self, epochs: float) -> dict[str, Any]:
        """metrics.json's record of the settings, `epochs` resolved."""
        return {
            "epochs": epochs,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "head_learning_rate": self.head_learning_rate,
            "seed": self.seed,
            "training_overrides": dict(self.training_overrides),
        }


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why `folder` is not an LXMERT-S checkpoint folder fine-tuning can start from, or None. A BERT folder
    would load with most weights fresh and a transformers LXMERT one fail on its sizes, both far from here."""
    config = Path(folder) / "config.json"
    if not Path(folder).is_dir():
        return f"{folder}: no such folder; give a pre-training checkpoint folder (e.g. outputs/pretrain/hub)"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as error:
        return f"{config}: not a checkpoint's config ({error})"
    if model_type == "lxmert":
        return (
            f"{folder} is a transformers LXMERT checkpoint; convert it to LXMERT-S first: "
            f"python recipes/convert_lxmert_checkpoint.py {folder} <output folder>"
        )
    if model_type != LxmertSConfig.model_type:
        return (
            f"{config}: model_type {model_type!r}, not an LXMERT-S checkpoint ({LxmertSConfig.model_type!r})"
        )
    return None


def finetune_problem(
    model: str, config_from: str | Path | None, settings: FinetuneSettings
) -> tuple[str, str] | None:
    """The first of `finetune`'s arguments that cannot work (a `settings` field, "model" or "config_from"),
    and why; None when all can."""
    if (problem := settings.problem()) is not None:
        return problem
    for name, folder in (("model", None if model == "none" else model), ("config_from", config_from)):
        why = None if folder is None else checkpoint_problem(folder)
        if why is not None:
            return name, why
    return None


def load_processor(model: str, config_from: str | Path | None, data: DownstreamData) -> LxmertSProcessor:
    """The checkpoint's processor, so that text is tokenised as in pre-training; for `model="none"`, that of
    `config_from` or else a processor on the data folder's tokenizer (`bert-base-uncased` without one)."""
    source = config_from if model == "none" else model
    if source is not None:
        return LxmertSProcessor.from_pretrained(source)
    tokenizer = data.folder / "tokenizer"
    return LxmertSProcessor(load_tokenizer(tokenizer if tokenizer.is_dir() else "bert-base-uncased"))


def build_model(
    task: DownstreamTask,
    model: str,
    data: DownstreamData,
    processor: LxmertSProcessor,
    config_from: str | Path | None = None,
    labels: Sequence[str] | None = None,
) -> tuple[LxmertSPreTrainedModel, set[str]]:
    """The task model with `labels` as its outputs' names, and the names of its newly initialised parameters,
    which fine-tuning trains at the head learning rate. On a pre-trained checkpoint's weights, the new ones
    are the heads the model says start fresh (`fresh_parameters`: the task head) and any key
    `from_pretrained` reports missing; with `model="none"` all are new: the architecture of `config_from`
    when given, so that "no pre-training" compares like with like, else `LxmertSConfig`'s defaults sized
    from the data (vocabulary, feature dimension)."""
    settings = task.data.head_settings(labels)
    if model != "none":
        network, loading = load_model(task.model_class, model, output_loading_info=True, **settings)
        check_fits(network.config, processor, data, model)
        return network, set(loading["missing_keys"]) | network.fresh_parameters
    if config_from is not None:
        network = task.model_class(LxmertSConfig.from_pretrained(config_from, **settings))
    else:
        config = LxmertSConfig(
            vocab_size=len(processor.tokenizer),
            visual_feat_dim=data.store.feature_dim,
            position_ids_type=processor.position_ids_type,
            **settings,
        )
        network = task.model_class(config)
    check_fits(network.config, processor, data, str(config_from or "none"))
    return network, {name for name, _ in network.named_parameters()}


def finetuning_arguments(
    task: DownstreamTask, output_dir: Path, epochs: float, settings: FinetuneSettings
) -> FinetuningArguments:
    """`settings.batch_size` is global, split over processes. A task with a val metric is evaluated on val
    after every epoch and the best epoch is kept; retrieval's ranking runs once, after training.
    `settings.training_overrides`: any other `TrainingArguments` fields, which replace these settings."""
    per_device = per_device_batch_size(settings.batch_size)
    arguments = dict(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=epochs,
        max_steps=settings.max_steps or -1,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        learning_rate=settings.learning_rate,
        head_learning_rate=settings.head_learning_rate,
        warmup_steps=WARMUP_RATIO,
        lr_scheduler_type="linear",
        eval_strategy="no" if task.metric is None else "epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=task.metric is not None,
        metric_for_best_model=task.metric,
        greater_is_better=True,
        batch_eval_metrics=True,
        logging_steps=10,
        report_to=list(settings.report_to),
        seed=settings.seed,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,  # the collators read the corpus columns
    )
    return FinetuningArguments(**arguments | dict(settings.training_overrides))


def start_line(
    task: DownstreamTask, model: str, trainer: FinetuningTrainer, epochs: float, settings: FinetuneSettings
) -> str:
    """What a run prints as training begins, as a pre-training stage does (`Announce` fills in the steps)."""
    source = f"from {model}" if model != "none" else "with no pre-training"
    schedule = settings.summary(epochs, pretrained=model != "none")
    resuming = trainer.args.resume_from_checkpoint
    return f"Fine-tuning {task.name} {source}: {len(trainer.train_dataset):,} examples, {schedule}" + (
        f"; resuming from {resuming}" if resuming else ""
    )


@dataclass
class FinetuneResult:
    hub_folder: Path
    metrics_file: Path
    evaluation: Evaluation  # on val; retrieval: every ranking, with chance levels
    test_evaluation: Evaluation | None = None  # when the data has a labelled test split

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.metrics


def write_run_files(trainer: FinetuningTrainer, result: FinetuneResult, run: dict[str, Any]) -> None:
    """On the main process, atomically: `metrics.json` (the `run`'s settings, the model's val metrics, and
    test's when scored) and the Trainer's final state (its log history), beside the Hub folder rather than in
    it; every process waits for them."""
    if PartialState().is_main_process:
        trainer.state.save_to_json(str(result.metrics_file.parent / TRAINER_STATE))
        report = {
            **run,
            "split": "val",
            "metrics": result.evaluation.metrics,
            "test_metrics": None if result.test_evaluation is None else result.test_evaluation.metrics,
            "test_by_type": None if result.test_evaluation is None else result.test_evaluation.by_type,
            "global_step": trainer.state.global_step,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            **result.evaluation.report(),
        }
        atomic_write_text(result.metrics_file, json.dumps(report, indent=2))
    PartialState().wait_for_everyone()


def score_test_split(
    task: DownstreamTask,
    trainer: FinetuningTrainer,
    processor: LxmertSProcessor,
    data: DownstreamData,
    labels: Sequence[str] | None,
    ranking: RetrievalOptions,
) -> Evaluation | None:
    """The kept model's scores on the test split, for its card, when the data holds a test split with labels
    (the synthetic world's; not VQA v2's, whose test answers are not public); it plays no part in choosing
    the model."""
    if not task.data.has_split(data, "test"):
        return None
    rows = task.data.split(data, "test", labels)
    if not task.data.labelled(rows):
        return None
    split = ScoredSplit(data, "test", rows, labels, trainer.args.device, ranking=ranking)
    return task.scorer.score(task, trainer.model.eval(), processor, split)


def finetune(
    task: DownstreamTask,
    model: str,
    data: DownstreamData,
    output_dir: str | Path,
    settings: FinetuneSettings | None = None,
    *,
    config_from: str | Path | None = None,
    ranking: RetrievalOptions | None = None,
    overwrite_output_dir: bool = False,
) -> FinetuneResult:
    """Train `task` from `model` (a checkpoint folder, or "none"; with "none", the architecture of
    `config_from` when given), keep the best model on val, save it with its processor and card, and write
    its val metrics. `ranking` chooses retrieval's rankings of val. An `output_dir` holding another run's
    results is refused unless `overwrite_output_dir` (`finetune_record`)."""
    settings, ranking = settings or FinetuneSettings(), ranking or RetrievalOptions()
    if (problem := finetune_problem(model, config_from, settings)) is not None:
        raise ValueError(": ".join(problem))
    output_dir, epochs = Path(output_dir), task.epochs if settings.epochs is None else settings.epochs
    processor = load_processor(model, config_from, data)
    train, val = task.data.split(data, "train"), task.data.split(data, "val")
    record = finetune_record(task, model, config_from, data, settings.report(epochs))
    claim_output_folder(output_dir, record, overwrite_output_dir)  # before anything trains
    labels = task.data.labels(data)
    set_seed(settings.seed)
    network, new_parameters = build_model(task, model, data, processor, config_from, labels)
    arguments = finetuning_arguments(task, output_dir, epochs, settings)
    trainer = FinetuningTrainer(
        model=network,
        args=arguments,
        new_parameters=new_parameters,
        train_dataset=task.data.training_rows(train),
        eval_dataset=None if task.metric is None else val,
        data_collator=task.collator(data, processor, train, labels, settings.seed),
        processing_class=processor,  # saved beside every checkpoint and the final model
        compute_metrics=task.scorer.training_metrics(),
    )
    trainer.add_callback(Announce(start_line(task, model, trainer, epochs, settings)))
    if arguments.resume_from_checkpoint is not None:  # --resume_from_checkpoint
        check_weights(arguments.resume_from_checkpoint, "resume from another checkpoint, or start again")
    trainer.train(resume_from_checkpoint=arguments.resume_from_checkpoint)
    val_split = ScoredSplit(data, "val", val, labels, trainer.args.device, ranking=ranking)
    evaluation = task.scorer.score_trained(trainer, task, processor, val_split)
    test_evaluation = score_test_split(task, trainer, processor, data, labels, ranking)
    scores = {"val": evaluation} | ({} if test_evaluation is None else {"test": test_evaluation})
    rows = settings.card_rows(epochs, trainer.state.global_step)
    card = finetuned_card(task, model, data, scores, rows, trainer.model, processor)
    hub, metrics_file = output_dir / "hub", output_dir / "metrics.json"
    save_trained_model(trainer, hub, card=card, training_state=False)
    result = FinetuneResult(hub, metrics_file, evaluation, test_evaluation)
    source = {"task": task.name, "model": model, "config_from": config_from and str(config_from)}
    write_run_files(trainer, result, {**source, "data": str(data.folder), **settings.report(epochs)})
    return result
