"""Pre-training and downstream corpora as `datasets.Dataset`s whose rows point at the feature store.

Each builder takes the plain records of `lxmert_s_msp.data.readers` and a `FeatureStore`, and returns a
`Corpus`: the dataset (columns as in the shared contract, each row holding its image's store row in
`image_index`), how many records were dropped for a missing image or for a text with no word, and for
question answering the answer vocabulary. The phrase corpus keeps each image's phrases as a list:
`phrase_rows` packs them into texts of a stage's length when the stage starts, as the length is the stage's
setting. A record whose image is not in the store is an error naming the record, unless `drop_missing=True`;
then the count is logged and returned, never silent. A caption, question or statement with no word (empty,
or only whitespace) trains nothing but [CLS] [SEP] and scores as a query nothing matches: it is dropped,
counted and logged with the first such record. A question id or an answer listed twice, and a retrieval
image left with no caption, are errors naming them. Columns are assembled as Python lists and turned into
Arrow once (`Dataset.from_dict`), not appended row by row.

`save_corpus` saves one atomically (a temporary folder renamed into place: `save_to_disk` alone writes into
the target folder and can leave half a dataset behind). The command line that reads the public files and
builds one corpus is `python -m lxmert_s_msp.data.corpora` (`corpora.py`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import TypeVar

import numpy as np
from datasets import Dataset, Features, Value
from datasets import Sequence as ListFeature

from lxmert_s_msp.data.readers import (
    Caption,
    Flickr30kImage,
    Nlvr2Pair,
    Question,
    RegionPhrase,
    load_json,
)
from lxmert_s_msp.data.store import FeatureStore, atomic_write_text, files_digest, replace_folder
from lxmert_s_msp.data.verbs import contains_verb
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

logger = logging.getLogger(__name__)
RecordT = TypeVar("RecordT", Caption, Question, Flickr30kImage)
TextT = TypeVar("TextT")

ANSWERS_FILE = "answers.json"

TEXT_FEATURES = Features(
    {"image_id": Value("string"), "image_index": Value("int64"), "text": Value("string")}
)
CAPTION_FEATURES = Features({**TEXT_FEATURES, "source": Value("string")})
PHRASE_FEATURES = Features(
    {"image_id": Value("string"), "image_index": Value("int64"), "phrases": ListFeature(Value("string"))}
)
PHRASE_SEPARATOR = ", "
QA_FEATURES = Features(
    {
        "question_id": Value("string"),
        "image_id": Value("string"),
        "image_index": Value("int64"),
        "question": Value("string"),
        "answers": ListFeature(Value("string")),
        "scores": ListFeature(Value("float32")),
        "question_type": Value("string"),
        "answer_type": Value("string"),
    }
)
NLVR2_FEATURES = Features(
    {
        "identifier": Value("string"),
        "image_ids": ListFeature(Value("string"), length=2),
        "image_indices": ListFeature(Value("int64"), length=2),
        "sentence": Value("string"),
        "label": Value("int64"),
    }
)
FLICKR30K_FEATURES = Features(
    {
        "image_id": Value("string"),
        "image_index": Value("int64"),
        "captions": ListFeature(Value("string")),
        "split": Value("string"),
    }
)


@dataclass
class Corpus:
    dataset: Dataset
    dropped: int  # input records left out because their image is not in the store (drop_missing=True)
    answer_vocab: list[str] | None = None
    empty: int = 0  # texts left out because they have no word (a Flickr30k image's captions: each counts)


def first_repeat(values: Sequence[object]) -> tuple[int, int] | None:
    """The positions of the first value seen twice in `values` (the earlier, then the later), or None."""
    first: dict[object, int] = {}
    for position, value in enumerate(values):
        if value in first:
            return first[value], position
        first[value] = position
    return None


def check_answer_vocab(answers: Sequence[str], origin: str) -> None:
    """An answer vocabulary names each classifier output once: a repeat would leave one of its two ids
    untrained and never predicted."""
    if not answers:
        raise ValueError(f"{origin}: the answer vocabulary is empty")
    repeat = first_repeat(answers)
    if repeat is not None:
        raise ValueError(
            f"{origin}: answer vocabulary: {answers[repeat[0]]!r} is listed twice (entries {repeat[0]} and "
            f"{repeat[1]}): each answer is one output of the classifier"
        )


def _with_words(
    records: Iterable[TextT],
    text: Callable[[TextT], str],
    describe: Callable[[int, TextT], str],
    origin: str,
    unit: str,
) -> tuple[list[TextT], int]:
    """The records whose text has a word, and how many were dropped; the drop is logged, naming the first
    record dropped (`describe(i, record)` names record i)."""
    records = list(records)
    kept = [record for record in records if text(record).strip()]
    dropped = len(records) - len(kept)
    if dropped:
        first = next(index for index, record in enumerate(records) if not text(record).strip())
        logger.warning(
            "%s: dropped %d of %d %s with no word (the first: %s)",
            origin,
            dropped,
            len(records),
            unit,
            describe(first, records[first]),
        )
    return kept, dropped


def _lookup(store: FeatureStore, image_ids: Iterable[str]) -> np.ndarray:
    """Store row of each image id, -1 where the store lacks it."""
    return np.array(
        [store.index(image_id) if image_id in store else -1 for image_id in image_ids], dtype=np.int64
    )


def _check_missing(
    missing: np.ndarray,
    describe: Callable[[int, RecordT], str],
    store: FeatureStore,
    origin: str,
    drop_missing: bool,
    unit: str = "records",
) -> int:
    """Raise for the first record whose image is missing, or log and return how many are dropped.

    `describe(i)` names record i and its missing image; it is only called for the record reported.
    """
    count = int(missing.sum())
    if count and not drop_missing:
        raise KeyError(
            f"{origin}: {describe(int(np.flatnonzero(missing)[0]))} is not in the feature store {store.path} "
            f"({count} of {missing.size} {unit} miss an image; drop_missing=True / --drop-missing drops them)"
        )
    if count:
        logger.warning(
            "%s: dropped %d of %d %s whose image is not in the feature store %s",
            origin,
            count,
            missing.size,
            unit,
            store.path,
        )
    return count


def _locate(
    records: Sequence[RecordT],
    describe: Callable[[RecordT], str],
    store: FeatureStore,
    origin: str,
    drop_missing: bool,
) -> tuple[list[RecordT], np.ndarray, int]:
    """The records whose `image_id` is in the store, their images' store rows, and how many were dropped."""
    rows = _lookup(store, (record.image_id for record in records))
    dropped = _check_missing(rows < 0, lambda i: describe(records[i]), store, origin, drop_missing)
    keep = rows >= 0
    return list(compress(records, keep)), rows[keep], dropped


def check_rows_point_at_store(corpus: Dataset, store: FeatureStore, origin: str) -> None:
    """Every row's `image_index` is its `image_id`'s row in `store`: a corpus kept from an earlier store (one
    rebuilt from the same files in another order, say) would otherwise pair texts with the wrong images."""
    index = np.asarray(corpus["image_index"], dtype=np.int64)
    outside = (index < 0) | (index >= len(store))
    stored = np.asarray(store.image_ids, dtype=object)[np.where(outside, 0, index)]
    wrong = outside | (stored != np.asarray(corpus["image_id"], dtype=object))
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        found = "outside the store" if outside[row] else f"image {stored[row]!r} there"
        raise ValueError(
            f"{origin}: row {row}: field 'image_index' is {index[row]}, {found}, not the row's image_id "
            f"{corpus[row]['image_id']!r} ({int(wrong.sum())} of {len(index)} rows): the corpus was built "
            f"against another feature store than {store.path}; rebuild it with "
            f"`python -m lxmert_s_msp.data.corpora ... --store {store.path}`"
        )


def token_corpus(
    store: FeatureStore, object_vocab: Sequence[str], images: Iterable[str] | None = None
) -> Corpus:
    """Stage 1 (§3.1): per image, its detected object category names in object order, space-joined.

    Only the image's valid regions (`num_boxes`) count; multi-word names ("tennis racket") stay whole. The
    paper takes this stage's images from its caption data (0.12M pairs): `images` (image ids, e.g. the
    `image_id` column of a caption corpus) restricts the rows to them, as a shared store holds Visual Genome
    and downstream images too; ids the store lacks are left out.
    """
    vocab = np.asarray(object_vocab, dtype=object)
    if images is None:
        rows = np.arange(len(store))
    else:
        rows = np.sort(store.indices({image_id for image_id in images if image_id in store}))
    object_ids = np.asarray(store.object_ids[rows])
    num_boxes = np.asarray(store.num_boxes[rows])
    image_ids = [store.image_ids[row] for row in rows]
    valid = np.arange(object_ids.shape[1]) < num_boxes[:, None]
    bad = valid & ((object_ids < 0) | (object_ids >= len(vocab)))
    if bad.any():
        image, region = (int(axis[0]) for axis in np.nonzero(bad))
        raise ValueError(
            f"{store.path}: image {image_ids[image]!r} region {region}: field 'object_ids' is "
            f"{object_ids[image, region]}, outside the {len(vocab)}-class vocabulary"
        )
    empty = np.flatnonzero(num_boxes <= 0)
    if empty.size:
        raise ValueError(
            f"{store.path}: image {image_ids[empty[0]]!r}: field 'num_boxes' is {num_boxes[empty[0]]}, "
            f"so it has no object names ({empty.size} such images)"
        )
    names = vocab[np.where(valid, object_ids, 0)]
    texts = [" ".join(row[:count]) for row, count in zip(names, num_boxes, strict=True)]
    columns = {"image_id": image_ids, "image_index": rows, "text": texts}
    return Corpus(Dataset.from_dict(columns, features=TEXT_FEATURES), dropped=0)


def _clean_phrase(phrase: str) -> str:
    """VG phrases come with stray spaces and trailing full stops ("the man is wearing a hat. ")."""
    return " ".join(phrase.split()).strip(" .,;")


def phrase_corpus(
    records: Iterable[RegionPhrase],
    store: FeatureStore,
    *,
    drop_missing: bool = False,
    origin: str = "region descriptions",
) -> Corpus:
    """Stage 2 (§3.2): per image, its region phrases that contain no verb (`lxmert_s_msp.data.verbs`),
    de-duplicated case-insensitively, in first-seen order, as the list `phrases`.

    A stage turns them into texts with `phrase_rows`. Images all of whose phrases contain a verb (or are
    empty) get no row; those counts are logged. `dropped` counts the phrases of images missing from the store.
    """
    kept: dict[str, dict[str, str]] = {}  # image -> lower-cased phrase -> phrase, in first-seen order
    first_region: dict[str, str] = {}
    phrase_count: dict[str, int] = {}
    with_verb = empty = 0
    for record in records:
        phrases = kept.setdefault(record.image_id, {})
        first_region.setdefault(record.image_id, record.region_id)
        phrase_count[record.image_id] = phrase_count.get(record.image_id, 0) + 1
        phrase = _clean_phrase(record.phrase)
        if not phrase:
            empty += 1
        elif contains_verb(phrase):
            with_verb += 1
        else:
            phrases.setdefault(phrase.lower(), phrase)
    image_ids = list(kept)
    rows = _lookup(store, image_ids)
    _check_missing(
        rows < 0,
        lambda i: f"image {image_ids[i]!r} (region_id {first_region[image_ids[i]]})",
        store,
        origin,
        drop_missing,
        unit="images",
    )
    dropped = sum(phrase_count[image_id] for image_id, row in zip(image_ids, rows, strict=True) if row < 0)
    keep = (rows >= 0) & np.array([bool(phrases) for phrases in kept.values()], dtype=bool)
    logger.info(
        "%s: %d phrases: %d empty and %d with a verb left out, %d of images missing from the store; "
        "%d of %d images keep at least one phrase",
        origin,
        sum(phrase_count.values()),
        empty,
        with_verb,
        dropped,
        int(keep.sum()),
        len(image_ids),
    )
    columns = {
        "image_id": list(compress(image_ids, keep)),
        "image_index": rows[keep],
        "phrases": [list(phrases.values()) for phrases in compress(kept.values(), keep)],
    }
    return Corpus(Dataset.from_dict(columns, features=PHRASE_FEATURES), dropped=dropped)


def phrase_rows(images: Dataset, processor: LxmertSProcessor, name: str = "phrases") -> Dataset:
    """The phrase stage's pairs: each image's `phrases` (rows of `phrase_corpus`) packed, in order, into as
    few texts as fit the processor's `max_length`, joined with ", " (§3.2), a phrase never split.

    The paper has 0.34M phrase pairs from Visual Genome's ~108K images, so a pair is not "all of an image's
    phrases" (which a 20-token text would cut after a few): an image gives as many texts as its phrases fill.
    A phrase longer than a whole text stands alone and is cut (`count_truncated` reports it when the stage
    tokenises). Returns `image_id`, `image_index`, `text` rows; the count is logged.
    """
    tokenizer = processor.tokenizer
    budget = processor.max_length - tokenizer.num_special_tokens_to_add(pair=False)
    separator = len(tokenizer(PHRASE_SEPARATOR.strip(), add_special_tokens=False)["input_ids"])
    per_image = images["phrases"]
    flat = [phrase for phrases in per_image for phrase in phrases]
    lengths = iter(len(ids) for ids in tokenizer(flat, add_special_tokens=False)["input_ids"])
    columns: dict[str, list] = {"image_id": [], "image_index": [], "text": []}
    rows = zip(images["image_id"], images["image_index"], per_image, strict=True)
    for image_id, image_index, phrases in rows:
        texts: list[list[str]] = [[]]
        used = 0
        for phrase in phrases:
            cost = next(lengths) + (separator if texts[-1] else 0)
            if texts[-1] and used + cost > budget:
                texts.append([])
                cost -= separator
                used = 0
            texts[-1].append(phrase)
            used += cost
        columns["image_id"] += [image_id] * len(texts)
        columns["image_index"] += [image_index] * len(texts)
        columns["text"] += [PHRASE_SEPARATOR.join(text) for text in texts]
    logger.info(
        "%s: %d phrases of %d images packed into %d texts of at most %d tokens",
        name,
        len(flat),
        len(per_image),
        len(columns["text"]),
        processor.max_length,
    )
    return Dataset.from_dict(columns, features=TEXT_FEATURES)


def caption_corpus(
    records: Iterable[Caption], store: FeatureStore, *, drop_missing: bool = False, origin: str = "captions"
) -> Corpus:
    """Stage 3 (§3.3): one row per caption, with the caption's `source` ("mscoco", "vg", ...)."""
    records, empty = _with_words(
        records,
        lambda record: record.text,
        lambda i, record: f"record {i}, image {record.image_id!r}",
        origin,
        "captions",
    )
    kept, rows, dropped = _locate(
        records,
        lambda record: f"caption of image {record.image_id!r}: {record.text[:40]!r}",
        store,
        origin,
        drop_missing,
    )
    columns = {
        "image_id": [record.image_id for record in kept],
        "image_index": rows,
        "text": [record.text for record in kept],
        "source": [record.source for record in kept],
    }
    return Corpus(Dataset.from_dict(columns, features=CAPTION_FEATURES), dropped=dropped, empty=empty)


def qa_dataset(
    records: Iterable[Question],
    store: FeatureStore,
    answer_vocab: Sequence[str],
    *,
    drop_missing: bool = False,
    origin: str = "questions",
) -> Corpus:
    """VQA v2 or GQA: one row per question; answers outside `answer_vocab` are left out of a row's
    `answers`/`scores` (as in LXMERT's labels: the classifier cannot predict them, so no score is lost).
    """
    records = list(records)
    repeat = first_repeat([record.question_id for record in records])
    if repeat is not None:
        raise ValueError(
            f"{origin}: question_id {records[repeat[0]].question_id} is the id of records {repeat[0]} and "
            f"{repeat[1]}: each question must be listed once"
        )
    records, empty = _with_words(
        records,
        lambda record: record.question,
        lambda i, record: f"question_id {record.question_id}, image {record.image_id!r}",
        origin,
        "questions",
    )
    kept, rows, dropped = _locate(
        records,
        lambda record: f"question_id {record.question_id} (image {record.image_id!r})",
        store,
        origin,
        drop_missing,
    )
    check_answer_vocab(answer_vocab, origin)
    known = set(answer_vocab)
    labels = [
        [(a, s) for a, s in zip(record.answers, record.scores, strict=True) if a in known] for record in kept
    ]
    labelled = sum(bool(record.answers) for record in kept)
    unanswerable = sum(bool(record.answers) and not label for record, label in zip(kept, labels, strict=True))
    if labelled and unanswerable == labelled:
        raise ValueError(
            f"{origin}: none of its {labelled} answered questions has an answer in the {len(known)}-answer "
            "vocabulary: build validation and test corpora with the training corpus's vocabulary (--answers)"
        )
    if unanswerable:
        logger.info(
            "%s: %d of %d answered questions have no answer in the %d-answer vocabulary (they score 0)",
            origin,
            unanswerable,
            labelled,
            len(known),
        )
    columns = {
        "question_id": [record.question_id for record in kept],
        "image_id": [record.image_id for record in kept],
        "image_index": rows,
        "question": [record.question for record in kept],
        "answers": [[answer for answer, _ in label] for label in labels],
        "scores": [[score for _, score in label] for label in labels],
        "question_type": [record.question_type for record in kept],
        "answer_type": [record.answer_type for record in kept],
    }
    return Corpus(
        Dataset.from_dict(columns, features=QA_FEATURES),
        dropped=dropped,
        answer_vocab=list(answer_vocab),
        empty=empty,
    )


def nlvr2_dataset(
    records: Iterable[Nlvr2Pair], store: FeatureStore, *, drop_missing: bool = False, origin: str = "nlvr2"
) -> Corpus:
    """NLVR2: one row per (sentence, image pair); a record is missing if either image is."""
    records, empty = _with_words(
        records,
        lambda record: record.sentence,
        lambda i, record: f"identifier {record.identifier}",
        origin,
        "statements",
    )
    rows = _lookup(store, (image_id for record in records for image_id in record.image_ids)).reshape(-1, 2)

    def describe(i: int) -> str:
        absent = [image_id for image_id, row in zip(records[i].image_ids, rows[i], strict=True) if row < 0]
        return f"identifier {records[i].identifier} (image {absent[0]!r})"

    dropped = _check_missing((rows < 0).any(axis=1), describe, store, origin, drop_missing)
    keep = (rows >= 0).all(axis=1)
    kept = list(compress(records, keep))
    columns = {
        "identifier": [record.identifier for record in kept],
        "image_ids": [list(record.image_ids) for record in kept],
        "image_indices": rows[keep],
        "sentence": [record.sentence for record in kept],
        "label": [record.label for record in kept],
    }
    return Corpus(Dataset.from_dict(columns, features=NLVR2_FEATURES), dropped=dropped, empty=empty)


def flickr30k_dataset(
    images: Iterable[Flickr30kImage],
    store: FeatureStore,
    *,
    drop_missing: bool = False,
    origin: str = "flickr30k",
) -> Corpus:
    """Flickr30k retrieval: one row per image with its captions and Karpathy split; a split whose every
    image is missing from the store is an error (a retrieval run on it would have nothing to rank), and so is
    an image with no caption (text retrieval from it could only miss)."""
    images = list(images)
    empty = 0
    for index, image in enumerate(images):
        captions, dropped = _with_words(
            image.captions,
            lambda caption: caption,
            lambda i, caption, image=image: f"image {image.image_id!r}, caption {i}",
            origin,
            "captions",
        )
        if not captions:
            raise ValueError(
                f"{origin}: image {image.image_id!r} (split {image.split!r}) has no caption"
                + (f" with a word ({dropped} empty)" if dropped else "")
                + ": a retrieval image is scored against its captions; give it some or leave it out"
            )
        if dropped:
            images[index] = Flickr30kImage(image.image_id, captions, image.split)
            empty += dropped
    kept, rows, dropped = _locate(
        images, lambda image: f"image {image.image_id!r}", store, origin, drop_missing
    )
    emptied = sorted({image.split for image in images} - {image.split for image in kept})
    if emptied:
        raise ValueError(
            f"{origin}: every image of split {emptied[0]!r} is missing from the feature store {store.path}"
        )
    columns = {
        "image_id": [image.image_id for image in kept],
        "image_index": rows,
        "captions": [image.captions for image in kept],
        "split": [image.split for image in kept],
    }
    return Corpus(Dataset.from_dict(columns, features=FLICKR30K_FEATURES), dropped=dropped, empty=empty)


def save_corpus(corpus: Corpus, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save to `out` (with `answers.json` when the corpus has an answer vocabulary), atomically.

    The dataset is written to a temporary sibling folder that is renamed to `out` once complete, so an
    interrupted save never leaves a folder that `load_from_disk` would half-read.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if len(corpus.dataset) == 0:
        raise ValueError(
            f"{out}: the corpus has no rows ({corpus.dropped} records dropped); nothing is saved"
        )
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    corpus.dataset.save_to_disk(str(temporary))
    if corpus.answer_vocab is not None:
        atomic_write_text(temporary / ANSWERS_FILE, json.dumps(corpus.answer_vocab))
    replace_folder(temporary, out)
    return out


def corpus_digest(folder: Path) -> str:
    """The content of a saved corpus: its Arrow files (`state.json` holds a fingerprint that differs between
    two builds of the same rows, so it is left out)."""
    return files_digest(sorted(folder.glob("*.arrow")))


def load_answer_vocab(path: str | os.PathLike) -> list[str]:
    """An answer vocabulary: `answers.json` of a saved QA corpus, the folder holding it, or any JSON
    list of answers (LXMERT's `trainval_label2ans.json` has this format)."""
    path = Path(path)
    if path.is_dir():
        path = path / ANSWERS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such answer vocabulary")
    answers = load_json(path)
    if not isinstance(answers, list) or not all(isinstance(answer, str) for answer in answers):
        raise ValueError(f"{path}: expected a JSON list of answer strings")
    check_answer_vocab(answers, str(path))
    return answers
