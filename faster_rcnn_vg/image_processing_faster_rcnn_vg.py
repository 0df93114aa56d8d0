"""Images -> the detector's input, and the detector's regions back in the image's own pixels.

Preprocessing as the detector was trained (its config declares it): colour channels in `input_format` order
(BGR for the Caffe-trained weights; transformers' LXMERT demo feeds RGB, a known cause of worse features),
the per-channel mean subtracted on the 0-255 scale, bilinear resize so the shorter side is `shortest_edge`
unless the longer would pass `longest_edge`. Images are turned upright by their EXIF orientation, and every
mode PIL reads (grayscale, palette, CMYK, RGBA, 16-bit) is converted to RGB first.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from transformers import BatchFeature, ImageProcessingMixin

from .configuration_faster_rcnn_vg import FasterRcnnVgConfig
from .modeling_faster_rcnn_vg import FasterRcnnVgDetector

DEFAULT_DETECTOR = "unc-nlp/frcnn-vg-finetuned"
# A stride-16 backbone needs a few cells on the shorter side; thinner inputs are lines, not scenes.
MIN_INPUT_SIDE = 32
REGION_NAMES = (
    "features",
    "boxes",
    "object_ids",
    "object_confidences",
    "attribute_ids",
    "attribute_confidences",
    "num_boxes",
)


class BadImageError(ValueError):
    """An image the detector cannot read or use; the message names the file (or `images[i]`)."""


def open_image(path: str | os.PathLike) -> PIL.Image.Image:
    """The decoded, upright RGB image of a file; `BadImageError` naming the file if it cannot be read."""
    try:
        with PIL.Image.open(path) as image:
            image.load()  # decodes now: a truncated file fails here, not later without its name
            return as_upright_rgb(image)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise BadImageError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None


def as_upright_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Rotated/flipped as its EXIF orientation says (cameras store portraits sideways), in RGB."""
    upright = PIL.ImageOps.exif_transpose(image)
    return upright if upright.mode == "RGB" else upright.convert("RGB")


def resized_size(height: int, width: int, config: FasterRcnnVgConfig) -> tuple[int, int]:
    """(height, width) with the shorter side at `shortest_edge`, the longer at most `longest_edge`."""
    scale = min(config.shortest_edge / min(height, width), config.longest_edge / max(height, width))
    return round(height * scale), round(width * scale)


def detector_input(
    image: PIL.Image.Image, config: FasterRcnnVgConfig, name: str, min_side: int
) -> torch.Tensor:
    """(3, h, w) float32: `image` (RGB) resized, reordered to `config.input_format`, mean subtracted."""
    width, height = image.size
    if min(width, height) < min_side:
        raise BadImageError(
            f"{name}: {width}x{height} pixels, smaller than {min_side} on a side: an icon or a placeholder, "
            "with nothing for the detector to find once enlarged"
        )
    new_height, new_width = resized_size(height, width, config)
    if min(new_height, new_width) < MIN_INPUT_SIDE:
        raise BadImageError(
            f"{name}: {width}x{height} pixels is too elongated: resized to {new_width}x{new_height}, its "
            f"shorter side is below the {MIN_INPUT_SIDE} pixels the detector's stride-16 backbone needs"
        )
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
    if config.input_format == "BGR":
        pixels = pixels.flip(0)
    pixels = pixels - torch.tensor(config.pixel_mean).view(3, 1, 1)
    return torch.nn.functional.interpolate(
        pixels[None], size=(new_height, new_width), mode="bilinear", align_corners=False
    )[0]


@functools.cache
def load_detector(detector: str, device: str) -> FasterRcnnVgDetector:
    """One loaded detector per (name, device) per process: processors that share it share its weights."""
    return FasterRcnnVgDetector.from_pretrained(detector).to(device).eval()


class FasterRcnnVgImageProcessor(ImageProcessingMixin):
    r"""
    Images -> regions as LXMERT's features were made: runs `FasterRcnnVgDetector` on them.

    detector (`str`, defaults to `"unc-nlp/frcnn-vg-finetuned"`):
        Hub id or folder of the detector, loaded on first use (once per process and device).
    device (`str`, defaults to `"cpu"`):
        Where the detector runs (`"cuda"` on a GPU).
    num_regions (`int`, optional):
        Regions per image, 10 to 100; the detector config's (36) when not given.
    min_side (`int`, defaults to 10):
        Smaller images (e.g. 1x1 tracking pixels) are refused with an error rather than enlarged 60-fold.
    """

    model_input_names = ["visual_feats", "boxes", "image_sizes"]

    def __init__(
        self,
        detector: str = DEFAULT_DETECTOR,
        device: str = "cpu",
        num_regions: int | None = None,
        min_side: int = 10,
        **kwargs,
    ):
        if num_regions is not None and not 10 <= num_regions <= 100:
            raise ValueError(f"num_regions: expected 10 to 100 regions per image, got {num_regions}")
        super().__init__(**kwargs)
        self.detector = str(detector)
        self.device = device
        self.num_regions = num_regions
        self.min_side = min_side

    def to_dict(self) -> dict[str, Any]:
        return {**copy.deepcopy(self.__dict__), "image_processor_type": type(self).__name__}

    @property
    def model(self) -> FasterRcnnVgDetector:
        return load_detector(self.detector, self.device)

    def __call__(
        self,
        images: PIL.Image.Image | Sequence[PIL.Image.Image],
        names: Sequence[str] | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Regions of a batch of PIL images: `visual_feats` (B, N, 2048), `boxes` (B, N, 4) x1, y1, x2, y2 in
        pixels of the upright image, `image_sizes` (B, 2) its height and width, `num_boxes` (B,), and each
        region's Visual Genome `object_ids`, `attribute_ids` and their confidences.

        `names` label the images in errors (the extraction command passes file names; else `images[i]`).
        """
        images = [images] if isinstance(images, PIL.Image.Image) else list(images)
        names = list(names) if names is not None else [f"images[{index}]" for index in range(len(images))]
        config = self.model.config
        upright = [as_upright_rgb(image) for image in images]
        inputs = [
            detector_input(image, config, name, self.min_side).to(self.device)
            for image, name in zip(upright, names, strict=True)
        ]
        detections = self.model(inputs, num_regions=self.num_regions)
        regions = {name: value.cpu().numpy() for name, value in detections.items()}
        sizes = np.array([[image.height, image.width] for image in upright], dtype=np.int64)
        # Back to the image's pixels: each axis by its own resize factor, clipped to the image.
        scale = np.array(
            [
                [size[1] / input.shape[2], size[0] / input.shape[1]] * 2
                for size, input in zip(sizes, inputs, strict=True)
            ],
            dtype=np.float32,
        )
        boxes = np.minimum(regions["boxes"] * scale[:, None, :], np.tile(sizes[:, ::-1], 2)[:, None, :])
        data = {name: regions[name] for name in REGION_NAMES if name not in ("features", "boxes")}
        data.update(visual_feats=regions["features"], boxes=boxes.astype(np.float32), image_sizes=sizes)
        return BatchFeature(data, tensor_type=return_tensors)


def image_files(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Image files under `folder` (recursively, by suffix, sorted), and the other files."""
    suffixes = {
        suffix for suffix, format in PIL.Image.registered_extensions().items() if format in PIL.Image.OPEN
    }
    files = sorted(path for path in Path(folder).rglob("*") if path.is_file())
    images = [path for path in files if path.suffix.lower() in suffixes]
    return images, [path for path in files if path.suffix.lower() not in suffixes]


__all__ = [
    "DEFAULT_DETECTOR",
    "BadImageError",
    "FasterRcnnVgImageProcessor",
    "detector_input",
    "image_files",
    "load_detector",
    "open_image",
]
