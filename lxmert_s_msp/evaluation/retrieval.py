"""Image–text retrieval: contrastive ranking of every pair, ITM re-ranking of the top k, or ITM on every pair.

A cross-modal encoder has no separate image and text embeddings: each (image, caption) pair is a forward pass,
so ranking a whole split by ITM (Flickr30k test: 1,000 x 5,000) costs 5M passes, the paper's protocol. A model
with the VSC head also embeds texts and images apart (`get_text_features`, `get_image_features`, no
cross-modal pass): one matrix product ranks every pair, and two-stage retrieval (as ALBEF and BLIP infer)
re-scores only each query's top k candidates with ITM, k x (images + captions) passes. Pairs are index tensors
gathered batch by batch from one tokenisation of the captions and one store read of the images
(`EncodedSplit`), so the only Python loop is over batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.logging import tqdm

from lxmert_s_msp.checkpoints import load_model
from lxmert_s_msp.data.collators import text_inputs, visual_inputs
from lxmert_s_msp.data.downstream_data import retrieval_split
from lxmert_s_msp.data.store import FeatureStore
from lxmert_s_msp.evaluation.metrics import load_metric
from modeling_lxmert_s import LxmertSContrastiveFeatures, LxmertSForPreTraining
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

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
# The rankings a result can hold, and where their scores come from.
Ranking = Literal["contrastive", "reranked", "all_pairs"]
RANKINGS = {
    "contrastive": "contrastive similarity (VSC embeddings, no cross-modal pass)",
    "reranked": (
        "top-{k} by contrastive similarity re-ranked by ITM log-odds + VSC logit (cross-modal encoder)"
    ),
    "all_pairs": "ITM on every pair (cross-modal encoder)",
}
# Candidates per query that two-stage retrieval re-scores with ITM: on Flickr30k test 16 x (1,000 + 5,000) =
# 96k cross-modal passes instead of 5M (ALBEF and BLIP re-rank 128 there; k is a CLI option).
DEFAULT_RERANK_TOP_K = 16


def itm_match_scorer(model: torch.nn.Module) -> PairScorer:
    """The log-odds of a match, log p(match) - log p(mismatch), from a pre-training model's ITM head: the
    zero-shot retrieval score (it ranks as p(match) does)."""
    if "itm" not in getattr(model, "heads", {}):
        raise ValueError(
            f"zero-shot retrieval needs the ITM head; this model carries {list(getattr(model, 'heads', {}))}"
        )

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(**inputs, output_predictions=False).itm_logits.float()
        return logits[:, 1] - logits[:, 0]

    return score


def match_logit_scorer(model: torch.nn.Module) -> PairScorer:
    """The match logit of `LxmertSForImageTextRetrieval`: the fine-tuned retrieval score. It is log p(match)
    minus log p(mismatch) of the ITM softmax, the log-odds `itm_match_scorer` gives."""

    def score(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**inputs).logits.float()

    return score


@dataclass
class EncodedSplit:
    """A split's model inputs on the device: its captions tokenised once and its images read from the store
    once; a pair of indices (image, caption) into the split gathers its rows from them."""

    text: dict[str, torch.Tensor]
    visual: dict[str, torch.Tensor]

    @classmethod
    def encode(
        cls,
        store: FeatureStore,
        processor: LxmertSProcessor,
        image_rows: Sequence[int],
        captions: Sequence[str],
        device: torch.device | str = "cpu",
    ) -> EncodedSplit:
        """`image_rows` index the store, `captions` are raw text."""
        device = torch.device(device)
        text = {name: value.to(device) for name, value in text_inputs(processor, captions).items()}
        rows = np.asarray(image_rows, dtype=np.int64)
        visual = visual_inputs(store, rows, processor.num_regions)
        return cls(text, {name: value.to(device) for name, value in visual.items()})

    @property
    def device(self) -> torch.device:
        return self.text["input_ids"].device

    @property
    def num_images(self) -> int:
        return len(self.visual["visual_feats"])

    @property
    def num_captions(self) -> int:
        return len(self.text["input_ids"])

    def pairs(self, image: torch.Tensor, caption: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model inputs of the pairs (image[n], caption[n])."""
        inputs = {name: value[caption] for name, value in self.text.items()}
        return inputs | {name: value[image] for name, value in self.visual.items()}


def _score_batch(
    score: PairScorer, inputs: dict[str, torch.Tensor], autocast_dtype: torch.dtype | None
) -> torch.Tensor:
    device_type, enabled = inputs["input_ids"].device.type, autocast_dtype is not None
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=enabled):
        return score(inputs).float()


@torch.no_grad()
def score_pairs(
    score: PairScorer,
    split: EncodedSplit,
    image: torch.Tensor,
    caption: torch.Tensor,
    batch_size: int = 1024,
    autocast_dtype: torch.dtype | None = None,
    description: str = "Scoring pairs",
) -> torch.Tensor:
    """(P,) scores of the pairs (image[n], caption[n]), indices into `split`, in batches."""
    image, caption = image.to(split.device), caption.to(split.device)
    scores = torch.empty(len(image), dtype=torch.float32, device=split.device)
    for start in tqdm(range(0, len(image), batch_size), desc=description, unit="batch"):
        batch = slice(start, start + batch_size)
        scores[batch] = _score_batch(score, split.pairs(image[batch], caption[batch]), autocast_dtype)
    return scores.cpu()


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
    split = EncodedSplit.encode(store, processor, image_rows, captions, device)
    return _score_every_pair(score, split, batch_size, autocast_dtype)


@torch.no_grad()
def _score_every_pair(
    score: PairScorer, split: EncodedSplit, batch_size: int, autocast_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Scores (images, captions) of every pair of `split`. Without autograd: with it, every batch's graph
    stays alive through the score matrix, and the default world's 50,000 pairs filled 24 GiB."""
    num_images, num_captions = split.num_images, split.num_captions
    scores = torch.empty(num_images * num_captions, dtype=torch.float32, device=split.device)
    for start in tqdm(range(0, len(scores), batch_size), desc="ITM on every pair", unit="batch"):
        pairs = torch.arange(start, min(start + batch_size, len(scores)), device=split.device)
        inputs = split.pairs(pairs // num_captions, pairs % num_captions)
        scores[pairs] = _score_batch(score, inputs, autocast_dtype)
    return scores.view(num_images, num_captions).cpu()


@torch.no_grad()
def contrastive_similarity(
    model: LxmertSContrastiveFeatures, split: EncodedSplit, batch_size: int = 1024
) -> torch.Tensor:
    """(images, captions) cosine similarity of the VSC embeddings of every image and caption of `split`: one
    matrix product, no cross-modal pass."""

    def embed(
        inputs: dict[str, torch.Tensor], features: Callable[..., BaseModelOutputWithPooling]
    ) -> torch.Tensor:
        batches = zip(*(value.split(batch_size) for value in inputs.values()), strict=True)
        return torch.cat(
            [features(**dict(zip(inputs, batch, strict=True))).pooler_output.float() for batch in batches]
        )

    images = embed(split.visual, model.get_image_features)
    captions = embed(split.text, model.get_text_features)
    return (images @ captions.T).cpu()


def _strictly_greater(values: torch.Tensor, among: torch.Tensor) -> torch.Tensor:
    """Per row, how many entries of `among` are strictly greater than each entry of `values`."""
    ordered = among.sort(dim=1).values.contiguous()
    return among.shape[1] - torch.searchsorted(ordered, values.contiguous(), right=True)


def rerank(
    similarity: torch.Tensor, k: int, rescore: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Two-stage ranking of the candidates (columns) of each query (row), as a score matrix for the
    `retrieval_recall` metric: the row's `k` most similar candidates in the order of `rescore(rows, columns)`
    (their ITM scores), above the other candidates in `similarity`'s order.

    The scores are ranks (k - #candidates re-scored higher for the k, -#candidates more similar for the
    rest), so ties stay ties and the metric, which counts a tie against the right candidate, sees both orders
    exactly; shifting the ITM scores above the similarities instead would round nearby scores into ties.
    """
    k = min(k, similarity.shape[1])
    top = similarity.topk(k, dim=1).indices
    rows = torch.arange(len(similarity))[:, None].expand_as(top)
    itm = rescore(rows.flatten(), top.flatten()).view_as(top).float()
    ranked = -_strictly_greater(similarity, similarity).float()
    return ranked.scatter(1, top, (k - _strictly_greater(itm, itm)).float())


def chance_recalls(
    captions_per_image: Sequence[int],
    text_retrieval: TextRetrieval = "all_captions",
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K of a random ranking, in [0, 1], named as the `retrieval_recall` metric's. Image retrieval:
    K / #images. Text retrieval: an image is missed when none of its m captions is among the K drawn from
    the C ranked, so the chance is 1 - comb(C - m, K) / comb(C, K), averaged over the images
    (`first_caption`: m = 1, C = #images)."""
    images = len(captions_per_image)
    if text_retrieval == "first_caption":
        per_image, ranked = [1] * images, images
    else:
        per_image, ranked = list(captions_per_image), sum(captions_per_image)
    chance = {}
    for k in ks:
        drawn = min(k, ranked)
        misses = [math.comb(ranked - m, drawn) / math.comb(ranked, drawn) for m in per_image]
        chance[f"text_r{k}"] = 1.0 - sum(misses) / images
    return chance | {f"image_r{k}": min(k, images) / images for k in ks}


def as_percent(values: dict[str, float], names: Sequence[str]) -> str:
    """`values` (fractions) of `names` as percent, "/"-separated; "–" where one is missing."""
    return " / ".join(f"{100 * values[name]:.1f}" if name in values else "–" for name in names)


@dataclass
class RetrievalResult:
    """Recall@K of image retrieval (`image_r*`) and text retrieval (`text_r*`) on one split for each ranking
    computed (`RANKINGS`), and a random ranking's (`chance`). Values are fractions in [0, 1], the
    `retrieval_recall` metric's unit; `summary` and the model card print them as percent."""

    title: str  # "Zero-shot retrieval", "Fine-tuned retrieval"
    split: str
    images: int
    captions: int
    rankings: dict[str, dict[str, float]]  # Ranking -> recalls
    chance: dict[str, float]
    text_retrieval: TextRetrieval = "all_captions"
    rerank_top_k: int | None = None  # the k of the "reranked" ranking

    @property
    def headline(self) -> Ranking:
        """The cross-modal ranking the plain metric names report: all-pairs ITM when computed (the paper's
        protocol), else the re-ranked one."""
        return "all_pairs" if "all_pairs" in self.rankings else "reranked"

    @property
    def recalls(self) -> dict[str, float]:
        return self.rankings[self.headline]

    def kept(self) -> dict[str, float]:
        """The share of each all-pairs recall the re-ranking keeps (re-ranked / all-pairs), where both were
        computed and the all-pairs recall is not 0."""
        if not {"reranked", "all_pairs"} <= set(self.rankings):
            return {}
        reranked, all_pairs = self.rankings["reranked"], self.rankings["all_pairs"]
        return {name: reranked[name] / value for name, value in all_pairs.items() if value > 0}

    def ranking_name(self, ranking: Ranking) -> str:
        return RANKINGS[ranking].format(k=self.rerank_top_k)

    def recall_names(self, kind: Literal["image", "text"]) -> list[str]:
        """`image_r1`, `image_r5`, ... (or `text_*`) in order."""
        return [name for name in self.chance if name.startswith(f"{kind}_")]

    def ranked_recalls(self, skip: Ranking | None = None) -> dict[str, float]:
        """Every ranking's recalls but `skip`'s, each prefixed with its ranking (`contrastive_image_r1`,
        `all_pairs_text_r5`, ...)."""
        return {
            f"{ranking}_{name}": value
            for ranking, recalls in self.rankings.items()
            if ranking != skip
            for name, value in recalls.items()
        }

    def metrics(self) -> dict[str, float]:
        """Flat, for JSON: the headline ranking's recalls under the metric's names, every other ranking's
        prefixed with its name (`ranked_recalls`), and `kept_*` (`kept`)."""
        kept = {f"kept_{name}": value for name, value in self.kept().items()}
        return dict(self.recalls) | self.ranked_recalls(skip=self.headline) | kept

    def summary(self) -> str:
        """One line per ranking, recalls in percent with the chance level beside them."""
        protocol = TEXT_RETRIEVAL_PROTOCOLS[self.text_retrieval]
        image, text = self.recall_names("image"), self.recall_names("text")
        ks = "/".join(name.removeprefix("image_r") for name in image)
        lines = [
            f"{self.title} ({self.split}: {self.images} images x {self.captions} captions; {protocol}), "
            f"R@{ks} in %:"
        ]
        for ranking, recalls in self.rankings.items():
            lines.append(
                f"  {self.ranking_name(ranking)}: IR {as_percent(recalls, image)} "
                f"(chance {as_percent(self.chance, image)})   TR {as_percent(recalls, text)} "
                f"(chance {as_percent(self.chance, text)})"
            )
        if kept := self.kept():
            lines.append(
                f"  share of the all-pairs recall the re-ranking keeps: IR {as_percent(kept, image)}   "
                f"TR {as_percent(kept, text)}"
            )
        return "\n".join(lines)


@dataclass
class RetrievalTargets:
    """What a split's rankings are scored against: each image's captions (`matches`, indices into every
    caption of the split), the captions text retrieval ranks (`text_columns`, as `TextRetrieval` says) and
    each image's among them (`text_matches`)."""

    matches: list[list[int]]
    text_columns: torch.Tensor
    text_matches: list[list[int]]
    every_caption: bool  # text retrieval ranks every caption: its score matrix is image retrieval's

    @classmethod
    def of(cls, captions_per_image: Sequence[int], text_retrieval: TextRetrieval) -> RetrievalTargets:
        ends = np.cumsum(captions_per_image).tolist()
        matches = [list(range(end - count, end)) for count, end in zip(captions_per_image, ends, strict=True)]
        if text_retrieval == "first_caption":
            text_columns = torch.tensor([caption_ids[0] for caption_ids in matches])
            return cls(matches, text_columns, [[image] for image in range(len(matches))], False)
        return cls(matches, torch.arange(sum(captions_per_image)), matches, True)

    def text_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """The columns of a score matrix of every pair (images x every caption) that text retrieval ranks."""
        return scores if self.every_caption else scores[:, self.text_columns]

    def recalls(self, image_scores: torch.Tensor, text_scores: torch.Tensor) -> dict[str, float]:
        """Image retrieval recalls over `image_scores` (images x every caption) and text retrieval recalls
        over `text_scores` (images x the captions TR ranks); one metric pass when they are the same matrix."""
        metric = load_metric("retrieval_recall")
        recalls = metric.compute(predictions=image_scores.tolist(), references=self.matches)
        if text_scores is not image_scores:
            text = metric.compute(predictions=text_scores.tolist(), references=self.text_matches)
            recalls |= {name: value for name, value in text.items() if name.startswith("text_")}
        return recalls


def contrastive_recalls(similarity: torch.Tensor, targets: RetrievalTargets) -> dict[str, float]:
    """The contrastive ranking: every pair by the similarity of its VSC embeddings (`contrastive_similarity`),
    no cross-modal pass."""
    return targets.recalls(similarity, targets.text_scores(similarity))


def reranked_recalls(
    score: PairScorer,
    split: EncodedSplit,
    similarity: torch.Tensor,
    logit_scale: float,
    targets: RetrievalTargets,
    top_k: int,
    batch_size: int,
) -> dict[str, float]:
    """Two-stage ranking: each query's `top_k` candidates by `similarity`, re-scored by `score` (the
    cross-modal ITM log-odds) plus their contrastive logit (the similarity times the VSC `logit_scale`): the
    two paths' evidence added, as BLIP adds its contrastive similarity to the ITM score of its top k. On the
    synthetic world ITM alone sometimes ranked the contrastive top 16 worse than the similarity did, the sum
    never (docs/results.md)."""
    columns = targets.text_columns

    def rescore(image: torch.Tensor, caption: torch.Tensor, retrieval: str) -> torch.Tensor:
        description = f"ITM re-ranking ({retrieval} top {top_k})"
        itm = score_pairs(score, split, image, caption, batch_size, description=description)
        return itm + logit_scale * similarity[image, caption]

    image_scores = rerank(similarity.T, top_k, lambda c, i: rescore(i, c, "IR")).T
    text_scores = rerank(similarity[:, columns], top_k, lambda i, c: rescore(i, columns[c], "TR"))
    return targets.recalls(image_scores, text_scores)


def all_pairs_recalls(
    score: PairScorer, split: EncodedSplit, targets: RetrievalTargets, batch_size: int
) -> dict[str, float]:
    """The paper's protocol: `score` (ITM) on every pair, one cross-modal pass each."""
    scores = _score_every_pair(score, split, batch_size)
    return targets.recalls(scores, targets.text_scores(scores))


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
    contrastive_model: LxmertSContrastiveFeatures | None = None,
    rerank_top_k: int = DEFAULT_RERANK_TOP_K,
    all_pairs: bool = False,
) -> RetrievalResult:
    """Rank every caption of `images` (rows of `retrieval_split`) for every image, and back; `text_retrieval`
    chooses the captions text retrieval ranks (`TextRetrieval`).

    With `contrastive_model` (a model with the VSC head) every pair is ranked by its contrastive similarity
    (`contrastive_recalls`) and, when `rerank_top_k` > 0, each query's top `rerank_top_k` candidates are
    re-scored by `score` (`reranked_recalls`). `score` alone ranks every pair (`all_pairs_recalls`) when asked
    (`all_pairs`), when there is no re-ranking (`rerank_top_k` 0) and for a model without VSC
    (`contrastive_model` None)."""
    if text_retrieval not in TEXT_RETRIEVAL_PROTOCOLS:
        raise ValueError(
            f"text_retrieval: expected one of {list(TEXT_RETRIEVAL_PROTOCOLS)}, got {text_retrieval!r}"
        )
    if rerank_top_k < 0:
        raise ValueError(f"rerank_top_k: expected 0 (no re-ranking) or more candidates, got {rerank_top_k}")
    per_image = [len(texts) for texts in images["captions"]]
    captions = [caption for texts in images["captions"] for caption in texts]
    targets = RetrievalTargets.of(per_image, text_retrieval)
    encoded = EncodedSplit.encode(store, processor, images["image_index"], captions, device)
    rankings: dict[str, dict[str, float]] = {}
    reranking = contrastive_model is not None and rerank_top_k > 0
    if contrastive_model is not None:
        similarity = contrastive_similarity(contrastive_model, encoded, batch_size)
        rankings["contrastive"] = contrastive_recalls(similarity, targets)
    if reranking:
        scale = contrastive_model.contrastive_logit_scale
        rankings["reranked"] = reranked_recalls(
            score, encoded, similarity, scale, targets, rerank_top_k, batch_size
        )
    if all_pairs or not reranking:
        rankings["all_pairs"] = all_pairs_recalls(score, encoded, targets, batch_size)
    chance = chance_recalls(per_image, text_retrieval)
    top_k = rerank_top_k if reranking else None
    return RetrievalResult(title, split, len(images), len(captions), rankings, chance, text_retrieval, top_k)


def zero_shot_retrieval(
    model_folder: str | Path,
    data_folder: str | Path,
    split: str = "test",
    device: torch.device | str | None = None,
    batch_size: int = 1024,
    text_retrieval: TextRetrieval = "all_captions",
    rerank_top_k: int = DEFAULT_RERANK_TOP_K,
    all_pairs: bool = False,
) -> RetrievalResult:
    """Rank every caption of a Flickr30k-style split (`corpora/flickr30k`) for every image, and back, with
    the model saved in `model_folder` (with its processor), no fine-tuning: by the pre-trained ITM score,
    after the VSC embeddings' ranking when the model has them (`evaluate_retrieval`)."""
    images = retrieval_split(data_folder, split)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(LxmertSForPreTraining, model_folder).to(device).eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    store = FeatureStore(Path(data_folder) / "store")
    return evaluate_retrieval(
        itm_match_scorer(model),
        store,
        processor,
        images,
        split,
        "Zero-shot retrieval",
        device,
        batch_size,
        text_retrieval,
        contrastive_model=model if model.has_contrastive_features else None,
        rerank_top_k=rerank_top_k,
        all_pairs=all_pairs,
    )
