"""`python -m lxmert_s_msp.data.extract IMAGES_DIR STORE`: region features of your own images, as LXMERT's.

Every image under IMAGES_DIR (recursively; image id = file name without its suffix) goes through the
bottom-up-attention detector (`faster_rcnn_vg`) and becomes a row of the same feature store the importers
write (`python -m lxmert_s_msp.data.features import`), so training, fine-tuning and evaluation read it
unchanged; `--tsv OUT` also writes an obj36 TSV for other LXMERT code.

Resumable per image and atomic: the detector is loaded before anything is written; each extracted image is
saved under STORE/extract-work as a file of its own, and every `CHUNK_IMAGES` of them are gathered into a
shard. A re-run keeps every image whose file (path, size, mtime) and settings (the detector's weights
included) are unchanged, so a kill or a bad image costs no finished image. The store (and the TSV) are
written from the shards under temporary names, and the work folder is deleted last. An image that cannot be
used stops the run with an error naming the file, or, with `--skip-bad-images`, is left out and listed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from faster_rcnn_vg import (
    ADAPTIVE,
    DEFAULT_DETECTOR,
    BadImageError,
    DetectorNotFoundError,
    FasterRcnnVgDetector,
    FasterRcnnVgImageProcessor,
)
from faster_rcnn_vg.image_processing_faster_rcnn_vg import image_files, open_image
from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.feature_import import assemble_store, shard_meta, write_shard
from lxmert_s_msp.data.readers import FLOAT16_MAX, RegionRecord
from lxmert_s_msp.data.store import FeatureStore

WORK_FOLDER = "extract-work"
IMAGES_FOLDER = "images"  # inside WORK_FOLDER: one file per extracted image not yet in a shard
CHUNK_IMAGES = 64
RECORD_ARRAYS = (
    "boxes",
    "features",
    "object_ids",
    "object_confidences",
    "attribute_ids",
    "attribute_confidences",
)


@dataclass
class ExtractSettings:
    """What decides an image's regions: an image extracted with other settings is extracted again."""

    detector: str = DEFAULT_DETECTOR
    num_regions: int | str = 36  # or "adaptive"
    bf16: bool = False  # res5 in bfloat16
    tsv: bool = False


@dataclass
class ExtractReport:
    store: FeatureStore
    skipped: list[str] = field(default_factory=list)  # "file: why" of each image left out (skip_bad_images)


def extract_features(
    images_dir: str | os.PathLike,
    out_store: str | os.PathLike,
    settings: ExtractSettings | None = None,
    batch_size: int = 2,
    device: str = "cpu",
    tsv: str | os.PathLike | None = None,
    skip_bad_images: bool = False,
    progress: bool = True,
) -> ExtractReport:
    """Extract every image of `images_dir` into the store `out_store` (and into the obj36 TSV `tsv`).

    An image the detector cannot use raises `BadImageError`, or with `skip_bad_images` is left out and listed
    in the report. A detector that cannot be found raises `DetectorNotFoundError` before anything is written.
    """
    settings = ExtractSettings(**{**asdict(settings or ExtractSettings()), "tsv": tsv is not None})
    if batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1, got {batch_size}")
    images_dir, out_store = Path(images_dir), Path(out_store)
    files = _image_files(images_dir)
    processor = FasterRcnnVgImageProcessor(
        settings.detector, device=device, num_regions=settings.num_regions, bf16=settings.bf16
    )
    detector = processor.model  # loaded now: a detector that cannot be found stops the run before any write
    run = _Run(
        images_dir=images_dir,
        work=out_store / WORK_FOLDER,
        fingerprint=_fingerprint(settings, detector),
        num_regions=detector.config.region_limits(settings.num_regions).maximum,
        tsv=settings.tsv,
    )
    created = [folder for folder in (out_store, run.work) if not folder.exists()]
    run.work.mkdir(parents=True, exist_ok=True)
    try:
        shards, skipped = run.extract(files, processor, batch_size, skip_bad_images, progress)
        if not shards:
            raise ValueError(f"{images_dir}: every image was left out as unusable; there is nothing to store")
    except BaseException:
        # finished images stay for the re-run to resume from; folders this call made and left empty go
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    if tsv is not None:
        _concatenate_tsv(shards, Path(tsv))
    feature_dim = shard_meta(shards[0])["feature_dim"]
    store = assemble_store(out_store, shards, run.num_regions, feature_dim, progress)
    shutil.rmtree(run.work)
    return ExtractReport(store=store, skipped=skipped)


def _fingerprint(settings: ExtractSettings, detector: FasterRcnnVgDetector) -> dict:
    """The settings with the detector's name replaced by a digest of its config and weights: a detector folder
    whose weights changed, or another folder with the same weights, is told apart by content."""
    digest = hashlib.sha256()
    config = {
        name: value
        for name, value in detector.config.to_dict().items()
        if not name.startswith("_") and name != "transformers_version"
    }
    digest.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in detector.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {**asdict(settings), "detector": digest.hexdigest()}


@dataclass
class _Run:
    """One extraction into `work`: finished shards, per-image files waiting for a shard, and the settings."""

    images_dir: Path
    work: Path
    fingerprint: dict
    num_regions: int
    tsv: bool

    def extract(
        self,
        files: Sequence[Path],
        processor: FasterRcnnVgImageProcessor,
        batch_size: int,
        skip_bad_images: bool,
        progress: bool,
    ) -> tuple[list[Path], list[str]]:
        """The shards of every usable image, extracting those no earlier run finished; the skipped images."""
        current = {self._name(file): file for file in files}
        shards, done = self._finished_shards(current)
        waiting = self._finished_images(current, done)
        todo = [file for name, file in current.items() if name not in done and name not in waiting]
        skipped: list[str] = []
        with tqdm(total=len(files), initial=len(files) - len(todo), unit="img", disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                for record, file in self._records(processor, batch, skipped if skip_bad_images else None):
                    waiting[self._name(file)] = self._save_image(record, file)
                    if len(waiting) >= CHUNK_IMAGES:
                        shards.append(self._gather(waiting, shards))
                bar.update(len(batch))
        if waiting:
            shards.append(self._gather(waiting, shards))
        return shards, skipped

    def _name(self, file: Path) -> str:
        return str(file.relative_to(self.images_dir))

    def _stat(self, file: Path) -> list:
        stat = file.stat()
        return [self._name(file), stat.st_size, stat.st_mtime_ns]

    def _unchanged(self, meta: dict, current: dict[str, Path]) -> bool:
        return meta["settings"] == self.fingerprint and all(
            name in current and self._stat(current[name]) == [name, size, mtime]
            for name, size, mtime in meta["files"]
        )

    def _finished_shards(self, current: dict[str, Path]) -> tuple[list[Path], set[str]]:
        """Shards still valid (settings, and every file of theirs unchanged), and the images they hold.

        Any other shard (stale, or left half-written as `*.tmp`) is deleted.
        """
        finished, done = [], set()
        for shard in sorted(self.work.glob("chunk-*")):
            meta = shard_meta(shard) if (shard / "shard.json").is_file() else None
            if meta is not None and self._unchanged(meta, current):
                finished.append(shard)
                done.update(name for name, _, _ in meta["files"])
            else:
                shutil.rmtree(shard)
        return finished, done

    def _finished_images(self, current: dict[str, Path], done: set[str]) -> dict[str, Path]:
        """Image name -> its file from an earlier run, where valid and in no shard; the others are deleted."""
        folder = self.work / IMAGES_FOLDER
        finished = {}
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            meta = None
            if path.suffix == ".npz":  # else a *.tmp left by a kill
                with np.load(path) as saved:
                    meta = json.loads(str(saved["meta"]))
            name = None if meta is None else meta["files"][0][0]
            if meta is not None and name not in done and self._unchanged(meta, current):
                finished[name] = path
            else:
                path.unlink()
        return finished

    def _records(
        self,
        processor: FasterRcnnVgImageProcessor,
        files: Sequence[Path],
        skipped: list[str] | None,
    ) -> Iterator[tuple[RegionRecord, Path]]:
        """Each usable image's record; an unusable one raises, or is appended to `skipped` and left out."""
        images: dict[str, tuple[Path, PIL.Image.Image]] = {}
        for file in files:
            try:
                images[str(file)] = (file, open_image(file))
            except BadImageError as error:
                _skip(error, skipped)
        regions = None
        while images and regions is None:
            try:
                regions = processor([image for _, image in images.values()], names=list(images))
            except BadImageError as error:  # found before the detector runs: the others go on without it
                _skip(error, skipped)
                del images[error.name]
        for index, (name, (file, _)) in enumerate(images.items()):
            count = int(regions["num_boxes"][index])
            features = regions["visual_feats"][index, :count]
            if np.abs(features).max() > FLOAT16_MAX:
                raise ValueError(
                    f"{name}: the detector's region features reach {np.abs(features).max():.4g}, beyond the "
                    f"+-{FLOAT16_MAX:g} of the float16 feature store; a trained detector's are far smaller, "
                    f"so check its weights ({processor.detector})"
                )
            height, width = (int(size) for size in regions["image_sizes"][index])
            labels = {array: regions[array][index, :count] for array in RECORD_ARRAYS[2:]}
            yield (
                RegionRecord(
                    image_id=file.stem,
                    height=height,
                    width=width,
                    boxes=regions["boxes"][index, :count],
                    features=features,
                    location=name,
                    **labels,
                ),
                file,
            )

    def _save_image(self, record: RegionRecord, file: Path) -> Path:
        """`record` as a file of its own in the work folder, written under a temporary name and renamed."""
        meta = {"files": [self._stat(file)], "settings": self.fingerprint}
        path = self.work / IMAGES_FOLDER / f"{hashlib.sha1(self._name(file).encode()).hexdigest()}.npz"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                meta=np.array(json.dumps(meta)),
                size=np.array([record.height, record.width]),
                **{name: getattr(record, name) for name in RECORD_ARRAYS},
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    def _gather(self, waiting: dict[str, Path], shards: Sequence[Path]) -> Path:
        """The waiting images as the shard after `shards`; their files are deleted once it is written."""
        number = 1 + max((int(shard.name.removeprefix("chunk-")) for shard in shards), default=-1)
        shard = self.work / f"chunk-{number:06d}"
        metas = []

        def records() -> Iterator[RegionRecord]:
            for name, path in waiting.items():
                with np.load(path) as saved:
                    metas.append(json.loads(str(saved["meta"])))
                    height, width = (int(size) for size in saved["size"])
                    yield RegionRecord(
                        image_id=Path(name).stem,
                        height=height,
                        width=width,
                        location=str(self.images_dir / name),
                        **{array: saved[array] for array in RECORD_ARRAYS},
                    )

        write_shard(
            shard,
            records(),
            self.num_regions,
            lambda: {
                "input": str(self.images_dir),
                "files": [meta["files"][0] for meta in metas],
                "settings": self.fingerprint,
            },
            self.tsv,
        )
        for path in waiting.values():
            path.unlink()
        waiting.clear()
        return shard


def _skip(error: BadImageError, skipped: list[str] | None) -> None:
    """Leave the image out, listed, when skipping; else the error stops the run."""
    if skipped is None:
        raise error
    skipped.append(str(error))
    tqdm.write(f"skipped {error}", file=sys.stderr)


def _image_files(images_dir: Path) -> list[Path]:
    """Image files of the folder, with unique ids; files of other types are reported, not read."""
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir}: no such folder of images")
    files, others = image_files(images_dir)
    if others:
        shown = ", ".join(str(path.relative_to(images_dir)) for path in others[:5])
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        print(
            f"ignoring {len(others)} files that are not images by their suffix: {shown}{more}",
            file=sys.stderr,
        )
    if not files:
        raise ValueError(f"{images_dir}: no image files (.jpg, .png, ...) in this folder or below it")
    owner: dict[str, Path] = {}
    for file in files:
        if file.stem in owner:
            raise ValueError(
                f"image id {file.stem!r} names two files: {owner[file.stem]} and {file}; rename one"
            )
        owner[file.stem] = file
    return files


def _concatenate_tsv(shards: Sequence[Path], out: Path) -> None:
    """The shards' obj36 lines, in order, into `out`, written under a temporary name and renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as handle:
        for shard in shards:
            with open(shard / "obj36.tsv", "rb") as part:
                shutil.copyfileobj(part, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out)


def _region_count(value: str) -> int | str:
    if value == ADAPTIVE:
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or {ADAPTIVE!r}, got {value!r}")
    return count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lxmert_s_msp.data.extract", description=__doc__.split("\n")[0]
    )
    parser.add_argument("images_dir", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("store", type=Path, help="feature store folder to write")
    parser.add_argument("--batch-size", type=int, default=2, help="images per detector call (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--tsv", type=Path, help="also write the regions as an obj36 TSV file")
    parser.add_argument(
        "--num-regions",
        type=_region_count,
        default=36,
        help="regions per image: a number (default 36, LXMERT's) or 'adaptive' (bottom-up attention's 10 to "
        "100: those of confidence at least 0.2; the store keeps up to 100 an image and each image's count)",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="run res5 (4/5 of the work) in bfloat16: about twice as fast on a CPU with bfloat16 "
        "instructions, features differing from float32's in the third significant digit (docs/benchmarks.md)",
    )
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out and list the images that cannot be used (unreadable, truncated, tiny, too elongated) "
        "instead of stopping at the first",
    )
    parser.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        help=f"Hub id or local folder (default {DEFAULT_DETECTOR}); offline, run `hf download "
        f"{DEFAULT_DETECTOR} --local-dir FOLDER` on a machine with internet and pass --detector FOLDER",
    )
    args = accept_underscores(parser).parse_args(argv)
    settings = ExtractSettings(detector=args.detector, num_regions=args.num_regions, bf16=args.bf16)
    try:
        report = extract_features(
            args.images_dir,
            args.store,
            settings,
            batch_size=args.batch_size,
            device=args.device,
            tsv=args.tsv,
            skip_bad_images=args.skip_bad_images,
        )
    except BadImageError as error:
        parser.exit(
            1,
            f"error: {error}\nfix or remove the file and re-run, or pass --skip-bad-images: finished images "
            "are not extracted again\n",
        )
    except (DetectorNotFoundError, ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")
    print(f"extracted {len(report.store)} images into {report.store.path}", file=sys.stderr)
    if report.skipped:
        listed = "".join(f"\n  {line}" for line in report.skipped)
        print(f"skipped {len(report.skipped)} images that cannot be used:{listed}", file=sys.stderr)


if __name__ == "__main__":
    run(main)
