"""What a pre-trained checkpoint scores on held-out pairs with no fine-tuning: held-out ITM accuracy and
zero-shot retrieval, which the main job (`recipes/pretrain.py`) prints and its model card records.

Scoring a retrieval split with ITM on every pair takes a while on real data, and a re-run of a finished
curriculum rewrites the Hub folder; the scores are cached beside it (`ZERO_SHOT_SCORES`) and reused only for
the same inputs, by content (`scores_key`): every file of the model folder (weights, config, code,
processor), the retrieval corpus's files and the split's store rows, the scoring code (`SCORING_CODE`), the
split and the rankings asked for. A rebuilt corpus or store is scored again; the same data in another
folder is not.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from lxmert_s_msp.checkpoints import load_model
from lxmert_s_msp.data.corpus_builders import corpus_digest
from lxmert_s_msp.data.downstream_data import retrieval_split
from lxmert_s_msp.data.store import FeatureStore, atomic_write_text, files_digest
from lxmert_s_msp.data.tokenizer import pretrained_folder_digest
from lxmert_s_msp.evaluation.metrics import load_metric
from lxmert_s_msp.evaluation.retrieval import (
    DEFAULT_RERANK_TOP_K,
    EncodedSplit,
    RetrievalResult,
    score_pairs,
    zero_shot_retrieval,
)
from modeling_lxmert_s import PRETRAINING_TASKS, LxmertSConfig, LxmertSForPreTraining
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

ZERO_SHOT_SCORES = "zero_shot_scores.json"
# The code the scores come from, as a version of its own: the `lxmert_s_msp.evaluation` package's source (this
# module, the rankings, the metrics). A change to any of it may change a score, so its cache is not reused.
SCORING_CODE = files_digest(sorted(Path(__file__).resolve().parent.rglob("*.py")))
# Held-out ITM accuracy pairs each caption with another image, and retrieval ranks images: a split needs two.
MIN_SPLIT_IMAGES = 2


@dataclass
class ITMAccuracy:
    """Held-out ITM accuracy: argmax of the ITM logits on every caption of a split paired with its own image
    and with another image of the split, a fraction in [0, 1]. Half the pairs match: chance is 1/2."""

    split: str
    captions: int
    accuracy: float

    def summary(self) -> str:
        return (
            f"Held-out ITM accuracy ({self.split}: {self.captions} captions, each with its image and with "
            f"another; cross-modal encoder): {100 * self.accuracy:.1f}% (chance 50%)"
        )


def held_out_pairs(captions_per_image: Sequence[int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(image, caption, label) of the 2N pairs ITM accuracy scores: caption n with its image (label 1), then
    with another image of the split drawn uniformly with `seed` (label 0); indices into the split."""
    images = len(captions_per_image)
    if images < MIN_SPLIT_IMAGES:
        raise ValueError(f"held-out ITM accuracy pairs captions with another image; the split has {images}")
    owners = torch.repeat_interleave(torch.arange(images), torch.tensor(captions_per_image))
    generator = torch.Generator().manual_seed(seed)
    others = (owners + torch.randint(1, images, owners.shape, generator=generator)) % images
    captions = torch.arange(len(owners))
    labels = torch.cat([torch.ones_like(captions), torch.zeros_like(captions)])
    return torch.cat([owners, others]), torch.cat([captions, captions]), labels


@torch.no_grad()
def itm_accuracy(
    model: torch.nn.Module,
    store: FeatureStore,
    processor: LxmertSProcessor,
    images: datasets.Dataset,
    split: str,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
    seed: int = 0,
) -> ITMAccuracy:
    """`ITMAccuracy` of a model with `itm_logits` (`LxmertSForPreTraining` with the ITM head) on the captions
    of `images` (rows of `retrieval_split`)."""
    heads = list(getattr(model, "heads", {}))
    if "itm" not in heads:
        raise ValueError(f"held-out ITM accuracy needs the ITM head; this model carries {heads}")
    per_image = images["captions"]
    captions = [caption for texts in per_image for caption in texts]
    image, caption, labels = held_out_pairs([len(texts) for texts in per_image], seed)
    encoded = EncodedSplit.encode(store, processor, images["image_index"], captions, device)
    predicted = score_pairs(
        lambda inputs: model(**inputs, output_predictions=False).itm_logits.argmax(-1),
        encoded,
        image,
        caption,
        batch_size,
        description="Held-out ITM accuracy",
    )
    accuracy = load_metric("accuracy").compute(
        predictions=predicted.long().tolist(), references=labels.tolist()
    )["accuracy"]
    return ITMAccuracy(split, len(captions), accuracy)


@dataclass
class ZeroShotSettings:
    """The main job's held-out scoring: the split of `corpora/flickr30k`, the re-ranking's k and whether a
    model with the VSC head is also ranked by ITM on every pair (the paper's protocol; on the default world
    it costs more than the rest of the scoring together: docs/benchmarks.md)."""

    split: str = "test"
    rerank_top_k: int = DEFAULT_RERANK_TOP_K
    all_pairs: bool = False


@dataclass
class ZeroShotScores:
    """A checkpoint's held-out ITM accuracy and zero-shot retrieval on one split, or why it was not scored."""

    itm: ITMAccuracy | None = None
    retrieval: RetrievalResult | None = None
    skipped: str | None = None

    def summary(self) -> str:
        if self.skipped is not None:
            return f"Held-out ITM accuracy and zero-shot retrieval: skipped, {self.skipped}"
        return f"{self.itm.summary()}\n{self.retrieval.summary()}"

    def metrics(self) -> dict[str, float]:
        """Flat, for JSON: `itm_accuracy` and every ranking's recalls named with the ranking
        (`contrastive_image_r1`, `reranked_text_r5`, `all_pairs_image_r10`, ...); {} when skipped."""
        if self.skipped is not None:
            return {}
        return {"itm_accuracy": self.itm.accuracy} | self.retrieval.ranked_recalls()

    def to_json(self) -> dict[str, Any]:
        return {"itm": dataclasses.asdict(self.itm), "retrieval": dataclasses.asdict(self.retrieval)}

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> ZeroShotScores:
        return cls(ITMAccuracy(**fields["itm"]), RetrievalResult(**fields["retrieval"]))


def check_zero_shot_data(data_folder: Path, settings: ZeroShotSettings, tasks: Sequence[str]) -> None:
    """Before training: when the last stage's `tasks` will be scored, a data folder with a retrieval corpus
    must have a split that can be scored (at least `MIN_SPLIT_IMAGES` images, each with a caption), or the
    run would fail after its last stage."""
    if _skip_reason(tasks, data_folder) is not None:
        return
    images = retrieval_split(data_folder, settings.split)
    where = f"{data_folder / 'corpora' / 'flickr30k'}: split {settings.split!r}"
    if len(images) < MIN_SPLIT_IMAGES:
        raise ValueError(
            f"{where} has {len(images)} image: held-out ITM accuracy pairs each caption with another image "
            f"and retrieval ranks the split's images, so it needs at least {MIN_SPLIT_IMAGES} "
            "(--retrieval_split names another split)"
        )
    uncaptioned = [
        image_id
        for image_id, captions in zip(images["image_id"], images["captions"], strict=True)
        if not captions
    ]
    if uncaptioned:
        raise ValueError(
            f"{where}: image {uncaptioned[0]!r} has no caption ({len(uncaptioned)} such images): rebuild the "
            "corpus with `python -m lxmert_s_msp.data.corpora flickr30k`, which refuses them"
        )


def scores_key(
    model_folder: Path, data_folder: Path, images: datasets.Dataset, settings: ZeroShotSettings
) -> dict[str, Any]:
    """What the scores of the model saved in `model_folder` on `images` (rows of `retrieval_split`) depend on,
    by content: the model folder's files (its card, written after the scores, left out), the retrieval
    corpus's files and the split's store rows, the scoring code and `settings`."""
    return {
        "model_files": pretrained_folder_digest(model_folder, leave_out={"README.md"}),
        "retrieval_corpus": corpus_digest(data_folder / "corpora" / "flickr30k"),
        "store_rows": FeatureStore(data_folder / "store").digest(images["image_index"]),
        "scoring_code": SCORING_CODE,
        **dataclasses.asdict(settings),
    }


def _skip_reason(tasks: Sequence[str], data_folder: Path) -> str | None:
    """Why a model with `tasks` is not scored on `data_folder`, or None when it is."""
    if "itm" not in {PRETRAINING_TASKS[task].module_name for task in tasks}:
        return "the last stage trains no ITM head to score pairs with"
    if not (data_folder / "corpora" / "flickr30k").is_dir():
        return f"{data_folder} has no corpora/flickr30k"
    return None


def zero_shot_scores(
    model_folder: Path, data_folder: Path, settings: ZeroShotSettings, cache: Path
) -> ZeroShotScores:
    """Held-out ITM accuracy and zero-shot retrieval (contrastive and re-ranked when the model has the VSC
    head, and all-pairs when `settings` asks; all-pairs ITM otherwise) of the pre-training model saved in
    `model_folder`, on a split of `data_folder`'s `corpora/flickr30k`; skipped, with the reason, without an
    ITM head or a retrieval corpus. `cache` (JSON) holds the last scores and what they were computed for,
    reused when that matches."""
    skipped = _skip_reason(LxmertSConfig.from_pretrained(model_folder).pretraining_tasks, data_folder)
    if skipped is not None:
        return ZeroShotScores(skipped=skipped)
    images = retrieval_split(data_folder, settings.split)
    key = scores_key(model_folder, data_folder, images, settings)
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["key"] == key:
            return ZeroShotScores.from_json(cached)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(LxmertSForPreTraining, model_folder).to(device).eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    itm = itm_accuracy(model, FeatureStore(data_folder / "store"), processor, images, settings.split, device)
    retrieval = zero_shot_retrieval(
        model_folder,
        data_folder,
        settings.split,
        device,
        rerank_top_k=settings.rerank_top_k,
        all_pairs=settings.all_pairs,
    )
    scores = ZeroShotScores(itm, retrieval)
    atomic_write_text(cache, json.dumps({"key": key, **scores.to_json()}, indent=1))
    return scores
