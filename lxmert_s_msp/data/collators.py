"""The MSP stage collators: corpus rows -> model inputs + the labels of the stage's tasks.

One piece per task (MSP paper §3); a stage collator composes the pieces of its tasks:

    task    piece                        labels it adds
    itm     mismatch_images              itm_labels (random negatives)
    itm_hs  mismatch_images              itm_labels (hard negatives, §3.3)
    itm_vsc matched_pairs                itm_labels (all 1: the model mines negatives in the batch), image_ids
    vsc     contrastive_targets          vsc_labels (each text's image), image_ids (each row's fed image)
    wpg     concept_words                wpg_concept_mask (words naming a detector class), image_ids
    titp    topic_targets                titp_labels (§3.2, eq. 2)
    tits    topic_targets                tits_labels (§3.3, eq. 4)
    ifrs    shuffle_triplets             ifrs_labels, ifrs_mask (§3.1, eq. 1)
    mrfr    mask_regions                 region_mask, mrfr_labels
    moc     mask_regions (the same mask) region_mask, moc_{object,attribute}_{labels,confidences}
    flm     flm_targets                  flm_labels (every word, from the text before MLM masks it)
    mlm     mask_tokens                  mlm_labels

Within a batch the pieces run in that order: the fed image must be known before the store is read (one
`store.read` per batch) and before any region target is taken from it; topic targets need the unmasked text;
regions are shuffled before they are masked. IFRS moves features only, never boxes, so a slot is its box:
every region target (`ifrs_labels`, `mrfr_labels`, `moc_*`) at slot p describes the detector's region p, the
one whose box is fed at p. That is IFRS's target (the original feature of the slot), MRFR at a masked slot
regresses the region its box shows, and MOC asks the class of that region, agreeing with IFRS where a shuffle
put another feature there (the paper is silent on MRFR/MOC at shuffled slots).
Every piece works on whole (B, L) / (B, R) tensors and draws from one `torch.Generator`, seeded by the
collator's seed and each row's epoch and dataset index (`batch_generator`), so a batch is fixed exactly by
what it holds and when: the same in a resumed run, in any DataLoader worker and on any process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch

from lxmert_s_msp.data.pretraining_pieces import (
    class_word_ids,
    class_wordpieces,
    concept_words,
    contrastive_targets,
    flm_targets,
    mask_regions,
    mask_tokens,
    matched_pairs,
    mismatch_images,
    shuffle_triplets,
    topic_targets,
)
from modeling_lxmert_s.processing_lxmert_s import TEXT_INPUT_NAMES, LxmertSProcessor, fit_regions
from lxmert_s_msp.data.store import HARD_NEGATIVES_FILE, FeatureStore, float32_tensor

logger = logging.getLogger(__name__)

# The fields every training row carries besides its own (`lxmert_s_msp.training.sampling.IndexedRows`):
# the epoch and the row's index in the dataset, which seed its batch (`batch_generator`).
EPOCH_FIELD = "epoch"
INDEX_FIELD = "sample_index"
# Tasks whose negatives the model builds in the batch from matched pairs (LxmertSForPreTraining encodes
# negative pairs), so no row of theirs may be mismatched here.
IN_BATCH_NEGATIVE_TASKS = ("itm_vsc", "wpg")

# The registry: the piece each task calls (documentation above, validation of `tasks` below).
TASK_PIECES = {
    "itm": mismatch_images,
    "itm_hs": mismatch_images,
    "itm_vsc": matched_pairs,
    "vsc": contrastive_targets,
    "wpg": concept_words,
    "titp": topic_targets,
    "tits": topic_targets,
    "ifrs": shuffle_triplets,
    "mrfr": mask_regions,
    "moc": mask_regions,
    "flm": flm_targets,
    "mlm": mask_tokens,
}


def count_truncated(texts: Sequence[str], processor: LxmertSProcessor, name: str) -> int:
    """How many `texts` are longer than the processor's `max_length` (so cut when tokenised), logged as a
    warning naming the corpus (`name`): a text is never cut silently."""
    truncated = int((processor.text_lengths(texts) > processor.max_length).sum())
    if truncated:
        logger.warning(
            "%s: %d of %d texts are longer than max_length %d tokens and are cut",
            name,
            truncated,
            len(texts),
            processor.max_length,
        )
    return truncated


def tokenize_corpus(
    dataset: datasets.Dataset,
    processor: LxmertSProcessor,
    text_column: str = "text",
    batch_size: int = 1000,
    num_proc: int | None = None,
    name: str = "corpus",
) -> datasets.Dataset:
    """Add the processor's text inputs (`TEXT_INPUT_NAMES`) as columns once, so collating only stacks them.

    Texts longer than the processor's `max_length` are cut; `count_truncated` logs how many, under `name`.
    """
    if text_column not in dataset.column_names:
        raise KeyError(
            f"tokenize_corpus: the dataset has no column {text_column!r}; it has {dataset.column_names}"
        )
    count_truncated(dataset[text_column], processor, name)
    return dataset.map(
        _encode_text_column,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        fn_kwargs={"processor": processor, "text_column": text_column},
        desc="Tokenising",
    )


def _encode_text_column(batch: Mapping[str, list], processor: LxmertSProcessor, text_column: str) -> dict:
    return processor.encode_text(batch[text_column])


def read_regions(store: FeatureStore, rows: np.ndarray, num_regions: int) -> dict[str, torch.Tensor]:
    """One store read for a batch of images, fitted to `num_regions` regions with their attention mask."""
    read = store.read(rows)
    arrays = {
        "features": read.features,
        "boxes": read.boxes,
        "object_ids": read.object_ids,
        "object_confidences": read.object_confidences,
        "attribute_ids": read.attribute_ids,
        "attribute_confidences": read.attribute_confidences,
    }
    fitted, mask = fit_regions(arrays, read.num_boxes, num_regions)
    regions = {name: torch.from_numpy(array) for name, array in fitted.items()}
    # float16 -> float32 is the largest cost of a batch; float32_tensor does it 4x faster than .float()
    regions["features"] = float32_tensor(fitted["features"])
    regions["visual_attention_mask"] = torch.from_numpy(mask)
    return regions


def describe_row(rows: Sequence[Mapping[str, Any]], position: int) -> str:
    """How error messages name a row: its position in the batch and, when it has one, its image id."""
    image_id = rows[position].get("image_id")
    return f"rows[{position}]" + ("" if image_id is None else f" (image_id {image_id!r})")


def row_field(rows: Sequence[Mapping[str, Any]], position: int, name: str) -> Any:
    try:
        return rows[position][name]
    except KeyError:
        raise KeyError(f"{describe_row(rows, position)}: field {name!r} is missing") from None


def batch_generator(
    seed: int, rows: Sequence[Mapping[str, Any]], call_seed: int | None = None
) -> torch.Generator:
    """The generator of a batch's random draws: seeded by `call_seed` when a call gives one, else by the
    collator's `seed` and every row's epoch and dataset index (fields `EPOCH_FIELD`, `INDEX_FIELD`, which
    `lxmert_s_msp.training.sampling.IndexedRows` adds). Nothing process-local (a call counter, a worker id)
    enters, so a resumed run, any number of DataLoader workers and every process of a data-parallel run draw
    exactly the batches of one uninterrupted process, and each epoch draws anew."""
    if call_seed is not None:
        return torch.Generator().manual_seed(call_seed)
    lacking = [
        position for position, row in enumerate(rows) if EPOCH_FIELD not in row or INDEX_FIELD not in row
    ]
    if lacking:
        raise KeyError(
            f"{describe_row(rows, lacking[0])}: fields {EPOCH_FIELD!r} and {INDEX_FIELD!r} are missing; a "
            "batch is seeded by its rows' epoch and dataset index "
            "(lxmert_s_msp.training.sampling.IndexedRows adds them), "
            "or by the seed passed to the call"
        )
    entropy = [seed, *(int(row[name]) for row in rows for name in (EPOCH_FIELD, INDEX_FIELD))]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> 1))


def store_rows(
    rows: Sequence[Mapping[str, Any]],
    store: FeatureStore,
    index_field: str = "image_index",
    id_field: str = "image_id",
    images_per_row: int | None = None,
) -> np.ndarray:
    """(B,) store rows of each row's `index_field`, or (B, n) when each row names `images_per_row` images.

    Each is checked to lie in the store and, when the row has `id_field`, to be that image there: a corpus
    built against another store points at the wrong images without failing anywhere else.
    """
    values = [row_field(rows, position, index_field) for position in range(len(rows))]
    if images_per_row is not None:
        for position, value in enumerate(values):
            if len(value) != images_per_row:
                raise ValueError(
                    f"{describe_row(rows, position)}: field {index_field!r} holds {len(value)} images, "
                    f"expected {images_per_row}"
                )
    index = np.asarray(values, dtype=np.int64).reshape(len(rows), -1)
    outside = (index < 0) | (index >= len(store))
    if outside.any():
        position = int(np.flatnonzero(outside.any(axis=1))[0])
        raise ValueError(
            f"{describe_row(rows, position)}: field {index_field!r} is {values[position]}, outside the "
            f"feature store {store.path} of {len(store)} images"
        )
    for position, row in enumerate(rows):
        if id_field not in row:
            continue
        ids = [row[id_field]] if images_per_row is None else list(row[id_field])
        stored = [store.image_ids[image] for image in index[position]]
        if stored != [str(image_id) for image_id in ids]:
            raise ValueError(
                f"{describe_row(rows, position)}: field {index_field!r} points at image(s) {stored} of "
                f"{store.path}, not at the row's {id_field} {ids}: the corpus was built against another store"
            )
    return index[:, 0] if images_per_row is None else index


def text_inputs(processor: LxmertSProcessor, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """The processor's text inputs of raw texts, as tensors."""
    return {name: torch.from_numpy(array) for name, array in processor.encode_text(texts).items()}


def visual_inputs(store: FeatureStore, rows: np.ndarray, num_regions: int) -> dict[str, torch.Tensor]:
    """The model's visual inputs of store `rows` (any shape), with `rows`' shape before the region axis."""
    regions = read_regions(store, rows.reshape(-1), num_regions)
    inputs = {
        "visual_feats": regions["features"],
        "visual_pos": regions["boxes"].float(),
        "visual_attention_mask": regions["visual_attention_mask"].long(),
    }
    return {name: value.view(*rows.shape, *value.shape[1:]) for name, value in inputs.items()}


class MSPCollator:
    """Collate corpus rows (`image_index` + `text`, or the columns of `tokenize_corpus`) for one MSP stage.

    Stages (MSP paper §3.1–3.3): token `["mlm", "mrfr", "moc", "ifrs"]`, phrase
    `["mlm", "mrfr", "moc", "titp"]`, sentence `["mlm", "mrfr", "moc", "itm_hs", "tits"]`. `itm` draws random
    negatives, `itm_hs` hard ones from `hard_negatives` (`lxmert_s_msp.data.hard_negatives.load_hard_negatives`; rows
    of -1 mean "none": such images get a random negative); a stage trains one of the two. Negatives come from
    `negative_images` (store rows; default: every store image): give the images of the stage's corpus, so that
    no held-out image of a downstream split is ever fed. `object_vocab` (the detector's class names, indexed
    by the store's `object_ids`) is needed by TITP/TITS; with `attribute_vocab` it also gives the class-name
    words that MLM chooses with `class_word_mlm_probability` when that is set (the phrase stage, §3.2).

    Each call draws from a generator seeded by `seed` and the rows' epochs and dataset indices
    (`batch_generator`), or by the `seed` passed to the call: the same seeds give identical batches.
    """

    def __init__(
        self,
        store: FeatureStore,
        processor: LxmertSProcessor,
        tasks: Iterable[str],
        object_vocab: Sequence[str] | None = None,
        attribute_vocab: Sequence[str] | None = None,
        hard_negatives: np.ndarray | None = None,
        negative_images: Sequence[int] | np.ndarray | None = None,
        seed: int = 0,
        mlm_probability: float = 0.15,
        class_word_mlm_probability: float | None = None,
        region_mask_probability: float = 0.15,
        triplet_shuffle_probability: float = 0.05,
        mismatch_probability: float = 0.5,
    ):
        self.tasks = list(tasks)
        unknown = [task for task in self.tasks if task not in TASK_PIECES]
        if unknown:
            raise ValueError(f"tasks: unknown {unknown}; known tasks are {list(TASK_PIECES)}")
        if {"itm", "itm_hs"} <= set(self.tasks):
            raise ValueError(
                "tasks: 'itm' (random negatives) and 'itm_hs' (hard negatives) train the same head; "
                "a stage lists one of them"
            )
        in_batch = [task for task in IN_BATCH_NEGATIVE_TASKS if task in self.tasks]
        mismatching = [task for task in ("itm", "itm_hs") if task in self.tasks]
        if in_batch and mismatching:
            raise ValueError(
                f"tasks: {in_batch} build their negatives in the batch from matched pairs, but {mismatching} "
                "mismatch rows here; train ITM as 'itm_vsc' in such a stage"
            )
        if {"titp", "tits", "wpg"} & set(self.tasks) and object_vocab is None:
            raise ValueError("object_vocab: TITP/TITS/WPG need the detector's class names, received None")
        if class_word_mlm_probability is not None and (object_vocab is None or "mlm" not in self.tasks):
            raise ValueError(
                "class_word_mlm_probability: prefers class-name words in MLM; it needs 'mlm' in tasks and "
                "object_vocab"
            )
        if "itm_hs" in self.tasks and hard_negatives is None:
            raise ValueError(
                f"hard_negatives: 'itm_hs' draws hard negatives, received None; load "
                f"{store.path / HARD_NEGATIVES_FILE} with lxmert_s_msp.data.hard_negatives.load_hard_negatives "
                f"(build it with `python -m lxmert_s_msp.data.hard_negatives {store.path}`), or train 'itm' "
                "(random negatives)"
            )
        if hard_negatives is not None:
            if "itm_hs" not in self.tasks:
                raise ValueError(
                    "hard_negatives: given, but 'itm_hs' (which draws them) is not in tasks; 'itm' draws "
                    "random negatives"
                )
            if hard_negatives.ndim != 2 or hard_negatives.shape[0] != len(store):
                raise ValueError(
                    f"hard_negatives: expected shape ({len(store)}, M), one row per store image, received "
                    f"{hard_negatives.shape}"
                )
        pool = np.arange(len(store)) if negative_images is None else np.unique(negative_images)
        if pool.size and (pool[0] < 0 or pool[-1] >= len(store)):
            raise ValueError(
                f"negative_images: rows outside the feature store {store.path} of {len(store)} images"
            )
        if {"itm", "itm_hs"} & set(self.tasks) and len(pool) < 2:
            raise ValueError(
                f"negative_images: ITM needs at least 2 images to draw a mismatch from, received {len(pool)} "
                f"(store {store.path})"
            )
        self.store = store
        self.processor = processor
        self.negative_pool = torch.from_numpy(pool.astype(np.int64))
        # A hard negative outside the pool (a held-out image) is dropped: its row draws among the rest.
        self.hard_negatives = (
            None if hard_negatives is None else np.where(np.isin(hard_negatives, pool), hard_negatives, -1)
        )
        self.seed = seed
        self.mlm_probability = mlm_probability
        self.class_word_mlm_probability = class_word_mlm_probability
        self.region_mask_probability = region_mask_probability
        self.triplet_shuffle_probability = triplet_shuffle_probability
        self.mismatch_probability = mismatch_probability
        tokenizer = processor.tokenizer
        self.vocab_size = len(tokenizer)
        self.special_ids = torch.tensor(sorted(tokenizer.all_special_ids))
        self.class_wordpieces = None if object_vocab is None else class_wordpieces(object_vocab, tokenizer)
        self.concept_ids = None
        if "wpg" in self.tasks:  # MVP's concepts are objects and attribute-object pairs: ground both words
            self.concept_ids = class_word_ids([*object_vocab, *(attribute_vocab or [])], tokenizer)
        self.class_word_ids = None
        if class_word_mlm_probability is not None:
            self.class_word_ids = class_word_ids([*object_vocab, *(attribute_vocab or [])], tokenizer)

    def __call__(self, rows: Sequence[Mapping[str, Any]], seed: int | None = None) -> dict[str, torch.Tensor]:
        generator = batch_generator(self.seed, rows, seed)
        image_index = self._image_index(rows)
        batch = self._text_inputs(rows)
        fed_index = image_index
        for task in ("itm", "itm_hs"):
            if task in self.tasks:
                fed_index, batch["itm_labels"] = mismatch_images(
                    image_index,
                    self.negative_pool,
                    generator,
                    self.hard_negatives if task == "itm_hs" else None,
                    self.mismatch_probability,
                )
        if "itm_vsc" in self.tasks:
            fed_index, batch["itm_labels"] = matched_pairs(image_index)
        if {"vsc", *IN_BATCH_NEGATIVE_TASKS} & set(self.tasks):
            identities = contrastive_targets(image_index, fed_index)
            batch["image_ids"] = identities["image_ids"]
            if "vsc" in self.tasks:
                batch["vsc_labels"] = identities["vsc_labels"]
        regions = read_regions(self.store, fed_index.numpy(), self.processor.num_regions)
        original_features, visual_mask = regions["features"], regions["visual_attention_mask"]
        # The region pieces work in place on this one copy; the originals stay intact as their targets.
        features = (
            original_features.clone() if {"ifrs", "mrfr", "moc"} & set(self.tasks) else original_features
        )

        for task in ("titp", "tits"):
            if task in self.tasks:
                batch[f"{task}_labels"] = self._topic_targets(batch, regions, rows, fed_index)
        if "ifrs" in self.tasks:
            batch["ifrs_mask"] = shuffle_triplets(
                features, visual_mask, generator, self.triplet_shuffle_probability
            )
            batch["ifrs_labels"] = original_features
        if "mrfr" in self.tasks or "moc" in self.tasks:
            batch["region_mask"] = mask_regions(
                features, visual_mask, generator, self.region_mask_probability
            )
        if "mrfr" in self.tasks:
            batch["mrfr_labels"] = original_features
        if "moc" in self.tasks:
            batch["moc_object_labels"] = regions["object_ids"]
            batch["moc_object_confidences"] = regions["object_confidences"]
            batch["moc_attribute_labels"] = regions["attribute_ids"]
            batch["moc_attribute_confidences"] = regions["attribute_confidences"]
        if "flm" in self.tasks:
            batch["flm_labels"] = flm_targets(batch["input_ids"], batch["attention_mask"], self.special_ids)
        if "wpg" in self.tasks:
            batch["wpg_concept_mask"] = concept_words(
                batch["input_ids"], batch["attention_mask"], self.concept_ids
            )
        if "mlm" in self.tasks:
            batch["input_ids"], batch["mlm_labels"] = mask_tokens(
                batch["input_ids"],
                batch["attention_mask"],
                mask_token_id=self.processor.tokenizer.mask_token_id,
                vocab_size=self.vocab_size,
                special_ids=self.special_ids,
                generator=generator,
                probability=self.mlm_probability,
                preferred_ids=self.class_word_ids,
                preferred_probability=self.class_word_mlm_probability,
            )
        batch["visual_feats"] = features
        batch["visual_pos"] = regions["boxes"]
        batch["visual_attention_mask"] = visual_mask.long()
        return batch

    def _image_index(self, rows: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        return torch.from_numpy(store_rows(rows, self.store))

    def _text_inputs(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack the columns of `tokenize_corpus` when rows have them, else tokenise `text` now."""
        if "input_ids" not in rows[0]:
            return text_inputs(
                self.processor, [row_field(rows, position, "text") for position in range(len(rows))]
            )
        inputs = {}
        for name in TEXT_INPUT_NAMES:
            column = [np.asarray(row_field(rows, position, name)) for position in range(len(rows))]
            lengths = {len(value) for value in column}
            if lengths != {self.processor.max_length}:
                raise ValueError(
                    f"rows: field {name!r} has lengths {sorted(lengths)}, expected the processor's "
                    f"max_length {self.processor.max_length}: tokenise the corpus with this processor"
                )
            inputs[name] = torch.from_numpy(np.stack(column).astype(np.int64))
        return inputs

    def _topic_targets(
        self,
        batch: Mapping[str, torch.Tensor],
        regions: Mapping[str, torch.Tensor],
        rows: Sequence[Mapping[str, Any]],
        fed_index: torch.Tensor,
    ) -> torch.Tensor:
        object_ids, visual_mask = regions["object_ids"], regions["visual_attention_mask"]
        unknown = visual_mask & ((object_ids < 0) | (object_ids >= len(self.class_wordpieces)))
        if unknown.any():
            position, region = (int(axis[0]) for axis in torch.nonzero(unknown, as_tuple=True))
            raise ValueError(
                f"{self.store.path}: image {self.store.image_ids[fed_index[position]]!r} (fed to "
                f"{describe_row(rows, position)}), region {region}: field 'object_ids' is "
                f"{int(object_ids[position, region])}, outside the {len(self.class_wordpieces)} names of "
                "object_vocab"
            )
        return topic_targets(
            batch["input_ids"],
            batch["attention_mask"],
            object_ids,
            visual_mask,
            self.class_wordpieces,
            self.vocab_size,
            self.special_ids,
        )


__all__ = [
    "EPOCH_FIELD",
    "INDEX_FIELD",
    "TASK_PIECES",
    "MSPCollator",
    "batch_generator",
    "count_truncated",
    "describe_row",
    "read_regions",
    "row_field",
    "store_rows",
    "text_inputs",
    "tokenize_corpus",
    "visual_inputs",
]
