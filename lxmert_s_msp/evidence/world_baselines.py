"""Non-neural answerers that show how much of the synthetic world's VQA needs the regions, and what NLVR2
gives away in its text.

    python -m lxmert_s_msp.evidence.world_baselines data/world

* text only: the most frequent training answer of the exact question (else of its question type) —
  the best a model that ignores the image can do; on this world it should stay near the answer prior.
* grounded: finds the question's noun among the detector's region labels and reads the answer off those
  regions — existence and count from confident detections, colour from the region's feature through a
  least-squares decoder fitted on training regions, relation from the boxes. It never sees the answers.
Both are scored with VQA accuracy (the soft scores of the ten simulated annotators).
* NLVR2 text only: the most frequent training label of the statement's kind (the statement with its noun
  replaced), scored with accuracy: what an NLVR2 model can reach without looking at either image.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.readers import (
    Nlvr2Pair,
    Question,
    read_class_vocab,
    read_lxmert_nlvr2_json,
    read_lxmert_qa_json,
)
from lxmert_s_msp.data.store import FeatureStore, float32_tensor
from lxmert_s_msp.data.synthetic import CATEGORIES, COLOURS, plural

CONFIDENT = 0.58  # true detections score 0.6-1.0; duplicates and mislabels score less
QUESTION_TYPES = {
    "exist": re.compile(r"is there an? (\w+)\?"),
    "count": re.compile(r"how many (\w+) are there\?"),
    "color": re.compile(r"what color is the (\w+)\?"),
    "relation": re.compile(r"what is (left of|right of|above|below) the (\w+)\?"),
}


SINGULAR = {plural(noun): noun for noun in CATEGORIES}


def question_type(text: str) -> tuple[str, tuple[str, ...]]:
    """The question's type and its words (relation, then the noun, in the singular)."""
    for kind, pattern in QUESTION_TYPES.items():
        match = pattern.fullmatch(text)
        if match:
            *rest, noun = match.groups()
            return kind, (*rest, SINGULAR.get(noun, noun))
    raise ValueError(f"not a synthetic-world question: {text!r}")


def vqa_accuracy(predictions: Sequence[str], questions: Sequence[Question]) -> float:
    """Mean soft score of each predicted answer (0 for an answer no annotator gave)."""
    scores = [
        dict(zip(q.answers, q.scores, strict=True)).get(p, 0.0)
        for p, q in zip(predictions, questions, strict=True)
    ]
    return float(np.mean(scores))


def text_only_answers(train: Sequence[Question], test: Sequence[Question]) -> list[str]:
    by_question: dict[str, Counter] = defaultdict(Counter)
    by_type: dict[str, Counter] = defaultdict(Counter)
    for question in train:
        by_question[question.question][question.answer] += 1
        by_type[question_type(question.question)[0]][question.answer] += 1
    return [
        (by_question.get(q.question) or by_type[question_type(q.question)[0]]).most_common(1)[0][0]
        for q in test
    ]


def prior_answers(train: Sequence[Question], test: Sequence[Question]) -> list[str]:
    """The answer prior: the most frequent training answer of the question's type."""
    by_type: dict[str, Counter] = defaultdict(Counter)
    for question in train:
        by_type[question_type(question.question)[0]][question.answer] += 1
    return [by_type[question_type(q.question)[0]].most_common(1)[0][0] for q in test]


class GroundedAnswerer:
    def __init__(self, store: FeatureStore, object_vocab: Sequence[str], train_rows: np.ndarray):
        self.store = store
        self.class_of = {name: index for index, name in enumerate(object_vocab)}
        self.names = list(object_vocab)
        # colour decoder: least squares from confident regions' features to the detector's colour labels
        regions = store.read(np.sort(train_rows))
        confident = regions.object_confidences >= CONFIDENT
        features = float32_tensor(regions.features[confident]).numpy()
        targets = np.eye(len(COLOURS))[regions.attribute_ids[confident]]
        inputs = np.hstack([features, np.ones((len(features), 1), np.float32)])
        self.decoder = np.linalg.lstsq(inputs, targets, rcond=None)[0]

    def _detections(self, row: int, noun: str) -> np.ndarray:
        labels, confidences = self.store.object_ids[row], self.store.object_confidences[row]
        return np.flatnonzero((labels == self.class_of[noun]) & (confidences >= CONFIDENT))

    def answer(self, question: Question, row: int) -> str:
        kind, words = question_type(question.question)
        found = self._detections(row, words[-1])
        if kind == "exist":
            return "yes" if len(found) else "no"
        if kind == "count":
            return str(len(found))
        if not len(found):
            return COLOURS[0] if kind == "color" else CATEGORIES[0]
        anchor = found[0]  # regions are sorted by confidence
        if kind == "color":
            feature = np.append(self.store.features[row, anchor].astype(np.float32), 1.0)
            return COLOURS[int(np.argmax(feature @ self.decoder))]
        boxes = self.store.boxes[row]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        offset = centres - centres[anchor]
        wanted = {
            "left of": offset[:, 0] < 0,
            "right of": offset[:, 0] > 0,
            "above": offset[:, 1] < 0,
            "below": offset[:, 1] > 0,
        }[words[0]]
        on_axis = (
            np.abs(offset[:, 0]) >= np.abs(offset[:, 1])
            if words[0].endswith("of")
            else np.abs(offset[:, 1]) > np.abs(offset[:, 0])
        )
        labels = self.store.object_ids[row]
        candidates = [
            r
            for r in np.flatnonzero(wanted & on_axis & (self.store.object_confidences[row] >= CONFIDENT))
            if self.names[labels[r]] in CATEGORIES and r != anchor
        ]
        if not candidates:
            return CATEGORIES[0]
        return self.names[labels[min(candidates, key=lambda r: np.abs(offset[r]).sum())]]


NOUN = re.compile(r"\b(" + "|".join(sorted({*CATEGORIES, *SINGULAR}, key=len, reverse=True)) + r")\b")


def statement_kind(sentence: str) -> str:
    """The statement with its nouns replaced: "both images contain a dog." -> "both images contain a _."."""
    return NOUN.sub("_", sentence)


def nlvr2_text_only_accuracy(train: Sequence[Nlvr2Pair], test: Sequence[Nlvr2Pair]) -> float:
    """Accuracy of the most frequent training label of each test statement's kind (1 for an unseen kind)."""
    labels: dict[str, Counter] = defaultdict(Counter)
    for pair in train:
        labels[statement_kind(pair.sentence)][pair.label] += 1
    guesses = [
        labels[kind].most_common(1)[0][0] if (kind := statement_kind(pair.sentence)) in labels else 1
        for pair in test
    ]
    return float(np.mean([guess == pair.label for guess, pair in zip(guesses, test, strict=True)]))


def measure(world: str | Path) -> dict[str, dict[str, float]]:
    """VQA accuracy of the prior, text-only and grounded answerers on the test split, overall and per type."""
    world = Path(world)
    store = FeatureStore(world / "store")
    train = read_lxmert_qa_json(world / "vqa" / "train.json")
    test = read_lxmert_qa_json(world / "vqa" / "test.json")
    grounded = GroundedAnswerer(
        store, read_class_vocab(world / "objects_vocab.txt"), store.indices({q.image_id for q in train})
    )
    predictions = {
        "prior": prior_answers(train, test),
        "text only": text_only_answers(train, test),
        "grounded": [grounded.answer(q, store.index(q.image_id)) for q in test],
    }
    kinds = [question_type(q.question)[0] for q in test]
    results = {}
    for name, answers in predictions.items():
        results[name] = {"all": vqa_accuracy(answers, test)}
        for kind in QUESTION_TYPES:
            chosen = [i for i, k in enumerate(kinds) if k == kind]
            results[name][kind] = vqa_accuracy([answers[i] for i in chosen], [test[i] for i in chosen])
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("world", type=Path)
    args = accept_underscores(parser).parse_args(argv)
    results = measure(args.world)
    columns = ["all", *QUESTION_TYPES]
    print(f"{'VQA accuracy (test)':>20} " + " ".join(f"{c:>9}" for c in columns))
    for name, row in results.items():
        print(f"{name:>20} " + " ".join(f"{100 * row[c]:9.1f}" for c in columns))
    nlvr2 = nlvr2_text_only_accuracy(
        read_lxmert_nlvr2_json(args.world / "nlvr2" / "train.json"),
        read_lxmert_nlvr2_json(args.world / "nlvr2" / "test.json"),
    )
    print(f"NLVR2 accuracy (test) of the text-only answerer: {100 * nlvr2:.1f}")


if __name__ == "__main__":
    run(main)
