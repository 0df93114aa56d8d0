"""A tiny feature store (3 images, 4 regions x 8 dims) that the corpus tests build their corpora against."""

from pathlib import Path

import numpy as np

from lxmert_s_msp.data.store import FeatureStore, write_store

IMAGE_IDS = ["1", "2", "COCO_val2014_000000000042"]
OBJECT_VOCAB = ["man", "tennis racket", "car", "tree"]


def write_tiny_store(folder: Path) -> FeatureStore:
    num_images, num_regions = len(IMAGE_IDS), 4
    return write_store(
        folder,
        IMAGE_IDS,
        features=np.ones((num_images, num_regions, 8), np.float16),
        boxes=np.zeros((num_images, num_regions, 4), np.float32),
        object_ids=np.array([[0, 1, 3, -1], [2, 2, -1, -1], [3, 0, 1, 2]]),  # -1: padding regions
        object_confidences=np.ones((num_images, num_regions), np.float32),
        attribute_ids=np.zeros((num_images, num_regions), np.int64),
        attribute_confidences=np.ones((num_images, num_regions), np.float32),
        num_boxes=np.array([3, 2, 4]),
        image_sizes=np.full((num_images, 2), 100),
    )
