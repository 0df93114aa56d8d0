"""Scoring a downstream task: what a task carries (`DownstreamTask`; the table of the paper's tasks is
`lxmert_s_msp.training.downstream_tasks.TASKS`), its two kinds of scorer (a prediction per row, scored by a
`TaskMetrics` batch by batch; rankings of every pair of a retrieval split), the lines they print, and
`evaluate_checkpoint`, which scores a saved model on a split: what `recipes/evaluate_checkpoint.py` runs.

Scores are fractions, as `evaluate` gives them, in the JSON files; the console shows them in percent, beside
what a model must beat (NLVR2's chance, VQA / GQA's answer prior, retrieval's random ranking).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import EvalPrediction, Trainer
from transformers.utils.logging import tqdm

from lxmert_s_msp.checkpoints import load_model
from lxmert_s_msp.data.downstream_data import DownstreamData, TaskSplits
from lxmert_s_msp.data.readers import QUESTION_TYPE_FIELDS
from lxmert_s_msp.evaluation.metrics import load_metric
from lxmert_s_msp.evaluation.retrieval import (
    DEFAULT_RERANK_TOP_K,
    RetrievalResult,
    TextRetrieval,
    evaluate_retrieval,
    match_logit_scorer,
    zero_shot_retrieval,
)
from modeling_lxmert_s import LxmertSConfig, LxmertSPreTrainedModel
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

# A task's batches: (data folder, processor, rows, label names, seed) -> the collator of those rows.
CollatorFactory = Callable[
    [DownstreamData, LxmertSProcessor, datasets.Dataset, Sequence[str] | None, int],
    Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
]


class TaskMetrics:
    """A classification task's metric, fed batch by batch: as the `Trainer`'s `compute_metrics` with
    `batch_eval_metrics=True`, a split's logits and labels (VQA's are 3,129 wide) never sit in memory at once.
    A subclass says what each arg-max prediction is compared with (`reference`) and how (`result`)."""

    name: ClassVar[str]  # the metric `result` reports, which keeps the best epoch on val

    def __init__(self) -> None:
        self._predictions: list[torch.Tensor] = []
        self._references: list[torch.Tensor] = []

    def __call__(self, prediction: EvalPrediction, compute_result: bool = True) -> dict[str, float] | None:
        self.add(torch.as_tensor(prediction.predictions), torch.as_tensor(prediction.label_ids))
        return self.compute() if compute_result else None

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Take one batch; return its predicted label ids."""
        predicted = logits.argmax(-1)
        self._predictions.append(predicted.cpu())
        self._references.append(self.reference(predicted, labels).cpu())
        return predicted

    def compute(self) -> dict[str, float]:
        """The metric of the batches taken so far (each row's score kept in `row_scores`); then start over."""
        predictions, references = torch.cat(self._predictions), torch.cat(self._references)
        self._predictions, self._references = [], []
        self.row_scores = self.per_row(predictions, references).tolist()
        return self.result(predictions, references)

    def reference(self, predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def result(self, predictions: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def per_row(self, predictions: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Each row's score: 1 for a right prediction, 0 for a wrong one."""
        return (predictions == references).float()


class SoftScoreAccuracy(TaskMetrics):
    """VQA accuracy: the mean soft score of the predicted answer. The corpora keep each answer's score, not
    the ten human answers, and `lxmert_s_msp.data.readers.vqa_soft_scores` computes that score as the
    official metric's leave-one-out average of min(#humans / 3, 1) for the answer: so the mean is what
    `load_metric("vqa_accuracy")` gives on the human answers (tests/test_downstream.py checks it), which the
    metric module cannot take as scores. Answers outside the vocabulary have no score; the classifier cannot
    give them."""

    name = "vqa_accuracy"

    def reference(self, predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return labels.gather(1, predicted[:, None]).squeeze(1).float()  # the prediction's score

    def result(self, predictions: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
        return {self.name: references.mean().item()}

    def per_row(self, predictions: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        return references


class LabelAccuracy(TaskMetrics):
    """NLVR2: `load_metric("accuracy")` of the arg-max against the row's label."""

    name = "accuracy"

    def __init__(self) -> None:
        super().__init__()
        self.accuracy = load_metric("accuracy")

    def reference(self, predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def result(self, predictions: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
        return self.accuracy.compute(predictions=predictions.tolist(), references=references.tolist())


class AnswerAccuracy(LabelAccuracy):
    """GQA: accuracy against the answer scored 1; a question whose answer is outside the vocabulary counts
    as wrong."""

    def reference(self, predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.where(labels.amax(-1) > 0, labels.argmax(-1), -1)


@dataclass(frozen=True)
class RetrievalOptions:
    """Which rankings retrieval computes (`evaluate_retrieval`)."""

    text_retrieval: TextRetrieval = "all_captions"
    rerank_top_k: int = DEFAULT_RERANK_TOP_K
    all_pairs: bool = False


def retrieval_report(result: RetrievalResult) -> dict[str, Any]:
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
    by_type: dict[str, dict[str, dict[str, Any]]] | None = None  # VQA: `accuracy_by_type`

    def report(self) -> dict[str, Any]:
        """The JSON fields beside the metrics (retrieval: `retrieval_report`; VQA: accuracy by type)."""
        if self.retrieval is not None:
            return retrieval_report(self.retrieval)
        return {"by_type": self.by_type} if self.by_type else {}


def accuracy_by_type(
    rows: datasets.Dataset, row_scores: Sequence[float], train: datasets.Dataset
) -> dict[str, dict[str, dict[str, Any]]]:
    """Accuracy on `rows` by each breakdown its questions carry (`QUESTION_TYPE_FIELDS`: VQA's question and
    answer types, the synthetic world's exist / count / color / relation), beside the type's answer prior: the
    type's most frequent training answer (`type_priors`), scored on the split's questions of that type (what a
    model that reads only the question's type gets). Per type: `questions`, `accuracy`,
    `prior_answer`, `prior`; accuracies are fractions. Empty when the questions carry no types."""
    breakdowns = {}
    for name in QUESTION_TYPE_FIELDS:
        if name not in rows.column_names or not any(rows[name]):
            continue
        answers, scores = rows["answers"], rows["scores"]
        priors = type_priors(train, name) if name in train.column_names else {}
        by_kind: dict[str, list[int]] = defaultdict(list)
        for index, kind in enumerate(rows[name]):
            by_kind[kind].append(index)
        breakdown = {}
        for kind, indices in sorted(by_kind.items(), key=lambda item: str(item[0])):
            prior = priors.get(kind)
            prior_scores = [_soft_score(answers[i], scores[i], prior) for i in indices]
            breakdown[str(kind)] = {
                "questions": len(indices),
                "accuracy": sum(row_scores[i] for i in indices) / len(indices),
                "prior_answer": prior,
                "prior": sum(prior_scores) / len(indices),
            }
        breakdowns[name] = breakdown
    return breakdowns


def by_type_lines(by_type: dict[str, dict[str, dict[str, Any]]], limit: int = 12) -> list[str]:
    """The console lines of `accuracy_by_type`, in percent; a breakdown of more than `limit` types (VQA v2's
    65 question prefixes) is left to the JSON."""
    lines = []
    for name, breakdown in by_type.items():
        if len(breakdown) > limit:
            lines.append(f"  by {name}: {len(breakdown)} types, in the JSON file")
            continue
        lines.append(
            f"  by {name}, in % (questions; answer prior: the type's most frequent training answer):"
        )
        for kind, row in breakdown.items():
            lines.append(
                f"    {kind:<12} {100 * row['accuracy']:5.1f}  ({row['questions']}; prior, always "
                f"{row['prior_answer']!r}: {100 * row['prior']:.1f})"
            )
    return lines


def _soft_score(answers: Sequence[str], scores: Sequence[float], answer: str) -> float:
    return dict(zip(answers, scores, strict=True)).get(answer, 0.0)


def most_scored_answer(data: DownstreamData, task: DownstreamTask, split: str) -> tuple[str, float] | None:
    """VQA / GQA: the training answer with the most score (what a model that ignores image and question does
    best to answer always) and its score on `split`; None for a split without answers."""
    rows = task.data.split(data, split)
    if not any(rows["answers"]):
        return None
    totals: Counter[str] = Counter()
    train = task.data.split(data, "train")
    for answers, scores in zip(train["answers"], train["scores"], strict=True):
        totals.update(dict(zip(answers, scores, strict=True)))
    answer = totals.most_common(1)[0][0]
    per_row = [_soft_score(a, s, answer) for a, s in zip(rows["answers"], rows["scores"], strict=True)]
    return answer, sum(per_row) / len(per_row)


def question_type_prior(data: DownstreamData, task: DownstreamTask, split: str) -> float | None:
    """VQA: the score on `split` of answering each question with the most frequent answer of its question
    type among the training questions (each counting its best-scored answer), what a model that reads only
    the question's type reaches (the answer prior the README's tables cite); None for a split without answers
    or question types (GQA; corpora built before they kept the type)."""
    rows = task.data.split(data, split)
    train = task.data.split(data, "train")
    if not any(rows["answers"]) or "question_type" not in rows.column_names:
        return None
    if not all(train["question_type"]) or not all(rows["question_type"]):
        return None
    priors = type_priors(train, "question_type")
    per_row = [
        _soft_score(a, s, priors[kind]) if kind in priors else 0.0
        for kind, a, s in zip(rows["question_type"], rows["answers"], rows["scores"], strict=True)
    ]
    return sum(per_row) / len(per_row)


def type_priors(train: datasets.Dataset, name: str) -> dict[str, str]:
    """Each type (of the `name` breakdown) and its most frequent answer among the training questions of that
    type, each question counting its best-scored answer (the answer prior of `world_baselines` and the
    README)."""
    counts: dict[str, Counter[str]] = {}
    for kind, answers, scores in zip(train[name], train["answers"], train["scores"], strict=True):
        if answers:
            best = answers[scores.index(max(scores))]  # the first best, as the readers' `Question.answer`
            counts.setdefault(kind, Counter())[best] += 1
    return {kind: answers.most_common(1)[0][0] for kind, answers in counts.items()}


def answer_prior_floor(data: DownstreamData, task: DownstreamTask, split: str) -> str:
    """The two answer priors a VQA / GQA model must beat, each named for what it is ("" without answers)."""
    always = most_scored_answer(data, task, split)
    if always is None:
        return ""
    priors = [f"always {always[0]!r}, the most-scored training answer: {100 * always[1]:.1f}"]
    by_type = question_type_prior(data, task, split)
    if by_type is not None:
        priors.append(f"each question type's most frequent training answer: {100 * by_type:.1f}")
    return f"answer priors: {'; '.join(priors)}"


def chance_floor(data: DownstreamData, task: DownstreamTask, split: str) -> str:
    """A random guess among the task's labels (NLVR2: 50%)."""
    return f"chance {100 / len(task.data.labels(data)):.1f}"


def metrics_line(task_name: str, split: str, metrics: dict[str, float], floor: str = "") -> str:
    """A classification task's metrics for the console, in percent like every score the recipes print, each
    followed by `floor` (what a model must beat) in parentheses."""
    beside = f" ({floor})" if floor else ""
    scores = "  ".join(
        f"{name} {100 * value:.1f}{beside}" for name, value in metrics.items() if name != "loss"
    )
    return f"{task_name} on {split}, in %: {scores}"


@dataclass(frozen=True)
class ScoredSplit:
    """A split a model is scored on, and how: its rows in `data`, the names of the model's outputs (`labels`),
    the device, the batch size of a prediction per row, and retrieval's rankings."""

    data: DownstreamData
    name: str
    rows: datasets.Dataset
    labels: Sequence[str] | None
    device: torch.device
    batch_size: int = 256
    ranking: RetrievalOptions = field(default_factory=RetrievalOptions)


@dataclass(frozen=True)
class ClassificationScorer:
    """A prediction per row (VQA, GQA, NLVR2), scored by `metrics` batch by batch: on val after every epoch
    (the Trainer's `compute_metrics`, whose best epoch fine-tuning keeps) and on any split of a saved model
    (`evaluate_checkpoint`). `floor` gives what the console prints beside each score."""

    metrics: type[TaskMetrics]
    floor: Callable[[DownstreamData, DownstreamTask, str], str]

    @property
    def metric(self) -> str:
        return self.metrics.name

    def training_metrics(self) -> TaskMetrics:
        return self.metrics()

    def score_trained(
        self, trainer: Trainer, task: DownstreamTask, processor: LxmertSProcessor, split: ScoredSplit
    ) -> Evaluation:
        """The val metrics of the model training kept (its best epoch)."""
        timings = ("runtime", "per_second")
        metrics = trainer.evaluate()
        return Evaluation(
            {
                key.removeprefix("eval_"): value
                for key, value in metrics.items()
                if key.startswith("eval_") and not key.endswith(timings)
            }
        )

    def score(
        self, task: DownstreamTask, model: nn.Module, processor: LxmertSProcessor, split: ScoredSplit
    ) -> Evaluation:
        """Metrics (none for a split without labels) and, where the task names them, the predictions."""
        metrics, predicted = self.metrics(), []
        collator = task.collator(split.data, processor, split.rows, split.labels, 0)  # scoring draws nothing
        loader = DataLoader(split.rows, batch_size=split.batch_size, collate_fn=collator)
        for batch in tqdm(loader, desc=f"Scoring {task.name} {split.name}", unit="batch"):
            inputs = {name: value.to(split.device) for name, value in batch.items() if name != "labels"}
            predicted += metrics.add(model(**inputs).logits.cpu(), batch["labels"]).tolist()
        if not task.data.labelled(split.rows):
            return Evaluation({}, task.data.predictions(split.rows, predicted, split.labels))
        scores = metrics.compute()
        typed = set(QUESTION_TYPE_FIELDS) & set(split.rows.column_names)
        train = task.data.split(split.data, "train") if typed else None
        by_type = accuracy_by_type(split.rows, metrics.row_scores, train) if typed else None
        return Evaluation(scores, task.data.predictions(split.rows, predicted, split.labels), by_type=by_type)

    def zero_shot(self, task: DownstreamTask, *args: Any) -> Evaluation:
        raise ValueError(f"zero-shot evaluation is retrieval by the ITM score, not {task.name}")

    def summary(self, evaluation: Evaluation, task: DownstreamTask, data: DownstreamData, split: str) -> str:
        if not evaluation.metrics:
            return f"{task.name} on {split}: no labels in this split; predictions written"
        line = metrics_line(task.name, split, evaluation.metrics, self.floor(data, task, split))
        return "\n".join([line, *by_type_lines(evaluation.by_type or {})])

    def floors(
        self, evaluation: Evaluation, task: DownstreamTask, data: DownstreamData, split: str
    ) -> dict[str, str]:
        """What a model must beat, per metric of `evaluation` (the model card's column)."""
        floor = self.floor(data, task, split)
        return {name: floor for name in evaluation.metrics if name != "loss"}


@dataclass(frozen=True)
class RetrievalScorer:
    """Every (image, caption) pair of a split ranked, once, after training (no best epoch to keep) and for
    a saved model: in two stages (the VSC similarity of every pair, the match logit on each query's top
    k) when the model carries the VSC head, else by the match logit on every pair (`evaluate_retrieval`).
    Zero-shot, the pre-trained ITM head of a pre-training checkpoint ranks."""

    metric: ClassVar[None] = None

    def training_metrics(self) -> None:
        return None

    def score_trained(
        self, trainer: Trainer, task: DownstreamTask, processor: LxmertSProcessor, split: ScoredSplit
    ) -> Evaluation:
        """The val rankings of the model at the end of training."""
        return self.score(task, trainer.model.eval(), processor, split)

    def score(
        self, task: DownstreamTask, model: nn.Module, processor: LxmertSProcessor, split: ScoredSplit
    ) -> Evaluation:
        """Every ranking `split.ranking` asks for (pairs are batched by the ranking, not `batch_size`)."""
        result = evaluate_retrieval(
            match_logit_scorer(model),
            split.data.store,
            processor,
            split.rows,
            split.name,
            "Fine-tuned retrieval",
            split.device,
            text_retrieval=split.ranking.text_retrieval,
            contrastive_model=model if model.has_contrastive_features else None,
            rerank_top_k=split.ranking.rerank_top_k,
            all_pairs=split.ranking.all_pairs,
        )
        return Evaluation(result.metrics(), retrieval=result)

    def zero_shot(
        self,
        task: DownstreamTask,
        model_folder: str | Path,
        data: DownstreamData,
        split: str,
        device: torch.device,
        ranking: RetrievalOptions,
    ) -> Evaluation:
        result = zero_shot_retrieval(
            model_folder,
            data.folder,
            split,
            device,
            text_retrieval=ranking.text_retrieval,
            rerank_top_k=ranking.rerank_top_k,
            all_pairs=ranking.all_pairs,
        )
        return Evaluation(result.metrics(), retrieval=result)

    def summary(self, evaluation: Evaluation, task: DownstreamTask, data: DownstreamData, split: str) -> str:
        return evaluation.retrieval.summary()

    def floors(
        self, evaluation: Evaluation, task: DownstreamTask, data: DownstreamData, split: str
    ) -> dict[str, str]:
        """A random ranking's recall beside each recall (any ranking's: the chance is the ranking's own)."""
        chance = evaluation.retrieval.chance
        return {
            name: f"chance {100 * chance[recall]:.1f}"
            for name in evaluation.metrics
            for recall in chance
            if (name == recall or name.endswith(f"_{recall}")) and not name.startswith("kept_")
        }


@dataclass(frozen=True)
class DownstreamTask:
    """A downstream task: everything fine-tuning and evaluation need of it, so that neither asks which task
    it runs."""

    name: str
    model_class: type[LxmertSPreTrainedModel]
    epochs: int  # the paper's (§4.4)
    data: TaskSplits  # where its splits are in a data folder, and its labels
    collator: CollatorFactory  # its training batches (and, for a prediction per row, its scoring batches)
    scorer: ClassificationScorer | RetrievalScorer
    hub_dataset: tuple[str, str]  # its real data on the Hub: (id, name), for the model card
    hub_task: tuple[str, str]  # its Hub task: (id, name), for the model card

    @property
    def metric(self) -> str | None:
        """The val metric that keeps the best epoch; None: scored once, after training."""
        return self.scorer.metric


def check_fits(config: LxmertSConfig, processor: LxmertSProcessor, data: DownstreamData, origin: str) -> None:
    """A model of `config` with `processor` reads `data`'s features and tokenises as it was trained to."""
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


@torch.no_grad()
def evaluate_checkpoint(
    task: DownstreamTask,
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
    pair when it has not, when `rerank_top_k` is 0 or when `all_pairs` asks (`RetrievalScorer`); `zero_shot`
    scores with the pre-trained ITM head of a pre-training checkpoint."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ranking = RetrievalOptions(text_retrieval, rerank_top_k, all_pairs)
    if zero_shot:
        return task.scorer.zero_shot(task, model_folder, data, split, device, ranking)
    model = load_model(task.model_class, model_folder).to(device).eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    check_fits(model.config, processor, data, str(model_folder))
    labels = task.data.labels_of(model.config, model_folder)
    rows = task.data.split(data, split, labels)
    split_rows = ScoredSplit(data, split, rows, labels, device, batch_size, ranking)
    return task.scorer.score(task, model, processor, split_rows)
