"""The bottom-up-attention detector: Faster R-CNN, ResNet-101 C4, Visual Genome objects and attributes.

Built from torchvision's ResNet (Caffe's variant: stride in the 1x1 convolutions, ceil-mode max-pool, frozen
batch norm), `roi_pool` and `nms`: the backbone runs to C4 (stride 16), the RPN proposes 300 boxes per image,
each is max-pooled to 14x14 on C4 and run through res5 (stride 1, dilation 2, the Visual Genome variant)
whose mean-pooled 2,048-d output is the region feature; linear layers give object logits, box deltas and,
from the feature and the predicted class's embedding, attribute logits. Regions are then chosen as
bottom-up attention's `generate_tsv.py` chose them for LXMERT: per-class NMS over the proposals, each
proposal scored by its best surviving class, the best kept (36, or 10-100 by confidence), with their proposal
boxes.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d, box_iou, clip_boxes_to_image, nms, remove_small_boxes, roi_pool
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import CONFIG_NAME, ModelOutput
from transformers.utils.hub import cached_files

from .configuration_faster_rcnn_vg import FasterRcnnVgConfig, RegionLimits

C4_STRIDE = 16
# Detectron's clamp: no box grows more than from 16 to 1,000 pixels in one step.
DELTA_SCALE_CLAMP = math.log(1000.0 / 16)
DEFAULT_DETECTOR = "unc-nlp/frcnn-vg-finetuned"
# Regions through res5 at once: one image's 300 proposals, so that a larger batch does not need more memory.
RES5_CHUNK = 300
PUBLISHED_WEIGHTS = "pytorch_model.bin"
PUBLISHED_ANCHORS = "proposal_generator.anchor_generator.cell_anchors.0"


@dataclass
class FasterRcnnVgOutput(ModelOutput):
    r"""
    The chosen regions of each image, best first, padded to the most an image may keep; rows past `num_boxes`
    are zero.

    features: (B, N, 2048) mean-pooled res5 outputs. boxes: (B, N, 4) proposal boxes x1, y1, x2, y2 in pixels
    of the detector's input, the boxes the features were pooled from (bottom-up attention's TSV boxes).
    refined_boxes: (B, N, 4) the same boxes moved by the box head's regression for the region's object class.
    object_ids / attribute_ids: (B, N) Visual Genome class indices (0-based, background excluded), with their
    softmax probabilities `object_confidences` / `attribute_confidences`. num_boxes: (B,) regions found.
    """

    features: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    refined_boxes: torch.Tensor | None = None
    object_ids: torch.Tensor | None = None
    object_confidences: torch.Tensor | None = None
    attribute_ids: torch.Tensor | None = None
    attribute_confidences: torch.Tensor | None = None
    num_boxes: torch.Tensor | None = None


def cell_anchors(config: FasterRcnnVgConfig) -> torch.Tensor:
    """(A, 4) anchors centred on 0, size-major then ratio (height / width), the RPN's channel order."""
    anchors = []
    for size in config.anchor_sizes:
        for ratio in config.anchor_aspect_ratios:
            width = math.sqrt(size**2 / ratio)
            height = ratio * width
            anchors.append([-width / 2, -height / 2, width / 2, height / 2])
    return torch.tensor(anchors, dtype=torch.float32)


def apply_box_deltas(deltas: torch.Tensor, boxes: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Move (N, 4) `boxes` by (N, 4) deltas (dx, dy, dw, dh) divided by `weights` (R-CNN's box coding)."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    centre_x, centre_y = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    dx, dy, dw, dh = (deltas[:, index] / weight for index, weight in enumerate(weights))
    dw, dh = dw.clamp(max=DELTA_SCALE_CLAMP), dh.clamp(max=DELTA_SCALE_CLAMP)
    new_x, new_y = centre_x + dx * widths, centre_y + dy * heights
    new_w, new_h = widths * torch.exp(dw), heights * torch.exp(dh)
    return torch.stack([new_x - new_w / 2, new_y - new_h / 2, new_x + new_w / 2, new_y + new_h / 2], dim=1)


def class_nms_confidence(
    boxes: torch.Tensor, class_probs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """(R,) each box's highest class probability among the classes whose NMS keeps it; 0 if none does.

    bottom-up attention's selection: greedy NMS per class over the same boxes, ranked by that class's
    probability. All classes share the boxes, so one IoU matrix serves them all and the classes advance
    through their rankings together: R steps over (C, R) arrays instead of C separate NMS calls.
    """
    num_boxes, num_classes = class_probs.shape
    overlaps = box_iou(boxes, boxes) > iou_threshold
    order = class_probs.argsort(dim=0, descending=True).T  # (C, R): each class's ranking
    classes = torch.arange(num_classes, device=boxes.device)
    suppressed = torch.zeros(num_classes, num_boxes, dtype=torch.bool, device=boxes.device)
    kept = torch.zeros_like(suppressed)
    for rank in range(num_boxes):
        box = order[:, rank]
        survives = ~suppressed[classes, box]
        kept[classes, box] = survives
        suppressed |= survives[:, None] & overlaps[box]
    return (class_probs.T * kept).amax(dim=0)


def regions_to_keep(confidence: torch.Tensor, limits: RegionLimits) -> torch.Tensor:
    """Indices of the regions to keep, best first, of (R,) confidences.

    `generate_tsv.py` keeps the proposals whose confidence reaches the threshold, or the best `minimum` when
    fewer do, or the best `maximum` when more do: the same set as the best `clamp(count, minimum, maximum)`.
    """
    confident = int((confidence >= limits.confidence).sum())
    count = min(max(confident, limits.minimum), limits.maximum)
    return confidence.argsort(descending=True, stable=True)[:count]


def conv_frozen_norm(conv: nn.Conv2d, norm: FrozenBatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """`norm(conv(x))` as one convolution whose weights and bias carry the frozen norm: the same numbers to
    float rounding, without the norm's pass over the activations: res5 13-18% faster in float32 on the CPU
    (docs/benchmarks.md), more in bfloat16 autocast, where a float32 norm converts every activation."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    weight, bias = conv.weight * scale[:, None, None, None], norm.bias - norm.running_mean * scale
    return nn.functional.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class FasterRcnnVgBottleneck(Bottleneck):
    """torchvision's bottleneck block (same parameters, same names), each convolution with its norm folded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(conv_frozen_norm(self.conv1, self.bn1, x))
        out = self.relu(conv_frozen_norm(self.conv2, self.bn2, out))
        out = conv_frozen_norm(self.conv3, self.bn3, out)
        shortcut = x if self.downsample is None else conv_frozen_norm(*self.downsample, x)
        return self.relu(out + shortcut)


def build_resnet(config: FasterRcnnVgConfig) -> ResNet:
    """torchvision's ResNet made the Caffe network the weights were trained as (see the config's fields)."""
    resnet = ResNet(
        FasterRcnnVgBottleneck,
        config.resnet_layers,
        width_per_group=config.width_per_group,
        replace_stride_with_dilation=[False, False, True],
        norm_layer=FrozenBatchNorm2d,
    )
    if config.caffe_maxpool:
        resnet.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    if config.stride_in_1x1:
        for layer in (resnet.layer2, resnet.layer3):
            layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    # torchvision dilates res5 from its second block on; the Visual Genome head dilates all three.
    resnet.layer4[0].conv2.dilation, resnet.layer4[0].conv2.padding = (2, 2), (2, 2)
    return resnet


class FasterRcnnVgRegionProposalNetwork(nn.Module):
    """A 3x3 convolution on C4, then per anchor an objectness logit and box deltas; NMS keeps the best."""

    def __init__(self, config: FasterRcnnVgConfig, in_channels: int):
        super().__init__()
        self.config = config
        self.conv = nn.Conv2d(in_channels, config.rpn_hidden_channels, kernel_size=3, padding=1)
        self.objectness_logits = nn.Conv2d(config.rpn_hidden_channels, config.num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(config.rpn_hidden_channels, config.num_anchors * 4, kernel_size=1)
        self.register_buffer("cell_anchors", cell_anchors(config), persistent=False)

    def anchors(self, height: int, width: int) -> torch.Tensor:
        """(H * W * A, 4) anchors of a C4 map, position-major as the convolution outputs flatten."""
        ys = torch.arange(height, device=self.cell_anchors.device, dtype=torch.float32) * C4_STRIDE
        xs = torch.arange(width, device=self.cell_anchors.device, dtype=torch.float32) * C4_STRIDE
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
        return (shifts + self.cell_anchors[None]).reshape(-1, 4)

    def forward(self, c4: torch.Tensor, image_size: tuple[int, int], min_size: float) -> torch.Tensor:
        """(P, 4) proposals of one image's (1, C, H, W) C4 map, clipped to its (height, width), best first.

        As Caffe's `proposal_layer.py`: every anchor is moved by its deltas and clipped, boxes with a side
        under `min_size` pixels are dropped, then the `rpn_pre_nms_topk` best go through NMS.
        """
        hidden = nn.functional.relu(self.conv(c4))
        num_anchors, (height, width) = len(self.cell_anchors), c4.shape[-2:]
        logits = self.objectness_logits(hidden)[0].permute(1, 2, 0).reshape(-1)
        deltas = self.anchor_deltas(hidden)[0].reshape(num_anchors, 4, height, width).permute(2, 3, 0, 1)
        boxes = apply_box_deltas(deltas.reshape(-1, 4), self.anchors(height, width), (1, 1, 1, 1))
        boxes = clip_boxes_to_image(boxes, image_size)
        # a box must have some area even without a minimum size: zero-width slivers pool nothing
        kept = remove_small_boxes(boxes, max(min_size, 1e-6))
        boxes, logits = boxes[kept], logits[kept]
        top = logits.topk(min(self.config.rpn_pre_nms_topk, len(logits))).indices
        boxes, logits = boxes[top], logits[top]
        return boxes[nms(boxes, logits, self.config.rpn_nms_threshold)[: self.config.rpn_post_nms_topk]]


class FasterRcnnVgRegionHead(nn.Module):
    """res5 on each pooled region, then object, box and attribute predictions from its mean-pooled feature."""

    def __init__(self, config: FasterRcnnVgConfig, res5: nn.Sequential):
        super().__init__()
        self.config = config
        self.res5 = res5
        feature_dim = res5[-1].conv3.out_channels
        self.cls_score = nn.Linear(feature_dim, config.num_object_classes + 1)
        self.bbox_pred = nn.Linear(feature_dim, config.num_object_classes * 4)
        # The attribute classifier reads the feature and an embedding of the predicted object class.
        self.cls_embedding = nn.Embedding(config.num_object_classes + 1, feature_dim // 8)
        self.fc_attr = nn.Linear(feature_dim + feature_dim // 8, feature_dim // 4)
        self.attr_score = nn.Linear(feature_dim // 4, config.num_attribute_classes + 1)

    def forward(
        self, pooled: torch.Tensor, bf16: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, object logits, box deltas and attribute logits of (R, C, S, S) pooled regions; `bf16`
        runs res5 in bfloat16 autocast (the features then differ from float32's in the third digit).

        res5 runs on `RES5_CHUNK` regions at a time, each chunk mean-pooled at once, so that memory does not
        grow with the batch (its 14x14 activations take 1.6 MB a region and channel block of 2,048).
        """
        with torch.autocast(pooled.device.type, dtype=torch.bfloat16, enabled=bf16):
            features = torch.cat(
                [self.res5(chunk).float().mean(dim=(2, 3)) for chunk in pooled.split(RES5_CHUNK)]
            )
        object_logits = self.cls_score(features)
        class_embedding = self.cls_embedding(object_logits.argmax(dim=-1))
        hidden = nn.functional.relu(self.fc_attr(torch.cat([features, class_embedding], dim=-1)))
        return features, object_logits, self.bbox_pred(features), self.attr_score(hidden)


class FasterRcnnVgPreTrainedModel(PreTrainedModel):
    config_class = FasterRcnnVgConfig
    config: FasterRcnnVgConfig
    base_model_prefix = "detector"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, FrozenBatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
        elif isinstance(module, Bottleneck):
            # torchvision's zero_init_residual (after the block's own norms, which apply() visits first):
            # each block starts as its shortcut, so an untrained detector keeps finite activations
            init.zeros_(module.bn3.weight)
        elif isinstance(module, FasterRcnnVgRegionProposalNetwork):
            init.normal_(module.conv.weight, std=self.config.initializer_range)  # Detectron's RPN init
            init.normal_(module.objectness_logits.weight, std=self.config.initializer_range)
            # an untrained detector proposes its anchors: random deltas on unnormalised C4 activations would
            # throw every box off the image
            init.zeros_(module.anchor_deltas.weight)
            # not saved, so from_pretrained (which builds on the meta device) must set it here
            init.copy_(module.cell_anchors, cell_anchors(self.config))


class FasterRcnnVgDetector(FasterRcnnVgPreTrainedModel):
    """Images (resized and normalised by `FasterRcnnVgImageProcessor`) -> their regions, best first."""

    def __init__(self, config: FasterRcnnVgConfig):
        super().__init__(config)
        resnet = build_resnet(config)
        self.backbone = nn.Sequential(
            OrderedDict(
                (name, getattr(resnet, name))
                for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
            )
        )
        self.rpn = FasterRcnnVgRegionProposalNetwork(config, resnet.layer3[-1].conv3.out_channels)
        self.head = FasterRcnnVgRegionHead(config, resnet.layer4)
        self.post_init()

    @torch.inference_mode()
    def forward(
        self,
        pixel_values: torch.Tensor | Sequence[torch.Tensor],
        num_regions: int | str | None = None,
        image_scales: Sequence[float] | None = None,
        bf16: bool = False,
    ) -> FasterRcnnVgOutput:
        """`pixel_values`: (3, h, w) images of any sizes, or a (B, 3, H, W) batch of one size. `num_regions`
        overrides the config's regions per image: a number, or `"adaptive"` (bottom-up attention's 10-100 at
        confidence 0.2). `image_scales`: each image's resize factor (input pixels per original pixel), which
        sets the RPN's minimum box size in input pixels; 1 when not given. `bf16` runs res5 in bfloat16
        autocast: faster on CPUs with bfloat16 instructions, not the float32 features exactly.

        Each image runs through the backbone and the RPN alone (so a region's feature does not depend on the
        other images of the batch, as it would through padding); res5, the expensive part, runs on the regions
        of the whole batch at once.
        """
        limits = self.config.region_limits(num_regions)
        scales = [1.0] * len(pixel_values) if image_scales is None else list(image_scales)
        if len(scales) != len(pixel_values):
            raise ValueError(f"image_scales: expected one per image ({len(pixel_values)}), got {len(scales)}")
        pooled, proposals, sizes = [], [], []
        for index, (image, scale) in enumerate(zip(pixel_values, scales, strict=True)):
            c4 = self.backbone(image[None])
            boxes = self.rpn(c4, tuple(image.shape[-2:]), self.config.rpn_min_size * scale)
            if not len(boxes):
                finite = "finite" if c4.isfinite().all() else "not finite"
                raise ValueError(
                    f"pixel_values[{index}]: the RPN proposed no box inside the image (C4 {finite})"
                )
            resolution = self.config.pooler_resolution
            pooled.append(roi_pool(c4, [boxes], (resolution, resolution), spatial_scale=1 / C4_STRIDE))
            proposals.append(boxes)
            sizes.append(tuple(image.shape[-2:]))
        features, object_logits, box_deltas, attribute_logits = self.head(torch.cat(pooled), bf16)
        counts = [len(boxes) for boxes in proposals]
        regions = [
            self._choose_regions(limits, *per_image)
            for per_image in zip(
                proposals,
                sizes,
                features.split(counts),
                object_logits.split(counts),
                box_deltas.split(counts),
                attribute_logits.split(counts),
                strict=True,
            )
        ]
        return FasterRcnnVgOutput(
            **{name: torch.stack([image[name] for image in regions]) for name in regions[0]},
        )

    def _choose_regions(
        self,
        limits: RegionLimits,
        proposals: torch.Tensor,
        image_size: tuple[int, int],
        features: torch.Tensor,
        object_logits: torch.Tensor,
        box_deltas: torch.Tensor,
        attribute_logits: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One image's regions, padded to `limits.maximum`; the background (last) class is never a label."""
        object_probs = object_logits.softmax(dim=-1)[:, :-1]
        attribute_probs = attribute_logits.softmax(dim=-1)[:, :-1]
        confidence = class_nms_confidence(proposals, object_probs, self.config.class_nms_threshold)
        keep = regions_to_keep(confidence, limits)
        object_confidences, object_ids = object_probs[keep].max(dim=-1)
        attribute_confidences, attribute_ids = attribute_probs[keep].max(dim=-1)
        class_deltas = box_deltas[keep].reshape(len(keep), -1, 4)[torch.arange(len(keep)), object_ids]
        refined = apply_box_deltas(class_deltas, proposals[keep], self.config.box_regression_weights)
        chosen = {
            "features": features[keep],
            "boxes": proposals[keep],
            "refined_boxes": clip_boxes_to_image(refined, image_size),
            "object_ids": object_ids,
            "object_confidences": object_confidences,
            "attribute_ids": attribute_ids,
            "attribute_confidences": attribute_confidences,
        }
        padding = limits.maximum - len(keep)
        padded = {
            name: nn.functional.pad(value, (0, 0, 0, padding) if value.ndim == 2 else (0, padding))
            for name, value in chosen.items()
        }
        return {**padded, "num_boxes": torch.tensor(len(keep), device=proposals.device)}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> FasterRcnnVgDetector:
        """A folder or Hub id this class saved, or the published Detectron-layout `unc-nlp/frcnn-vg-finetuned`
        (or a local copy of it); `DetectorNotFoundError` says how to get one when neither can be found.

        The published one has a Detectron `config.yaml` and `pytorch_model.bin` but no `config.json`: its
        architecture is this config's defaults (keyword arguments naming config fields override them, e.g.
        `max_regions=50`), and its key names are mapped by `map_published_state_dict`.
        """
        hub_kwargs = {
            name: kwargs[name]
            for name in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if name in kwargs
        }
        config_file, weights = _detector_files(str(pretrained_model_name_or_path), hub_kwargs)
        if config_file is not None:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        config = kwargs.pop("config", None) or FasterRcnnVgConfig(
            **{
                name: value
                for name, value in kwargs.items()
                if name in FasterRcnnVgConfig.__dataclass_fields__
            }
        )
        model = cls(config)
        model.load_published_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.eval()

    def load_published_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a Detectron-layout state dict; every key must map and fill a parameter of its shape, and the
        checkpoint's anchors must be the config's. A mismatch names the checkpoint's key and both shapes."""
        anchors = state_dict.get(PUBLISHED_ANCHORS)
        if anchors is not None:
            expected = cell_anchors(self.config)
            _check_shape(PUBLISHED_ANCHORS, tuple(anchors.shape), tuple(expected.shape), self.config)
            if not torch.allclose(anchors.float().cpu(), expected, atol=1e-3):
                raise ValueError(
                    f"{PUBLISHED_ANCHORS}: the checkpoint's anchors differ from the config's anchor_sizes "
                    f"{self.config.anchor_sizes} x anchor_aspect_ratios {self.config.anchor_aspect_ratios}"
                )
        own = self.state_dict()
        mapped = {}
        for key, value in state_dict.items():
            name = map_published_key(key)
            if name is None:
                continue
            if name not in own:
                raise KeyError(f"{key}: maps to {name}, which this detector does not have")
            _check_shape(key, tuple(value.shape), tuple(own[name].shape), self.config)
            mapped[name] = torch.as_tensor(value)
        self.load_state_dict(mapped, strict=True)


def _check_shape(
    key: str, found: tuple[int, ...], expected: tuple[int, ...], config: FasterRcnnVgConfig
) -> None:
    if found != expected:
        raise ValueError(
            f"{key}: shape {found} in the checkpoint, {expected} in a detector of this config (e.g. "
            f"{config.num_anchors} anchors from anchor_sizes {config.anchor_sizes} x anchor_aspect_ratios "
            f"{config.anchor_aspect_ratios}, {config.num_object_classes} object classes)"
        )


class DetectorNotFoundError(OSError):
    """No detector where the name points: the message says what was looked for and how to get one."""


OFFLINE_HELP = (
    f"Without internet, download it on a machine that has it: `hf download {DEFAULT_DETECTOR} --local-dir "
    "frcnn-vg-finetuned` (`huggingface-cli download` with huggingface_hub before 1.0), copy that folder here "
    "and pass it as the detector: `--detector frcnn-vg-finetuned` to `python -m lxmert_s_msp.data.extract`, "
    "`FasterRcnnVgImageProcessor(detector='frcnn-vg-finetuned')` in Python"
)


def _detector_files(source: str, hub_kwargs: Mapping) -> tuple[str | None, str | None]:
    """(config.json, pytorch_model.bin) of a detector folder or Hub repo, either None when absent; one Hub
    request for both, so an offline machine waits for its retries once."""
    path = Path(source)
    saved = f"{CONFIG_NAME} (a saved FasterRcnnVgDetector)"
    published = f"{PUBLISHED_WEIGHTS} (the published one)"
    if path.is_file():
        raise DetectorNotFoundError(
            f"{source}: a file, not a detector: give the folder that holds {saved} or {published}"
        )
    if path.is_dir():
        files = [
            path / name if (path / name).is_file() else None for name in (CONFIG_NAME, PUBLISHED_WEIGHTS)
        ]
        if files == [None, None]:
            raise DetectorNotFoundError(f"{source}: this folder holds neither {saved} nor {published}")
        return tuple(None if file is None else str(file) for file in files)
    try:
        files = cached_files(
            source,
            [CONFIG_NAME, PUBLISHED_WEIGHTS],
            _raise_exceptions_for_missing_entries=False,
            **hub_kwargs,
        )
    except OSError as error:
        reason = str(error).splitlines()[0]
        raise DetectorNotFoundError(
            f"{source}: no such folder, and not a detector on the Hub ({reason}). {OFFLINE_HELP}"
        ) from None
    if not files or files == [None, None]:
        raise DetectorNotFoundError(
            f"{source}: no such folder, not in the Hugging Face cache, and the Hub could not be reached or "
            f"has neither {saved} nor {published}. {OFFLINE_HELP}"
        )
    return files[0], files[1]


# Detectron block parts -> torchvision Bottleneck parts.
_BLOCK_PARTS = (
    (r"conv(\d)\.weight", r"conv\1.weight"),
    (r"conv(\d)\.norm\.(\w+)", r"bn\1.\2"),
    (r"shortcut\.weight", r"downsample.0.weight"),
    (r"shortcut\.norm\.(\w+)", r"downsample.1.\1"),
)


def map_published_key(key: str) -> str | None:
    """The detector's name for a key of the published checkpoint; None for keys with nothing to load.

    The published layout (transformers' LXMERT demo, Detectron's names): `backbone.stem.conv1`,
    `backbone.res{2,3,4}.{block}` and `roi_heads.res5.{block}` with `conv{1,2,3}` / `shortcut` and their
    `.norm`, `proposal_generator.rpn_head.*`, `roi_heads.box_predictor.*`; anchors come from the config.
    """
    if key == PUBLISHED_ANCHORS or key.endswith("num_batches_tracked"):
        return None
    if key == "backbone.stem.conv1.weight":
        return "backbone.conv1.weight"
    if match := re.fullmatch(r"backbone\.stem\.conv1\.norm\.(\w+)", key):
        return f"backbone.bn1.{match[1]}"
    if match := re.fullmatch(r"(backbone|roi_heads)\.res(\d)\.(\d+)\.(.+)", key):
        stage = "head.res5" if match[1] == "roi_heads" else f"backbone.layer{int(match[2]) - 1}"
        for pattern, replacement in _BLOCK_PARTS:
            if re.fullmatch(pattern, match[4]):
                return f"{stage}.{match[3]}.{re.sub(pattern, replacement, match[4])}"
    if key.startswith("proposal_generator.rpn_head."):
        return "rpn." + key.removeprefix("proposal_generator.rpn_head.")
    if key.startswith("roi_heads.box_predictor."):
        return "head." + key.removeprefix("roi_heads.box_predictor.")
    raise KeyError(f"{key}: not a key of the published bottom-up-attention checkpoint layout")


__all__ = [
    "DEFAULT_DETECTOR",
    "DetectorNotFoundError",
    "FasterRcnnVgDetector",
    "FasterRcnnVgOutput",
    "FasterRcnnVgPreTrainedModel",
    "class_nms_confidence",
    "map_published_key",
    "regions_to_keep",
]
