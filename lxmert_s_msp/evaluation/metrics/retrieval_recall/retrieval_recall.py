"""Image-text retrieval Recall@K (text and image retrieval) as a local `evaluate` metric.

Self-contained because `evaluate.load` copies this script alone into its module cache.
"""

import numbers
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Recall@K of image-text retrieval over one score matrix, as reported on Flickr30k and COCO (Karpathy split).
Text retrieval (image -> text): an image is a hit when one of its captions ranks in the top K of all
captions. Image retrieval (text -> image): a caption is a hit when its image ranks in the top K of all
images. Recalls are fractions in [0, 1]; K at or above the number of candidates always hits.

Ties are broken pessimistically and deterministically: a wrong candidate scoring the same as the right one
ranks above it. The rank of an image's best-scoring caption is the number of other images' captions
scoring >= it, and a hit at K means that rank is < K; image retrieval likewise counts the other images
scoring >= the caption's own image. A constant scorer therefore scores 0 unless K covers all wrong
candidates, instead of a lucky value that depends on the sort order.
"""

_CITATION = """\
@inproceedings{karpathy2015deep,
  title={Deep Visual-Semantic Alignments for Generating Image Descriptions},
  author={Karpathy, Andrej and Fei-Fei, Li},
  booktitle={CVPR},
  year={2015}
}
"""

_INPUTS_DESCRIPTION = """\
Args:
    predictions (`list[list[float]]`): one row per image: its score with every caption (higher = better
        match; all rows as long as the number of captions; stored as float32, the precision of model logits).
    references (`list[list[int]]`): per image, the indices of its captions; every caption index belongs to
        exactly one image.
    ks (`Sequence[int]`, defaults to (1, 5, 10)): the cut-offs K.
Returns:
    text_r{K} (`float`): text retrieval Recall@K in [0, 1], one key per K.
    image_r{K} (`float`): image retrieval Recall@K in [0, 1], one key per K.
Examples:
    >>> metric = evaluate.load("lxmert_s_msp/evaluation/metrics/retrieval_recall")
    >>> metric.compute(predictions=[[0.9, 0.1, 0.75], [0.2, 0.8, 0.7]], references=[[0], [1, 2]], ks=[1])
    {'text_r1': 1.0, 'image_r1': 0.6666666666666666}
"""


def caption_owners(references: list[list[int]], num_captions: int) -> np.ndarray:
    """The image index of each caption, checking that every caption belongs to exactly one image."""
    for index, captions in enumerate(references):
        if not captions:
            raise ValueError(f"record {index}: field 'references' is empty; every image needs a caption")
        outside = [caption for caption in captions if not 0 <= caption < num_captions]
        if outside:
            raise ValueError(
                f"record {index}: field 'references' holds caption {outside[0]}, outside [0, {num_captions})"
            )
    images = np.repeat(np.arange(len(references)), [len(captions) for captions in references])
    captions = np.concatenate([np.asarray(captions, dtype=np.int64) for captions in references])
    counts = np.bincount(captions, minlength=num_captions)
    if (counts == 0).any():
        caption = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"caption {caption} is in no record's field 'references'; it needs one image")
    if (counts > 1).any():
        caption = int(np.flatnonzero(counts > 1)[0])
        records = images[captions == caption].tolist()
        raise ValueError(
            f"caption {caption} is listed by records {records} in field 'references'; it needs one image"
        )
    owners = np.empty(num_captions, dtype=np.int64)
    owners[captions] = images
    return owners


def pessimistic_ranks(scores: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the wrong captions scoring >= its best caption; per caption, the wrong images scoring >= its
    own image (`owners[caption]`)."""
    is_match = np.zeros(scores.shape, dtype=bool)
    is_match[owners, np.arange(scores.shape[1])] = True
    best_caption = np.where(is_match, scores, -np.inf).max(axis=1)
    text_ranks = ((scores >= best_caption[:, None]) & ~is_match).sum(axis=1)
    own_image = scores[owners, np.arange(scores.shape[1])]
    image_ranks = ((scores >= own_image[None, :]) & ~is_match).sum(axis=0)
    return text_ranks, image_ranks


class RetrievalRecall(evaluate.Metric):
    """Text and image retrieval Recall@K, fractions in [0, 1], ties counted against the right candidate."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(
        self, predictions: list[list[float]], references: list[list[int]], ks: Sequence[int] = (1, 5, 10)
    ) -> dict[str, float]:
        if not predictions:
            raise ValueError("retrieval_recall needs at least one record")
        if not ks or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {ks!r}")
        num_captions = len(predictions[0])
        if num_captions == 0:
            raise ValueError("record 0: field 'predictions' is empty; score every caption")
        for index, row in enumerate(predictions):
            if len(row) != num_captions:
                raise ValueError(
                    f"record {index}: field 'predictions' has {len(row)} scores, record 0 has {num_captions}"
                )
        scores = np.asarray(predictions, dtype=np.float32)
        if np.isnan(scores).any():
            index, caption = np.argwhere(np.isnan(scores))[0].tolist()
            raise ValueError(f"record {index}: field 'predictions' is NaN for caption {caption}")
        text_ranks, image_ranks = pessimistic_ranks(scores, caption_owners(references, num_captions))
        recalls = {f"text_r{int(k)}": float((text_ranks < k).mean()) for k in ks}
        recalls.update({f"image_r{int(k)}": float((image_ranks < k).mean()) for k in ks})
        return recalls
