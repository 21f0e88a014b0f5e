"""Reading COCO-WholeBody v1.0 annotation files exactly as released, and top-down instances.

Layout (the release's, also written by `nasplat.data.synth`):

    ROOT/annotations/coco_wholebody_{train,val}_v1.0.json
    ROOT/train2017/*.jpg, ROOT/val2017/*.jpg

Everything is validated once, when the file is read: a missing image, a malformed annotation or a
field of the wrong length raises one `DataError` naming the file and the annotation id, so a
training run never crashes mid-epoch on bad data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from nasplat.data.keypoints import BOX_PARTS, NUM_KEYPOINTS, PART_FIELDS, PART_SLICES, PARTS
from nasplat.errors import DataError
from nasplat.files import read_json

Split = Literal["train", "val"]
SPLITS: tuple[str, ...] = ("train", "val")

_PART_LENGTHS = {part: 3 * (PART_SLICES[part].stop - PART_SLICES[part].start) for part in PARTS}
_BOX_FIELDS = {part: f"{part}_box" for part in BOX_PARTS}
_VALID_FIELDS = {part: f"{part}_valid" for part in (*BOX_PARTS, "foot")}


def annotation_path(root: str | Path, split: str) -> Path:
    """`ROOT/annotations/coco_wholebody_{split}_v1.0.json`."""
    return Path(root) / "annotations" / f"coco_wholebody_{split}_v1.0.json"


def image_dir(root: str | Path, split: str) -> Path:
    """`ROOT/{split}2017`."""
    return Path(root) / f"{split}2017"


@dataclass(frozen=True)
class ImageInfo:
    """One entry of `images`: id, file name, size, and the resolved path of the file."""

    image_id: int
    file_name: str
    width: int
    height: int
    path: Path


@dataclass(frozen=True, eq=False)
class PersonAnnotation:
    """One validated person annotation.

    keypoints: [133, 3] float64 (x, y, v) in image pixels, the released concatenation; v is kept
        as released (floats for hands), v > 0 means labeled.
    part_boxes: [3, 4] xywh of face, left hand, right hand as released (zeros when invalid).
    part_valid: the released `face_valid`, `lefthand_valid`, `righthand_valid`.
    """

    ann_id: int
    image_id: int
    bbox: tuple[float, float, float, float]
    area: float
    iscrowd: bool
    num_keypoints: int
    keypoints: np.ndarray
    part_boxes: np.ndarray
    part_valid: tuple[bool, bool, bool]
    foot_valid: bool


@dataclass(frozen=True)
class DatasetCounts:
    """What `nasplat data check` reports for one split."""

    images: int
    persons: int  # non-crowd person annotations
    crowd: int
    valid_faces: int
    valid_hands: int  # left + right
    train_instances: int  # persons usable for top-down training


@dataclass(frozen=True, eq=False)
class WholeBodyAnnotations:
    """A validated annotation file: images by id and the person annotations, in file order."""

    ann_file: Path
    image_dir: Path
    images: Mapping[int, ImageInfo]
    annotations: tuple[PersonAnnotation, ...]
    raw: Mapping[str, Any]  # the parsed JSON, for the evaluator (not to be mutated)

    def counts(self) -> DatasetCounts:
        persons = [a for a in self.annotations if not a.iscrowd]
        return DatasetCounts(
            images=len(self.images),
            persons=len(persons),
            crowd=len(self.annotations) - len(persons),
            valid_faces=sum(1 for a in persons if a.part_valid[0]),
            valid_hands=sum(int(a.part_valid[1]) + int(a.part_valid[2]) for a in persons),
            train_instances=len(train_instances(self)),
        )


@dataclass(frozen=True, eq=False)
class Instance:
    """One person to crop: a GT person (training / GT-box validation) or a detection.

    bbox: xywh in image pixels (clipped to the image); keypoints [133, 3] with v in {0, 1}
    (zero for a detection, and zeroed for an invalid face/hand); part_boxes [3, 4] xyxy image
    pixels; part_valid [3] in {0, 1} (valid flag set, a labeled point, a non-empty box).
    """

    image_id: int
    ann_id: int  # -1 for a detection
    bbox: tuple[float, float, float, float]
    score: float
    area: float
    keypoints: np.ndarray
    part_boxes: np.ndarray
    part_valid: np.ndarray


def _fail(ann_file: Path, key: str, message: str) -> DataError:
    return DataError(message, source=str(ann_file), key=key)


def _number_array(
    value: Any, length: int, ann_file: Path, key: str, who: str
) -> np.ndarray:
    if not isinstance(value, list):
        raise _fail(ann_file, key, f"{who}: expected a list of {length} numbers, got {type(value).__name__}")
    if len(value) != length:
        raise _fail(ann_file, key, f"{who}: has length {len(value)}, expected {length}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _fail(ann_file, key, f"{who}: contains a non-number") from e
    if arr.shape != (length,) or not np.all(np.isfinite(arr)):
        raise _fail(ann_file, key, f"{who}: contains a non-finite or non-number value")
    return arr


def _int_field(ann: dict[str, Any], name: str, ann_file: Path, key: str, who: str) -> int:
    value = ann.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise _fail(ann_file, f"{key}.{name}", f"{who}: expected an integer, got {value!r}")
    return int(value)


def _bool_field(ann: dict[str, Any], name: str, ann_file: Path, key: str, who: str) -> bool:
    value = ann.get(name)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise _fail(ann_file, f"{key}.{name}", f"{who}: expected true/false, got {value!r}")


def _parse_annotation(
    ann: Any, index: int, ann_file: Path, images: Mapping[int, ImageInfo]
) -> PersonAnnotation:
    key = f"annotations[{index}]"
    if not isinstance(ann, dict):
        raise _fail(ann_file, key, "expected an object")
    raw_id = ann.get("id")
    who = f"annotation id {raw_id!r}"
    ann_id = _int_field(ann, "id", ann_file, key, who)
    who = f"annotation id {ann_id}"
    image_id = _int_field(ann, "image_id", ann_file, key, who)
    if image_id not in images:
        raise _fail(ann_file, f"{key}.image_id", f"{who}: image_id {image_id} is not in `images`")
    bbox = _number_array(ann.get("bbox"), 4, ann_file, f"{key}.bbox", who)
    if bbox[2] < 0 or bbox[3] < 0:
        raise _fail(ann_file, f"{key}.bbox", f"{who}: negative width or height {bbox.tolist()}")
    area = ann.get("area")
    if isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area) or area < 0:
        raise _fail(ann_file, f"{key}.area", f"{who}: expected a non-negative number, got {area!r}")
    iscrowd = _bool_field(ann, "iscrowd", ann_file, key, who)
    num_keypoints = _int_field(ann, "num_keypoints", ann_file, key, who)
    parts = []
    for part in PARTS:
        field = PART_FIELDS[part]
        if field not in ann:
            raise _fail(ann_file, f"{key}.{field}", f"{who}: missing field {field!r}")
        parts.append(_number_array(ann[field], _PART_LENGTHS[part], ann_file, f"{key}.{field}", who))
    keypoints = np.concatenate(parts).reshape(NUM_KEYPOINTS, 3)
    if np.any(keypoints[:, 2] < 0):
        raise _fail(ann_file, f"{key}", f"{who}: a keypoint visibility is negative")
    boxes = []
    for part in BOX_PARTS:
        field = _BOX_FIELDS[part]
        if field not in ann:
            raise _fail(ann_file, f"{key}.{field}", f"{who}: missing field {field!r}")
        boxes.append(_number_array(ann[field], 4, ann_file, f"{key}.{field}", who))
    valid = tuple(_bool_field(ann, _VALID_FIELDS[p], ann_file, key, who) for p in BOX_PARTS)
    foot_valid = _bool_field(ann, "foot_valid", ann_file, key, who)
    keypoints.setflags(write=False)
    part_boxes = np.stack(boxes)
    part_boxes.setflags(write=False)
    return PersonAnnotation(
        ann_id=ann_id,
        image_id=image_id,
        bbox=tuple(float(v) for v in bbox),  # type: ignore[arg-type]
        area=float(area),
        iscrowd=iscrowd,
        num_keypoints=num_keypoints,
        keypoints=keypoints,
        part_boxes=part_boxes,
        part_valid=valid,  # type: ignore[arg-type]
        foot_valid=foot_valid,
    )


def _parse_images(data: dict[str, Any], ann_file: Path, images_root: Path) -> dict[int, ImageInfo]:
    raw_images = data.get("images")
    if not isinstance(raw_images, list):
        raise _fail(ann_file, "images", "expected a list of images")
    images: dict[int, ImageInfo] = {}
    for i, img in enumerate(raw_images):
        key = f"images[{i}]"
        if not isinstance(img, dict):
            raise _fail(ann_file, key, "expected an object")
        who = f"image id {img.get('id')!r}"
        image_id = _int_field(img, "id", ann_file, key, who)
        width = _int_field(img, "width", ann_file, key, who)
        height = _int_field(img, "height", ann_file, key, who)
        name = img.get("file_name")
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise _fail(ann_file, f"{key}.file_name", f"{who}: bad file_name {name!r}")
        if image_id in images:
            raise _fail(ann_file, f"{key}.id", f"{who}: duplicate image id")
        if width <= 0 or height <= 0:
            raise _fail(ann_file, key, f"{who}: non-positive size {width}x{height}")
        images[image_id] = ImageInfo(image_id, name, width, height, images_root / name)
    return images


def load_annotations(
    ann_file: str | Path, images_root: str | Path | None = None, *, check_images: bool = True
) -> WholeBodyAnnotations:
    """Read and validate one COCO-WholeBody annotation file.

    `images_root` defaults to the release layout (`ROOT/{split}2017` next to `ROOT/annotations`,
    split taken from the file name). With `check_images`, every image referenced by an
    annotation must exist.

    Raises DataError: the file is missing or not JSON, a field is missing or of the wrong type or
    length, an id is duplicated, or an image is missing; the message names the file and the id.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DataError("annotation file not found", source=str(ann_file))
    data = read_json(ann_file, what="JSON", error=DataError)
    if not isinstance(data, dict):
        raise DataError("expected a JSON object with `images` and `annotations`", source=str(ann_file))
    if images_root is None:
        split = "val" if "_val" in ann_file.name else "train"
        images_root = image_dir(ann_file.parent.parent, split)
    images_root = Path(images_root)
    images = _parse_images(data, ann_file, images_root)
    raw_anns = data.get("annotations")
    if not isinstance(raw_anns, list):
        raise _fail(ann_file, "annotations", "expected a list of annotations")
    annotations = []
    seen: set[int] = set()
    for i, ann in enumerate(raw_anns):
        parsed = _parse_annotation(ann, i, ann_file, images)
        if parsed.ann_id in seen:
            raise _fail(ann_file, f"annotations[{i}].id", f"annotation id {parsed.ann_id}: duplicate id")
        seen.add(parsed.ann_id)
        annotations.append(parsed)
    if check_images:
        needed = {a.image_id: a.ann_id for a in annotations}
        for image_id, ann_id in needed.items():
            info = images[image_id]
            if not info.path.is_file():
                raise DataError(
                    f"annotation id {ann_id}: image file {info.path} (image id {image_id}) is missing",
                    source=str(ann_file),
                )
    return WholeBodyAnnotations(
        ann_file=ann_file,
        image_dir=images_root,
        images=MappingProxyType(images),
        annotations=tuple(annotations),
        raw=data,
    )


def load_split(root: str | Path, split: str, *, check_images: bool = True) -> WholeBodyAnnotations:
    """Load `split` ('train' or 'val') of a dataset in the release layout under `root`.

    Raises DataError: unknown split, or anything `load_annotations` raises.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}", source=str(root))
    return load_annotations(annotation_path(root, split), image_dir(root, split), check_images=check_images)


def check_dataset(root: str | Path) -> dict[str, DatasetCounts]:
    """Validate every split present under `root` and count it.

    Raises DataError: no annotation file at all, or any error of `load_annotations`.
    """
    found = [s for s in SPLITS if annotation_path(root, s).is_file()]
    if not found:
        raise DataError(
            f"no annotation file: expected {annotation_path(root, 'train')} and/or "
            f"{annotation_path(root, 'val')}",
            source=str(root),
        )
    return {s: load_split(root, s).counts() for s in found}


def _clip_xywh(bbox: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1.0)), min(height - 1.0, y1 + max(0.0, h - 1.0))
    return x1, y1, x2 - x1, y2 - y1


def _instance_from_person(a: PersonAnnotation, bbox: tuple[float, float, float, float]) -> Instance:
    kpts = np.array(a.keypoints, dtype=np.float32)
    labeled = kpts[:, 2] > 0
    kpts[:, 2] = labeled.astype(np.float32)
    kpts[~labeled, :2] = 0.0
    boxes = np.zeros((3, 4), dtype=np.float32)
    valid = np.zeros(3, dtype=np.float32)
    for p, part in enumerate(BOX_PARTS):
        x, y, w, h = a.part_boxes[p]
        sl = PART_SLICES[part]
        ok = a.part_valid[p] and w > 0 and h > 0 and bool(np.any(kpts[sl, 2] > 0))
        if ok:
            boxes[p] = (x, y, x + w, y + h)
            valid[p] = 1.0
        else:
            kpts[sl] = 0.0  # an invalid face/hand is not a labeled target anywhere
    kpts.setflags(write=False)
    boxes.setflags(write=False)
    valid.setflags(write=False)
    return Instance(
        image_id=a.image_id, ann_id=a.ann_id, bbox=bbox, score=1.0, area=a.area,
        keypoints=kpts, part_boxes=boxes, part_valid=valid,
    )


def train_instances(ann: WholeBodyAnnotations) -> tuple[Instance, ...]:
    """GT persons usable for top-down training: not crowd, at least one labeled body keypoint,
    and a box that is not degenerate after clipping to the image."""
    out = []
    for a in ann.annotations:
        if a.iscrowd or not np.any(a.keypoints[:17, 2] > 0):
            continue
        info = ann.images[a.image_id]
        bbox = _clip_xywh(a.bbox, info.width, info.height)
        if a.area <= 0 or bbox[2] <= 1 or bbox[3] <= 1:
            continue
        out.append(_instance_from_person(a, bbox))
    return tuple(out)


def val_instances(
    ann: WholeBodyAnnotations, detections: str | Path | None = None, *, min_score: float = 0.0
) -> tuple[Instance, ...]:
    """Persons to evaluate: GT boxes of non-crowd annotations (`detections=None`), or person
    detections from a COCO results file (`[{"image_id", "category_id", "bbox", "score"}]`,
    category 1 only, `score >= min_score`).

    Raises DataError: the detections file is unreadable, an entry is malformed or names an
    image id that is not in the annotation file.
    """
    if detections is None:
        out = []
        for a in ann.annotations:
            if a.iscrowd:
                continue
            info = ann.images[a.image_id]
            bbox = _clip_xywh(a.bbox, info.width, info.height)
            if bbox[2] <= 1 or bbox[3] <= 1:
                continue
            out.append(_instance_from_person(a, bbox))
        return tuple(out)
    return _detection_instances(ann, Path(detections), min_score)


def _detection_instances(ann: WholeBodyAnnotations, path: Path, min_score: float) -> tuple[Instance, ...]:
    dets = read_json(path, what="detections", error=DataError)
    if not isinstance(dets, list):
        raise DataError("expected a JSON list of detections", source=str(path))
    zeros_k = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    zeros_b = np.zeros((3, 4), dtype=np.float32)
    zeros_v = np.zeros(3, dtype=np.float32)
    for arr in (zeros_k, zeros_b, zeros_v):
        arr.setflags(write=False)
    out = []
    for i, det in enumerate(dets):
        key = f"[{i}]"
        if not isinstance(det, dict):
            raise DataError("expected an object", source=str(path), key=key)
        image_id = _int_field(det, "image_id", path, key, f"detection {i}")
        if image_id not in ann.images:
            raise DataError(f"image_id {image_id} is not in {ann.ann_file}", source=str(path), key=f"{key}.image_id")
        if det.get("category_id", 1) != 1:
            continue
        bbox = _number_array(det.get("bbox"), 4, path, f"{key}.bbox", f"detection {i}")
        score = det.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(f"expected a finite score, got {score!r}", source=str(path), key=f"{key}.score")
        if score < min_score:
            continue
        info = ann.images[image_id]
        clipped = _clip_xywh(bbox, info.width, info.height)
        if clipped[2] <= 1 or clipped[3] <= 1:
            continue
        out.append(Instance(
            image_id=image_id, ann_id=-1, bbox=clipped, score=float(score),
            area=float(clipped[2] * clipped[3] * 0.53),
            keypoints=zeros_k, part_boxes=zeros_b, part_valid=zeros_v,
        ))
    return tuple(out)
