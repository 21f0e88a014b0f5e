"""ZoomNet supernet, static subnets, RoIAlign, part-box decoding, and a small model registry."""

from nasplat.models.boxes import decode_part_boxes, expand_boxes
from nasplat.models.registry import create_model, list_models, register_model
from nasplat.models.roi_align import roi_align
from nasplat.models.zoomnet import (
    BodyNet,
    HeadsOutput,
    HRNetV2Head,
    SupernetConfig,
    ZoomNet,
    ZoomNetOutput,
    ZoomNetSupernet,
    build_static,
    build_supernet,
    config_for_arch,
)

__all__ = [
    "BodyNet",
    "HRNetV2Head",
    "HeadsOutput",
    "SupernetConfig",
    "ZoomNet",
    "ZoomNetOutput",
    "ZoomNetSupernet",
    "build_static",
    "build_supernet",
    "config_for_arch",
    "create_model",
    "decode_part_boxes",
    "expand_boxes",
    "list_models",
    "register_model",
    "roi_align",
]
