"""COCO-WholeBody data: the released format, a synthetic generator, the top-down pipeline."""

from nasplat.data.coco import (
    DatasetCounts,
    ImageInfo,
    Instance,
    PersonAnnotation,
    WholeBodyAnnotations,
    annotation_path,
    check_dataset,
    image_dir,
    load_annotations,
    load_split,
    train_instances,
    val_instances,
)
from nasplat.data.decode import (
    body_heatmap_to_input,
    decode_heatmaps,
    decode_wholebody,
    flip_back,
    head_heatmap_to_input,
    instance_scores,
)
from nasplat.data.synth import SynthConfig, generate_dataset, generate_split
from nasplat.data.targets import body_targets, box_keypoints, render_in_boxes
from nasplat.data.topdown import TopDownDataset, collate, make_loader, worker_init_fn
from nasplat.data.transforms import (
    AugmentParams,
    CropParams,
    box_to_center_scale,
    crop_matrix,
    crop_to_image,
)

__all__ = [
    "AugmentParams", "CropParams", "DatasetCounts", "ImageInfo", "Instance", "PersonAnnotation",
    "SynthConfig", "TopDownDataset", "WholeBodyAnnotations", "annotation_path",
    "body_heatmap_to_input", "body_targets", "box_keypoints", "box_to_center_scale",
    "check_dataset", "collate", "crop_matrix", "crop_to_image", "decode_heatmaps", "decode_wholebody", "flip_back",
    "generate_dataset", "generate_split", "head_heatmap_to_input", "image_dir", "instance_scores", "load_annotations",
    "load_split", "make_loader", "render_in_boxes", "train_instances", "val_instances",
    "worker_init_fn",
]
