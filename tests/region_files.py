"""Region-feature files written by the tests in the exact public formats: obj36 TSV rows as LXMERT's
extraction writes them and per-image `.npz` files."""

import base64
import csv

import numpy as np

from lxmert_s_msp.data.readers import OBJ36_FIELDS

FEATURE_DIM = 16
REGIONS = 5
LABEL_FIELDS = ("objects_id", "objects_conf", "attrs_id", "attrs_conf")


def make_image(image_id, num_boxes, seed, height=100, width=200):
    """One image's detections as an extractor writes them (pixel boxes inside the image)."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, width / 2, num_boxes)
    y1 = rng.uniform(0, height / 2, num_boxes)
    x2 = x1 + rng.uniform(1, width / 2, num_boxes)
    y2 = y1 + rng.uniform(1, height / 2, num_boxes)
    return {
        "img_id": image_id,
        "img_h": height,
        "img_w": width,
        "objects_id": rng.integers(0, 1600, num_boxes),
        "objects_conf": rng.uniform(0.2, 1, num_boxes),
        "attrs_id": rng.integers(0, 400, num_boxes),
        "attrs_conf": rng.uniform(0, 1, num_boxes),
        "num_boxes": num_boxes,
        "boxes": np.stack([x1, y1, x2, y2], axis=1),
        "features": rng.uniform(0, 5, (num_boxes, FEATURE_DIM)),
    }


def b64(array, dtype):
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def obj36_row(image):
    """The image's fields as LXMERT's extraction writes them: raw little-endian arrays in base64."""
    dtypes = dict(zip(LABEL_FIELDS, ("<i8", "<f4", "<i8", "<f4"), strict=True), boxes="<f4", features="<f4")
    return {
        name: b64(value, dtypes[name]) if isinstance(value, np.ndarray) else value
        for name, value in image.items()
    }


def write_tsv(path, images):
    """An obj36 file written the way the extraction script does: csv.DictWriter, tab-delimited."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, OBJ36_FIELDS, delimiter="\t")
        writer.writerows(obj36_row(image) for image in images)
    return path


def corrupt(image, field, value):
    image[field] = value
    return image


def write_npz(path, image, keys=("x", "bbox", "image_h", "image_w"), labels=True, **extra):
    arrays = dict(zip(keys, (image["features"], image["boxes"], image["img_h"], image["img_w"]), strict=True))
    if labels:
        arrays.update({name: image[name] for name in LABEL_FIELDS})
    np.savez_compressed(path, num_bbox=image["num_boxes"], **arrays, **extra)
    return path
