"""Configuration of the bottom-up-attention detector (Anderson et al., CVPR 2018) behind LXMERT's features.

A Faster R-CNN with a ResNet-101 C4 backbone trained on Visual Genome (1,600 object and 400 attribute
classes), as published in Caffe by bottom-up-attention and converted to PyTorch as
`unc-nlp/frcnn-vg-finetuned`. The defaults are that network; the preprocessing and region-selection
fields are those of bottom-up-attention's `generate_tsv.py`, which wrote the `*_obj36.tsv` features LXMERT
trained on. docs/detector.md sets every setting beside the reference's.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

ADAPTIVE = "adaptive"
# bottom-up attention's adaptive features (generate_tsv.py: conf_thresh 0.2, MIN_BOXES 10, MAX_BOXES 100).
ADAPTIVE_REGIONS = {"min_regions": 10, "max_regions": 100, "region_confidence": 0.2}


class RegionLimits(NamedTuple):
    """Regions an image keeps: those with a confidence of at least `confidence`, but at least `minimum` and
    at most `maximum` of them (the best by confidence), as `generate_tsv.py`'s `get_detections_from_im`."""

    minimum: int
    maximum: int
    confidence: float


@strict
class FasterRcnnVgConfig(PreTrainedConfig):
    r"""
    Every size and threshold of `FasterRcnnVgDetector`; the published model is the defaults, tests shrink it.

    resnet_layers (`list[int]`, defaults to `[3, 4, 23, 3]`):
        Bottleneck blocks of res2..res5 (ResNet-101). res2..res4 are the backbone (C4, stride 16); res5 is the
        region head, run on every pooled region at stride 1 with dilation 2 (the Visual Genome variant).
    width_per_group (`int`, defaults to 64):
        torchvision's bottleneck width factor; smaller values shrink the 3x3 convolutions (tests only).
    stride_in_1x1 (`bool`, defaults to `True`):
        Stride-2 blocks stride in their first 1x1 convolution (MSRA/Caffe ResNet) rather than the 3x3 one.
    caffe_maxpool (`bool`, defaults to `True`):
        The stem's 3x3/2 max-pool without padding, rounding up, as the Caffe network the weights come from.
    anchor_sizes, anchor_aspect_ratios (defaults to `[64, 128, 256, 512]` and `[0.5, 1.0, 2.0]`):
        RPN anchors, 4 sizes x 3 ratios = 12 per position of the stride-16 map, ordered size-major: the Caffe
        model's `rpn_cls_score` has 24 outputs (2 x 12 anchors, scales 4, 8, 16, 32 of a 16-pixel base) and
        py-bottom-up-attention's `faster_rcnn_R_101_C4_attr_caffemaxpool.yaml` sets `SIZES: [[64, 128, 256,
        512]]`. The anchors are Detectron's, as the published conversion stores them in its checkpoint
        (`cell_anchors.0`, checked on load): centred on the cell's corner (16 i) with exact sizes. Caffe
        trained the weights with centres at 16 i + 7.5 and whole-pixel sizes (e.g. 92 x 48 for size 64 at
        ratio 0.5, 90.5 x 45.3 here), so each anchor, and each proposal before the RPN's regression moves it,
        sits 7.5 pixels up and left of Caffe's at the detector's input scale (under half a C4 cell) and
        differs in size by at most 2 pixels; the pooled regions move with them.
    rpn_hidden_channels (`int`, defaults to 512):
        Channels of the RPN's 3x3 convolution (512 in the Visual Genome model, not C4's 1024).
    rpn_min_size (`float`, defaults to 16):
        Proposals with a side under `rpn_min_size` pixels of the original image (times the resize factor at
        the detector's input) are dropped before the top-k, as Caffe's `RPN_MIN_SIZE` (`proposal_layer.py`),
        so that slivers take no proposal slot.
    rpn_pre_nms_topk, rpn_post_nms_topk, rpn_nms_threshold:
        Proposals kept per image before and after the RPN's NMS, and its IoU (Caffe's test setting).
    pooler_resolution (`int`, defaults to 14):
        RoI max-pooling output size on C4 (torchvision `roi_pool`, 1/16 scale).
    num_object_classes, num_attribute_classes:
        Visual Genome classes, without the background / no-attribute class, which is the last logit.
    box_regression_weights:
        Divisors (x, y, w, h) of the box head's deltas (Detectron's 10, 10, 5, 5).
    class_nms_threshold (`float`, defaults to 0.3):
        IoU of bottom-up attention's per-class NMS that scores the regions (`generate_tsv.py`).
    min_regions, max_regions, region_confidence (defaults to 36, 36 and 0.2):
        Regions kept per image, best first: those whose confidence (best class surviving the per-class NMS)
        is at least `region_confidence`, but at least `min_regions` and at most `max_regions`. 36 and 36 are
        LXMERT's fixed 36 regions (the confidence then plays no part); 10, 100 and 0.2 are bottom-up
        attention's adaptive features (`ADAPTIVE_REGIONS`).
    input_format (`"BGR"` or `"RGB"`, defaults to `"BGR"`):
        Channel order the network was trained on (Caffe reads images with OpenCV, in BGR).
    pixel_mean (`list[float]`):
        Mean subtracted per channel of `input_format`, on the 0-255 scale; the standard deviation is 1.
    shortest_edge, longest_edge (`int`, defaults to 600 and 1000):
        Resize so that the shorter side is `shortest_edge` unless the longer would exceed `longest_edge`
        (bottom-up attention's test scale; the converted checkpoint's demo uses 800 and 1333).
    """

    model_type = "faster_rcnn_vg"

    resnet_layers: list[int] | None = None
    width_per_group: int = 64
    stride_in_1x1: bool = True
    caffe_maxpool: bool = True
    anchor_sizes: list[int] | None = None
    anchor_aspect_ratios: list[float] | None = None
    rpn_hidden_channels: int = 512
    rpn_min_size: float = 16.0
    rpn_pre_nms_topk: int = 6000
    rpn_post_nms_topk: int = 300
    rpn_nms_threshold: float = 0.7
    pooler_resolution: int = 14
    num_object_classes: int = 1600
    num_attribute_classes: int = 400
    box_regression_weights: list[float] | None = None
    class_nms_threshold: float = 0.3
    min_regions: int = 36
    max_regions: int = 36
    region_confidence: float = 0.2
    input_format: Literal["BGR", "RGB"] = "BGR"
    pixel_mean: list[float] | None = None
    shortest_edge: int = 600
    longest_edge: int = 1000
    initializer_range: float = 0.01

    def __post_init__(self, **kwargs):
        self.resnet_layers = list(self.resnet_layers or [3, 4, 23, 3])
        self.anchor_sizes = list(self.anchor_sizes or [64, 128, 256, 512])
        self.anchor_aspect_ratios = list(self.anchor_aspect_ratios or [0.5, 1.0, 2.0])
        self.box_regression_weights = list(self.box_regression_weights or [10.0, 10.0, 5.0, 5.0])
        self.pixel_mean = list(self.pixel_mean or [102.9801, 115.9465, 122.7717])
        super().__post_init__(**kwargs)

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_aspect_ratios)

    def region_limits(self, num_regions: int | str | None = None) -> RegionLimits:
        """Regions an image keeps: the config's, `num_regions` exactly, or `"adaptive"` (10-100 at 0.2)."""
        if num_regions is None:
            return RegionLimits(self.min_regions, self.max_regions, self.region_confidence)
        if num_regions == ADAPTIVE:
            limits = RegionLimits(*ADAPTIVE_REGIONS.values())
        elif isinstance(num_regions, int) and not isinstance(num_regions, bool):
            limits = RegionLimits(num_regions, num_regions, self.region_confidence)
        else:
            raise ValueError(
                f"num_regions: expected a number of regions or {ADAPTIVE!r}, got {num_regions!r}"
            )
        check_region_limits(limits, self.rpn_post_nms_topk, f"num_regions {num_regions!r}")
        return limits

    def validate_architecture(self):
        """Refuse settings the detector cannot run, naming the field."""
        if len(self.resnet_layers) != 4 or min(self.resnet_layers) < 1:
            raise ValueError(
                f"resnet_layers: expected 4 positive block counts (res2..res5), got {self.resnet_layers}"
            )
        check_region_limits(self.region_limits(), self.rpn_post_nms_topk, "min_regions, max_regions")
        if not 0 <= self.region_confidence <= 1:
            raise ValueError(f"region_confidence: expected a probability, got {self.region_confidence}")
        if self.rpn_min_size < 0:
            raise ValueError(f"rpn_min_size: expected at least 0 pixels, got {self.rpn_min_size}")
        if len(self.pixel_mean) != 3:
            raise ValueError(f"pixel_mean: expected 3 channel means, got {self.pixel_mean}")
        if len(self.box_regression_weights) != 4:
            raise ValueError(f"box_regression_weights: expected 4 values, got {self.box_regression_weights}")
        if not 0 < self.shortest_edge <= self.longest_edge:
            raise ValueError(
                f"shortest_edge, longest_edge: expected 0 < {self.shortest_edge} <= {self.longest_edge}"
            )


def check_region_limits(limits: RegionLimits, proposals: int, name: str) -> None:
    """Refuse region counts the detector cannot give: none, min above max, or more than it proposes."""
    if not 1 <= limits.minimum <= limits.maximum <= proposals:
        raise ValueError(
            f"{name}: expected 1 <= {limits.minimum} <= {limits.maximum} regions per image, at most the "
            f"{proposals} proposals (rpn_post_nms_topk)"
        )


__all__ = ["ADAPTIVE", "ADAPTIVE_REGIONS", "FasterRcnnVgConfig", "RegionLimits"]
