"""One reader per public format, each returning plain records.

Training code never branches on a format: every annotation reader turns its file into the same few record
types (`RegionPhrase`, `Caption`, `Question`, `Nlvr2Pair`, `Flickr30kImage`) whose `image_id` follows the
feature store's convention (LXMERT's `*_obj36.tsv` `img_id`), and both region-feature readers into
`RegionRecord`s (the formats: "Region features" below). Malformed input stops the read with an error naming
the file, the record (index and, when it has one, its id) and the field, because a corpus silently missing
records is far harder to notice than a crash; so does a record listed twice (a question id, a Karpathy image),
which one of the two would otherwise silently replace or double. Text files are UTF-8; a byte-order mark
(Notepad's, Excel's) is read as one, not as the start of the first record.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class RegionPhrase:
    image_id: str
    region_id: str
    phrase: str


@dataclass(frozen=True, slots=True)
class Caption:
    image_id: str
    text: str
    source: str


# The breakdowns of VQA questions a record may carry (`Question`), in the official evaluation's order.
QUESTION_TYPE_FIELDS = ("question_type", "answer_type")


@dataclass(frozen=True, slots=True)
class Question:
    """A VQA / GQA question with soft answer scores (empty for unlabelled test sets).

    `answer` is the single ground-truth answer used to count answers for the vocabulary: VQA's
    `multiple_choice_answer`, or the best-scored label of LXMERT's json; None when unlabelled.
    `question_type` and `answer_type`: VQA's two breakdowns, which its official evaluation reports accuracy by
    (its 65 question prefixes, "what color is the"; yes/no, number, other); the synthetic world's question
    types (exist, count, color, relation) in the first. None where the source has none (GQA, test sets).
    """

    question_id: str
    image_id: str
    question: str
    answers: list[str]
    scores: list[float]
    answer: str | None
    question_type: str | None = None
    answer_type: str | None = None


@dataclass(frozen=True, slots=True)
class Nlvr2Pair:
    identifier: str
    image_ids: tuple[str, str]
    sentence: str
    label: int


@dataclass(frozen=True, slots=True)
class Flickr30kImage:
    image_id: str
    captions: list[str]
    split: str


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file without its byte-order mark, if any; a byte that is not UTF-8 is an error naming the
    file, line and byte offset."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{path}: line {line}, byte offset {error.start}: byte {data[error.start : error.start + 1]!r} "
            "is not UTF-8 (the file must be UTF-8 encoded)"
        ) from None


def load_json(path: str | os.PathLike) -> Any:
    """A UTF-8 JSON file; invalid bytes or JSON are errors naming the file and the position."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None


def _field(
    record: Any, name: str, kind: type | tuple[type, ...], where: str, *, required: bool = True
) -> Any:
    """`record[name]` checked to be of `kind`; `where` names the file and the record in errors.

    bool is rejected where a number is expected (JSON `true` would otherwise pass as the int 1).
    """
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if name not in record:
        if required:
            raise KeyError(f"{where}: field '{name}' is missing")
        return None
    value = record[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise ValueError(
            f"{where}: field '{name}' must be {expected}, got {type(value).__name__} {value!r:.60}"
        )
    return value


def _refuse_repeat(first_of: dict[Any, str], key: Any, where: str, record: str, what: str) -> None:
    """Note `record` (whose key is `key`) unless an earlier record has the same key: then an error naming both
    (`where` names the later one), as one of the two would silently replace or double the other."""
    first = first_of.setdefault(key, record)
    if first != record:
        raise ValueError(f"{where}: {what} {first} again: each must be listed once")


def _top_level_list(data: Any, path: str | os.PathLike, key: str | None = None) -> list:
    if key is not None:
        data = _field(data, key, list, str(path))
    elif not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _clean(text: str) -> str:
    """Collapse runs of whitespace (captions carry trailing newlines and double spaces)."""
    return " ".join(text.split())


def read_class_vocab(path: str | os.PathLike) -> list[str]:
    """Visual Genome `objects_vocab.txt` / `attributes_vocab.txt`: line i names class i.

    A line may list comma-separated synonyms ("tennis racket,tennis racquet"); the first is the name,
    as bottom-up-attention's demo does. Class names may be several words and stay so.
    """
    names = []
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        name = line.split(",")[0].strip()
        if not name:
            raise ValueError(f"{path}: line {line_number}: field 'class name' is empty")
        names.append(name)
    return names


def read_vg_region_descriptions(path: str | os.PathLike) -> list[RegionPhrase]:
    """Visual Genome `region_descriptions.json`: `[{"id": image_id, "regions": [{"region_id",
    "image_id", "phrase", "x", "y", "width", "height"}, ...]}, ...]`.

    Some dumps name the image `image_id` instead of `id` at the top level; both are accepted. Boxes are
    not read: MSP pairs the phrases with the detector's regions, not with VG's.
    """
    records = []
    for index, image in enumerate(_top_level_list(load_json(path), path)):
        where = f"{path}: record {index}"
        image_key = "id" if isinstance(image, dict) and "id" in image else "image_id"
        image_id = str(_field(image, image_key, int, where))
        where = f"{path}: record {index} (image {image_id})"
        for position, region in enumerate(_field(image, "regions", list, where)):
            region_where = f"{where} region {position}"
            region_id = str(_field(region, "region_id", int, region_where))
            region_where = f"{where} region {position} (region_id {region_id})"
            region_image = _field(region, "image_id", int, region_where, required=False)
            if region_image is not None and str(region_image) != image_id:
                raise ValueError(
                    f"{region_where}: field 'image_id' is {region_image}, the record's image is {image_id}"
                )
            records.append(RegionPhrase(image_id, region_id, _field(region, "phrase", str, region_where)))
    return records


def read_coco_captions(path: str | os.PathLike) -> list[Caption]:
    """COCO `captions_{train,val}2014.json`, one `Caption` per annotation, source "mscoco".

    The image id is the image's `file_name` without its extension ("COCO_train2014_000000057870"),
    the `img_id` convention of LXMERT's `mscoco_*_obj36.tsv` features; the numeric COCO id only
    links an annotation to its image.
    """
    data = load_json(path)
    file_stem = {}
    for index, image in enumerate(_top_level_list(data, path, "images")):
        where = f"{path}: images[{index}]"
        coco_id = _field(image, "id", int, where)
        file_stem[coco_id] = Path(_field(image, "file_name", str, f"{where} (id {coco_id})")).stem
    captions = []
    for index, annotation in enumerate(_top_level_list(data, path, "annotations")):
        where = f"{path}: annotations[{index}]"
        where = f"{where} (id {_field(annotation, 'id', int, where)})"
        coco_id = _field(annotation, "image_id", int, where)
        if coco_id not in file_stem:
            raise ValueError(f"{where}: field 'image_id' {coco_id} names no entry of 'images'")
        captions.append(
            Caption(file_stem[coco_id], _clean(_field(annotation, "caption", str, where)), "mscoco")
        )
    return captions


def read_lxmert_pretrain_json(path: str | os.PathLike, sources: Sequence[str]) -> list[Caption]:
    """LXMERT's pre-training json (`mscoco_train.json`, `vgnococo.json`, ...): a list of
    `{"img_id", "labelf": {...}, "sentf": {source: [sentences]}}`; keeps the sentences of `sources`
    (e.g. "mscoco", "vg"), in file order. A source no record has is an error listing those present.
    """
    records = _top_level_list(load_json(path), path)
    sentences_of = []
    available: set[str] = set()
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        image_id = _field(record, "img_id", str, where)
        where = f"{path}: record {index} (img_id {image_id})"
        sentf = _field(record, "sentf", dict, where)
        for source in sentf:
            sentences = _field(sentf, source, list, f"{where} field 'sentf'")
            if not all(isinstance(sentence, str) for sentence in sentences):
                raise ValueError(f"{where}: field 'sentf'[{source!r}] must be a list of strings")
        available.update(sentf)
        sentences_of.append((image_id, sentf))
    unknown = [source for source in sources if source not in available]
    if unknown:
        raise ValueError(f"{path}: unknown sources {unknown}; the file has {sorted(available)}")
    return [
        Caption(image_id, _clean(sentence), source)
        for image_id, sentf in sentences_of
        for source in sources
        for sentence in sentf.get(source, [])
    ]


def normalize_answer(answer: str) -> str:
    """Lower-case, strip and collapse whitespace, as LXMERT's answer lookup does.

    The official VQA evaluation also removes punctuation and articles and maps number words to digits;
    that is not done here, so e.g. "two" and "2" stay different answers, as they do in LXMERT's labels.
    """
    return " ".join(answer.lower().split())


def vqa_soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """Official VQA accuracy of each distinct answer among the annotators' `answers`.

    The official metric averages, over the leave-one-out subsets of the m annotators, min(#matches/3, 1).
    For an answer given n times, n subsets lose one of its matches and m - n keep all of them, so the
    average is (n * min((n - 1) / 3, 1) + (m - n) * min(n / 3, 1)) / m: for m = 10, n = 1, 2, 3, >= 4
    give 0.3, 0.6, 0.9, 1.0 (the values of LXMERT's labels).
    """
    total = len(answers)
    return {
        answer: (count * min((count - 1) / 3, 1.0) + (total - count) * min(count / 3, 1.0)) / total
        for answer, count in Counter(answers).items()
    }


def coco_image_id(image_id: int, coco_split: str) -> str:
    """LXMERT's feature id of a COCO image: `COCO_{coco_split}_{id:012d}`, e.g. coco_split "val2014"."""
    return f"COCO_{coco_split}_{image_id:012d}"


def read_vqa_official(
    questions_path: str | os.PathLike, annotations_path: str | os.PathLike | None, coco_split: str
) -> list[Question]:
    """VQA v2 official `v2_OpenEnded_mscoco_*_questions.json` + `v2_mscoco_*_annotations.json`.

    `coco_split` names the COCO image folder ("train2014", "val2014", "test2015") because the image ids
    are mapped to LXMERT's feature ids (`coco_image_id`). Answers are normalised (`normalize_answer`) and
    scored by `vqa_soft_scores`; `answer_confidence` is ignored, as the official metric ignores it.
    Without `annotations_path` (the test sets) the questions carry no answers.
    """
    questions = []
    asked: dict[int, str] = {}
    for index, question in enumerate(_top_level_list(load_json(questions_path), questions_path, "questions")):
        where = f"{questions_path}: questions[{index}]"
        question_id = _field(question, "question_id", int, where)
        where = f"{where} (question_id {question_id})"
        _refuse_repeat(asked, question_id, where, f"questions[{index}]", "the question_id of")
        questions.append(
            (question_id, _field(question, "image_id", int, where), _field(question, "question", str, where))
        )
    annotation_of = {}
    annotated: dict[int, str] = {}
    if annotations_path is not None:
        for index, annotation in enumerate(
            _top_level_list(load_json(annotations_path), annotations_path, "annotations")
        ):
            where = f"{annotations_path}: annotations[{index}]"
            question_id = _field(annotation, "question_id", int, where)
            where = f"{where} (question_id {question_id})"
            _refuse_repeat(annotated, question_id, where, f"annotations[{index}]", "the question_id of")
            image_id = _field(annotation, "image_id", int, where)
            given = []
            for position, answer in enumerate(_field(annotation, "answers", list, where)):
                given.append(_field(answer, "answer", str, f"{where} answers[{position}]"))
            if not given:
                raise ValueError(f"{where}: field 'answers' is empty")
            majority = normalize_answer(_field(annotation, "multiple_choice_answer", str, where))
            types = tuple(
                _field(annotation, name, str, where, required=False) for name in QUESTION_TYPE_FIELDS
            )
            annotation_of[question_id] = (
                image_id,
                [normalize_answer(answer) for answer in given],
                majority,
                types,
            )
    records = []
    for question_id, image_id, text in questions:
        answers: list[str] = []
        scores: list[float] = []
        majority, types = None, (None, None)
        if annotations_path is not None:
            if question_id not in annotation_of:
                raise KeyError(
                    f"{annotations_path}: no annotation for question_id {question_id} of {questions_path}"
                )
            annotated_image, given, majority, types = annotation_of[question_id]
            if annotated_image != image_id:
                raise ValueError(
                    f"{annotations_path}: question_id {question_id}: field 'image_id' is {annotated_image}, "
                    f"{questions_path} says {image_id}"
                )
            soft = vqa_soft_scores(given)
            answers, scores = list(soft), list(soft.values())
        records.append(
            Question(
                str(question_id), coco_image_id(image_id, coco_split), text, answers, scores, majority, *types
            )
        )
    return records


def read_lxmert_qa_json(path: str | os.PathLike) -> list[Question]:
    """LXMERT's VQA and GQA json (`data/vqa/*.json`, `data/gqa/*.json`): a list of `{"img_id",
    "label": {answer: score}, "question_id", "sent"}` (VQA adds `question_type` and `answer_type`, which
    evaluation reports accuracy by; GQA's question ids are strings). Test sets have no `label`.
    """
    records = []
    asked: dict[str, str] = {}
    for index, record in enumerate(_top_level_list(load_json(path), path)):
        where = f"{path}: record {index}"
        question_id = _field(record, "question_id", (int, str), where)
        where = f"{where} (question_id {question_id})"
        _refuse_repeat(asked, str(question_id), where, f"record {index}", "the question_id of")
        label = _field(record, "label", dict, where, required=False) or {}
        soft: dict[str, float] = {}
        for answer, score in label.items():
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
                raise ValueError(
                    f"{where}: field 'label'[{answer!r}] must be a score in [0, 1], got {score!r}"
                )
            if normalize_answer(answer) in soft:
                raise ValueError(f"{where}: field 'label' holds {answer!r} twice after normalisation")
            soft[normalize_answer(answer)] = float(score)
        best = max(soft, key=soft.__getitem__) if soft else None
        image_id = _field(record, "img_id", str, where)
        text = _field(record, "sent", str, where)
        types = (_field(record, name, str, where, required=False) for name in QUESTION_TYPE_FIELDS)
        records.append(
            Question(str(question_id), image_id, text, list(soft), list(soft.values()), best, *types)
        )
    return records


def read_lxmert_nlvr2_json(path: str | os.PathLike) -> list[Nlvr2Pair]:
    """LXMERT's `data/nlvr2/*.json`: a list of `{"identifier", "img0", "img1", "label", "sent", "uid"}`
    with `label` 1 (the sentence is true of the image pair) or 0.
    """
    records = []
    for index, record in enumerate(_top_level_list(load_json(path), path)):
        where = f"{path}: record {index}"
        identifier = _field(record, "identifier", str, where)
        where = f"{where} (identifier {identifier})"
        label = _field(record, "label", int, where)
        if label not in (0, 1):
            raise ValueError(f"{where}: field 'label' must be 0 or 1, got {label}")
        image_ids = (_field(record, "img0", str, where), _field(record, "img1", str, where))
        records.append(Nlvr2Pair(identifier, image_ids, _field(record, "sent", str, where), label))
    return records


KARPATHY_SPLITS = ("train", "restval", "val", "test")


def read_flickr30k_karpathy(path: str | os.PathLike) -> list[Flickr30kImage]:
    """Karpathy's `dataset_flickr30k.json`: `{"images": [{"filename", "imgid", "split", "sentences":
    [{"raw", "tokens", ...}], "sentids"}]}`. The image id is the file name without its extension
    ("1000092795"), the `img_id` of LXMERT-style Flickr30k features; captions are the `raw` texts.
    """
    records = []
    listed: dict[str, str] = {}
    for index, image in enumerate(_top_level_list(load_json(path), path, "images")):
        where = f"{path}: images[{index}]"
        filename = _field(image, "filename", str, where)
        where = f"{where} (filename {filename})"
        image_id = Path(filename).stem
        _refuse_repeat(listed, image_id, where, f"images[{index}]", f"the same image ({image_id!r}) as")
        captions = [
            _clean(_field(sentence, "raw", str, f"{where} sentences[{position}]"))
            for position, sentence in enumerate(_field(image, "sentences", list, where))
        ]
        split = _field(image, "split", str, where)
        if split not in KARPATHY_SPLITS and split.strip().lower() in KARPATHY_SPLITS:
            raise ValueError(
                f"{where}: field 'split' is {split!r}, write it {split.strip().lower()!r} (a split is "
                f"selected by its exact name; Karpathy's are {', '.join(KARPATHY_SPLITS)})"
            )
        records.append(Flickr30kImage(image_id, captions, split))
    return records


def build_answer_vocab(records: Iterable[Question], min_count: int = 9) -> list[str]:
    """Answers that are the ground-truth `answer` of at least `min_count` questions.

    LXMERT's vocabulary (from bottom-up-attention-vqa) keeps the normalised `multiple_choice_answer`s
    seen in >= 9 train + val questions: 3,129 answers on VQA v2. Ordered by count, then alphabetically,
    so the same records always give the same label ids.
    """
    counts = Counter(record.answer for record in records if record.answer is not None)
    kept = [answer for answer, count in counts.items() if count >= min_count]
    return sorted(kept, key=lambda answer: (-counts[answer], answer))


# ---- Region features ----------------------------------------------------------------------------------
#
# Two public formats of pre-extracted region features become the same `RegionRecord`:
#
# * `*_obj36.tsv` (bottom-up-attention / LXMERT): tab-separated, no header, one image per line, fields
#   `OBJ36_FIELDS`; the last six are base64 of raw little-endian arrays (int64 ids, float32 confidences,
#   float32 boxes `(n, 4)` in pixels x1, y1, x2, y2, float32 features `(n, F)`). The fields never contain
#   tabs or quotes, so a line is split on tabs and read as bytes (exact line numbers, no csv field limit).
#   `obj36_line` writes one, for extraction's TSV output.
# * per-image `.npz` files (bottom-up-attention.pytorch style, file name = image id); accepted keys in
#   `NPZ_KEYS`. Detector labels are optional: when absent they become id 0 with confidence 0, the same
#   as padding, so confidence-weighted MOC ignores them. That extractor keeps its labels inside a pickled
#   `info` dict, which is read only with `allow_pickle=True` (pickles can run code).
#
# Every record is checked before it enters the store (`lxmert_s_msp.data.feature_import`), because one NaN
# or one box outside its image poisons the MRFR/MOC targets of every batch it lands in. A bad record raises
# `BadRecordError` naming the file, the line (or the .npz file) and the field.

OBJ36_FIELDS = (
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
)
# record attribute -> the obj36 field it comes from, so errors use the file's own names.
OBJ36_NAMES = {
    "height": "img_h",
    "width": "img_w",
    "num_boxes": "num_boxes",
    "boxes": "boxes",
    "features": "features",
    "object_ids": "objects_id",
    "object_confidences": "objects_conf",
    "attribute_ids": "attrs_id",
    "attribute_confidences": "attrs_conf",
}
# record attribute -> accepted .npz keys, first found wins. `num_boxes` is optional and only checked.
NPZ_KEYS = {
    "features": ("x", "features"),
    "boxes": ("bbox", "boxes"),
    "height": ("image_h", "image_height"),
    "width": ("image_w", "image_width"),
    "num_boxes": ("num_bbox", "num_boxes"),
    "object_ids": ("objects_id",),
    "object_confidences": ("objects_conf",),
    "attribute_ids": ("attrs_id",),
    "attribute_confidences": ("attrs_conf",),
}
LABEL_DTYPES = {
    "object_ids": np.dtype(np.int64),
    "object_confidences": np.dtype(np.float32),
    "attribute_ids": np.dtype(np.int64),
    "attribute_confidences": np.dtype(np.float32),
}
# Extractors clip boxes to the image but may round outwards; more than a pixel beyond is corruption.
BOX_TOLERANCE_PX = 1.0
FLOAT16_MAX = float(np.finfo(np.float16).max)
MAX_IMAGE_SIDE = int(np.iinfo(np.int32).max)  # the store keeps image sizes as int32


class BadRecordError(ValueError):
    """A record that cannot enter the store; `location` and `field` say where, for skip reports."""

    def __init__(self, location: str, field: str, problem: str):
        super().__init__(f"{location}, field '{field}': {problem}")
        self.location = location
        self.field = field


@dataclass
class RegionRecord:
    """One image's detections as the extractor wrote them (pixel boxes, float32 features)."""

    image_id: str
    height: int
    width: int
    boxes: np.ndarray  # (n, 4) float32: x1, y1, x2, y2 in pixels
    features: np.ndarray  # (n, F) float32
    object_ids: np.ndarray  # (n,) int64
    object_confidences: np.ndarray  # (n,) float32
    attribute_ids: np.ndarray  # (n,) int64
    attribute_confidences: np.ndarray  # (n,) float32
    location: str  # "file, line N" or the .npz file: where error messages point


def read_obj36_tsv(
    path: str | os.PathLike,
    feature_dim: int | None = None,
    max_boxes: int | None = None,
    on_bad_row: Callable[[BadRecordError], None] | None = None,
) -> Iterator[RegionRecord]:
    """Records of a `*_obj36.tsv` file, one per non-empty line.

    `feature_dim=None` infers F per row from the byte count. A bad row raises `BadRecordError`, or, when
    `on_bad_row` is given, is handed to it and reading goes on with the next line.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if line_number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            if not line:
                continue
            try:
                record = _parse_obj36_line(line, f"{path}, line {line_number}", feature_dim, max_boxes)
            except BadRecordError as error:
                if on_bad_row is None:
                    raise
                on_bad_row(error)
                continue
            yield record


def _parse_obj36_line(
    line: bytes, location: str, feature_dim: int | None, max_boxes: int | None
) -> RegionRecord:
    values = line.split(b"\t")
    if len(values) != len(OBJ36_FIELDS):
        raise BadRecordError(
            location, "row", f"{len(values)} tab-separated fields, expected {len(OBJ36_FIELDS)}"
        )
    row = dict(zip(OBJ36_FIELDS, values, strict=True))
    try:
        image_id = row["img_id"].decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRecordError(location, "img_id", f"not UTF-8 ({error})") from None
    if not image_id:
        raise BadRecordError(location, "img_id", "empty")
    height, width, num_boxes = (
        _parse_int(row[field], location, field) for field in ("img_h", "img_w", "num_boxes")
    )
    _check_num_boxes(num_boxes, location, "num_boxes", max_boxes)

    # Decoded in file order, so a row that is wrong in several fields reports the first of them.
    decoded = {name: _decode_base64(row[name], location, name) for name in _PER_REGION_BYTES}
    _check_region_count(decoded, num_boxes, location)
    arrays = {
        attribute: _bytes_as_array(
            decoded[OBJ36_NAMES[attribute]],
            dtype.newbyteorder("<"),
            (num_boxes,),
            location,
            OBJ36_NAMES[attribute],
        )
        for attribute, dtype in LABEL_DTYPES.items()
    }
    arrays["boxes"] = _bytes_as_array(decoded["boxes"], np.dtype("<f4"), (num_boxes, 4), location, "boxes")
    features = _decode_base64(row["features"], location, "features")
    if feature_dim is None:
        if len(features) % (4 * num_boxes):
            raise BadRecordError(
                location, "features", f"{len(features)} bytes do not split into {num_boxes} float32 rows"
            )
        feature_dim = len(features) // (4 * num_boxes)
    arrays["features"] = _bytes_as_array(
        features, np.dtype("<f4"), (num_boxes, feature_dim), location, "features"
    )
    record = RegionRecord(image_id=image_id, height=height, width=width, location=location, **arrays)
    _validate(record, OBJ36_NAMES, feature_dim)
    return record


# Bytes per region of each fixed-size per-region field of an obj36 row.
_PER_REGION_BYTES = {
    **{OBJ36_NAMES[attribute]: dtype.itemsize for attribute, dtype in LABEL_DTYPES.items()},
    "boxes": 16,
}


def _check_region_count(decoded: Mapping[str, bytes], num_boxes: int, location: str) -> None:
    """When every per-region field holds the same number of regions and `num_boxes` says another, the
    count is what is wrong: name `num_boxes`, not the first array that disagrees with it."""
    counts = {len(data) / _PER_REGION_BYTES[name] for name, data in decoded.items()}
    if len(counts) == 1 and (count := counts.pop()) != num_boxes and count.is_integer():
        raise BadRecordError(
            location,
            "num_boxes",
            f"{num_boxes}, but {', '.join(decoded)} each hold {int(count)} regions",
        )


def _parse_int(value: bytes, location: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadRecordError(location, field, f"not an integer: {value[:40]!r}") from None


def _decode_base64(value: bytes, location: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise BadRecordError(location, field, f"bad base64 ({error})") from None


def _bytes_as_array(
    data: bytes, dtype: np.dtype, shape: tuple[int, ...], location: str, field: str
) -> np.ndarray:
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise BadRecordError(
            location, field, f"{len(data)} bytes, expected {expected} for shape {shape} of {dtype}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _check_num_boxes(num_boxes: int, location: str, field: str, max_boxes: int | None) -> None:
    if num_boxes < 1:
        raise BadRecordError(location, field, f"{num_boxes} boxes, expected at least 1")
    if max_boxes is not None and num_boxes > max_boxes:
        raise BadRecordError(
            location,
            field,
            f"{num_boxes} boxes, more than the store's {max_boxes} regions (--truncate keeps the first)",
        )


def _validate(record: RegionRecord, names: Mapping[str, str], feature_dim: int | None) -> None:
    """Value checks shared by both formats; `names` maps record attributes to the file's field names."""

    def fail(attribute: str, problem: str) -> BadRecordError:
        return BadRecordError(record.location, names[attribute], problem)

    if record.height <= 0 or record.width <= 0:
        attribute = "height" if record.height <= 0 else "width"
        raise fail(attribute, f"image size {record.height}x{record.width} is not positive")
    if record.height > MAX_IMAGE_SIDE or record.width > MAX_IMAGE_SIDE:
        attribute = "height" if record.height > MAX_IMAGE_SIDE else "width"
        raise fail(
            attribute,
            f"image size {record.height}x{record.width} is beyond the store's {MAX_IMAGE_SIDE} pixels",
        )
    if feature_dim is not None and record.features.shape[1] != feature_dim:
        raise fail("features", f"feature dim {record.features.shape[1]}, expected {feature_dim}")
    if record.features.shape[1] == 0:
        raise fail("features", "empty")
    for attribute in ("boxes", "features", "object_confidences", "attribute_confidences"):
        if not np.isfinite(getattr(record, attribute)).all():
            raise fail(attribute, "contains NaN or inf")
    if np.abs(record.features).max() > FLOAT16_MAX:
        raise fail("features", f"values beyond the float16 range (+-{FLOAT16_MAX:g}) of the store")
    for attribute in ("object_confidences", "attribute_confidences"):
        values = getattr(record, attribute)
        if ((values < 0) | (values > 1)).any():
            raise fail(attribute, f"confidence outside [0, 1]: {values[(values < 0) | (values > 1)][0]}")
    for attribute in ("object_ids", "attribute_ids"):
        if (getattr(record, attribute) < 0).any():
            raise fail(attribute, "negative class id")
    boxes = record.boxes
    limits = np.array([record.width, record.height] * 2, dtype=np.float32) + BOX_TOLERANCE_PX
    outside = ((boxes < 0) | (boxes > limits)).any(axis=1)
    swapped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if outside.any():
        index = int(np.argmax(outside))
        raise fail(
            "boxes", f"box {index} {boxes[index].tolist()} outside the {record.width}x{record.height} image"
        )
    if swapped.any():
        index = int(np.argmax(swapped))
        raise fail("boxes", f"box {index} {boxes[index].tolist()} has x2 < x1 or y2 < y1")


def read_npz_features(
    path: str | os.PathLike,
    feature_dim: int | None = None,
    max_boxes: int | None = None,
    allow_pickle: bool = False,
) -> RegionRecord:
    """The record of one per-image `.npz` file; the image id is the file name without `.npz`."""
    path = Path(path)
    location = str(path)
    try:
        data = np.load(path, allow_pickle=allow_pickle)
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise BadRecordError(location, "file", f"not a readable .npz file ({error})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise BadRecordError(location, "file", "holds a single array, not an .npz archive")
    with data:
        found = {
            attribute: next((k for k in keys if k in data.files), None)
            for attribute, keys in NPZ_KEYS.items()
        }
        for attribute in ("features", "boxes", "height", "width"):
            if found[attribute] is None:
                raise BadRecordError(location, " or ".join(NPZ_KEYS[attribute]), "missing")
        arrays = {attribute: _read_member(data, key, location) for attribute, key in found.items() if key}
        if any(found[attribute] is None for attribute in LABEL_DTYPES) and "info" in data.files:
            arrays.update(_labels_from_info(data, location, allow_pickle, found))
    names = {attribute: found[attribute] or f"info['{NPZ_KEYS[attribute][0]}']" for attribute in NPZ_KEYS}

    boxes = arrays["boxes"]
    num_boxes = len(boxes) if boxes.ndim == 2 else -1
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BadRecordError(location, names["boxes"], f"shape {boxes.shape}, expected (num_boxes, 4)")
    _check_num_boxes(num_boxes, location, names["boxes"], max_boxes)
    if "num_boxes" in arrays and _scalar_int(arrays["num_boxes"], location, names["num_boxes"]) != num_boxes:
        raise BadRecordError(
            location, names["num_boxes"], f"says {arrays['num_boxes']}, but there are {num_boxes} boxes"
        )
    features = arrays["features"]
    if features.ndim != 2 or len(features) != num_boxes:
        raise BadRecordError(
            location, names["features"], f"shape {features.shape}, expected ({num_boxes}, feature_dim)"
        )
    labels = {}
    for attribute, dtype in LABEL_DTYPES.items():
        values = arrays.get(attribute, np.zeros(num_boxes, dtype=dtype))
        if values.shape != (num_boxes,):
            raise BadRecordError(location, names[attribute], f"shape {values.shape}, expected ({num_boxes},)")
        labels[attribute] = values.astype(dtype)
    record = RegionRecord(
        image_id=path.name.removesuffix(".npz"),
        height=_scalar_int(arrays["height"], location, names["height"]),
        width=_scalar_int(arrays["width"], location, names["width"]),
        boxes=boxes.astype(np.float32),
        features=features.astype(np.float32),
        location=location,
        **labels,
    )
    _validate(record, names, feature_dim)
    return record


def _read_member(data: np.lib.npyio.NpzFile, key: str, location: str) -> np.ndarray:
    try:
        return np.asarray(data[key])
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise BadRecordError(location, key, f"unreadable ({error})") from None


def _labels_from_info(
    data: np.lib.npyio.NpzFile, location: str, allow_pickle: bool, found: Mapping[str, str | None]
) -> dict[str, np.ndarray]:
    if not allow_pickle:
        raise BadRecordError(
            location,
            "info",
            "detector labels are only in the pickled 'info' dict; pass --allow-pickle if you trust the file",
        )
    info = _read_member(data, "info", location).item()
    if not isinstance(info, dict):
        raise BadRecordError(location, "info", f"expected a dict, got {type(info).__name__}")
    return {
        attribute: np.asarray(info[NPZ_KEYS[attribute][0]])
        for attribute in LABEL_DTYPES
        if found[attribute] is None and NPZ_KEYS[attribute][0] in info
    }


def _scalar_int(value: np.ndarray, location: str, field: str) -> int:
    if value.size != 1 or value.dtype.kind not in "iuf" or not np.isfinite(value).all() or value % 1:
        raise BadRecordError(location, field, f"expected one integer, got {value!r}")
    return int(value.reshape(()))


def obj36_line(record: RegionRecord) -> bytes:
    """One `*_obj36.tsv` line (`OBJ36_FIELDS`, newline included), as LXMERT's extraction wrote them."""
    arrays = {
        "objects_id": record.object_ids.astype("<i8"),
        "objects_conf": record.object_confidences.astype("<f4"),
        "attrs_id": record.attribute_ids.astype("<i8"),
        "attrs_conf": record.attribute_confidences.astype("<f4"),
        "boxes": record.boxes.astype("<f4"),
        "features": record.features.astype("<f4"),
    }
    values = {
        "img_id": record.image_id.encode("utf-8"),
        "img_h": str(record.height).encode(),
        "img_w": str(record.width).encode(),
        "num_boxes": str(len(record.boxes)).encode(),
        **{field: base64.b64encode(np.ascontiguousarray(array).tobytes()) for field, array in arrays.items()},
    }
    return b"\t".join(values[field] for field in OBJ36_FIELDS) + b"\n"
