"""`LxmertSProcessor`: text and images or region features -> exactly the inputs `LxmertSModel` takes.

Text is tokenised to a fixed length (LXMERT's 20 by default; MSP's stages set their own) with the position
ids the model's config asks for; regions are padded with zeros to the configured count (36) with a visual
attention mask (more regions are refused unless truncation is asked for), and pixel boxes are divided by the
image's width and height as LXMERT does. Given an `image_processor`
(`faster_rcnn_vg.FasterRcnnVgImageProcessor`), it also takes images and gets their regions from the
detector LXMERT's features come from. The two array functions below, `word_position_ids` and `fit_regions`,
are shared with the pre-training collators so that both produce the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

TEXT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
VISUAL_INPUT_NAMES = ("visual_feats", "visual_pos", "visual_attention_mask")

ArrayLike = np.ndarray | torch.Tensor
BOX_TOLERANCE = 1e-5


def word_position_ids(offsets: np.ndarray, texts: Sequence[str], attention_mask: np.ndarray) -> np.ndarray:
    """The released LXMERT-S code's position ids: one per whitespace word, counting from 2.

    A token starts a new word iff it is the first token of its text or whitespace precedes it in the
    original text, so WordPieces and attached punctuation ("shirt," or "red-striped") share their word's
    position. Special tokens ([CLS], [SEP]) get 1 and padding 0. `offsets` is a fast tokenizer's
    `offset_mapping` (B, L, 2) in characters of `texts`; special tokens and padding have empty spans.
    """
    offsets = np.asarray(offsets)
    starts, ends = offsets[..., 0], offsets[..., 1]
    is_token = ends > starts
    # One fixed-width unicode array viewed as single characters: the whitespace test runs on the whole
    # batch at once instead of character by character.
    characters = np.asarray(list(texts), dtype=str)
    characters = characters.view("<U1").reshape(len(texts), -1)
    is_space = np.char.isspace(characters)
    previous = np.clip(starts - 1, 0, characters.shape[1] - 1)
    space_before = (starts > 0) & np.take_along_axis(is_space, previous, axis=1)
    first_token = is_token & (np.cumsum(is_token, axis=1) == 1)
    starts_word = is_token & (space_before | first_token)
    words = np.cumsum(starts_word, axis=1)
    return np.where(is_token, words + 1, np.asarray(attention_mask, dtype=bool)).astype(np.int64)


def fit_regions(
    arrays: Mapping[str, np.ndarray], num_boxes: np.ndarray, num_regions: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pad with zeros or truncate (keeping the first regions) every array's region axis (axis 1).

    Regions past an image's `num_boxes` are zeroed (so padding has confidence 0 and a zero feature), and the
    returned visual attention mask (B, `num_regions`) marks the rest. Dtypes are kept: the collator converts
    float16 features to float32 with `lxmert_s_msp.data.store.float32_tensor`, the fast way.
    """
    num_boxes = np.minimum(np.asarray(num_boxes, dtype=np.int64), num_regions)
    mask = np.arange(num_regions)[None, :] < num_boxes[:, None]
    fitted = {}
    for name, array in arrays.items():
        kept = min(num_regions, array.shape[1])
        fitted[name] = np.zeros((len(array), num_regions, *array.shape[2:]), array.dtype)
        fitted[name][:, :kept] = array[:, :kept]
        fitted[name][~mask] = 0
    return fitted, mask


def _as_numpy(value: ArrayLike) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _texts(text: str | Sequence[str]) -> list[str]:
    """`text` as a non-empty list of strings."""
    if isinstance(text, str):
        return [text]
    if not isinstance(text, Sequence | np.ndarray):
        raise ValueError(f"text: expected a string or a list of strings, received {type(text).__name__}")
    texts = list(text)
    if not texts:
        raise ValueError("text: expected at least one text, received an empty list")
    for index, item in enumerate(texts):
        if not isinstance(item, str):
            raise ValueError(f"text[{index}]: expected a string, received {type(item).__name__} {item!r}")
    return texts


def _per_image(value: ArrayLike | Sequence[ArrayLike], name: str, last_dim: int | None) -> list[np.ndarray]:
    """Split a (B, n, D) array, a list of (n_i, D) arrays, or one (n, D) image into per-image arrays."""
    expected = f"(batch, regions, {last_dim or 'dim'}) or a list of (regions, {last_dim or 'dim'}) arrays"
    if isinstance(value, np.ndarray | torch.Tensor):
        array = _as_numpy(value)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ValueError(f"{name}: expected {expected}, received shape {tuple(array.shape)}")
        images = list(array)
    else:
        images = [_as_numpy(image) for image in value]
    if not images:
        raise ValueError(f"{name}: expected at least one image, received none")
    for index, image in enumerate(images):
        if image.ndim != 2 or (last_dim is not None and image.shape[1] != last_dim):
            raise ValueError(f"{name}[{index}]: expected {expected}, received shape {tuple(image.shape)}")
        if image.shape[1] == 0:
            raise ValueError(
                f"{name}[{index}]: expected values for each region, received shape {image.shape}"
            )
        if not np.isfinite(image).all():
            raise ValueError(f"{name}[{index}]: expected finite values, received NaN or inf")
    return images


class LxmertSProcessor(ProcessorMixin):
    r"""
    Tokenizer plus region preparation for LXMERT-S; `save_pretrained` writes the tokenizer files and the
    settings below into `processor_config.json`.

    num_regions (`int`, defaults to 36):
        Regions per image the model sees (LXMERT's 36 detector boxes); fewer are zero-padded and masked.
    max_length (`int`, defaults to 20):
        Text length in tokens, [CLS] and [SEP] included (LXMERT's `max_seq_length`); longer texts are cut, and
        `text_lengths` tells which would be.
    position_ids_type (`"word"` or `"absolute"`, defaults to `"word"`):
        Must equal the model config's `position_ids_type`: `"word"` gives `word_position_ids`, `"absolute"`
        BERT's 0..L-1.
    image_processor (`FasterRcnnVgImageProcessor`, optional):
        Runs the region detector on `images`; without one the processor takes region features only. It is
        not saved: the detector is a separate, optional part (its code is `faster_rcnn_vg`, not transformers',
        and its folder a path of one machine), so a saved processor loads with transformers alone; give it
        again as `LxmertSProcessor.from_pretrained(folder, image_processor=FasterRcnnVgImageProcessor(...))`.
    """

    def __init__(
        self,
        tokenizer=None,
        num_regions: int = 36,
        max_length: int = 20,
        position_ids_type: Literal["word", "absolute"] = "word",
        image_processor=None,
        **kwargs,
    ):
        if position_ids_type not in ("word", "absolute"):
            raise ValueError(f"position_ids_type: expected 'word' or 'absolute', got {position_ids_type!r}")
        if num_regions < 1:
            raise ValueError(f"num_regions: expected at least 1, got {num_regions}")
        if max_length < 3:
            raise ValueError(f"max_length: expected at least 3 ([CLS] word [SEP]), got {max_length}")
        if position_ids_type == "word" and tokenizer is not None and not tokenizer.is_fast:
            raise ValueError("tokenizer: word-level position ids need a fast tokenizer's offset mapping")
        self.num_regions = num_regions
        self.max_length = max_length
        self.position_ids_type = position_ids_type
        if isinstance(image_processor, dict):
            raise ValueError(
                "image_processor: processor_config.json holds an image processor, which this version neither "
                "saves nor loads (the detector is a separate part): delete the key and pass "
                "image_processor=FasterRcnnVgImageProcessor(...) to from_pretrained"
            )
        self.image_processor = image_processor
        super().__init__(tokenizer, **kwargs)

    @classmethod
    def get_attributes(cls) -> list[str]:
        # ProcessorMixin requires every attribute it knows of and loads each from its own file; the image
        # processor is optional and not saved, so it stays out of that list.
        return ["tokenizer"]

    def to_dict(self) -> dict:
        settings = super().to_dict()
        settings.pop("image_processor", None)
        return settings

    @property
    def model_input_names(self) -> list[str]:
        return [*TEXT_INPUT_NAMES, *VISUAL_INPUT_NAMES]

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        visual_feats: ArrayLike | Sequence[ArrayLike] | None = None,
        boxes: ArrayLike | Sequence[ArrayLike] | None = None,
        image_sizes: ArrayLike | Sequence[Sequence[int]] | Sequence[int] | None = None,
        boxes_normalized: bool = False,
        truncate_regions: bool = False,
        return_tensors: str | None = "pt",
        images=None,
    ) -> BatchFeature:
        """Encode a batch of texts and/or images.

        `text` is one string or a list of them. `visual_feats` (B, n, F), a list of (n_i, F) or one image's
        (n, F), as numpy or torch; `boxes` the same with 4 corner coordinates `x1, y1, x2, y2`: in pixels,
        divided by `image_sizes` (B, 2; height, width as in the feature store; one image's may be a pair), or
        already in [0, 1] when `boxes_normalized`. An image with more regions than `num_regions` is an error,
        unless `truncate_regions` keeps its first `num_regions` (a detector lists them by confidence). Or
        `images` (one PIL image or a list), whose regions the `image_processor` detects.
        """
        if images is not None:
            visual_feats, boxes, image_sizes = self._detect_regions(images, visual_feats)
        if text is None and visual_feats is None:
            raise ValueError("text, visual_feats: expected at least one of them, received neither")
        data: dict[str, np.ndarray] = {}
        if text is not None:
            data.update(self.encode_text(_texts(text)))
        if visual_feats is not None:
            data.update(
                self.prepare_regions(visual_feats, boxes, image_sizes, boxes_normalized, truncate_regions)
            )
            if text is not None and len(data["input_ids"]) != len(data["visual_feats"]):
                raise ValueError(
                    f"text, visual_feats: expected one image per text, received {len(data['input_ids'])} "
                    f"texts and {len(data['visual_feats'])} images"
                )
        elif boxes is not None:
            raise ValueError("boxes: received boxes but no visual_feats for them")
        return BatchFeature(data, tensor_type=return_tensors)

    def _detect_regions(self, images, visual_feats) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Each image's detected region features and pixel boxes, and the images' sizes."""
        if self.image_processor is None:
            raise ValueError(
                "images: this processor has no image_processor to detect regions with; build it with "
                "image_processor=FasterRcnnVgImageProcessor() or pass visual_feats, boxes and image_sizes"
            )
        if visual_feats is not None:
            raise ValueError("images, visual_feats: expected one of them, received both")
        regions = self.image_processor(images)
        counts = regions["num_boxes"]
        features = [image[:count] for image, count in zip(regions["visual_feats"], counts, strict=True)]
        boxes = [image[:count] for image, count in zip(regions["boxes"], counts, strict=True)]
        return features, boxes, regions["image_sizes"]

    def encode_text(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenise to `max_length` (padded, truncated) and add the configured position ids."""
        encoding = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,
            return_token_type_ids=True,
            return_offsets_mapping=self.position_ids_type == "word",
            return_tensors="np",
        )
        batch_size, length = encoding["input_ids"].shape
        if self.position_ids_type == "word":
            position_ids = word_position_ids(encoding["offset_mapping"], texts, encoding["attention_mask"])
        else:
            position_ids = np.broadcast_to(np.arange(length, dtype=np.int64), (batch_size, length)).copy()
        return {
            "input_ids": encoding["input_ids"].astype(np.int64),
            "attention_mask": encoding["attention_mask"].astype(np.int64),
            "token_type_ids": encoding["token_type_ids"].astype(np.int64),
            "position_ids": position_ids,
        }

    def text_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """(B,) tokens of each text as `encode_text` gives it before cutting, [CLS] and [SEP] included."""
        encoding = self.tokenizer(list(texts), return_attention_mask=False, return_token_type_ids=False)
        return np.array([len(ids) for ids in encoding["input_ids"]], dtype=np.int64)

    def prepare_regions(
        self,
        visual_feats: ArrayLike | Sequence[ArrayLike],
        boxes: ArrayLike | Sequence[ArrayLike] | None,
        image_sizes: ArrayLike | Sequence[Sequence[int]] | Sequence[int] | None = None,
        boxes_normalized: bool = False,
        truncate_regions: bool = False,
    ) -> dict[str, np.ndarray]:
        """Normalise boxes, then pad (or, with `truncate_regions`, truncate) features and boxes to
        `num_regions` with their mask."""
        if boxes is None:
            raise ValueError("boxes: expected one box per region of visual_feats, received None")
        features = _per_image(visual_feats, "visual_feats", None)
        box_list = _per_image(boxes, "boxes", 4)
        if len(box_list) != len(features):
            raise ValueError(
                f"boxes: expected {len(features)} images (as visual_feats), received {len(box_list)}"
            )
        feature_dims = {image.shape[1] for image in features}
        if len(feature_dims) > 1:
            raise ValueError(
                f"visual_feats: expected one feature size for all images, received {feature_dims}"
            )
        num_boxes = np.array([len(image) for image in features], dtype=np.int64)
        for index, (image_boxes, count) in enumerate(zip(box_list, num_boxes, strict=True)):
            if len(image_boxes) != count:
                raise ValueError(
                    f"boxes[{index}]: expected shape ({count}, 4) like visual_feats[{index}], "
                    f"received {tuple(image_boxes.shape)}"
                )
            inverted = (image_boxes[:, 2] < image_boxes[:, 0]) | (image_boxes[:, 3] < image_boxes[:, 1])
            if inverted.any():
                region = int(np.flatnonzero(inverted)[0])
                raise ValueError(
                    f"boxes[{index}][{region}]: expected x1, y1, x2, y2 with x1 <= x2 and y1 <= y2, received "
                    f"{image_boxes[region].tolist()}"
                )
        if not truncate_regions and (num_boxes > self.num_regions).any():
            index = int(np.flatnonzero(num_boxes > self.num_regions)[0])
            raise ValueError(
                f"visual_feats[{index}]: {num_boxes[index]} regions, more than the processor's num_regions "
                f"{self.num_regions}; pass truncate_regions=True to keep the first {self.num_regions}"
            )
        batch_size, longest = len(features), int(num_boxes.max(initial=0))
        padded_features = np.zeros((batch_size, longest, feature_dims.pop() if features else 0), np.float32)
        padded_boxes = np.zeros((batch_size, longest, 4), np.float32)
        for index, (image_features, image_boxes) in enumerate(zip(features, box_list, strict=True)):
            padded_features[index, : len(image_features)] = image_features
            padded_boxes[index, : len(image_boxes)] = image_boxes
        if not boxes_normalized:
            padded_boxes = padded_boxes / self._box_scale(image_sizes, batch_size)
        # LXMERT asserts the same bound with the same tolerance for float rounding at the image border.
        outside = ((padded_boxes < -BOX_TOLERANCE) | (padded_boxes > 1 + BOX_TOLERANCE)).any(axis=-1)
        if outside.any():
            index, region = (int(axis[0]) for axis in np.nonzero(outside))
            raise ValueError(
                f"boxes[{index}][{region}]: expected x1, y1, x2, y2 inside the image (within [0, 1] once "
                f"normalised), received {box_list[index][region].tolist()}"
            )
        padded_boxes = np.clip(padded_boxes, 0, 1)
        fitted, mask = fit_regions(
            {"feats": padded_features, "pos": padded_boxes}, num_boxes, self.num_regions
        )
        return {
            "visual_feats": fitted["feats"],
            "visual_pos": fitted["pos"],
            "visual_attention_mask": mask.astype(np.int64),
        }

    @staticmethod
    def _box_scale(image_sizes: ArrayLike | Sequence[Sequence[int]] | None, batch_size: int) -> np.ndarray:
        """(B, 1, 4) divisors width, height, width, height for pixel `x1, y1, x2, y2` boxes."""
        if image_sizes is None:
            raise ValueError(
                "image_sizes: expected (batch, 2) heights and widths for pixel boxes, received None"
            )
        sizes = _as_numpy(image_sizes).astype(np.float32)
        if sizes.shape == (2,) and batch_size == 1:  # one image's (height, width)
            sizes = sizes[None]
        if sizes.shape != (batch_size, 2):
            raise ValueError(f"image_sizes: expected shape ({batch_size}, 2), received {tuple(sizes.shape)}")
        if not (np.isfinite(sizes) & (sizes > 0)).all():
            raise ValueError(f"image_sizes: expected positive heights and widths, received {sizes.tolist()}")
        height, width = sizes[:, 0], sizes[:, 1]
        return np.stack([width, height, width, height], axis=1)[:, None, :]


# save_pretrained then copies this file beside the tokenizer and writes an AutoProcessor auto_map entry:
# the processor loads with trust_remote_code=True where this package is not installed.
LxmertSProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["TEXT_INPUT_NAMES", "VISUAL_INPUT_NAMES", "LxmertSProcessor", "fit_regions", "word_position_ids"]
