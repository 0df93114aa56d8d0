"""Image–text retrieval scoring at scale: every image against every caption, in large batches.

A cross-modal encoder has no separate image and text embeddings to compare with one matrix product: each
(image, caption) pair is a forward pass. The pairs of a whole split (Flickr30k test: 1,000 x 5,000) are
enumerated as index tensors and gathered batch by batch from one tokenisation of the captions and one store
read of the images, so the only Python loop is over batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import torch

from metrics import load_metric
from modeling_lxmert_s import LxmertSForPreTraining
from processing.collators import text_inputs, visual_inputs
from processing.processor import LxmertSProcessor
from processing.store import FeatureStore

PairScorer = Callable[[dict[str, torch.Tensor]], torch.Tensor]
# How text retrieval (image -> caption) ranks: "all_captions", the standard protocol (1k images x 5k captions,
# a hit when any of the image's captions ranks in the top K), or "first_caption", the released LXMERT-S code's
# (each image against the first caption of every image, 1k x 1k), for comparing with the paper's TR numbers.
# Image retrieval always ranks the images for each of all the captions.
TextRetrieval = Literal["all_captions", "first_caption"]
TEXT_RETRIEVAL_PROTOCOLS = {
    "all_captions": "TR over every caption (standard)",
    "first_caption": "TR over each image's first caption (the released LXMERT-S code's)",
}


def itm_match_scorer(model: torch.nn.Module) -> PairScorer:
    """log p(match) from a pre-training model's ITM head: the zero-shot retrieval score."""
    if "itm" not in getattr(model, "heads", {}):
        raise ValueError(
            f"zero-shot retrieval needs the ITM head; this model carries {list(getattr(model, 'heads', {}))}"
        )

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.log_softmax(model(**inputs).itm_logits.float(), dim=-1)[:, 1]

    return score


def match_logit_scorer(model: torch.nn.Module) -> PairScorer:
    """The match logit of `LxmertSForImageTextRetrieval`: the fine-tuned retrieval score. It is log p(match)
    minus log p(mismatch) of the ITM softmax, so it ranks pairs as `itm_match_scorer` does."""

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**inputs).logits.float()

    return score


@torch.no_grad()
def score_all_pairs(
    score: PairScorer,
    store: FeatureStore,
    processor: LxmertSProcessor,
    image_rows: Sequence[int],
    captions: Sequence[str],
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Scores (images, captions) of every pair; `image_rows` index the store, `captions` are raw text."""
    device = torch.device(device)
    text = {name: value.to(device) for name, value in text_inputs(processor, captions).items()}
    rows = np.asarray(image_rows, dtype=np.int64)
    visual = {
        name: value.to(device) for name, value in visual_inputs(store, rows, processor.num_regions).items()
    }
    num_images, num_captions = len(image_rows), len(captions)
    scores = torch.empty(num_images * num_captions, dtype=torch.float32, device=device)
    for start in range(0, len(scores), batch_size):
        pairs = torch.arange(start, min(start + batch_size, len(scores)), device=device)
        image, caption = pairs // num_captions, pairs % num_captions
        inputs = {name: value[caption] for name, value in text.items()}
        inputs |= {name: value[image] for name, value in visual.items()}
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            scores[pairs] = score(inputs).float()
    return scores.view(num_images, num_captions).cpu()


@dataclass
class RetrievalResult:
    """Recall@K of image retrieval (`image_r*`) and text retrieval (`text_r*`) on one split, in [0, 1]."""

    title: str  # "Zero-shot retrieval", "Fine-tuned retrieval"
    split: str
    images: int
    captions: int
    recalls: dict[str, float]
    text_retrieval: TextRetrieval = "all_captions"

    def summary(self) -> str:
        recalls = "  ".join(f"{name} {100 * value:.1f}" for name, value in self.recalls.items())
        protocol = TEXT_RETRIEVAL_PROTOCOLS[self.text_retrieval]
        sizes = f"{self.split}: {self.images} images x {self.captions} captions; {protocol}"
        return f"{self.title} ({sizes}): {recalls}"


def retrieval_split(data_folder: str | Path, split: str) -> datasets.Dataset:
    """The images of one split of a data folder's Flickr30k-style corpus (`corpora/flickr30k`), with their
    store rows and captions."""
    corpus_path = Path(data_folder) / "corpora" / "flickr30k"
    if not corpus_path.is_dir():
        raise FileNotFoundError(
            f"{corpus_path}: no retrieval corpus; build it with `python -m processing.corpora flickr30k`"
        )
    corpus = datasets.load_from_disk(str(corpus_path))
    corpus = corpus.filter(lambda row: row["split"] == split, desc=f"Selecting {split}")
    if len(corpus) == 0:
        raise ValueError(f"{corpus_path}: no images in split {split!r}")
    return corpus


def evaluate_retrieval(
    score: PairScorer,
    store: FeatureStore,
    processor: LxmertSProcessor,
    images: datasets.Dataset,
    split: str,
    title: str,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
    text_retrieval: TextRetrieval = "all_captions",
) -> RetrievalResult:
    """Rank every caption of `images` (rows of `retrieval_split`) for every image, and back, by `score`;
    `text_retrieval` chooses the captions text retrieval ranks (`TextRetrieval`)."""
    if text_retrieval not in TEXT_RETRIEVAL_PROTOCOLS:
        raise ValueError(
            f"text_retrieval: expected one of {list(TEXT_RETRIEVAL_PROTOCOLS)}, got {text_retrieval!r}"
        )
    per_image = images["captions"]
    captions = [caption for texts in per_image for caption in texts]
    ends = np.cumsum([len(texts) for texts in per_image]).tolist()
    matches = [list(range(end - len(texts), end)) for texts, end in zip(per_image, ends, strict=True)]
    scores = score_all_pairs(
        score, store, processor, images["image_index"], captions, device=device, batch_size=batch_size
    )
    metric = load_metric("retrieval_recall")
    recalls = metric.compute(predictions=scores.tolist(), references=matches)
    if text_retrieval == "first_caption":
        first = [caption_ids[0] for caption_ids in matches]
        text = metric.compute(
            predictions=scores[:, first].tolist(), references=[[image] for image in range(len(first))]
        )
        recalls |= {name: value for name, value in text.items() if name.startswith("text_")}
    return RetrievalResult(title, split, len(images), len(captions), recalls, text_retrieval)


def zero_shot_retrieval(
    model_folder: str | Path,
    data_folder: str | Path,
    split: str = "test",
    device: torch.device | str | None = None,
    batch_size: int = 1024,
    text_retrieval: TextRetrieval = "all_captions",
) -> RetrievalResult:
    """Rank every caption of a Flickr30k-style split (`corpora/flickr30k`) for every image, and back, by the
    pre-trained ITM score of the model saved in `model_folder` (with its processor), no fine-tuning."""
    images = retrieval_split(data_folder, split)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = LxmertSForPreTraining.from_pretrained(model_folder).to(device).eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    store = FeatureStore(Path(data_folder) / "store")
    scorer = itm_match_scorer(model)
    return evaluate_retrieval(
        scorer, store, processor, images, split, "Zero-shot retrieval", device, batch_size, text_retrieval
    )
