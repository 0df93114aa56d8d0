"""The bottom-up-attention region detector: images -> the region features LXMERT reads."""

from .configuration_faster_rcnn_vg import FasterRcnnVgConfig
from .image_processing_faster_rcnn_vg import DEFAULT_DETECTOR, BadImageError, FasterRcnnVgImageProcessor
from .modeling_faster_rcnn_vg import FasterRcnnVgDetector, FasterRcnnVgOutput

__all__ = [
    "DEFAULT_DETECTOR",
    "BadImageError",
    "FasterRcnnVgConfig",
    "FasterRcnnVgDetector",
    "FasterRcnnVgImageProcessor",
    "FasterRcnnVgOutput",
]
