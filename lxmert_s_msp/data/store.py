"""The region-feature store: one folder of memory-mapped `.npy` arrays, one row per image.

Features live in plain float16 arrays rather than Arrow because reading a random batch must be one
fancy index per array (an Arrow column of 36 x 2048 floats decodes at about 2,400 rows/s on two
cores; a memory-mapped float16 array serves tens of thousands). Every file is written under a
temporary name and renamed, so a killed writer never leaves a store that opens.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1
# Built from a store's rows (lxmert_s_msp.data.hard_negatives); a rewritten store deletes it: its rows moved.
HARD_NEGATIVES_FILE = "hard_negatives.npy"

# name -> dtype of every per-image array; the leading dimension is the image.
ARRAYS = {
    "features": np.float16,  # (N, R, F)
    "boxes": np.float32,  # (N, R, 4): x1/w, y1/h, x2/w, y2/h in [0, 1]
    "object_ids": np.int64,  # (N, R)
    "object_confidences": np.float32,  # (N, R)
    "attribute_ids": np.int64,  # (N, R)
    "attribute_confidences": np.float32,  # (N, R)
    "num_boxes": np.int32,  # (N,): regions after this are padding (zeros, confidence 0)
    "image_sizes": np.int32,  # (N, 2): height, width in pixels
}


@dataclass
class RegionBatch:
    """Arrays of a batch of images, each indexed once from the store."""

    features: np.ndarray
    boxes: np.ndarray
    object_ids: np.ndarray
    object_confidences: np.ndarray
    attribute_ids: np.ndarray
    attribute_confidences: np.ndarray
    num_boxes: np.ndarray
    image_sizes: np.ndarray


def float32_tensor(array: np.ndarray) -> torch.Tensor:
    """`array` (e.g. a batch's float16 features) as a float32 tensor, converted by torch into a numpy buffer.

    Same values as `torch.from_numpy(array).float()`, about 4x faster for a 1024-image batch on two cores:
    torch's CPU allocator maps a fresh 300 MB result in 4 KB pages (~74,000 page faults per batch), numpy
    asks the kernel for huge pages; torch's `copy_` converts vectorised on all cores (numpy's own float16
    `astype` is several times slower). Numbers: docs/benchmarks.md, "Feature store read rate".
    """
    out = torch.from_numpy(np.empty(array.shape, dtype=np.float32))
    return out.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def files_digest(paths: Iterable[Path]) -> str:
    """sha256 of the names and contents of `paths`, in the order given."""
    hasher = hashlib.sha256()
    for path in paths:
        hasher.update(path.name.encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                hasher.update(chunk)
    return hasher.hexdigest()


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def replace_folder(finished: Path, out: Path) -> None:
    """Move the finished folder `finished` to `out`, replacing what is there with renames only, so a
    killed process leaves either the old folder or the new one at `out`, never a mix. The old folder of a
    replacement that was killed before deleting it is deleted now."""
    for stale in out.parent.glob(f".{out.name}.old-*"):
        shutil.rmtree(stale)
    if out.exists():
        previous = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, previous)
        os.replace(finished, out)
        shutil.rmtree(previous)
    else:
        os.replace(finished, out)


def write_store(path: str | os.PathLike, image_ids: Sequence[str], **arrays: np.ndarray) -> FeatureStore:
    """Write a complete store from in-memory arrays (keys: `ARRAYS`) and open it."""
    features = arrays.pop("features", None)
    if features is None:
        raise ValueError(f"write_store({path}): missing arrays ['features']")
    _, num_regions, feature_dim = features.shape
    return write_store_from_chunks(path, image_ids, [features], num_regions, feature_dim, **arrays)


def write_store_from_chunks(
    path: str | os.PathLike,
    image_ids: Sequence[str],
    feature_chunks: Iterable[np.ndarray],
    num_regions: int,
    feature_dim: int,
    **arrays: np.ndarray,
) -> FeatureStore:
    """Write a store whose features arrive as consecutive `(k, R, F)` blocks, and open it.

    The features of a full corpus (tens of GB) need not fit in memory: they stream into a
    memory-mapped `features.npy` written under a temporary name. `store.json` is removed first and
    written last: a folder without it is an unfinished store and does not open, so a writer killed
    half-way never leaves old and new arrays that open together.
    """
    path = Path(path)
    expected = set(ARRAYS) - {"features"}
    missing = sorted(expected - set(arrays))
    extra = sorted(set(arrays) - expected)
    if missing or extra:
        raise ValueError(f"write_store({path}): missing arrays {missing}, unknown arrays {extra}")
    image_ids = [str(image_id) for image_id in image_ids]
    if len(set(image_ids)) != len(image_ids):
        raise ValueError(f"write_store({path}): image_ids are not unique")
    num_images = len(image_ids)
    if num_images == 0:
        raise ValueError(f"write_store({path}): no images")
    for name, array in arrays.items():
        if array.shape[0] != num_images:
            raise ValueError(
                f"write_store({path}): '{name}' has {array.shape[0]} rows, image_ids {num_images}"
            )
    path.mkdir(parents=True, exist_ok=True)
    (path / "store.json").unlink(missing_ok=True)
    (path / HARD_NEGATIVES_FILE).unlink(missing_ok=True)
    _write_features(path / "features.npy", feature_chunks, (num_images, num_regions, feature_dim))
    for name, array in arrays.items():
        atomic_save_npy(path / f"{name}.npy", np.ascontiguousarray(array, dtype=ARRAYS[name]))
    atomic_write_text(path / "image_ids.json", json.dumps(image_ids))
    meta = {
        "format_version": FORMAT_VERSION,
        "num_images": num_images,
        "num_regions": num_regions,
        "feature_dim": feature_dim,
    }
    atomic_write_text(path / "store.json", json.dumps(meta, indent=2))
    return FeatureStore(path)


def _write_features(path: Path, chunks: Iterable[np.ndarray], shape: tuple[int, int, int]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
    row = 0
    for chunk in chunks:
        if chunk.shape[1:] != shape[1:] or row + len(chunk) > shape[0]:
            raise ValueError(
                f"write_store({path.parent}): feature block of shape {chunk.shape} at row {row} "
                f"does not fit features of shape {shape}"
            )
        out[row : row + len(chunk)] = chunk
        row += len(chunk)
    if row != shape[0]:
        raise ValueError(f"write_store({path.parent}): feature blocks hold {row} rows, image_ids {shape[0]}")
    out.flush()
    del out
    os.replace(tmp, path)


class FeatureStore:
    """Read side of the store: memory-mapped arrays plus an image-id index."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_file = self.path / "store.json"
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{self.path} is not a finished feature store: {meta_file.name} is missing"
            )
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_file}: format_version {meta.get('format_version')}, expected {FORMAT_VERSION}"
            )
        self.num_regions = int(meta["num_regions"])
        self.feature_dim = int(meta["feature_dim"])
        self.arrays = {name: np.load(self.path / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        self.image_ids: list[str] = json.loads((self.path / "image_ids.json").read_text())
        for name, array in self.arrays.items():
            if array.shape[0] != len(self.image_ids):
                raise ValueError(
                    f"{self.path / name}.npy: {array.shape[0]} rows, image_ids.json {len(self.image_ids)}"
                )
        self._row_of = {image_id: row for row, image_id in enumerate(self.image_ids)}

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._row_of

    def index(self, image_id: str) -> int:
        """Row of `image_id`; a `KeyError` naming the id and the store when it is absent."""
        try:
            return self._row_of[str(image_id)]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in the feature store {self.path}") from None

    def indices(self, image_ids: Iterable[str]) -> np.ndarray:
        return np.fromiter((self.index(image_id) for image_id in image_ids), dtype=np.int64)

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    def read(self, rows: np.ndarray | Sequence[int]) -> RegionBatch:
        """One fancy index per array; rows may repeat and come in any order."""
        rows = np.asarray(rows, dtype=np.int64)
        return RegionBatch(**{name: np.asarray(array[rows]) for name, array in self.arrays.items()})

    def digest(self, rows: np.ndarray | Sequence[int], block: int = 256) -> str:
        """sha256 of the images at `rows`: their ids and every array's values, read `block` rows at a time
        (a split of a few thousand images, not the store's gigabytes)."""
        rows = np.asarray(rows, dtype=np.int64)
        hasher = hashlib.sha256(json.dumps([self.image_ids[row] for row in rows]).encode())
        for start in range(0, len(rows), block):
            for array in vars(self.read(rows[start : start + block])).values():
                hasher.update(np.ascontiguousarray(array).tobytes())
        return hasher.hexdigest()
