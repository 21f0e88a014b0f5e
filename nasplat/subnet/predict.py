"""Whole-body keypoints of people in images with an exported subnet (what `nasplat predict` runs).

`Predictor(model_dir, backend)` runs the export's `model.onnx` on onnxruntime or its `model.pt`
in PyTorch; `predict(images)` crops each person box like the validation crops (the box widened
to the body input's aspect, padded 1.25x), runs the crops in batches, decodes the 133 keypoints
(`decode_wholebody`) and maps them back to image pixels. No flip test: the exported graph is one
forward. Helpers read the inputs the command takes (image ids, COCO detection files).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from nasplat.data.decode import decode_wholebody, instance_scores
from nasplat.data.keypoints import IMAGENET_MEAN, IMAGENET_STD
from nasplat.data.transforms import box_to_center_scale, crop_matrix, crop_to_image
from nasplat.errors import ConfigError, DataError
from nasplat.models import ZoomNetOutput
from nasplat.subnet.export import ONNX, load_exported, read_export
from nasplat.subnet.onnx_export import onnx_session, run_onnx

__all__ = [
    "BACKENDS",
    "IMAGE_SUFFIXES",
    "Person",
    "Predictor",
    "Timing",
    "clip_to_image",
    "default_backend",
    "find_images",
    "image_id_from_name",
    "read_ann_ids",
    "read_boxes",
    "whole_image",
]

BACKENDS = ("torch", "onnx")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PADDING = 1.25  # person box -> crop region, as the validation crops
_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(IMAGENET_STD, dtype=np.float32)


@dataclass(frozen=True)
class Person:
    bbox: tuple[float, float, float, float]  # xywh image pixels
    score: float  # detection score (1 for the whole image)


@dataclass
class Timing:
    """Where predicting time went: `network` is inside the model call, the rest is crops,
    decoding and mapping back (callers add their reading and drawing to `total`)."""

    network: float = 0.0
    total: float = 0.0
    crops: int = 0
    calls: list[int] = field(default_factory=list)  # batch size of each network call


def default_backend(model_dir: str | Path, device: str = "cpu") -> str:
    """`onnx` on the CPU when the export has a `model.onnx`, else `torch`."""
    return "onnx" if device == "cpu" and (Path(model_dir) / ONNX).is_file() else "torch"


class Predictor:
    """An exported subnet ready to predict. Raises ConfigError (not an export directory, unknown
    backend) and TrainingError (weights or ONNX file missing or unreadable)."""

    def __init__(self, model_dir: str | Path, backend: str | None = None, *, device: str = "cpu",
                 threads: int = 2, batch_size: int = 8) -> None:
        self.model_dir = Path(model_dir)
        self.arch, _, _ = read_export(self.model_dir)
        self.backend = backend or default_backend(self.model_dir, device)
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; allowed: {', '.join(BACKENDS)}", key="--backend")
        self.input_size = self.arch.body.input_size  # (H, W)
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.threads = threads
        if self.backend == "onnx":
            self._session = onnx_session(self.model_dir / ONNX, threads=threads)
        else:
            self._net = load_exported(self.model_dir, device)

    def _run(self, x: np.ndarray) -> ZoomNetOutput:
        if self.backend == "onnx":
            return run_onnx(self._session, x)
        with torch.no_grad():
            out = self._net(torch.from_numpy(x).to(self.device))
        return ZoomNetOutput(*(t.cpu() for t in out))

    def crop(self, image: np.ndarray, person: Person) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The normalised body-input crop [3, H, W] of one person of a BGR image, with its centre
        and scale (w, h) in image pixels."""
        center, scale = box_to_center_scale(person.bbox, self.input_size, PADDING)
        matrix = crop_matrix(center, scale, 0.0, self.input_size)
        h, w = self.input_size
        patch = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR)  # [H, W, 3] BGR
        rgb = (patch[..., ::-1].astype(np.float32) - _MEAN) / _STD
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)), center, scale

    def predict(self, images: Sequence[tuple[np.ndarray, Sequence[Person]]],
                timing: Timing | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each (BGR image, persons): keypoints [P, 133, 3] (x, y image pixels, score) and
        person scores [P]. All persons of all images run in batches of `batch_size`."""
        start = time.perf_counter()
        crops, centers, scales, box_scores, owner = [], [], [], [], []
        for i, (image, persons) in enumerate(images):
            for p in persons:
                c, center, scale = self.crop(image, p)
                crops.append(c)
                centers.append(center)
                scales.append(scale)
                box_scores.append(p.score)
                owner.append(i)
        keypoints = np.zeros((len(crops), 133, 3), dtype=np.float64)
        scores = np.zeros(len(crops), dtype=np.float64)
        for s in range(0, len(crops), self.batch_size):
            sl = slice(s, s + self.batch_size)
            x = np.stack(crops[sl])
            t = time.perf_counter()
            out = self._run(x)
            if timing is not None:
                timing.network += time.perf_counter() - t
                timing.calls.append(x.shape[0])
            xy, kp_s = decode_wholebody(out.body_heatmaps, out.boxes, out.face_heatmaps, out.hand_heatmaps)
            n = x.shape[0]
            xy = crop_to_image(xy.float(), torch.as_tensor(np.stack(centers[sl]), dtype=torch.float32),
                               torch.as_tensor(np.stack(scales[sl]), dtype=torch.float32), torch.zeros(n),
                               self.input_size)
            kp_s = kp_s.float()
            keypoints[sl, :, :2] = xy.numpy()
            keypoints[sl, :, 2] = kp_s.numpy()
            scores[sl] = instance_scores(torch.tensor(box_scores[sl], dtype=torch.float32), kp_s).numpy()
        owner_arr = np.asarray(owner, dtype=np.int64)
        result = [(keypoints[owner_arr == i], scores[owner_arr == i]) for i in range(len(images))]
        if timing is not None:
            timing.total += time.perf_counter() - start
            timing.crops += len(crops)
        return result


def whole_image(image: np.ndarray) -> list[Person]:
    """The whole image as one person (score 1)."""
    h, w = image.shape[:2]
    return [Person((0.0, 0.0, float(w), float(h)), 1.0)]


def find_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files of the inputs (a folder gives its image files, sorted by name; a file is taken
    as it is) and one error line for each input that does not exist."""
    found, errors = [], []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            errors.append(f"{path}: no such file or directory")
    return found, errors


def image_id_from_name(path: Path) -> int | None:
    """The number a COCO-style file name ends with (`000000000785.jpg` -> 785), else None."""
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else None


def _load_json(path: Path, what: str) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} ({e})", source=str(path)) from e


def read_ann_ids(path: Path) -> dict[str, int]:
    """File name -> image id of a COCO annotation file's `images`. Raises DataError."""
    data = _load_json(path, "the annotation file")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataError("expected an object with an `images` list", source=str(path), key="images")
    out = {}
    for i, info in enumerate(images):
        if not isinstance(info, dict) or not isinstance(info.get("file_name"), str):
            raise DataError("expected an object with a `file_name` string", source=str(path), key=f"images[{i}]")
        image_id = info.get("id")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise DataError(f"id {image_id!r} is not an integer", source=str(path), key=f"images[{i}].id")
        out[Path(info["file_name"]).name] = image_id
    return out


def read_boxes(path: Path, min_score: float = 0.0) -> dict[int, list[Person]]:
    """Person boxes by image id from a COCO detection results file (`[{"image_id", "category_id",
    "bbox": [x, y, w, h], "score"}]`; only category 1, score >= min_score, non-empty boxes).
    Raises DataError naming the entry that is malformed."""
    dets = _load_json(path, "the box file")
    if not isinstance(dets, list):
        raise DataError("expected a JSON list of detections", source=str(path))
    out: dict[int, list[Person]] = {}
    for i, det in enumerate(dets):
        key = f"[{i}]"
        if not isinstance(det, Mapping):
            raise DataError("expected an object", source=str(path), key=key)
        image_id = det.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise DataError(f"image_id {image_id!r} is not an integer", source=str(path), key=f"{key}.image_id")
        bbox = det.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            raise DataError(f"bbox {bbox!r} is not 4 finite numbers [x, y, w, h]", source=str(path), key=f"{key}.bbox")
        score = det.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(f"score {score!r} is not a finite number", source=str(path), key=f"{key}.score")
        if det.get("category_id", 1) != 1 or score < min_score or bbox[2] <= 1 or bbox[3] <= 1:
            continue
        out.setdefault(image_id, []).append(Person(tuple(float(v) for v in bbox), float(score)))  # type: ignore[arg-type]
    return out


def clip_to_image(person: Person, width: int, height: int) -> Person | None:
    """The person box clipped to the image, or None when nothing of it is left (< 1 pixel)."""
    x, y, w, h = person.bbox
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(width), x + w), min(float(height), y + h)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return Person((x1, y1, x2 - x1, y2 - y1), person.score)
