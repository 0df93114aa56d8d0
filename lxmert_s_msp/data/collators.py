"""The MSP stage collator: corpus rows -> model inputs + the labels of the stage's tasks.

`MSPCollator` reads the rows' text inputs and images, then runs the collator piece of each of the stage's
tasks (`modeling_lxmert_s.PRETRAINING_TASKS`, whose entries pair each task's head with its piece, in the order
the pieces run) on one `PretrainingBatch`; the store is read once per batch, for the images the rows are fed.
Every piece draws from one `torch.Generator`, seeded by the collator's seed and each row's epoch and dataset
index (`batch_generator`), so a batch is fixed exactly by what it holds and when: the same in a resumed run,
in any DataLoader worker and on any process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from lxmert_s_msp.data.store import HARD_NEGATIVES_FILE, FeatureStore, float32_tensor
from modeling_lxmert_s import (
    PRETRAINING_TASKS,
    PieceSettings,
    PretrainingBatch,
    check_pretraining_tasks,
    tasks_need,
)
from modeling_lxmert_s.pretraining_pieces import (
    OPPOSITE_WORDS,
    SPATIAL_DIRECTIONS,
    SPATIAL_OPPOSITES,
    BindingWords,
    RegionWords,
    RelationSides,
)
from modeling_lxmert_s.processing_lxmert_s import TEXT_INPUT_NAMES, LxmertSProcessor, fit_regions

logger = logging.getLogger(__name__)

# The fields every training row carries besides its own (`lxmert_s_msp.training.sampling.IndexedRows`):
# the epoch and the row's index in the dataset, which seed its batch (`batch_generator`).
EPOCH_FIELD = "epoch"
INDEX_FIELD = "sample_index"


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


def class_wordpieces(class_names: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """(C, K) WordPiece ids of each detector class name, -1 padded: the image side of the topic (§3.2).

    A Visual Genome vocabulary line may list synonyms ("man,men"); the first names the class, as in LXMERT.
    Special tokens ([UNK] for an unknown character) are left out: they carry no topic.
    """
    names = [name.split(",")[0].strip() for name in class_names]
    encoded = tokenizer(names, add_special_tokens=False, padding=True, return_tensors="pt")
    ids = encoded["input_ids"]
    keep = encoded["attention_mask"].bool() & ~torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    return torch.where(keep, ids, -1)


def class_word_ids(class_names: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Ids of the detector class names (every synonym) that are one word of one WordPiece: the "attribute or
    category information" the phrase stage's MLM prefers (§3.2) and the concepts WPG grounds. The words of a
    multi-word name are left out: split, Visual Genome's names give "in" (in air), "and" (black and white),
    "for" (for sale), "one" (one way), "up", "off", which are no category. A word split into several pieces is
    left out too, as its pieces ("##et") also occur inside unrelated words; on Visual Genome's 1,600 object
    and 400 attribute names, 1,332 of the 1,941 distinct names are one word of one piece (docs/benchmarks.md,
    "Text lengths")."""
    words = sorted({synonym.strip() for name in class_names for synonym in name.split(",")} - {""})
    words = [word for word in words if len(word.split()) == 1]
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    return torch.tensor(sorted({ids[0] for ids in encoded if len(ids) == 1 and ids[0] not in special}))


def relation_word_ids(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Ids of the spatial relation words ("left", "above", "behind", ...) that are one known word piece."""
    return class_word_ids(list(SPATIAL_OPPOSITES), tokenizer)


def _one_known_piece(tokenizer: PreTrainedTokenizerBase, word: str) -> int | None:
    """The id of `word` when it is one word piece the vocabulary knows, else None."""
    pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
    return pieces[0] if len(pieces) == 1 and pieces[0] != tokenizer.unk_token_id else None


def relation_sides(tokenizer: PreTrainedTokenizerBase, min_confidence: float) -> RelationSides:
    """RPT's side targets: the image direction of each spatial relation word of `SPATIAL_DIRECTIONS` that is
    one known word piece (zeros for every other id), for regions detected with `min_confidence`."""
    table = torch.zeros(len(tokenizer), 2)
    for word, direction in SPATIAL_DIRECTIONS.items():
        if (piece := _one_known_piece(tokenizer, word)) is not None:
            table[piece] = torch.tensor(direction)
    return RelationSides(table, min_confidence)


def binding_words(
    object_vocab: Sequence[str], attribute_vocab: Sequence[str], tokenizer: PreTrainedTokenizerBase
) -> BindingWords:
    """What binding negatives exchange: the one-piece words of the object and attribute names, and the
    relation and number words of `OPPOSITE_WORDS` that are one piece each, with theirs."""
    return BindingWords(
        attributes=class_word_ids(attribute_vocab, tokenizer),
        objects=class_word_ids(object_vocab, tokenizer),
        opposites=opposite_ids(OPPOSITE_WORDS, tokenizer),
    )


def opposite_ids(opposites: Mapping[str, str], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """(vocabulary,) the id of each word's opposite (`opposites`: word -> its opposite), -1 for every other
    id and wherever either word is not one known word piece."""
    table = torch.full((len(tokenizer),), -1, dtype=torch.long)
    for word, other in opposites.items():
        piece, other_piece = _one_known_piece(tokenizer, word), _one_known_piece(tokenizer, other)
        if piece is not None and other_piece is not None:
            table[piece] = other_piece
    return table


def region_words(
    object_vocab: Sequence[str], attribute_vocab: Sequence[str], tokenizer: PreTrainedTokenizerBase
) -> RegionWords:
    """What region binding negatives read: each object and attribute class's name (its first synonym) as one
    token id, -1 where it is more than one word piece (a caption cannot be checked for it)."""

    def one_piece(names: Sequence[str]) -> torch.Tensor:
        pieces = class_wordpieces(names, tokenizer)
        single = pieces[:, 1] < 0 if pieces.shape[1] > 1 else torch.ones(len(pieces), dtype=torch.bool)
        return torch.where(single, pieces[:, 0], -1)

    return RegionWords(objects=one_piece(object_vocab), attributes=one_piece(attribute_vocab))


class MSPCollator:
    """Collate corpus rows (`image_index` + `text`, or the columns of `tokenize_corpus`) for one MSP stage.

    Stages (MSP paper §3.1–3.3): token `["mlm", "mrfr", "moc", "ifrs"]`, phrase `["mlm", "mrfr", "moc",
    "titp"]`, sentence `["mlm", "mrfr", "moc", "itm_hs", "tits"]`. `itm` draws random negatives, `itm_hs` hard
    ones from `hard_negatives` (`lxmert_s_msp.data.hard_negatives.load_hard_negatives`; rows of -1 mean
    "none": such images get a random negative); a stage trains one of the two. Negatives come from
    `negative_images` (store rows; default: every store image): give the images of the stage's corpus, so that
    no held-out image of a downstream split is ever fed. `object_vocab` (the detector's class names, indexed
    by the store's `object_ids`) is needed by TITP/TITS and WPG; with `attribute_vocab` it also gives the
    class-name words that WPG grounds and that MLM chooses with `class_word_mlm_probability` when that is set
    (the phrase stage, §3.2); MLM chooses the spatial relation words with `relation_word_mlm_probability`
    when that is set, and hides a relation's subject whole with `relation_subject_mlm_probability` (which
    needs `object_vocab`: the subject is the run of object and attribute words before the relation word).
    With `relation_side_confidence`, RPT points at every region detected with at least that confidence on its
    relation word's side of its object (`relation_pointing_piece`), not at its subject's regions only.

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
        relation_word_mlm_probability: float | None = None,
        relation_subject_mlm_probability: float | None = None,
        region_mask_probability: float = 0.15,
        triplet_shuffle_probability: float = 0.05,
        mismatch_probability: float = 0.5,
        binding_negatives: bool = False,
        region_negatives: bool = False,
        relation_side_confidence: float | None = None,
    ):
        self.tasks = list(tasks)
        check_pretraining_tasks(self.tasks, name="tasks")
        if tasks_need(self.tasks, "object_vocab") and object_vocab is None:
            needing = [task for task in self.tasks if "object_vocab" in PRETRAINING_TASKS[task].needs]
            raise ValueError(f"object_vocab: {needing} need the detector's class names, received None")
        negatives = {"binding_negatives": binding_negatives, "region_negatives": region_negatives}
        for name, wanted in negatives.items():
            if wanted and ("itm_vsc" not in self.tasks or object_vocab is None or attribute_vocab is None):
                raise ValueError(
                    f"{name}: ITM_VSC scores them beside its mined negatives; they need 'itm_vsc' in tasks "
                    "and object_vocab and attribute_vocab (the words they change)"
                )
        if class_word_mlm_probability is not None and (object_vocab is None or "mlm" not in self.tasks):
            raise ValueError(
                "class_word_mlm_probability: prefers class-name words in MLM; it needs 'mlm' in tasks and "
                "object_vocab"
            )
        if relation_word_mlm_probability is not None and "mlm" not in self.tasks:
            raise ValueError(
                "relation_word_mlm_probability: prefers relation words in MLM; it needs 'mlm' in tasks"
            )
        if relation_subject_mlm_probability is not None and (object_vocab is None or "mlm" not in self.tasks):
            raise ValueError(
                "relation_subject_mlm_probability: hides the object and attribute words before a relation "
                "word in MLM; it needs 'mlm' in tasks and object_vocab"
            )
        if relation_side_confidence is not None and "rpt" not in self.tasks:
            raise ValueError("relation_side_confidence: sets RPT's targets; it needs 'rpt' in tasks")
        hard_negatives = self._checked_hard_negatives(hard_negatives, store)
        pool = np.arange(len(store)) if negative_images is None else np.unique(negative_images)
        if pool.size and (pool[0] < 0 or pool[-1] >= len(store)):
            raise ValueError(
                f"negative_images: rows outside the feature store {store.path} of {len(store)} images"
            )
        mismatching = [task for task in self.tasks if PRETRAINING_TASKS[task].pairs == "mismatched"]
        if mismatching and len(pool) < 2:
            raise ValueError(
                f"negative_images: {mismatching} need at least 2 images to draw a mismatch from, received "
                f"{len(pool)} (store {store.path})"
            )
        self.store = store
        self.processor = processor
        self.negative_pool = torch.from_numpy(pool.astype(np.int64))
        # A hard negative outside the pool (a held-out image) is dropped: its row draws among the rest.
        self.hard_negatives = (
            None if hard_negatives is None else np.where(np.isin(hard_negatives, pool), hard_negatives, -1)
        )
        self.seed = seed
        tokenizer = processor.tokenizer
        class_names = None if object_vocab is None else [*object_vocab, *(attribute_vocab or [])]
        self.settings = PieceSettings(
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            special_ids=torch.tensor(sorted(tokenizer.all_special_ids)),
            mlm_probability=mlm_probability,
            class_word_mlm_probability=class_word_mlm_probability,
            relation_word_ids=relation_word_ids(tokenizer),
            relation_word_mlm_probability=relation_word_mlm_probability,
            relation_subject_mlm_probability=relation_subject_mlm_probability,
            relation_sides=None
            if relation_side_confidence is None
            else relation_sides(tokenizer, relation_side_confidence),
            region_mask_probability=region_mask_probability,
            triplet_shuffle_probability=triplet_shuffle_probability,
            mismatch_probability=mismatch_probability,
            negative_pool=self.negative_pool,
            hard_negatives=self.hard_negatives,
            class_wordpieces=None if object_vocab is None else class_wordpieces(object_vocab, tokenizer),
            class_word_ids=None if class_names is None else class_word_ids(class_names, tokenizer),
            binding_words=binding_words(object_vocab, attribute_vocab, tokenizer)
            if binding_negatives
            else None,
            region_words=region_words(object_vocab, attribute_vocab, tokenizer) if region_negatives else None,
        )

    def _checked_hard_negatives(
        self, hard_negatives: np.ndarray | None, store: FeatureStore
    ) -> np.ndarray | None:
        needed = tasks_need(self.tasks, "hard_negatives")
        if needed and hard_negatives is None:
            raise ValueError(
                f"hard_negatives: 'itm_hs' draws hard negatives, received None; load "
                f"{store.path / HARD_NEGATIVES_FILE} with "
                "lxmert_s_msp.data.hard_negatives.load_hard_negatives "
                f"(build it with `python -m lxmert_s_msp.data.hard_negatives {store.path}`), or train 'itm' "
                "(random negatives)"
            )
        if hard_negatives is None:
            return None
        if not needed:
            raise ValueError(
                "hard_negatives: given, but 'itm_hs' (which draws them) is not in tasks; 'itm' draws "
                "random negatives"
            )
        if hard_negatives.ndim != 2 or hard_negatives.shape[0] != len(store):
            raise ValueError(
                f"hard_negatives: expected shape ({len(store)}, M), one row per store image, received "
                f"{hard_negatives.shape}"
            )
        return hard_negatives

    def __call__(self, rows: Sequence[Mapping[str, Any]], seed: int | None = None) -> dict[str, torch.Tensor]:
        batch = PretrainingBatch(
            inputs=self._text_inputs(rows),
            image_index=torch.from_numpy(store_rows(rows, self.store)),
            generator=batch_generator(self.seed, rows, seed),
            settings=self.settings,
            read_regions=lambda fed_index: read_regions(
                self.store, fed_index.numpy(), self.processor.num_regions
            ),
            describe_region=lambda row, region: (
                f"{self.store.path}: image {self.store.image_ids[int(batch.fed_index[row])]!r} (fed to "
                f"{describe_row(rows, row)}), region {region}"
            ),
        )
        for task in PRETRAINING_TASKS:
            if task in self.tasks:
                PRETRAINING_TASKS[task].piece(batch)
        return batch.model_inputs()

    def describe_negatives(self) -> str | None:
        """Where the stage's ITM negatives come from, in words (None without an ITM task): changing them
        changes what the stage learns, so a run says which it uses."""
        for task in self.tasks:
            negatives = PRETRAINING_TASKS[task].negatives
            if negatives is not None:
                without = (
                    0 if self.hard_negatives is None else int((self.hard_negatives < 0).all(axis=1).sum())
                )
                return negatives.format(
                    images=len(self.negative_pool),
                    hard_negatives=self.store.path / HARD_NEGATIVES_FILE,
                    without=without,
                )
        return None

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


__all__ = [
    "EPOCH_FIELD",
    "INDEX_FIELD",
    "MSPCollator",
    "batch_generator",
    "class_word_ids",
    "class_wordpieces",
    "count_truncated",
    "describe_row",
    "opposite_ids",
    "read_regions",
    "row_field",
    "store_rows",
    "text_inputs",
    "tokenize_corpus",
    "visual_inputs",
]
