"""Scoring a downstream task (`lxmert_s_msp.evaluation.downstream`): the classification metrics against hand
computations and the official VQA metric, and the console lines with what a model must beat."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import datasets
import pytest
import torch
from transformers import EvalPrediction

from lxmert_s_msp.data.downstream_collators import QACollator
from lxmert_s_msp.data.downstream_data import DownstreamData, TaskSplits
from lxmert_s_msp.data.readers import vqa_soft_scores
from lxmert_s_msp.data.store import FeatureStore
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.evaluation.downstream import (
    Evaluation,
    accuracy_by_type,
    by_type_lines,
    most_scored_answer,
    question_type_prior,
)
from lxmert_s_msp.evaluation.metrics import load_metric
from lxmert_s_msp.evidence.world_baselines import measure
from lxmert_s_msp.training.downstream_tasks import TASKS
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


def test_vqa_accuracy_is_the_official_metric_on_the_human_answers(world):
    """The corpora keep soft scores, not the ten human answers: the score of the predicted answer must equal
    the official leave-one-out VQA accuracy of that answer."""
    humans = [
        ["red"] * 2 + ["blue"] * 8,  # predicted red: 2 of 10 -> 0.6
        ["2"] * 3 + ["3"] * 7,  # predicted 2: 3 of 10 -> 0.9
        ["yes"] * 10,  # predicted no: 0
        ["dog"] * 1 + ["cat"] * 4 + ["cow"] * 5,  # predicted cat: 4 of 10 -> 1.0
    ]
    predicted = ["red", "2", "no", "cat"]
    vocabulary = ["red", "blue", "2", "3", "yes", "no", "dog", "cat", "cow"]
    rows = []
    for answers in humans:
        scores = vqa_soft_scores(answers)
        rows.append({"answers": list(scores), "scores": list(scores.values())})
    processor = LxmertSProcessor(load_tokenizer(world / "tokenizer"))
    labels = QACollator(FeatureStore(world / "store"), processor, vocabulary).soft_scores(rows)
    logits = torch.full(labels.shape, -5.0)
    logits[torch.arange(4), torch.tensor([vocabulary.index(answer) for answer in predicted])] = 5.0

    metrics = TASKS["vqa"].scorer.training_metrics()
    assert metrics(EvalPrediction(logits[:2], labels[:2]), compute_result=False) is None  # batch by batch
    result = metrics(EvalPrediction(logits[2:], labels[2:]), compute_result=True)
    assert result["vqa_accuracy"] == pytest.approx((0.6 + 0.9 + 0.0 + 1.0) / 4)
    official = load_metric("vqa_accuracy").compute(predictions=predicted, references=humans)
    assert result["vqa_accuracy"] == pytest.approx(official["vqa_accuracy"])
    assert metrics(EvalPrediction(logits[:1], labels[:1]))["vqa_accuracy"] == pytest.approx(
        0.6
    )  # starts over


def test_gqa_and_nlvr2_accuracy_count_an_answer_outside_the_vocabulary_as_wrong():
    logits = torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    gqa_labels = torch.tensor(
        [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    )  # last: answer not in vocab
    gqa = TASKS["gqa"].scorer.training_metrics()
    assert gqa(EvalPrediction(logits, gqa_labels)) == {"accuracy": pytest.approx(1 / 3)}
    nlvr2 = TASKS["nlvr2"].scorer.training_metrics()(EvalPrediction(logits[:, :2], torch.tensor([1, 0, 1])))
    assert nlvr2 == {"accuracy": pytest.approx(2 / 3)}


class _Splits(TaskSplits):
    """A task's splits, rows of (question type, [(answer, score), ...]) written here."""

    def __init__(self, **splits: list[tuple[str, list[tuple[str, float]]]]):
        self.splits = {
            name: datasets.Dataset.from_dict(
                {
                    "answers": [[answer for answer, _ in row] for _, row in rows],
                    "scores": [[score for _, score in row] for _, row in rows],
                    "question_type": [kind for kind, _ in rows],
                },
                features=datasets.Features(
                    {
                        "answers": datasets.List(datasets.Value("string")),
                        "scores": datasets.List(datasets.Value("float32")),
                        "question_type": datasets.Value("string"),
                    }
                ),
            )
            for name, rows in splits.items()
        }

    def split(self, data, split, labels=None):
        return self.splits[split]


def test_the_two_answer_priors_are_printed_each_named_for_what_it_is():
    # "no" is the top answer of more training questions, "yes" has the most score: answering "yes" always
    # scores best on the training split; by question type, "is" questions' most frequent top answer is "no"
    # and "how many" ones' is "2"
    splits = _Splits(
        train=[
            ("is", [("yes", 1.0)]),
            ("is", [("no", 0.6), ("yes", 0.3)]),
            ("is", [("no", 0.6)]),
            ("how many", [("2", 0.9), ("3", 0.3)]),
        ],
        val=[
            ("is", [("yes", 1.0)]),
            ("is", [("no", 1.0)]),
            ("is", [("yes", 0.3), ("no", 0.6)]),
            ("how many", []),
            ("how many", [("2", 0.6)]),
        ],
        test=[("is", []), ("is", [])],
    )
    vqa = dataclasses.replace(TASKS["vqa"], data=splits)
    answer, score = most_scored_answer(None, vqa, "val")
    assert answer == "yes" and score == pytest.approx((1.0 + 0.3) / 5)
    assert question_type_prior(None, vqa, "val") == pytest.approx((1.0 + 0.6 + 0.6) / 5)
    assert most_scored_answer(None, vqa, "test") is None  # no answers: nothing to score
    assert question_type_prior(None, vqa, "test") is None
    line = vqa.scorer.summary(Evaluation({"loss": 3.2, "vqa_accuracy": 0.41}), vqa, None, "val")
    assert line == (
        "vqa on val, in %: vqa_accuracy 41.0 (answer priors: always 'yes', the most-scored training answer: "
        "26.0; each question type's most frequent training answer: 44.0)"
    )
    # without question types (GQA, corpora built before they were kept) only the first is known
    for name in ("train", "val"):
        splits.splits[name] = splits.splits[name].remove_columns("question_type")
    assert question_type_prior(None, vqa, "val") is None
    line = vqa.scorer.summary(Evaluation({"vqa_accuracy": 0.41}), vqa, None, "val")
    assert line.endswith("(answer priors: always 'yes', the most-scored training answer: 26.0)")
    # NLVR2 has no answers: its floor is the chance of its two labels
    nlvr2 = TASKS["nlvr2"]
    line = nlvr2.scorer.summary(Evaluation({"loss": 0.7, "accuracy": 0.55}), nlvr2, None, "val")
    assert line == "nlvr2 on val, in %: accuracy 55.0 (chance 50.0)"
    # a split without labels (a test set) has no metrics: its predictions are all it gives
    assert vqa.scorer.summary(Evaluation({}), vqa, None, "test") == (
        "vqa on test: no labels in this split; predictions written"
    )


def test_the_question_type_prior_of_the_world_is_the_one_its_baselines_report(world):
    """The README's answer prior (`lxmert_s_msp.evidence.world_baselines`, from the world's VQA json) and the
    one the recipes print (from the corpora) are one number."""
    data = DownstreamData.open(world)
    assert question_type_prior(data, TASKS["vqa"], "test") == pytest.approx(measure(world)["prior"]["all"])


def test_accuracy_by_type_is_each_types_mean_score_beside_that_types_answer_prior():
    def rows(records):
        return datasets.Dataset.from_list(
            [
                {
                    "answers": [a for a, _ in labels],
                    "scores": [s for _, s in labels],
                    "question_type": kind,
                    "answer_type": "yes/no" if kind == "exist" else "other",
                }
                for kind, labels in records
            ]
        )

    train = rows([("exist", [("yes", 1.0)]), ("exist", [("yes", 1.0)]), ("color", [("red", 1.0)])])
    test = rows(
        [
            ("exist", [("yes", 1.0)]),
            ("exist", [("no", 1.0)]),
            ("color", [("red", 0.6)]),
            ("color", [("blue", 1.0)]),
        ]
    )
    by_type = accuracy_by_type(test, [1.0, 0.0, 0.6, 1.0], train)
    assert by_type["question_type"] == {
        "color": {
            "questions": 2,
            "accuracy": pytest.approx(0.8),
            "prior_answer": "red",
            "prior": pytest.approx(0.3),
        },
        "exist": {"questions": 2, "accuracy": 0.5, "prior_answer": "yes", "prior": 0.5},
    }
    assert by_type["answer_type"]["other"]["accuracy"] == pytest.approx(0.8)
    lines = by_type_lines(by_type)
    assert "    color         80.0  (2; prior, always 'red': 30.0)" in lines
    # corpora built before the types were read (or GQA's, which has none) give no breakdown
    assert accuracy_by_type(test.remove_columns(["question_type", "answer_type"]), [1.0] * 4, train) == {}
    assert by_type_lines(
        {"question_type": {str(i): by_type["question_type"]["color"] for i in range(13)}}
    ) == ["  by question_type: 13 types, in the JSON file"]
