"""The importer of pre-extracted region features: obj36 TSV files and folders of `.npz` files (read and
checked by `lxmert_s_msp.data.readers`) into one feature store. Every input becomes a finished shard in
OUT_STORE/import-work, then the shards become the store, so an interrupted import resumes at the first
unfinished input. Its command line is `python -m lxmert_s_msp.data.features import` (`features.py`); region
extraction (`extract.py`) writes its shards with `write_shard` too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lxmert_s_msp.data.readers import (
    LABEL_DTYPES,
    BadRecordError,
    RegionRecord,
    obj36_line,
    read_npz_features,
    read_obj36_tsv,
)
from lxmert_s_msp.data.store import FeatureStore, atomic_write_text, write_store_from_chunks

WORK_FOLDER = "import-work"


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
