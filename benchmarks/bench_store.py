"""Measure how fast random batches come out of a feature store (docs/benchmarks.md, store section).

    python benchmarks/bench_store.py /tmp/bench_store --make-synthetic 20000 --delete

Reports, for random batches (rows drawn without replacement, as a shuffling sampler does):
* `store.read`: one fancy index per array, the number the issue asks for; first over one pass through
  the store with a freshly opened memory map (every page is mapped into the process once: the cost of
  a first epoch or of a new DataLoader worker), then steady state;
* the float16 -> float32 torch conversion the model input needs, two ways: `Tensor.float()`, and
  `lxmert_s_msp.data.store.float32_tensor` (same values; its docstring says why it is faster).
The page cache is warmed first by reading the features file once.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lxmert_s_msp.data.store import FeatureStore, float32_tensor, write_store_from_chunks


def make_synthetic_store(path: Path, num_images: int, num_regions: int, feature_dim: int) -> FeatureStore:
    rng = np.random.default_rng(0)

    def chunks(size: int = 500):
        for start in range(0, num_images, size):
            count = min(size, num_images - start)
            yield rng.standard_normal((count, num_regions, feature_dim), dtype=np.float32).astype(np.float16)

    per_region = np.zeros((num_images, num_regions))
    return write_store_from_chunks(
        path,
        [str(index) for index in range(num_images)],
        chunks(),
        num_regions,
        feature_dim,
        boxes=np.zeros((num_images, num_regions, 4)),
        object_ids=per_region,
        object_confidences=per_region,
        attribute_ids=per_region,
        attribute_confidences=per_region,
        num_boxes=np.full(num_images, num_regions),
        image_sizes=np.full((num_images, 2), 480),
    )


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(1 << 26):
            pass


def timed(batches: list[np.ndarray], step: Callable[[np.ndarray], object]) -> dict[str, float]:
    """Median seconds per batch, and minor page faults per batch (the kernel mapping memory in)."""
    seconds = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for rows in batches:
        start = time.perf_counter()
        step(rows)
        seconds.append(time.perf_counter() - start)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / len(batches)
    return {"ms": 1e3 * float(np.median(seconds)), "faults": faults}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--make-synthetic", type=int, metavar="IMAGES", help="first write a random store")
    parser.add_argument("--num-regions", type=int, default=36)
    parser.add_argument("--feature-dim", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--delete", action="store_true", help="delete the store afterwards")
    args = parser.parse_args()

    if args.make_synthetic:
        make_synthetic_store(args.store, args.make_synthetic, args.num_regions, args.feature_dim)
    warm_page_cache(args.store / "features.npy")
    store = FeatureStore(args.store)
    rng = np.random.default_rng(0)
    size = args.batch_size

    def random_batches(count: int) -> list[np.ndarray]:
        return [rng.permutation(len(store))[:size] for _ in range(count)]

    print(f"store {args.store}: {len(store)} images, features {store.features.shape} {store.features.dtype}")
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, load before {os.getloadavg()}")
    first_pass = np.array_split(rng.permutation(len(store)), len(store) // size)
    results = {
        "store.read, first pass (fresh mapping)": timed(first_pass, store.read),
        "store.read, steady state": timed(random_batches(args.batches), store.read),
        "store.read, rows sorted first": timed(
            random_batches(args.batches), lambda rows: store.read(np.sort(rows))
        ),
    }
    features = store.read(random_batches(1)[0]).features
    conversions = {
        "Tensor.float()": lambda array: torch.from_numpy(array).float(),
        "float32_tensor": float32_tensor,
    }
    for name, convert in conversions.items():
        convert(features)
        results[f"float16 -> float32 torch, {name}"] = timed([features] * args.batches, convert)
    results["store.read + float32_tensor"] = timed(
        random_batches(args.batches), lambda rows: float32_tensor(store.read(rows).features)
    )
    for name, result in results.items():
        rate = size / result["ms"] * 1e3
        faults = result["faults"]
        print(
            f"{name:50s} {result['ms']:7.1f} ms/batch {rate:9,.0f} samples/s {faults:8.0f} page faults/batch"
        )
    print(f"load after {os.getloadavg()}")
    if args.delete:
        del store
        shutil.rmtree(args.store)


if __name__ == "__main__":
    main()
