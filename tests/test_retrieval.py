"""Retrieval evaluation: the standard protocol and the released LXMERT-S code's 1k x 1k text retrieval."""

from __future__ import annotations

import datasets
import pytest
import torch

from training import retrieval
from training.retrieval import evaluate_retrieval

# Three images with two captions each (captions 0-1, 2-3, 4-5). Every image scores its second caption
# highest; image 2 ranks image 0's first caption above its own first caption.
SCORES = torch.tensor(
    [
        [0.5, 0.9, 0.1, 0.2, 0.1, 0.1],
        [0.1, 0.2, 0.5, 0.9, 0.2, 0.1],
        [0.6, 0.1, 0.1, 0.2, 0.4, 0.9],
    ]
)
IMAGES = datasets.Dataset.from_dict(
    {"image_index": [0, 1, 2], "captions": [["a0", "b0"], ["a1", "b1"], ["a2", "b2"]]}
)


@pytest.fixture
def fixed_scores(monkeypatch):
    monkeypatch.setattr(retrieval, "score_all_pairs", lambda *args, **kwargs: SCORES)


def test_first_caption_text_retrieval_ranks_each_image_against_the_first_captions(fixed_scores):
    standard = evaluate_retrieval(None, None, None, IMAGES, "test", "t")
    released = evaluate_retrieval(None, None, None, IMAGES, "test", "t", text_retrieval="first_caption")
    # standard: every image's best caption (its second) ranks first
    assert standard.recalls["text_r1"] == 1.0
    # 1k x 1k: only the first captions count; image 2's ranks below image 0's
    assert released.recalls["text_r1"] == pytest.approx(2 / 3)
    # image retrieval ranks the images for every caption in both
    assert {k: v for k, v in released.recalls.items() if k.startswith("image_")} == {
        k: v for k, v in standard.recalls.items() if k.startswith("image_")
    }
    assert "first caption" in released.summary() and "every caption" in standard.summary()
    with pytest.raises(ValueError, match="text_retrieval: expected one of"):
        evaluate_retrieval(None, None, None, IMAGES, "test", "t", text_retrieval="first")
