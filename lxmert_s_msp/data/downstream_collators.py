"""The fine-tuning collators: corpus rows -> exactly the inputs and `labels` of a downstream model.

    collator            rows of                          model                          labels
    QACollator          qa_dataset (VQA v2, GQA)         LxmertSForQuestionAnswering    (B, answers) scores
    NLVR2Collator       nlvr2_dataset                    LxmertSForVisualReasoning      (B,) 0/1
    RetrievalCollator   retrieval_pairs(flickr30k rows)  LxmertSForImageTextRetrieval   (4B,) 1/0 match

Each call tokenises the batch's texts at once (`LxmertSProcessor.encode_text`) and reads its images with one
`read_regions`, as the pre-training collators do, so fine-tuning sees the same inputs as pre-training.
A bad row is an error naming the row and the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch

from lxmert_s_msp.data.collators import (
    batch_generator,
    describe_row,
    row_field,
    store_rows,
    text_inputs,
    visual_inputs,
)
from lxmert_s_msp.data.store import FeatureStore
from modeling_lxmert_s.pretraining_pieces import mismatch_images
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

# Within a batch of 4B retrieval pairs, row 4b + k is positive b's pair of this kind.
RETRIEVAL_PAIR_KINDS = ("positive", "random_caption", "random_image", "hard_caption")


class QACollator:
    """VQA v2 / GQA rows (`question`, `image_index`, `answers`, `scores`) -> inputs + soft-score `labels`.

    `labels[b, a]` is the score of answer `answer_vocab[a]` for question b (VQA: min(n/3, 1) averaged over
    leave-one-out annotator subsets, see `lxmert_s_msp.data.readers.vqa_soft_scores`; GQA: 1 for its answer).
    An answer outside `answer_vocab` (say, a val answer the train vocabulary lacks) adds no target, as in
    LXMERT: the classifier cannot predict it, and the question still counts in the metric with the score it
    can reach. Unlabelled rows (test sets) get all-zero labels.
    """

    def __init__(self, store: FeatureStore, processor: LxmertSProcessor, answer_vocab: Sequence[str]):
        self.answer_ids = {answer: index for index, answer in enumerate(answer_vocab)}
        if len(self.answer_ids) != len(answer_vocab):
            repeated = sorted({answer for answer in answer_vocab if list(answer_vocab).count(answer) > 1})
            raise ValueError(f"answer_vocab: answers must be unique, {repeated[:5]} repeat")
        self.store = store
        self.processor = processor

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        image_rows = store_rows(rows, self.store)
        batch = text_inputs(self.processor, [row_field(rows, p, "question") for p in range(len(rows))])
        batch |= visual_inputs(self.store, image_rows, self.processor.num_regions)
        batch["labels"] = self.soft_scores(rows)
        return batch

    def soft_scores(self, rows: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """(B, len(answer_vocab)) float32 targets from each row's `answers` and `scores`."""
        questions, answers, scores = [], [], []
        for position in range(len(rows)):
            row_answers, row_scores = (
                row_field(rows, position, "answers"),
                row_field(rows, position, "scores"),
            )
            if len(row_answers) != len(row_scores):
                raise ValueError(
                    f"{describe_row(rows, position)}: field 'scores' has {len(row_scores)} values for "
                    f"{len(row_answers)} answers"
                )
            bad = [score for score in row_scores if not 0 <= score <= 1]
            if bad:
                raise ValueError(
                    f"{describe_row(rows, position)}: field 'scores' holds {bad[0]}, outside [0, 1]"
                )
            for answer, score in zip(row_answers, row_scores, strict=True):
                if answer in self.answer_ids:
                    questions.append(position)
                    answers.append(self.answer_ids[answer])
                    scores.append(score)
        labels = torch.zeros(len(rows), len(self.answer_ids))
        labels[questions, answers] = torch.tensor(scores, dtype=torch.float32)
        return labels


class NLVR2Collator:
    """NLVR2 rows (`sentence`, `image_indices` of the left and right image, `label`) -> inputs + `labels`.

    Visual inputs carry the pair axis, image order kept: `visual_feats` (B, 2, R, F), `visual_pos`
    (B, 2, R, 4), `visual_attention_mask` (B, 2, R); the text (B, L) is shared by both images.
    """

    def __init__(self, store: FeatureStore, processor: LxmertSProcessor):
        self.store = store
        self.processor = processor

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        image_rows = store_rows(rows, self.store, "image_indices", "image_ids", images_per_row=2)
        batch = text_inputs(self.processor, [row_field(rows, p, "sentence") for p in range(len(rows))])
        batch |= visual_inputs(self.store, image_rows, self.processor.num_regions)
        labels = [row_field(rows, position, "label") for position in range(len(rows))]
        for position, label in enumerate(labels):
            if label not in (0, 1):
                raise ValueError(
                    f"{describe_row(rows, position)}: field 'label' is {label!r}, expected 0 or 1"
                )
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


def retrieval_pairs(images: datasets.Dataset) -> datasets.Dataset:
    """One row (`image_id`, `image_index`, `text`) per caption of `flickr30k_dataset` rows: the positives."""
    counts = [len(captions) for captions in images["captions"]]
    return datasets.Dataset.from_dict(
        {
            "image_id": np.repeat(np.asarray(images["image_id"], dtype=object), counts).tolist(),
            "image_index": np.repeat(np.asarray(images["image_index"], dtype=np.int64), counts),
            "text": [caption for captions in images["captions"] for caption in captions],
        }
    )


class RetrievalCollator:
    """Positive (image, caption) rows of `retrieval_pairs` -> 4B pairs with `labels` 1 (match) or 0.

    Per positive, three negatives (MSP paper §4.2: 2 random, 1 hard), as the released LXMERT-S
    retrieval fine-tuning draws them: the positive's image with a random other image's caption, the
    positive's caption with a random other image, and the positive's image with a hard caption, a caption of
    one of the image's most similar images (the store's `hard_negatives.npy`, `load_hard_negatives`; a random
    other image's when none is given or the image has none). The hard-negative file ranks images, and a
    caption of a look-alike image describes nearly what the anchor image shows. Pair 4b + k is of kind
    `RETRIEVAL_PAIR_KINDS[k]`.

    Negatives come only from `images` (the training split's `flickr30k_dataset` rows), never from
    held-out images elsewhere in the store. Seeded as `MSPCollator`: the same `seed` and rows (their epochs
    and dataset indices, `batch_generator`), or the same `seed` passed to a call, give the same batch.
    """

    def __init__(
        self,
        store: FeatureStore,
        processor: LxmertSProcessor,
        images: datasets.Dataset | Sequence[Mapping[str, Any]],
        hard_negatives: np.ndarray | None = None,
        seed: int = 0,
    ):
        image_rows = store_rows(images, store)
        distinct = len(np.unique(image_rows))
        if distinct != len(image_rows) or distinct < 2:
            raise ValueError(
                f"images: expected at least 2 images, each once, to draw negatives from; received "
                f"{len(image_rows)} rows of {distinct} distinct images"
            )
        if hard_negatives is not None and (hard_negatives.ndim != 2 or len(hard_negatives) != len(store)):
            raise ValueError(
                f"hard_negatives: expected shape ({len(store)}, M), one row per store image, received "
                f"{hard_negatives.shape}"
            )
        captions = [row_field(images, position, "captions") for position in range(len(images))]
        empty = [position for position, texts in enumerate(captions) if not texts]
        if empty:
            raise ValueError(f"{describe_row(images, empty[0])}: field 'captions' is empty")
        self.store = store
        self.processor = processor
        self.seed = seed
        self.image_rows = torch.from_numpy(image_rows)
        # Store row -> position among `images` (-1 elsewhere): negatives are drawn among positions.
        self.position_of = np.full(len(store), -1, dtype=np.int64)
        self.position_of[image_rows] = np.arange(len(image_rows))
        self.captions = [caption for texts in captions for caption in texts]
        self.caption_counts = torch.tensor([len(texts) for texts in captions])
        self.caption_starts = self.caption_counts.cumsum(0) - self.caption_counts
        self.hard_positions = None
        if hard_negatives is not None:
            neighbours = hard_negatives[image_rows]
            self.hard_positions = np.where(neighbours >= 0, self.position_of[neighbours], -1)

    def __call__(self, rows: Sequence[Mapping[str, Any]], seed: int | None = None) -> dict[str, torch.Tensor]:
        generator = batch_generator(self.seed, rows, seed)
        positions = self.position_of[store_rows(rows, self.store)]
        outside = np.flatnonzero(positions < 0)
        if outside.size:
            raise ValueError(
                f"{describe_row(rows, int(outside[0]))}: field 'image_index' is not one of the collator's "
                f"{len(self.image_rows)} images, among which negatives are drawn"
            )
        positions = torch.from_numpy(positions)
        pool = torch.arange(len(self.image_rows))
        random_owner, _ = mismatch_images(positions, pool, generator, probability=1.0)
        random_image, _ = mismatch_images(positions, pool, generator, probability=1.0)
        hard_owner, _ = mismatch_images(positions, pool, generator, self.hard_positions, probability=1.0)
        owners = torch.cat([random_owner, hard_owner])
        nth = (torch.rand(len(owners), generator=generator) * self.caption_counts[owners]).long()
        negative_captions = [self.captions[i] for i in (self.caption_starts[owners] + nth).tolist()]

        texts = [row_field(rows, position, "text") for position in range(len(rows))]
        text = text_inputs(self.processor, [*texts, *negative_captions])  # (3B, L): own, random, hard
        batch_size = len(rows)
        own = torch.arange(batch_size)
        text_of_pair = torch.stack([own, own + batch_size, own, own + 2 * batch_size], dim=1).flatten()
        images = self.image_rows[torch.stack([positions, random_image])]  # (2, B)
        visual = visual_inputs(self.store, images.flatten().numpy(), self.processor.num_regions)
        image_of_pair = torch.stack([own, own, own + batch_size, own], dim=1).flatten()
        batch = {name: value[text_of_pair] for name, value in text.items()}
        batch |= {name: value[image_of_pair] for name, value in visual.items()}
        batch["labels"] = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(batch_size)
        return batch


__all__ = [
    "RETRIEVAL_PAIR_KINDS",
    "NLVR2Collator",
    "QACollator",
    "RetrievalCollator",
    "retrieval_pairs",
]
