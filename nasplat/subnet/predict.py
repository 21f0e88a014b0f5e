"""Whole-body keypoints of people in images with an exported subnet (what `nasplat predict` runs).

`Predictor(model_dir, backend)` runs the export's onnxruntime model or its `model.pt` in PyTorch,
in three steps that a pipeline can run on different threads:
- `prepare(image, persons)`: each person box cropped like the validation crops (the box widened to
  the body input's aspect, padded 1.25x) and normalised (`Prepared`);
- `infer(crops)`: one network call on a batch of crops;
- `finish(out, centers, scales, box_scores)`: the 133 keypoints decoded (`decode_wholebody`) and
  mapped back to image pixels, with the person scores.
`predict_stream` batches the crops of consecutive images (`batch_size` per network call) and gives
each image's keypoints back in input order; `predict(images)` is the same on a list. No flip test:
the exported graph is one forward. Helpers read the inputs the command takes (image ids, COCO
detection files) and say which detections are of no use (`read_boxes`, `keep_boxes`).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from nasplat.data.decode import decode_wholebody, instance_scores
from nasplat.data.keypoints import IMAGENET_MEAN, IMAGENET_STD
from nasplat.data.transforms import box_to_center_scale, crop_matrix, crop_to_image
from nasplat.errors import ConfigError, DataError
from nasplat.files import read_json
from nasplat.models import ZoomNetOutput
from nasplat.subnet.export import ARCH, ONNX, load_exported, onnx_model_file, read_export
from nasplat.subnet.inference import resolve_device
from nasplat.subnet.onnx_export import onnx_session, run_onnx

__all__ = [
    "BACKENDS",
    "IMAGE_SUFFIXES",
    "Detections",
    "Person",
    "Predictor",
    "Prepared",
    "Timing",
    "clip_to_image",
    "default_backend",
    "find_images",
    "image_id_from_name",
    "image_size",
    "keep_boxes",
    "predict_stream",
    "read_ann_ids",
    "read_boxes",
    "whole_image",
]

BACKENDS = ("torch", "onnx")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PADDING = 1.25  # person box -> crop region, as the validation crops
_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(IMAGENET_STD, dtype=np.float32)
T = TypeVar("T")


@dataclass(frozen=True)
class Person:
    bbox: tuple[float, float, float, float]  # xywh image pixels
    score: float  # detection score (1 for the whole image)


@dataclass(frozen=True)
class Prepared:
    """The person crops of one image, ready for the network (`Predictor.prepare`)."""

    crops: np.ndarray  # [P, 3, H, W] float32, normalised body-input crops
    centers: np.ndarray  # [P, 2] crop centres, image pixels
    scales: np.ndarray  # [P, 2] crop region (w, h), image pixels
    box_scores: np.ndarray  # [P] detection scores

    def __len__(self) -> int:
        return int(self.crops.shape[0])


@dataclass
class Timing:
    """Where predicting time went. `network` is the time inside model calls; `first_call` /
    `last_call` are `time.perf_counter()` at the start of the first call and the end of the last
    (the steady state of a pipeline lies between them); `load` is the model load."""

    network: float = 0.0
    load: float = 0.0
    crops: int = 0
    calls: list[int] = field(default_factory=list)  # batch size of each network call
    first_call: float | None = None
    last_call: float | None = None

    @property
    def steady(self) -> float:
        """Seconds from the start of the first network call to the end of the last (0 before)."""
        if self.first_call is None or self.last_call is None:
            return 0.0
        return self.last_call - self.first_call


def default_backend(model_dir: str | Path, device: str | torch.device = "cpu") -> str:
    """`onnx` on the CPU when the export has a `model.onnx`, else `torch`."""
    return "onnx" if torch.device(device).type == "cpu" and (Path(model_dir) / ONNX).is_file() else "torch"


class Predictor:
    """An exported subnet ready to predict. Construction reads the export's arch and meta (cheap);
    the model itself is loaded by `load()` (at construction unless `load=False`, so that a caller
    can decode images meanwhile; `infer` loads it when nobody has). With the onnx backend the
    export's onnxruntime-optimised model is loaded when it was written by this onnxruntime version,
    else `model.onnx` (`model_file` says which).
    Raises ConfigError (a device this machine lacks, not an export directory, unknown backend; from
    `load`, an ONNX model whose input is not the size `arch.json` says) and, from `load`,
    TrainingError (weights or ONNX file missing or unreadable)."""

    def __init__(self, model_dir: str | Path, backend: str | None = None, *, device: str = "cpu",
                 threads: int = 2, batch_size: int = 8, load: bool = True) -> None:
        self.device = resolve_device(device)
        self.model_dir = Path(model_dir)
        self.arch, _, _ = read_export(self.model_dir)
        self.backend = backend or default_backend(self.model_dir, self.device)
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; allowed: {', '.join(BACKENDS)}", key="--backend")
        self.input_size = self.arch.body.input_size  # (H, W)
        self.batch_size = max(1, int(batch_size))
        self.threads = threads
        self.model_file: Path | None = None  # the file the model was loaded from
        self.load_seconds = 0.0
        self._model: Any = None
        self._lock = threading.Lock()
        if load:
            self.load()

    def load(self) -> None:
        """Load the model (once; later calls return at once). Raises TrainingError."""
        with self._lock:
            if self._model is not None:
                return
            start = time.perf_counter()
            if self.backend == "onnx":
                self.model_file = onnx_model_file(self.model_dir)
                # no spinning: between calls the cores are the readers' and painters' (on a
                # loaded 2-core machine 30 against 25 images/s with 2 workers, 34 against 16 serial)
                try:
                    self._model = onnx_session(self.model_file, threads=self.threads, spin=False)
                except Exception:  # a damaged optimised copy: model.onnx is the model
                    if self.model_file.name == ONNX:
                        raise
                    self.model_file = self.model_dir / ONNX
                    self._model = onnx_session(self.model_file, threads=self.threads, spin=False)
                self._check_onnx_input(self._model, self.model_file)
            else:
                self.model_file = self.model_dir / "model.pt"
                self._model = load_exported(self.model_dir, str(self.device))
            self.load_seconds = time.perf_counter() - start

    def _check_onnx_input(self, session: Any, path: Path) -> None:
        """Raise ConfigError naming `arch.json` and the ONNX file when the graph's input (H, W) is
        not the body input the arch says: files of two exports mixed in one folder (onnxruntime
        would refuse every crop)."""
        shape = session.get_inputs()[0].shape  # [batch, 3, H, W]; a dimension may be symbolic
        taken = tuple(shape[2:4])
        if all(isinstance(v, int) for v in taken) and taken != tuple(self.input_size):
            (h, w), (th, tw) = self.input_size, taken
            raise ConfigError(f"{ARCH} says a body input of {h} x {w} pixels (H x W) but {path.name} takes "
                              f"{th} x {tw}: the two files come from different exports (export the subnet again "
                              "with `nasplat subnet export`)", source=str(self.model_dir))

    def infer(self, crops: np.ndarray, timing: Timing | None = None) -> ZoomNetOutput:
        """One network call on crops [B, 3, H, W] (float32, as `prepare` makes them)."""
        self.load()
        t = time.perf_counter()
        if self.backend == "onnx":
            out = run_onnx(self._model, crops)
        else:
            with torch.no_grad():
                raw = self._model(torch.from_numpy(crops).to(self.device))
            out = ZoomNetOutput(*(o.cpu() for o in raw))
        if timing is not None:
            done = time.perf_counter()
            timing.network += done - t
            timing.first_call = t if timing.first_call is None else timing.first_call
            timing.last_call = done
            timing.calls.append(int(crops.shape[0]))
            timing.crops += int(crops.shape[0])
        return out

    def crop(self, image: np.ndarray, person: Person) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The normalised body-input crop [3, H, W] of one person of a BGR image, with its centre
        and scale (w, h) in image pixels."""
        center, scale = box_to_center_scale(person.bbox, self.input_size, PADDING)
        matrix = crop_matrix(center, scale, 0.0, self.input_size)
        h, w = self.input_size
        patch = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR)  # [H, W, 3] BGR
        rgb = (patch[..., ::-1].astype(np.float32) - _MEAN) / _STD
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)), center, scale

    def prepare(self, image: np.ndarray, persons: Sequence[Person]) -> Prepared:
        """The crops of the persons of one BGR image (no model needed: safe on any thread)."""
        h, w = self.input_size
        crops = np.empty((len(persons), 3, h, w), dtype=np.float32)
        centers = np.empty((len(persons), 2), dtype=np.float32)
        scales = np.empty((len(persons), 2), dtype=np.float32)
        for i, p in enumerate(persons):
            crops[i], centers[i], scales[i] = self.crop(image, p)
        return Prepared(crops, centers, scales, np.array([p.score for p in persons], dtype=np.float32))

    def finish(self, out: ZoomNetOutput, centers: np.ndarray, scales: np.ndarray,
               box_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints [B, 133, 3] (x, y image pixels, score; float64) and person scores [B] of one
        network call's outputs, with the crops' centres [B, 2], scales [B, 2] and box scores [B]."""
        n = centers.shape[0]
        xy, kp_s = decode_wholebody(out.body_heatmaps, out.boxes, out.face_heatmaps, out.hand_heatmaps)
        xy = crop_to_image(xy.float(), torch.from_numpy(centers), torch.from_numpy(scales), torch.zeros(n),
                           self.input_size)
        kp_s = kp_s.float()
        keypoints = np.zeros((n, 133, 3), dtype=np.float64)
        keypoints[:, :, :2] = xy.numpy()
        keypoints[:, :, 2] = kp_s.numpy()
        scores = instance_scores(torch.from_numpy(box_scores), kp_s).numpy().astype(np.float64)
        return keypoints, scores

    def predict(self, images: Sequence[tuple[np.ndarray, Sequence[Person]]],
                timing: Timing | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each (BGR image, persons): keypoints [P, 133, 3] (x, y image pixels, score) and
        person scores [P]. All persons of all images run in batches of `batch_size`."""
        prepared = ((i, self.prepare(image, persons)) for i, (image, persons) in enumerate(images))
        return [(kp, sc) for _, kp, sc in predict_stream(self, prepared, timing)]


def predict_stream(predictor: Predictor, items: Iterable[tuple[T, Prepared]],
                   timing: Timing | None = None) -> Iterator[tuple[T, np.ndarray, np.ndarray]]:
    """(tag, keypoints [P, 133, 3], person scores [P]) for each (tag, prepared image), in the
    order of `items`, each as soon as all its crops have been through the network. The crops of
    consecutive images fill network calls of `predictor.batch_size` (the last one shorter), so the
    batches, and with them the results, depend only on the sequence of images, not on when
    `items` delivers them."""
    pending: deque[list[Any]] = deque()  # [tag, prepared, keypoints, scores, crops still to run]
    slots: deque[tuple[list[Any], int]] = deque()  # (pending entry, crop row) not yet run

    def run(n: int) -> None:
        batch = [slots.popleft() for _ in range(n)]
        crops = np.stack([entry[1].crops[row] for entry, row in batch])  # [n, 3, H, W]
        centers = np.stack([entry[1].centers[row] for entry, row in batch])  # [n, 2]
        scales = np.stack([entry[1].scales[row] for entry, row in batch])  # [n, 2]
        box_scores = np.array([entry[1].box_scores[row] for entry, row in batch], dtype=np.float32)
        keypoints, scores = predictor.finish(predictor.infer(crops, timing), centers, scales, box_scores)
        for k, (entry, row) in enumerate(batch):
            entry[2][row] = keypoints[k]
            entry[3][row] = scores[k]
            entry[4] -= 1

    def done() -> Iterator[tuple[T, np.ndarray, np.ndarray]]:
        while pending and pending[0][4] == 0:
            tag, _, keypoints, scores, _ = pending.popleft()
            yield tag, keypoints, scores

    for tag, prepared in items:
        p = len(prepared)
        entry = [tag, prepared, np.zeros((p, 133, 3), dtype=np.float64), np.zeros(p, dtype=np.float64), p]
        pending.append(entry)
        slots.extend((entry, row) for row in range(p))
        while len(slots) >= predictor.batch_size:
            run(predictor.batch_size)
        yield from done()
    while slots:
        run(min(len(slots), predictor.batch_size))
    yield from done()


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
    return read_json(path, what=what, error=DataError)


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


@dataclass(frozen=True)
class Detections:
    """The person boxes of a COCO detection results file (`read_boxes`)."""

    source: Path  # the file they were read from
    count: int  # detections in the file
    persons: dict[int, list[Person]]  # image id -> the boxes kept, in file order
    dropped: Counter[str]  # why -> how many were not kept (`DROPPED_*`; the score one with the --min-score)


DROPPED_CATEGORY = "not a person (category_id != 1)"
DROPPED_SCORE = "scored below --min-score"
DROPPED_EMPTY = "with a width or height of 1 pixel or less"
DROPPED_OUTSIDE = "outside their image"
DROPPED_UNKNOWN = "for an image that is not an input"


def read_boxes(path: Path, min_score: float = 0.0) -> Detections:
    """Person boxes by image id from a COCO detection results file (`[{"image_id", "category_id",
    "bbox": [x, y, w, h], "score"}]`): only category 1, score >= min_score and boxes wider and
    higher than 1 pixel are kept; `dropped` counts the others by reason. Raises DataError naming
    the entry that is malformed."""
    dets = _load_json(path, "the box file")
    if not isinstance(dets, list):
        raise DataError("expected a JSON list of detections", source=str(path))
    out: dict[int, list[Person]] = {}
    dropped: Counter[str] = Counter()
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
        if det.get("category_id", 1) != 1:
            dropped[DROPPED_CATEGORY] += 1
        elif score < min_score:
            dropped[f"{DROPPED_SCORE} {min_score:g}"] += 1
        elif bbox[2] <= 1 or bbox[3] <= 1:
            dropped[DROPPED_EMPTY] += 1
        else:
            x, y, w, h = (float(v) for v in bbox)
            out.setdefault(image_id, []).append(Person((x, y, w, h), float(score)))
    return Detections(Path(path), len(dets), out, dropped)


def keep_boxes(detections: Detections, sizes: Mapping[int, tuple[int, int] | None]) -> Detections:
    """`detections` with only the boxes of the image ids of `sizes` (image id -> (width, height),
    None when not known before decoding), each clipped to its image; the boxes with nothing left
    inside their image and those of other image ids (the first three named) are added to
    `dropped`."""
    kept: dict[int, list[Person]] = {}
    dropped = Counter(detections.dropped)
    unknown = {image_id: len(persons) for image_id, persons in detections.persons.items() if image_id not in sizes}
    if unknown:
        some = ", ".join(str(i) for i in list(unknown)[:3]) + (", ..." if len(unknown) > 3 else "")
        dropped[f"{DROPPED_UNKNOWN} (image id {some})"] = sum(unknown.values())
    for image_id, persons in detections.persons.items():
        if image_id in unknown:
            continue
        size = sizes[image_id]
        clipped = persons if size is None else [clip_to_image(p, *size) for p in persons]
        dropped[DROPPED_OUTSIDE] += sum(p is None for p in clipped)
        if any(p is not None for p in clipped):
            kept[image_id] = [p for p in clipped if p is not None]
    return Detections(detections.source, detections.count, kept, +dropped)


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the image at `path` as OpenCV decodes it (EXIF rotation applied), read
    from its header without decoding; None when Pillow cannot read the header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            rotated = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations that swap the axes
    except Exception:  # noqa: BLE001 - not an image Pillow reads: decoding decides
        return None
    return (height, width) if rotated else (width, height)


def clip_to_image(person: Person, width: int, height: int) -> Person | None:
    """The person box clipped to the image, or None when nothing of it is left (< 1 pixel)."""
    x, y, w, h = person.bbox
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(width), x + w), min(float(height), y + h)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return Person((x1, y1, x2 - x1, y2 - y1), person.score)
