"""Readers for pre-extracted region features, and the importer that turns them into one store.

Two public formats become the same `RegionRecord`:

* `*_obj36.tsv` (bottom-up-attention / LXMERT): tab-separated, no header, one image per line, fields
  `OBJ36_FIELDS`; the last six are base64 of raw little-endian arrays (int64 ids, float32 confidences,
  float32 boxes `(n, 4)` in pixels x1, y1, x2, y2, float32 features `(n, F)`). The fields never contain
  tabs or quotes, so a line is split on tabs and read as bytes (exact line numbers, no csv field limit).
* per-image `.npz` files (bottom-up-attention.pytorch style, file name = image id); accepted keys in
  `NPZ_KEYS`. Detector labels are optional: when absent they become id 0 with confidence 0, the same
  as padding, so confidence-weighted MOC ignores them. That extractor keeps its labels inside a pickled
  `info` dict, which is read only with `allow_pickle=True` (pickles can run code).

Every record is checked before it enters the store, because one NaN or one box outside its image
poisons the MRFR/MOC targets of every batch it lands in. A bad record raises `BadRecordError` naming
the file, the line (or the .npz file) and the field.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lxmert_s_msp.data.store import FeatureStore, atomic_write_text, write_store_from_chunks

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
WORK_FOLDER = "import-work"


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


# Import: every input becomes a finished shard in OUT_STORE/import-work, then the shards become the store.


@dataclass
class ImportSettings:
    num_regions: int = 36
    feature_dim: int = 2048
    truncate: bool = False
    skip_bad_rows: bool = False
    allow_pickle: bool = False


@dataclass
class ImportReport:
    store: FeatureStore
    skipped_rows: dict[str, int]  # input -> corrupt rows skipped (only with skip_bad_rows)


def import_features(
    out_store: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    settings: ImportSettings | None = None,
    progress: bool = True,
) -> ImportReport:
    """Import obj36 TSV files and folders of `.npz` files (one input each) into one store.

    An input is a `.npz` file, a folder of `.npz` files, or else an obj36 TSV file (also `*.tsv.0`).
    Each input is first converted into its own shard, renamed into place when complete; a re-run skips
    shards whose input (path, size, mtime) and settings are unchanged, so an interrupted import resumes
    at the first unfinished input. The work folder is deleted once the store is written. Disk needed:
    about twice the final features.
    """
    settings = settings or ImportSettings()
    out_store = Path(out_store)
    sources = [Path(source) for source in inputs]
    for source in sources:
        if not source.exists():
            raise FileNotFoundError(f"input {source} does not exist")
    work = out_store / WORK_FOLDER
    created = [folder for folder in (out_store, work) if not folder.exists()]
    work.mkdir(parents=True, exist_ok=True)
    shards = []
    try:
        for source in tqdm(sources, desc="inputs", unit="file", disable=not progress):
            shard = work / f"{source.name}-{hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]}"
            if not _is_finished(shard, source, settings):
                _convert_to_shard(source, shard, settings, progress)
            shards.append(shard)
    except BaseException:
        # finished shards stay for the re-run to resume from; folders this call made and left empty go
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    store = assemble_store(out_store, shards, settings.num_regions, settings.feature_dim, progress)
    skipped = {
        str(source): shard_meta(shard)["skipped_rows"] for source, shard in zip(sources, shards, strict=True)
    }
    shutil.rmtree(work)
    return ImportReport(store=store, skipped_rows=skipped)


def _fingerprint(source: Path) -> list:
    files = sorted(source.glob("*.npz")) if source.is_dir() else [source]
    stats = [(file.name, file.stat().st_size, file.stat().st_mtime_ns) for file in files]
    return [str(source.resolve()), hashlib.sha1(json.dumps(stats).encode()).hexdigest()]


def shard_meta(shard: Path) -> dict:
    return json.loads((shard / "shard.json").read_text())


def _is_finished(shard: Path, source: Path, settings: ImportSettings) -> bool:
    if not (shard / "shard.json").is_file():
        return False
    meta = shard_meta(shard)
    return meta["fingerprint"] == _fingerprint(source) and meta["settings"] == vars(settings)


def _source_records(
    source: Path, settings: ImportSettings, on_bad_row: Callable[[BadRecordError], None] | None
) -> tuple[Iterator[RegionRecord], int | None]:
    """Records of one input and, when known up front, how many."""
    max_boxes = None if settings.truncate else settings.num_regions
    reader_options = {"feature_dim": settings.feature_dim, "max_boxes": max_boxes}
    if not (source.is_dir() or source.suffix == ".npz"):
        return read_obj36_tsv(source, on_bad_row=on_bad_row, **reader_options), None
    files = sorted(source.glob("*.npz")) if source.is_dir() else [source]

    def records() -> Iterator[RegionRecord]:
        for file in files:
            try:
                yield read_npz_features(file, allow_pickle=settings.allow_pickle, **reader_options)
            except BadRecordError as error:
                if on_bad_row is None:
                    raise
                on_bad_row(error)

    return records(), len(files)


def _convert_to_shard(source: Path, shard: Path, settings: ImportSettings, progress: bool) -> None:
    """Stream one input into `shard`."""
    skipped = 0

    def skip(error: BadRecordError) -> None:
        nonlocal skipped
        skipped += 1
        tqdm.write(f"skipped {error}", file=sys.stderr)

    records, total = _source_records(source, settings, skip if settings.skip_bad_rows else None)
    bar = tqdm(records, total=total, desc=source.name, unit="img", leave=False, disable=not progress)
    write_shard(
        shard,
        bar,
        settings.num_regions,
        lambda: {
            "input": str(source),
            "fingerprint": _fingerprint(source),
            "settings": vars(settings),
            "skipped_rows": skipped,
        },
    )
    if skipped:
        tqdm.write(f"{source}: skipped {skipped} corrupt rows", file=sys.stderr)


def write_shard(
    shard: Path,
    records: Iterable[RegionRecord],
    num_regions: int,
    describe: Callable[[], dict],
    tsv: bool = False,
) -> None:
    """Write `records` as a finished shard folder: raw float16 features on disk, the small arrays in memory.

    The shard is built under a temporary name and renamed when complete, so a killed writer leaves no shard
    that looks finished. `describe()`, called once the records are consumed, gives `shard.json`'s content
    (the image count and feature size are added); `assemble_store` reads its "input". With `tsv`, the records
    are also written as obj36 lines (float32 features, pixel boxes) to `obj36.tsv` in the shard.
    """
    tmp = shard.with_name(shard.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seen: dict[str, str] = {}
    small: dict[str, list[np.ndarray]] = {}
    feature_dim = None
    try:
        with open(tmp / "features.f16", "wb") as features_file, open(tmp / "obj36.tsv", "wb") as tsv_file:
            for record in records:
                if record.image_id in seen:
                    first = seen[record.image_id]
                    raise ValueError(
                        f"image id {record.image_id!r} appears twice: {first} and {record.location}"
                    )
                seen[record.image_id] = record.location
                rows = _store_rows(record, num_regions)
                feature_dim = rows["features"].shape[1]
                features_file.write(rows.pop("features"))
                for name, array in rows.items():
                    small.setdefault(name, []).append(array)
                if tsv:
                    tsv_file.write(obj36_line(record))
            for handle in (features_file, tsv_file):
                handle.flush()
                os.fsync(handle.fileno())
        if not seen:
            raise ValueError(
                f"{describe().get('input', shard)}: no image records (an empty input is not imported)"
            )
    except BaseException:
        shutil.rmtree(tmp)  # a half-converted input is worth nothing; don't leave its features on disk
        raise
    if not tsv:
        (tmp / "obj36.tsv").unlink()
    np.savez(tmp / "arrays.npz", **{name: np.stack(arrays) for name, arrays in small.items()})
    (tmp / "image_ids.json").write_text(json.dumps(list(seen)))
    meta = {**describe(), "num_images": len(seen), "feature_dim": feature_dim}
    atomic_write_text(tmp / "shard.json", json.dumps(meta, indent=2))
    shutil.rmtree(shard, ignore_errors=True)
    os.replace(tmp, shard)


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


def _store_rows(record: RegionRecord, num_regions: int) -> dict[str, np.ndarray]:
    """One image's rows of every store array: boxes normalised, regions past num_boxes zero."""
    count = min(len(record.boxes), num_regions)
    scale = np.array([record.width, record.height] * 2, dtype=np.float32)
    features = np.zeros((num_regions, record.features.shape[1]), dtype=np.float16)
    features[:count] = record.features[:count]
    boxes = np.zeros((num_regions, 4), dtype=np.float32)
    boxes[:count] = np.clip(record.boxes[:count] / scale, 0.0, 1.0)
    rows = {"features": features, "boxes": boxes}
    for attribute in LABEL_DTYPES:
        values = getattr(record, attribute)
        rows[attribute] = np.zeros(num_regions, dtype=values.dtype)
        rows[attribute][:count] = values[:count]
    rows["num_boxes"] = np.int32(count)
    rows["image_sizes"] = np.array([record.height, record.width], dtype=np.int32)
    return rows


def assemble_store(
    out_store: Path, shards: Sequence[Path], num_regions: int, feature_dim: int, progress: bool
) -> FeatureStore:
    """Write the store of finished shards' images, in shard order; image ids must be unique across shards."""
    owner: dict[str, str] = {}
    image_ids: list[str] = []
    for shard in shards:
        source = shard_meta(shard)["input"]
        for image_id in json.loads((shard / "image_ids.json").read_text()):
            if image_id in owner:
                raise ValueError(f"image id {image_id!r} is in two inputs: {owner[image_id]} and {source}")
            owner[image_id] = source
            image_ids.append(image_id)
    filled = [shard for shard in shards if shard_meta(shard)["num_images"]]
    if not filled:
        raise ValueError(f"no images to import into {out_store}: every input was empty or skipped")
    parts = [np.load(shard / "arrays.npz") for shard in filled]
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0].files}
    shape = (num_regions, feature_dim)

    def feature_chunks(rows_per_chunk: int = 1024) -> Iterator[np.ndarray]:
        bar = tqdm(total=len(image_ids), desc="writing store", unit="img", disable=not progress)
        for shard in filled:
            count = shard_meta(shard)["num_images"]
            features = np.memmap(shard / "features.f16", dtype=np.float16, mode="r", shape=(count, *shape))
            for start in range(0, count, rows_per_chunk):
                yield features[start : start + rows_per_chunk]
                bar.update(min(rows_per_chunk, count - start))
        bar.close()

    return write_store_from_chunks(out_store, image_ids, feature_chunks(), *shape, **arrays)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lxmert_s_msp.data.features", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import", help="import obj36 TSV files / .npz folders into one store")
    importer.add_argument("out_store", type=Path)
    importer.add_argument("inputs", type=Path, nargs="+", help="obj36 .tsv files, .npz files or .npz folders")
    importer.add_argument("--num-regions", type=int, default=36)
    importer.add_argument("--feature-dim", type=int, default=2048)
    importer.add_argument("--truncate", action="store_true", help="keep the first regions of larger images")
    importer.add_argument("--skip-bad-rows", action="store_true", help="skip and count corrupt rows")
    importer.add_argument("--allow-pickle", action="store_true", help="read labels from pickled .npz 'info'")
    args = parser.parse_args(argv)
    settings = ImportSettings(
        num_regions=args.num_regions,
        feature_dim=args.feature_dim,
        truncate=args.truncate,
        skip_bad_rows=args.skip_bad_rows,
        allow_pickle=args.allow_pickle,
    )
    try:
        report = import_features(args.out_store, args.inputs, settings)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\nfix the input and re-run: finished inputs are not converted again\n")
    skipped = sum(report.skipped_rows.values())
    print(f"imported {len(report.store)} images into {report.store.path}", file=sys.stderr)
    if skipped:
        per_input = ", ".join(f"{source}: {count}" for source, count in report.skipped_rows.items() if count)
        print(f"skipped {skipped} corrupt rows ({per_input})", file=sys.stderr)


if __name__ == "__main__":
    main()
