"""Configuration of the bottom-up-attention detector (Anderson et al., CVPR 2018) behind LXMERT's features.

A Faster R-CNN with a ResNet-101 C4 backbone trained on Visual Genome (1,600 object and 400 attribute
classes), as published in Caffe by bottom-up-attention and converted to PyTorch as
`unc-nlp/frcnn-vg-finetuned`. The defaults are that network; the preprocessing and region-selection
fields are those of bottom-up-attention's `generate_tsv.py`, which wrote the `*_obj36.tsv` features LXMERT
trained on.
"""

from __future__ import annotations

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


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
    anchor_sizes, anchor_aspect_ratios:
        RPN anchors, 5 sizes x 3 ratios = 15 per position of the stride-16 map, ordered size-major.
    rpn_hidden_channels (`int`, defaults to 512):
        Channels of the RPN's 3x3 convolution (512 in the Visual Genome model, not C4's 1024).
    rpn_pre_nms_topk, rpn_post_nms_topk, rpn_nms_threshold:
        Proposals kept per image before and after the RPN's NMS, and its IoU (Caffe's test setting).
    pooler_resolution (`int`, defaults to 14):
        RoI max-pooling output size on C4 (torchvision `roi_pool`, 1/16 scale).
    num_object_classes, num_attribute_classes:
        Visual Genome classes, without the background / no-attribute class, which is the last logit.
    box_regression_weights:
        Divisors (x, y, w, h) of the box head's deltas (Detectron's 10, 10, 5, 5).
    class_nms_threshold (`float`, defaults to 0.3):
        IoU of bottom-up attention's per-class NMS that picks the regions (`generate_tsv.py`).
    num_regions (`int`, defaults to 36):
        Regions kept per image, 10 to 100: LXMERT's 36, bottom-up attention's 10-100 range.
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
    rpn_pre_nms_topk: int = 6000
    rpn_post_nms_topk: int = 300
    rpn_nms_threshold: float = 0.7
    pooler_resolution: int = 14
    num_object_classes: int = 1600
    num_attribute_classes: int = 400
    box_regression_weights: list[float] | None = None
    class_nms_threshold: float = 0.3
    num_regions: int = 36
    input_format: Literal["BGR", "RGB"] = "BGR"
    pixel_mean: list[float] | None = None
    shortest_edge: int = 600
    longest_edge: int = 1000
    initializer_range: float = 0.01

    def __post_init__(self, **kwargs):
        self.resnet_layers = list(self.resnet_layers or [3, 4, 23, 3])
        self.anchor_sizes = list(self.anchor_sizes or [32, 64, 128, 256, 512])
        self.anchor_aspect_ratios = list(self.anchor_aspect_ratios or [0.5, 1.0, 2.0])
        self.box_regression_weights = list(self.box_regression_weights or [10.0, 10.0, 5.0, 5.0])
        self.pixel_mean = list(self.pixel_mean or [102.9801, 115.9465, 122.7717])
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Refuse settings the detector cannot run, naming the field."""
        if len(self.resnet_layers) != 4 or min(self.resnet_layers) < 1:
            raise ValueError(
                f"resnet_layers: expected 4 positive block counts (res2..res5), got {self.resnet_layers}"
            )
        if not 10 <= self.num_regions <= 100:
            raise ValueError(f"num_regions: expected 10 to 100 regions per image, got {self.num_regions}")
        if len(self.pixel_mean) != 3:
            raise ValueError(f"pixel_mean: expected 3 channel means, got {self.pixel_mean}")
        if len(self.box_regression_weights) != 4:
            raise ValueError(f"box_regression_weights: expected 4 values, got {self.box_regression_weights}")
        if not 0 < self.shortest_edge <= self.longest_edge:
            raise ValueError(
                f"shortest_edge, longest_edge: expected 0 < {self.shortest_edge} <= {self.longest_edge}"
            )
        if self.rpn_post_nms_topk < self.num_regions:
            raise ValueError(
                f"rpn_post_nms_topk ({self.rpn_post_nms_topk}) must be at least "
                f"num_regions ({self.num_regions})"
            )


__all__ = ["FasterRcnnVgConfig"]
