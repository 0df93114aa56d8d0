"""Fine-tune LXMERT-S on a downstream task (MSP paper §4.2) with the transformers `Trainer`, and
evaluate a checkpoint on a split: what `recipes/finetune.py` and `recipes/evaluate_checkpoint.py` run.

A data folder has the layout `processing` builds (the synthetic world has it too): `store/` (with
`hard_negatives.npy` for retrieval's hard negatives), `corpora/<task>_<split>/` for VQA (`vqa_train`,
`vqa_val`, ..., each with `answers.json`), GQA (`gqa_*`) and NLVR2 (`nlvr2_*`), and `corpora/flickr30k/`
(one row per image, every Karpathy split) for retrieval.

A fine-tuning run writes:

    <out>/checkpoints/   the Trainer's epoch checkpoints and logs (runs/)
    <out>/hub/           the model that scored best on val (retrieval: the last) + processor; from_pretrained
                         loads it, and its trainer_state.json holds the log history
    <out>/metrics.json   that model's val metrics, with the run's settings and steps

The parameters the checkpoint did not provide (the new task head; with `model="none"` all of them) train at
`head_learning_rate`, the loaded ones at `learning_rate`.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import PartialState
from torch.utils.data import DataLoader
from transformers import EvalPrediction, set_seed
from transformers.utils.logging import tqdm

from lxmert_s_msp.data.corpora import load_answer_vocab
from lxmert_s_msp.data.downstream_collators import (
    NLVR2Collator,
    QACollator,
    RetrievalCollator,
    retrieval_pairs,
)
from lxmert_s_msp.data.hard_negatives import load_hard_negatives
from lxmert_s_msp.data.store import HARD_NEGATIVES_FILE, FeatureStore, atomic_write_text
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.evaluation.metrics import load_metric
from lxmert_s_msp.evaluation.retrieval import (
    DEFAULT_RERANK_TOP_K,
    RetrievalResult,
    TextRetrieval,
    evaluate_retrieval,
    match_logit_scorer,
    retrieval_split,
    zero_shot_retrieval,
)
from lxmert_s_msp.hub.model_card import finetuned_card
from lxmert_s_msp.training.trainer import (
    FinetuningArguments,
    FinetuningTrainer,
    per_device_batch_size,
    save_trained_model,
)
from modeling_lxmert_s import (
    LxmertSConfig,
    LxmertSForImageTextRetrieval,
    LxmertSForQuestionAnswering,
    LxmertSForVisualReasoning,
    LxmertSPreTrainedModel,
)
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
# The world `recipes/pretrain.py` pre-trains on by default (its configs/synthetic.yaml: default settings).
DEFAULT_WORLD = Path("outputs/pretrain/world")
GQA_NEEDS_REAL_DATA = (
    "GQA needs real data: the synthetic world has no GQA corpus. Build corpora/gqa_train and "
    "corpora/gqa_val in a data folder with `python -m lxmert_s_msp.data.corpora gqa --store <folder>/store "
    "--out <folder>/corpora/gqa_train --lxmert gqa/train.json --answers gqa/trainval_label2ans.json` (and "
    "the same for val, with the same --answers), then pass --data_dir <folder> (README, 'The data pipeline')"
)


@dataclass(frozen=True)
class Task:
    name: str
    model_class: type[LxmertSPreTrainedModel]
    epochs: int  # the paper's (§4.4)
    metric: str | None  # keeps the best epoch on val; None: retrieval, ranked once after training
    corpus: str  # corpora/<corpus>_<split>; retrieval: corpora/flickr30k, filtered by split

    @property
    def answers_questions(self) -> bool:
        return self.model_class is LxmertSForQuestionAnswering


TASKS = {
    "vqa": Task("vqa", LxmertSForQuestionAnswering, 6, "vqa_accuracy", "vqa"),
    "gqa": Task("gqa", LxmertSForQuestionAnswering, 5, "accuracy", "gqa"),
    "nlvr2": Task("nlvr2", LxmertSForVisualReasoning, 8, "accuracy", "nlvr2"),
    "retrieval": Task("retrieval", LxmertSForImageTextRetrieval, 8, None, "flickr30k"),
}
NLVR2_LABELS = {0: "false", 1: "true"}


def metrics_line(
    task: Task, split: str, metrics: dict[str, float], prior: tuple[str, float] | None = None
) -> str:
    """A classification task's metrics for the console, in percent like every score the recipes print (the
    JSON files keep fractions, as `evaluate` gives them); NLVR2 with its chance level, VQA / GQA with the
    answer `prior` (`answer_prior`) when given."""
    floor = ""
    if task.name == "nlvr2":
        floor = " (chance 50.0)"
    elif prior is not None:
        floor = f" (answer prior, always {prior[0]!r}: {100 * prior[1]:.1f})"
    scores = "  ".join(
        f"{name} {100 * value:.1f}{floor}" for name, value in metrics.items() if name != "loss"
    )
    return f"{task.name} on {split}, in %: {scores}"


def answer_prior(data: DownstreamData, task: Task, split: str) -> tuple[str, float] | None:
    """VQA / GQA: the answer with the most training score (what a model that ignores image and question
    does best to answer always) and its score on `split`, the floor a model must beat; None for the other
    tasks and for a split without answers."""
    if not task.answers_questions:
        return None
    rows = data.split(task, split)
    if not any(rows["answers"]):
        return None
    totals: Counter[str] = Counter()
    train = data.split(task, "train")
    for answers, scores in zip(train["answers"], train["scores"], strict=True):
        totals.update(dict(zip(answers, scores, strict=True)))
    answer = totals.most_common(1)[0][0]
    per_row = [
        dict(zip(a, s, strict=True)).get(answer, 0.0)
        for a, s in zip(rows["answers"], rows["scores"], strict=True)
    ]
    return answer, sum(per_row) / len(per_row)


def add_retrieval_ranking_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipes' options of retrieval's rankings (`rank_retrieval`)."""
    parser.add_argument(
        "--rerank_top_k",
        "--rerank-top-k",
        type=int,
        default=DEFAULT_RERANK_TOP_K,
        metavar="K",
        help="retrieval with a VSC checkpoint: candidates per query re-scored by ITM after the contrastive "
        "ranking (default: %(default)s; 0: ITM on every pair)",
    )
    parser.add_argument(
        "--all_pairs",
        "--all-pairs",
        action="store_true",
        help="retrieval: also rank by ITM on every pair (the paper's protocol, which the plain recall names "
        "then report)",
    )


def check_retrieval_ranking_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.rerank_top_k != DEFAULT_RERANK_TOP_K or args.all_pairs) and args.task != "retrieval":
        parser.error(
            "--rerank_top_k and --all_pairs choose retrieval rankings: use them with --task retrieval"
        )
    if args.rerank_top_k < 0:
        parser.error(
            f"--rerank_top_k: expected 0 (ITM on every pair) or more candidates, got {args.rerank_top_k}"
        )


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
    model: str,
    config_from: str | Path | None,
    epochs: float | None,
    max_steps: int | None,
    batch_size: int,
    learning_rate: float,
    head_learning_rate: float,
) -> tuple[str, str] | None:
    """The first of `finetune`'s arguments that cannot work, and why; None when all can."""
    settings = {
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "head_learning_rate": head_learning_rate,
    }
    for name, value in settings.items():
        if value is not None and value <= 0:
            return name, f"expected a positive number, got {value}"
    for name, folder in (("model", None if model == "none" else model), ("config_from", config_from)):
        problem = None if folder is None else checkpoint_problem(folder)
        if problem is not None:
            return name, problem
    return None


def default_data_folder() -> Path:
    """`outputs/pretrain/world`, so that the default pre-training run's checkpoints are fine-tuned on the
    images and tokenizer they were pre-trained with; generated (on the main process) when absent, reused
    otherwise."""
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process and not (DEFAULT_WORLD / "world.json").is_file():
            generate_world(DEFAULT_WORLD, WorldSettings())
    return DEFAULT_WORLD


@dataclass
class DownstreamData:
    folder: Path
    store: FeatureStore

    @classmethod
    def open(cls, folder: str | Path) -> DownstreamData:
        folder = Path(folder)
        if not (folder / "store").is_dir():
            raise FileNotFoundError(
                f"{folder}: no store/; a data folder holds store/ and corpora/<name>/ "
                "(README, 'The data pipeline')"
            )
        return cls(folder, FeatureStore(folder / "store"))

    def split(self, task: Task, split: str, answers: Sequence[str] | None = None) -> datasets.Dataset:
        """A split's corpus. For VQA / GQA its answer vocabulary must be `answers` (default: the training
        corpus's), as the labels keep only the answers of the vocabulary the corpus was built with."""
        if task.name == "retrieval":
            return retrieval_split(self.folder, split)
        path = self.folder / "corpora" / f"{task.corpus}_{split}"
        if path.is_dir():
            if task.answers_questions:
                self._check_answer_vocab(task, path, answers)
            return datasets.load_from_disk(str(path))
        if task.name == "gqa" and (self.folder / "world.json").is_file():
            raise FileNotFoundError(f"{self.folder} is a synthetic world. {GQA_NEEDS_REAL_DATA}")
        vocabulary = " --answers <the training split's vocabulary>" if task.answers_questions else ""
        raise FileNotFoundError(
            f"{path}: no {task.name} corpus for split {split!r}; build it with "
            f"`python -m lxmert_s_msp.data.corpora {task.corpus} --store {self.folder / 'store'} "
            f"--out {path} ..."
            f"{vocabulary}` (README, 'The data pipeline')"
        )

    def answer_vocab(self, task: Task) -> list[str]:
        """The answers of the training corpus (`answers.json`), the classifier's outputs in order."""
        return load_answer_vocab(self.folder / "corpora" / f"{task.corpus}_train")

    def _check_answer_vocab(self, task: Task, path: Path, answers: Sequence[str] | None) -> None:
        source = "the model's config.id2label" if answers is not None else f"{task.corpus}_train"
        if answers is None:
            if path.name == f"{task.corpus}_train":
                return
            answers = self.answer_vocab(task)
        if load_answer_vocab(path) != list(answers):
            train = self.folder / "corpora" / f"{task.corpus}_train"
            raise ValueError(
                f"{path}: built with another answer vocabulary than {source} ({len(answers)} answers), whose "
                "answers the classifier predicts: its labels would drop answers the model can give. "
                f"Rebuild it with `python -m lxmert_s_msp.data.corpora {task.corpus} ... --answers {train}` "
                "(or the vocabulary the model was trained with)"
            )

    def hard_negatives(self) -> np.ndarray | None:
        """The store's hard negatives when built (`python -m lxmert_s_msp.data.hard_negatives`), else None."""
        if not (self.store.path / HARD_NEGATIVES_FILE).is_file():
            return None
        return load_hard_negatives(self.store.path)


def load_processor(model: str, config_from: str | Path | None, data: DownstreamData) -> LxmertSProcessor:
    """The checkpoint's processor, so that text is tokenised as in pre-training; for `model="none"`, that of
    `config_from` or else a processor on the data folder's tokenizer (`bert-base-uncased` without one)."""
    source = config_from if model == "none" else model
    if source is not None:
        return LxmertSProcessor.from_pretrained(source)
    tokenizer = data.folder / "tokenizer"
    return LxmertSProcessor(load_tokenizer(tokenizer if tokenizer.is_dir() else "bert-base-uncased"))


def _task_settings(task: Task, answers: Sequence[str] | None) -> dict[str, Any]:
    """Config fields a task's head needs; the label names travel in the config so a checkpoint maps its
    predictions back without the data folder."""
    if task.answers_questions:
        return {"num_qa_labels": len(answers), "id2label": dict(enumerate(answers))}
    if task.name == "nlvr2":
        return {"id2label": NLVR2_LABELS}
    return {}


def _check_fits(
    config: LxmertSConfig, processor: LxmertSProcessor, data: DownstreamData, origin: str
) -> None:
    if config.visual_feat_dim != data.store.feature_dim:
        raise ValueError(
            f"{origin}: the model takes {config.visual_feat_dim}-d region features, the store "
            f"{data.store.path} holds {data.store.feature_dim}-d ones"
        )
    if config.vocab_size < len(processor.tokenizer):
        raise ValueError(
            f"{origin}: the model's vocab_size {config.vocab_size} is smaller than its tokenizer's "
            f"{len(processor.tokenizer)} tokens"
        )
    if config.position_ids_type != processor.position_ids_type:
        raise ValueError(
            f"{origin}: the model's position_ids_type {config.position_ids_type!r} differs from its "
            f"processor's {processor.position_ids_type!r}"
        )


def build_model(
    task: Task,
    model: str,
    data: DownstreamData,
    processor: LxmertSProcessor,
    config_from: str | Path | None = None,
    answers: Sequence[str] | None = None,
) -> tuple[LxmertSPreTrainedModel, set[str]]:
    """The task model, and the names of its newly initialised parameters, which fine-tuning trains at the head
    learning rate. On a pre-trained checkpoint's weights, the new ones are the heads the model says start
    fresh (`fresh_parameters`: the task head) and any key `from_pretrained` reports missing; with
    `model="none"` all are new: the architecture of `config_from` when given, so that "no pre-training"
    compares like with like, else `LxmertSConfig`'s defaults sized from the data (vocabulary, feature
    dimension)."""
    settings = _task_settings(task, answers)
    if model != "none":
        network, loading = task.model_class.from_pretrained(model, output_loading_info=True, **settings)
        _check_fits(network.config, processor, data, model)
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
    _check_fits(network.config, processor, data, str(config_from or "none"))
    return network, {name for name, _ in network.named_parameters()}


def task_collator(
    task: Task, store: FeatureStore, processor: LxmertSProcessor, answers: Sequence[str] | None = None
) -> QACollator | NLVR2Collator:
    """The collator of a classification task's rows (retrieval trains on `RetrievalCollator`'s pairs)."""
    if task.answers_questions:
        return QACollator(store, processor, answers)
    return NLVR2Collator(store, processor)


class TaskMetrics:
    """A classification task's metric, fed batch by batch: as the `Trainer`'s `compute_metrics` with
    `batch_eval_metrics=True`, a split's logits and labels (VQA's are 3,129 wide) never sit in memory at once.

    VQA accuracy is the mean soft score of the predicted answer. The corpora keep each answer's score, not
    the ten human answers, and `lxmert_s_msp.data.readers.vqa_soft_scores` computes that score as the official
    metric's leave-one-out average of min(#humans / 3, 1) for the answer: so the mean is what
    `load_metric("vqa_accuracy")` gives on the human answers (tests/test_finetune.py checks it), which the
    metric module cannot take as scores. Answers outside the vocabulary have no score; the classifier cannot
    give them. GQA and NLVR2: `load_metric("accuracy")` of the arg-max against the label (GQA: the answer
    scored 1; a question whose answer is outside the vocabulary counts as wrong).
    """

    def __init__(self, task: Task):
        self.task = task
        self.accuracy = None if task.name == "vqa" else load_metric("accuracy")
        self._predictions: list[torch.Tensor] = []
        self._references: list[torch.Tensor] = []

    def __call__(self, prediction: EvalPrediction, compute_result: bool = True) -> dict[str, float] | None:
        self.add(torch.as_tensor(prediction.predictions), torch.as_tensor(prediction.label_ids))
        return self.compute() if compute_result else None

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Take one batch; return its predicted label ids."""
        predicted = logits.argmax(-1)
        if self.task.name == "vqa":
            reference = labels.gather(1, predicted[:, None]).squeeze(1).float()  # the prediction's score
        elif self.task.answers_questions:
            reference = torch.where(labels.amax(-1) > 0, labels.argmax(-1), -1)
        else:
            reference = labels
        self._predictions.append(predicted.cpu())
        self._references.append(reference.cpu())
        return predicted

    def compute(self) -> dict[str, float]:
        """The metric of the batches taken so far; then start over."""
        predictions, references = torch.cat(self._predictions), torch.cat(self._references)
        self._predictions, self._references = [], []
        if self.accuracy is None:
            return {"vqa_accuracy": references.mean().item()}
        return self.accuracy.compute(predictions=predictions.tolist(), references=references.tolist())


def finetuning_arguments(
    task: Task,
    output_dir: Path,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    head_learning_rate: float,
    seed: int,
    max_steps: int | None,
    report_to: Sequence[str],
    overrides: dict[str, Any] | None = None,
) -> FinetuningArguments:
    """`batch_size` is global, split over processes. Classification tasks are evaluated on val after every
    epoch and the best epoch is kept; retrieval's ranking runs once, after training. `overrides`: any other
    `TrainingArguments` fields, which replace these settings."""
    per_device = per_device_batch_size(batch_size)
    settings = dict(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=epochs,
        max_steps=max_steps or -1,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        learning_rate=learning_rate,
        head_learning_rate=head_learning_rate,
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
        report_to=list(report_to),
        seed=seed,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,  # the collators read the corpus columns
    )
    return FinetuningArguments(**settings | (overrides or {}))


@dataclass
class FinetuneResult:
    hub_folder: Path
    metrics_file: Path
    metrics: dict[str, float]  # on val
    retrieval: RetrievalResult | None = None  # retrieval: every ranking, with chance levels


def rank_retrieval(
    model: LxmertSForImageTextRetrieval,
    data: DownstreamData,
    processor: LxmertSProcessor,
    rows: datasets.Dataset,
    split: str,
    device: torch.device | str,
    text_retrieval: TextRetrieval = "all_captions",
    rerank_top_k: int = DEFAULT_RERANK_TOP_K,
    all_pairs: bool = False,
) -> RetrievalResult:
    """Fine-tuned retrieval on `rows` (a `retrieval_split`): two-stage (the VSC similarity of every pair, the
    match logit on each query's top `rerank_top_k`) when the model carries the VSC head, else the match logit
    on every pair; `all_pairs` adds the all-pairs ranking to the two-stage one (`evaluate_retrieval`)."""
    return evaluate_retrieval(
        match_logit_scorer(model),
        data.store,
        processor,
        rows,
        split,
        "Fine-tuned retrieval",
        device,
        text_retrieval=text_retrieval,
        contrastive_model=model if model.has_contrastive_features else None,
        rerank_top_k=rerank_top_k,
        all_pairs=all_pairs,
    )


def finetune(
    task: Task,
    model: str,
    data: DownstreamData,
    output_dir: str | Path,
    *,
    config_from: str | Path | None = None,
    epochs: float | None = None,
    batch_size: int = PAPER_BATCH_SIZE,
    learning_rate: float = PAPER_LEARNING_RATE,
    head_learning_rate: float = HEAD_LEARNING_RATE,
    seed: int = 0,
    max_steps: int | None = None,
    report_to: Sequence[str] = ("tensorboard",),
    rerank_top_k: int = DEFAULT_RERANK_TOP_K,
    all_pairs: bool = False,
    training_overrides: dict[str, Any] | None = None,
) -> FinetuneResult:
    """Train `task` from `model` (a checkpoint folder, or "none"), keep the best model on val, save it with
    its processor, and write its val metrics. `epochs` defaults to the paper's for the task; the parameters
    `model` did not provide train at `head_learning_rate`, the rest at `learning_rate`; `rerank_top_k` and
    `all_pairs` choose retrieval's rankings (`rank_retrieval`); `training_overrides`, other
    `TrainingArguments` fields, replace the Trainer's settings."""
    problem = finetune_problem(
        model, config_from, epochs, max_steps, batch_size, learning_rate, head_learning_rate
    )
    if problem is not None:
        raise ValueError(": ".join(problem))
    output_dir = Path(output_dir)
    state = PartialState()
    processor = load_processor(model, config_from, data)
    train, val = data.split(task, "train"), data.split(task, "val")
    answers = data.answer_vocab(task) if task.answers_questions else None
    set_seed(seed)
    network, new_parameters = build_model(task, model, data, processor, config_from, answers)
    if task.name == "retrieval":
        train_dataset, eval_dataset, compute_metrics = retrieval_pairs(train), None, None
        collator = RetrievalCollator(data.store, processor, train, data.hard_negatives(), seed=seed)
    else:
        train_dataset, eval_dataset, compute_metrics = train, val, TaskMetrics(task)
        collator = task_collator(task, data.store, processor, answers)
    epochs = task.epochs if epochs is None else epochs
    arguments = finetuning_arguments(
        task,
        output_dir,
        epochs,
        batch_size,
        learning_rate,
        head_learning_rate,
        seed,
        max_steps,
        report_to,
        training_overrides,
    )
    trainer = FinetuningTrainer(
        model=network,
        args=arguments,
        new_parameters=new_parameters,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,  # saved beside every checkpoint and the final model
        compute_metrics=compute_metrics,
    )
    trainer.train(resume_from_checkpoint=arguments.resume_from_checkpoint)  # --resume_from_checkpoint
    retrieval = None
    if task.name == "retrieval":
        retrieval = rank_retrieval(
            trainer.model.eval(),
            data,
            processor,
            val,
            "val",
            trainer.args.device,
            rerank_top_k=rerank_top_k,
            all_pairs=all_pairs,
        )
        metrics = retrieval.metrics()
    else:
        metrics = {
            key.removeprefix("eval_"): value
            for key, value in trainer.evaluate().items()
            if key.startswith("eval_") and not key.endswith(("runtime", "per_second"))
        }
    hub, metrics_file = output_dir / "hub", output_dir / "metrics.json"
    settings = {
        "epochs": epochs if max_steps is None else f"stopped at max_steps {max_steps}",
        "optimizer steps": trainer.state.global_step,
        "batch size (global)": batch_size,
        "learning rate (pre-trained parameters)": learning_rate,
        "learning rate (new parameters)": head_learning_rate,
        "schedule": f"linear warm-up over {WARMUP_RATIO:.0%} of the steps, then linear decay",
        "seed": seed,
        **(training_overrides or {}),
    }
    card = finetuned_card(task.name, model, data.folder, metrics, settings, trainer.model, processor)
    save_trained_model(trainer, hub, card=card)
    if state.is_main_process:
        report = {
            "task": task.name,
            "model": model,
            "config_from": None if config_from is None else str(config_from),
            "data": str(data.folder),
            "split": "val",
            "metrics": metrics,
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "head_learning_rate": head_learning_rate,
            "seed": seed,
            "training_overrides": training_overrides or {},
            "global_step": trainer.state.global_step,
            "best_checkpoint": trainer.state.best_model_checkpoint,
        }
        if retrieval is not None:
            report |= _retrieval_report(retrieval)
        atomic_write_text(metrics_file, json.dumps(report, indent=2))
    state.wait_for_everyone()
    return FinetuneResult(hub_folder=hub, metrics_file=metrics_file, metrics=metrics, retrieval=retrieval)


def _retrieval_report(result: RetrievalResult) -> dict[str, Any]:
    """What a retrieval JSON records beside the metrics: which ranking the plain recall names report, the
    re-ranking's k (None: no re-ranking), and a random ranking's recalls; all recalls fractions in [0, 1]."""
    return {
        "retrieval_ranking": result.headline,
        "rerank_top_k": result.rerank_top_k,
        "chance": result.chance,
    }


@dataclass
class Evaluation:
    metrics: dict[str, float]  # empty for a split without labels
    predictions: list[dict[str, Any]] | None = None  # VQA / GQA: {question_id, answer} per question
    retrieval: RetrievalResult | None = None  # retrieval: every ranking, with chance levels

    def report(self) -> dict[str, Any]:
        """The JSON fields beside the metrics (retrieval: `_retrieval_report`)."""
        return {} if self.retrieval is None else _retrieval_report(self.retrieval)


@torch.no_grad()
def evaluate_checkpoint(
    task: Task,
    model_folder: str | Path,
    data: DownstreamData,
    split: str,
    *,
    zero_shot: bool = False,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    text_retrieval: TextRetrieval = "all_captions",
    rerank_top_k: int = DEFAULT_RERANK_TOP_K,
    all_pairs: bool = False,
) -> Evaluation:
    """Metrics of the model saved in `model_folder` (with its processor) on `split`. Retrieval ranks the
    split's pairs (`text_retrieval`: which captions text retrieval ranks, `retrieval.TextRetrieval`)
    two-stage when the model has the VSC head, re-scoring each query's top `rerank_top_k`, and by ITM on every
    pair when it has not, when `rerank_top_k` is 0 or when `all_pairs` asks (`rank_retrieval`); `zero_shot`
    scores with the pre-trained ITM head of a pre-training checkpoint."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if zero_shot:
        if task.name != "retrieval":
            raise ValueError(f"zero-shot evaluation is retrieval by the ITM score, not {task.name}")
        result = zero_shot_retrieval(
            model_folder,
            data.folder,
            split,
            device,
            text_retrieval=text_retrieval,
            rerank_top_k=rerank_top_k,
            all_pairs=all_pairs,
        )
        return Evaluation(result.metrics(), retrieval=result)
    model = task.model_class.from_pretrained(model_folder).to(device).eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    _check_fits(model.config, processor, data, str(model_folder))
    answers = None
    if task.answers_questions:
        if len(model.config.id2label) != model.config.num_qa_labels:
            raise ValueError(
                f"{model_folder}: config.id2label names {len(model.config.id2label)} answers for "
                f"{model.config.num_qa_labels} outputs; models fine-tuned by `recipes/finetune.py` carry them"
            )
        answers = [model.config.id2label[index] for index in range(model.config.num_qa_labels)]
    rows = data.split(task, split, answers)
    if task.name == "retrieval":
        result = rank_retrieval(
            model, data, processor, rows, split, device, text_retrieval, rerank_top_k, all_pairs
        )
        return Evaluation(result.metrics(), retrieval=result)
    metrics = TaskMetrics(task)
    predicted = []
    loader = DataLoader(
        rows, batch_size=batch_size, collate_fn=task_collator(task, data.store, processor, answers)
    )
    for batch in tqdm(loader, desc=f"Scoring {task.name} {split}", unit="batch"):
        logits = model(**{name: value.to(device) for name, value in batch.items() if name != "labels"}).logits
        predicted += metrics.add(logits.cpu(), batch["labels"]).tolist()
    labelled = not task.answers_questions or any(rows["answers"])
    evaluation = Evaluation(metrics.compute() if labelled else {})
    if task.answers_questions:
        evaluation.predictions = [
            {"question_id": question, "answer": answers[index]}
            for question, index in zip(rows["question_id"], predicted, strict=True)
        ]
    return evaluation
