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
from .modeling_faster_rcnn_vg import DEFAULT_DETECTOR, FasterRcnnVgDetector

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
    """An image the detector cannot read or use; `name`, its file (or `images[i]`), leads the message."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name = name


def open_image(path: str | os.PathLike) -> PIL.Image.Image:
    """The decoded, upright RGB image of a file; `BadImageError` naming the file if it cannot be read."""
    try:
        image = PIL.Image.open(path)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise BadImageError(str(path), f"not a readable image ({type(error).__name__}: {error})") from None
    with image:
        return upright_rgb(image, str(path))


def upright_rgb(image: PIL.Image.Image, name: str) -> PIL.Image.Image:
    """`image` decoded (a truncated file fails here, under its `name`, not later without it), rotated or
    flipped as its EXIF orientation says (cameras store portraits sideways), in RGB."""
    try:
        image.load()
        upright = PIL.ImageOps.exif_transpose(image)
        return upright if upright.mode == "RGB" else upright.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(name, f"not a readable image ({type(error).__name__}: {error})") from None


def resize_scale(height: int, width: int, config: FasterRcnnVgConfig) -> float:
    """The factor that resizes the shorter side to `shortest_edge`, the longer to at most `longest_edge`."""
    return min(config.shortest_edge / min(height, width), config.longest_edge / max(height, width))


def resized_size(height: int, width: int, config: FasterRcnnVgConfig) -> tuple[int, int]:
    """(height, width) with the shorter side at `shortest_edge`, the longer at most `longest_edge`."""
    scale = resize_scale(height, width, config)
    return round(height * scale), round(width * scale)


def detector_input(
    image: PIL.Image.Image, config: FasterRcnnVgConfig, name: str, min_side: int
) -> torch.Tensor:
    """(3, h, w) float32: `image` (RGB) resized, reordered to `config.input_format`, mean subtracted."""
    width, height = image.size
    if min(width, height) < min_side:
        raise BadImageError(
            name,
            f"{width}x{height} pixels, smaller than {min_side} on a side: an icon or a placeholder, with "
            "nothing for the detector to find once enlarged",
        )
    new_height, new_width = resized_size(height, width, config)
    if min(new_height, new_width) < MIN_INPUT_SIDE:
        raise BadImageError(
            name,
            f"{width}x{height} pixels is too elongated: resized to {new_width}x{new_height}, its shorter "
            f"side is below the {MIN_INPUT_SIDE} pixels the detector's stride-16 backbone needs",
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
        Hub id or folder of the detector, loaded on first use (once per process and device). Offline, a
        folder: `hf download unc-nlp/frcnn-vg-finetuned --local-dir FOLDER` on a machine with internet.
    device (`str`, defaults to `"cpu"`):
        Where the detector runs (`"cuda"` on a GPU); a choice of this machine, so not saved.
    num_regions (`int` or `"adaptive"`, optional):
        Regions per image: exactly this many, or `"adaptive"` (bottom-up attention's 10-100, those with a
        confidence of at least 0.2); the detector config's (36) when not given.
    min_side (`int`, defaults to 10):
        Smaller images (e.g. 1x1 tracking pixels) are refused with an error rather than enlarged 60-fold.
    bf16 (`bool`, defaults to `False`):
        Run res5, four fifths of the work, in bfloat16: about twice as fast on a CPU with bfloat16
        instructions (AVX-512 BF16), with features that differ from float32's in the third significant digit
        (docs/benchmarks.md, "Region extraction").
    """

    model_input_names = ["visual_feats", "boxes", "image_sizes"]

    def __init__(
        self,
        detector: str = DEFAULT_DETECTOR,
        device: str = "cpu",
        num_regions: int | str | None = None,
        min_side: int = 10,
        bf16: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.detector = str(detector)
        self.device = device
        self.num_regions = num_regions
        self.min_side = min_side
        self.bf16 = bf16

    def to_dict(self) -> dict[str, Any]:
        settings = {name: value for name, value in self.__dict__.items() if name != "device"}
        return {**copy.deepcopy(settings), "image_processor_type": type(self).__name__}

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
        region's Visual Genome `object_ids`, `attribute_ids` and their confidences; rows past an image's
        `num_boxes` are zero.

        `names` label the images in errors (the extraction command passes file names; else `images[i]`); an
        image the detector cannot use raises `BadImageError` naming it, before the detector runs.
        """
        images = [images] if isinstance(images, PIL.Image.Image) else list(images)
        names = list(names) if names is not None else [f"images[{index}]" for index in range(len(images))]
        config = self.model.config
        upright = [upright_rgb(image, name) for image, name in zip(images, names, strict=True)]
        inputs = [
            detector_input(image, config, name, self.min_side).to(self.device)
            for image, name in zip(upright, names, strict=True)
        ]
        scales = [resize_scale(image.height, image.width, config) for image in upright]
        sizes = np.array([[image.height, image.width] for image in upright], dtype=np.int64)
        detections = self.model(inputs, num_regions=self.num_regions, image_scales=scales, bf16=self.bf16)
        regions = {name: value.cpu().numpy() for name, value in detections.items()}
        for name, features, count in zip(names, regions["features"], regions["num_boxes"], strict=True):
            if not np.isfinite(features[:count]).all():
                raise ValueError(
                    f"{name}: the detector {self.detector} gave region features that are not finite (NaN or "
                    "inf); its weights are broken"
                )
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
    "resize_scale",
    "upright_rgb",
]
