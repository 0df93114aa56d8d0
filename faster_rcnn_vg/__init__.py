"""The bottom-up-attention region detector: images -> the region features LXMERT reads."""

from .configuration_faster_rcnn_vg import ADAPTIVE, FasterRcnnVgConfig
from .image_processing_faster_rcnn_vg import BadImageError, FasterRcnnVgImageProcessor
from .modeling_faster_rcnn_vg import (
    DEFAULT_DETECTOR,
    DetectorNotFoundError,
    FasterRcnnVgDetector,
    FasterRcnnVgOutput,
)

__all__ = [
    "ADAPTIVE",
    "DEFAULT_DETECTOR",
    "BadImageError",
    "DetectorNotFoundError",
    "FasterRcnnVgConfig",
    "FasterRcnnVgDetector",
    "FasterRcnnVgImageProcessor",
    "FasterRcnnVgOutput",
]
