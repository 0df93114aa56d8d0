"""Hard negatives for ITM_HS: every image's top-M most similar other images in the store.

MSP §3.3 takes each image's negatives from its most similar images (the paper reused ViLBERT's
retrieval file); like LXMERT's retrieval hard pool, similarity here is the cosine of the mean of the
image's valid region features. Row i of `hard_negatives.npy` holds the store rows of image i's
neighbours, most similar first, padded with -1 when the store has fewer than M other images.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.store import HARD_NEGATIVES_FILE, FeatureStore, atomic_save_npy, float32_tensor


def mean_region_features(
    store: FeatureStore, batch_size: int = 1024, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(N, F) float32 unit vectors: the mean of each image's first `num_boxes` regions, normalised.

    Padding regions are masked out rather than trusted to be zero, and the mean divides by the valid
    count, so an image with 10 boxes is not pulled towards the origin by 26 empty slots.
    """
    pooled = []
    for start in range(0, len(store), batch_size):
        stop = min(start + batch_size, len(store))
        features = float32_tensor(np.array(store.features[start:stop])).to(device)
        num_boxes = torch.from_numpy(np.array(store.num_boxes[start:stop])).to(device).clamp(min=1)
        valid = torch.arange(store.num_regions, device=device) < num_boxes[:, None]
        sums = torch.einsum("nr,nrf->nf", valid.float(), features)
        pooled.append(sums / num_boxes[:, None].float())
    return torch.nn.functional.normalize(torch.cat(pooled), dim=1)


def build_hard_negatives(
    store: FeatureStore | str | os.PathLike,
    top_m: int = 100,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Compute (N, top_m) int64 neighbour rows, save them as the store's `hard_negatives.npy`, return them.

    Similarities are computed one block of `batch_size` query images against all images at a time,
    so memory is (batch_size x N), not N x N; on a GPU when there is one.
    """
    if top_m < 1:
        raise ValueError(f"top_m must be at least 1, got {top_m}")
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    embeddings = mean_region_features(store, batch_size, device)
    num_images = len(store)
    found = min(top_m, num_images - 1)
    negatives = np.full((num_images, top_m), -1, dtype=np.int64)
    for start in range(0, num_images, batch_size):
        stop = min(start + batch_size, num_images)
        similarity = embeddings[start:stop] @ embeddings.T
        rows = torch.arange(stop - start, device=device)
        similarity[rows, rows + start] = -torch.inf  # an image is never its own negative
        if found:
            negatives[start:stop, :found] = similarity.topk(found, dim=1).indices.cpu().numpy()
    atomic_save_npy(store.path / HARD_NEGATIVES_FILE, negatives)
    return negatives


def load_hard_negatives(store_path: str | os.PathLike) -> np.ndarray:
    """The store's hard-negative rows, refused when they no longer describe the store."""
    store = FeatureStore(store_path)
    path = store.path / HARD_NEGATIVES_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: build it with `python -m lxmert_s_msp.data.hard_negatives {store.path}`"
        )
    negatives = np.load(path)
    if negatives.ndim != 2 or negatives.dtype != np.int64 or len(negatives) != len(store):
        raise ValueError(
            f"{path} is stale: {negatives.dtype} array of shape {negatives.shape}, but the store has "
            f"{len(store)} images; rebuild it with `python -m lxmert_s_msp.data.hard_negatives {store.path}`"
        )
    if negatives.size and (negatives.min() < -1 or negatives.max() >= len(store)):
        raise ValueError(f"{path} is stale: it points at rows outside the store's {len(store)} images")
    return negatives


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lxmert_s_msp.data.hard_negatives", description=__doc__.split("\n")[0]
    )
    parser.add_argument("store", type=Path)
    parser.add_argument("--top-m", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = accept_underscores(parser).parse_args(argv)
    negatives = build_hard_negatives(args.store, args.top_m, args.batch_size, args.device)
    images, top_m = negatives.shape
    print(f"wrote {args.store / HARD_NEGATIVES_FILE}: {images} images x {top_m} negatives")


if __name__ == "__main__":
    run(main)
