"""A tiny bottom-up-attention detector and a folder of test images in the formats users have.

The ResNet keeps torchvision's channel widths (C4 1,024, features 2,048) with one block per stage, thin 3x3
convolutions and few proposals, so a small image runs through it in a fraction of a second.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from faster_rcnn_vg import FasterRcnnVgConfig, FasterRcnnVgDetector

TINY_DETECTOR = {
    "resnet_layers": [1, 1, 1, 1],
    "width_per_group": 8,
    "rpn_hidden_channels": 16,
    "rpn_pre_nms_topk": 200,
    "rpn_post_nms_topk": 12,
    "min_regions": 10,
    "max_regions": 10,
    "pooler_resolution": 4,
    "num_object_classes": 6,
    "num_attribute_classes": 4,
    "shortest_edge": 64,
    "longest_edge": 96,
    "anchor_sizes": [16, 32, 64, 128, 256],
}
EXIF_ORIENTATION = 0x0112
ROTATED_90 = 6  # stored sideways: viewers turn it 90 degrees clockwise


def tiny_detector(**overrides) -> FasterRcnnVgDetector:
    return FasterRcnnVgDetector(FasterRcnnVgConfig(**{**TINY_DETECTOR, **overrides})).eval()


def save_tiny_detector(folder: Path, model: FasterRcnnVgDetector | None = None) -> str:
    (model or tiny_detector()).save_pretrained(folder)
    return str(folder)


def one_class_ahead_detector() -> FasterRcnnVgDetector:
    """A tiny detector for the adaptive mode: 150 proposals, one object class far ahead of the others (0.75
    to 0.05), so that its per-class NMS keeps the boxes that overlap little, above the adaptive mode's 0.2,
    and leaves the others below it: how many pass depends on the image."""
    model = tiny_detector(rpn_pre_nms_topk=400, rpn_post_nms_topk=150)
    with torch.no_grad():
        model.head.cls_score.weight.zero_()
        model.head.cls_score.bias.copy_(torch.tensor([4.0, 0, 0, 0, 0, 0, 0]))
    return model


def noise(width: int, height: int, seed: int, channels: int = 3) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def draw_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Write the test images into `folder`; returns image id -> upright (height, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(noise(120, 80, 0)).save(folder / "colour_png.png")
    PIL.Image.fromarray(noise(101, 37, 1)).save(folder / "odd_jpeg.jpg", quality=90)
    PIL.Image.fromarray(noise(60, 50, 2, channels=1)).save(folder / "gray_png.png")
    (folder / "nested").mkdir(exist_ok=True)
    PIL.Image.fromarray(noise(70, 90, 3, channels=1)).save(folder / "nested" / "gray_jpeg.JPEG")
    PIL.Image.fromarray(noise(80, 64, 4)).convert("CMYK").save(folder / "cmyk.jpg")
    rotated = PIL.Image.fromarray(noise(110, 66, 5))
    exif = rotated.getexif()
    exif[EXIF_ORIENTATION] = ROTATED_90
    rotated.save(folder / "exif_rotated.jpg", exif=exif.tobytes())
    return {
        "colour_png": (80, 120),
        "odd_jpeg": (37, 101),
        "gray_png": (50, 60),
        "gray_jpeg": (90, 70),
        "cmyk": (64, 80),
        "exif_rotated": (110, 66),
    }


def jpeg_bytes(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(noise(width, height, seed)).save(buffer, format="JPEG")
    return buffer.getvalue()
