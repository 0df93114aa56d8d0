"""`python -m lxmert_s_msp.data.extract IMAGES_DIR STORE`: region features of your own images, as LXMERT's were made.

Every image under IMAGES_DIR (recursively; image id = file name without its suffix) goes through the
bottom-up-attention detector (`faster_rcnn_vg`) and becomes a row of the same feature store the
importers write (`python -m lxmert_s_msp.data.features import`), so training, fine-tuning and evaluation read it
unchanged; `--tsv OUT` also writes an obj36 TSV for other LXMERT code.

Resumable and atomic like the import: images are extracted in chunks of `CHUNK_IMAGES`, each renamed into
STORE/extract-work when complete; a re-run skips chunks whose files (path, size, mtime) and settings are
unchanged, so a killed run loses at most one chunk. The store (and the TSV) are written from the chunks,
under temporary names, and the work folder is deleted last. An image that cannot be used stops the run
with an error naming the file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from faster_rcnn_vg import DEFAULT_DETECTOR, BadImageError, FasterRcnnVgImageProcessor
from faster_rcnn_vg.image_processing_faster_rcnn_vg import image_files, open_image
from lxmert_s_msp.data.features import RegionRecord, assemble_store, shard_meta, write_shard
from lxmert_s_msp.data.store import FeatureStore

WORK_FOLDER = "extract-work"
CHUNK_IMAGES = 64


@dataclass
class ExtractSettings:
    """What decides a chunk's content: a chunk made with other settings is extracted again."""

    detector: str = DEFAULT_DETECTOR
    num_regions: int = 36
    tsv: bool = False


def extract_features(
    images_dir: str | os.PathLike,
    out_store: str | os.PathLike,
    settings: ExtractSettings | None = None,
    batch_size: int = 2,
    device: str = "cpu",
    tsv: str | os.PathLike | None = None,
    progress: bool = True,
) -> FeatureStore:
    """Extract every image of `images_dir` into the store `out_store` (and into the obj36 TSV `tsv`)."""
    settings = settings or ExtractSettings()
    settings.tsv = tsv is not None
    if batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1, got {batch_size}")
    images_dir, out_store = Path(images_dir), Path(out_store)
    files = _image_files(images_dir)
    processor = FasterRcnnVgImageProcessor(settings.detector, device=device, num_regions=settings.num_regions)
    work = out_store / WORK_FOLDER
    work.mkdir(parents=True, exist_ok=True)
    shards, todo = _finished_shards(work, images_dir, files, settings)
    first_index = 1 + max((int(shard.name.removeprefix("chunk-")) for shard in shards), default=-1)
    with tqdm(total=len(files), initial=len(files) - len(todo), unit="img", disable=not progress) as bar:
        for number, start in enumerate(range(0, len(todo), CHUNK_IMAGES), start=first_index):
            chunk = todo[start : start + CHUNK_IMAGES]
            shard = work / f"chunk-{number:06d}"
            describe = {
                "input": str(images_dir),
                "files": [_file_stat(images_dir, file) for file in chunk],
                "settings": asdict(settings),
            }
            records = _records(processor, chunk, batch_size, bar)
            write_shard(
                shard, records, settings.num_regions, lambda describe=describe: describe, settings.tsv
            )
            shards.append(shard)
    if tsv is not None:
        _concatenate_tsv(shards, Path(tsv))
    feature_dim = shard_meta(shards[0])["feature_dim"]
    store = assemble_store(out_store, shards, settings.num_regions, feature_dim, progress)
    shutil.rmtree(work)
    return store


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


def _file_stat(images_dir: Path, file: Path) -> list:
    stat = file.stat()
    return [str(file.relative_to(images_dir)), stat.st_size, stat.st_mtime_ns]


def _finished_shards(
    work: Path, images_dir: Path, files: Sequence[Path], settings: ExtractSettings
) -> tuple[list[Path], list[Path]]:
    """Shards still valid (settings, and every file of theirs unchanged), and the files none of them holds.

    Any other shard (stale, or left half-written as `*.tmp`) is deleted.
    """
    current = {str(file.relative_to(images_dir)): file for file in files}
    finished, done = [], set()
    for shard in sorted(work.iterdir()):
        meta = shard_meta(shard) if (shard / "shard.json").is_file() else None
        valid = (
            meta is not None
            and meta["settings"] == asdict(settings)
            and all(
                name in current and _file_stat(images_dir, current[name]) == [name, size, mtime]
                for name, size, mtime in meta["files"]
            )
        )
        if valid:
            finished.append(shard)
            done.update(name for name, _, _ in meta["files"])
        else:
            shutil.rmtree(shard)
    return finished, [file for name, file in current.items() if name not in done]


def _records(
    processor: FasterRcnnVgImageProcessor, files: Sequence[Path], batch_size: int, bar: tqdm
) -> Iterator[RegionRecord]:
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        names = [str(file) for file in batch]
        regions = processor([open_image(file) for file in batch], names=names)
        for index, file in enumerate(batch):
            count = int(regions["num_boxes"][index])
            height, width = (int(size) for size in regions["image_sizes"][index])
            yield RegionRecord(
                image_id=file.stem,
                height=height,
                width=width,
                boxes=regions["boxes"][index, :count],
                features=regions["visual_feats"][index, :count],
                object_ids=regions["object_ids"][index, :count],
                object_confidences=regions["object_confidences"][index, :count],
                attribute_ids=regions["attribute_ids"][index, :count],
                attribute_confidences=regions["attribute_confidences"][index, :count],
                location=str(file),
            )
        bar.update(len(batch))


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lxmert_s_msp.data.extract", description=__doc__.split("\n")[0]
    )
    parser.add_argument("images_dir", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("store", type=Path, help="feature store folder to write")
    parser.add_argument("--batch-size", type=int, default=2, help="images per detector call (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--tsv", type=Path, help="also write the regions as an obj36 TSV file")
    parser.add_argument("--num-regions", type=int, default=36, help="regions per image, 10-100 (default 36)")
    parser.add_argument(
        "--detector", default=DEFAULT_DETECTOR, help=f"hub id or folder (default {DEFAULT_DETECTOR})"
    )
    args = parser.parse_args(argv)
    settings = ExtractSettings(detector=args.detector, num_regions=args.num_regions)
    try:
        store = extract_features(
            args.images_dir,
            args.store,
            settings,
            batch_size=args.batch_size,
            device=args.device,
            tsv=args.tsv,
        )
    except (BadImageError, ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\nfix the input and re-run: finished images are not extracted again\n")
    print(f"extracted {len(store)} images into {store.path}", file=sys.stderr)


if __name__ == "__main__":
    main()
