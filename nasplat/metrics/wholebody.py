"""The official COCO-WholeBody evaluation (AP/AR per part), on pycocotools.

pycocotools' COCOeval knows only the 'keypoints' IoU type over the `keypoints` field. Each part
(body, foot, face, left hand, right hand, whole body) is evaluated on per-part copies of the GT
and the results: `keypoints` replaced by the part's points, the GT's `num_keypoints` recomputed
over the part (so a person with no labeled point in the part is ignored for it), results whose
part has no positive score dropped, `params.kpt_oks_sigmas` set to the part's sigmas. OKS uses the
person's `area` for every part and results keep the area of their body keypoints' extent, as
xtcocotools' `COCOeval(gt, dt, 'keypoints_<part>', sigmas, use_area=True)` does (the reference the
tests compare against). Hand AP/AR is the mean of the left and right hand.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from nasplat.data.coco import WholeBodyAnnotations, load_annotations
from nasplat.data.keypoints import NUM_KEYPOINTS, PART_FIELDS, PART_SLICES, PARTS, SIGMAS
from nasplat.errors import DataError
from nasplat.files import atomic_write_json, read_json

EVAL_PARTS: tuple[str, ...] = ("body", "foot", "face", "lefthand", "righthand", "wholebody")
REPORT_PARTS: tuple[str, ...] = ("body", "foot", "face", "hand", "wholebody")
_LENGTHS = {PART_FIELDS[p]: 3 * (PART_SLICES[p].stop - PART_SLICES[p].start) for p in PARTS}
MIN_SCORE = 1e-3  # written instead of a non-positive keypoint score: v = 0 would drop a part


def make_results(
    image_ids: Sequence[int] | np.ndarray,
    keypoints: np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    min_keypoint_score: float = MIN_SCORE,
) -> list[dict[str, Any]]:
    """Predictions in the official results format.

    image_ids [N]; keypoints [N, 133, 3] (x, y image pixels, per-keypoint score); scores [N]
    (instance scores). Keypoint scores are clamped to at least `min_keypoint_score`, so no part
    is ever written with v = 0 (which the evaluator would read as "not predicted").

    Raises DataError: shapes disagree or a value is not finite.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    ids = np.asarray(image_ids)
    sc = np.asarray(scores, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[1:] != (NUM_KEYPOINTS, 3) or ids.shape != (kp.shape[0],) or sc.shape != ids.shape:
        raise DataError(
            f"expected image_ids [N], keypoints [N, 133, 3], scores [N]; got {ids.shape}, {kp.shape}, {sc.shape}"
        )
    if not (np.all(np.isfinite(kp)) and np.all(np.isfinite(sc))):
        raise DataError("keypoints or scores contain NaN or infinity")
    kp = kp.copy()
    kp[..., 2] = np.maximum(kp[..., 2], min_keypoint_score)
    out = []
    for n in range(kp.shape[0]):
        res: dict[str, Any] = {"image_id": int(ids[n]), "category_id": 1}
        for part in PARTS:
            res[PART_FIELDS[part]] = [round(float(v), 3) for v in kp[n, PART_SLICES[part]].reshape(-1)]
        res["score"] = float(sc[n])
        out.append(res)
    return out


def write_results(path: str | Path, results: Sequence[Mapping[str, Any]]) -> None:
    """Write results as JSON, atomically (temp file + rename)."""
    atomic_write_json(list(results), path, indent=None)


# A results file of COCO-WholeBody val (top-down, ~100k person results) is ~300 MB; parsed into
# Python lists it takes ~12x its size in memory, so the bound keeps a run under ~6 GB.
MAX_RESULTS_BYTES = 512 << 20


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Read a results file (at most MAX_RESULTS_BYTES). Raises DataError: missing, over the
    bound, not JSON, not a list, or an empty list."""
    path = Path(path)
    data = read_json(path, what="results", error=DataError, limit=MAX_RESULTS_BYTES)
    if not isinstance(data, list):
        raise DataError("expected a JSON list of results", source=str(path))
    if not data:
        # All-zero AP from a file with no results says nothing; it is almost always a broken run.
        raise DataError("the results list is empty; nothing to evaluate", source=str(path))
    return data


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_results(
    results: Sequence[Any], image_ids: set[int], source: str | None
) -> list[dict[str, Any]]:
    checked = []
    for i, res in enumerate(results):
        key = f"[{i}]"
        if not isinstance(res, Mapping):
            raise DataError("expected an object", source=source, key=key)
        image_id = res.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise DataError(f"image_id {image_id!r} is not an integer", source=source, key=f"{key}.image_id")
        if image_id not in image_ids:
            raise DataError(f"image_id {image_id} is not in the ground truth", source=source, key=f"{key}.image_id")
        if res.get("category_id", 1) != 1:
            raise DataError(f"category_id {res.get('category_id')!r}; only 1 (person) is evaluated",
                            source=source, key=f"{key}.category_id")
        if not _finite_number(res.get("score")):
            raise DataError(f"score {res.get('score')!r} is not a finite number", source=source, key=f"{key}.score")
        clean: dict[str, Any] = {"image_id": image_id, "category_id": 1, "score": float(res["score"])}
        for field, length in _LENGTHS.items():
            value = res.get(field)
            if not isinstance(value, list):
                raise DataError(f"missing or not a list (expected {length} numbers)", source=source, key=f"{key}.{field}")
            if len(value) != length:
                raise DataError(f"has length {len(value)}, expected {length}", source=source, key=f"{key}.{field}")
            if not all(_finite_number(v) for v in value):
                raise DataError("contains NaN, infinity or a non-number", source=source, key=f"{key}.{field}")
            clean[field] = [float(v) for v in value]
        checked.append(clean)
    return checked


class WholeBodyEvaluator:
    """AP/AR of body, foot, face, hand and whole body against one GT annotation file.

    `gt` is a path to a COCO-WholeBody annotation file or an already loaded
    `WholeBodyAnnotations` (images need not exist on disk).
    """

    def __init__(self, gt: str | Path | WholeBodyAnnotations) -> None:
        self.gt = gt if isinstance(gt, WholeBodyAnnotations) else load_annotations(gt, check_images=False)
        self._image_ids = set(self.gt.images)
        self._images = [{"id": i, "width": info.width, "height": info.height} for i, info in self.gt.images.items()]
        self._gt_cocos = {part: self._gt_coco(part) for part in EVAL_PARTS}

    @staticmethod
    def _part_keypoints(kpts_133: np.ndarray, part: str) -> np.ndarray:
        return kpts_133 if part == "wholebody" else kpts_133[PART_SLICES[part]]

    def _gt_coco(self, part: str) -> COCO:
        anns = []
        for a in self.gt.annotations:
            k = self._part_keypoints(a.keypoints, part)
            anns.append({
                "id": a.ann_id, "image_id": a.image_id, "category_id": 1, "bbox": list(a.bbox),
                "area": a.area, "iscrowd": int(a.iscrowd),
                "keypoints": k.reshape(-1).tolist(),
                "num_keypoints": int(np.count_nonzero(k[:, 2] > 0)),
            })
        return _coco({"images": self._images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]})

    def _dt_coco(self, results: list[dict[str, Any]], part: str) -> COCO:
        anns = []
        for i, res in enumerate(results):
            flat = np.concatenate([np.asarray(res[PART_FIELDS[p]]) for p in PARTS]).reshape(NUM_KEYPOINTS, 3)
            k = self._part_keypoints(flat, part)
            if not np.any(k[:, 2] > 0):
                continue  # the official evaluator drops a result whose part has no positive score
            body = flat[:17]
            x0, x1 = body[:, 0].min(), body[:, 0].max()
            y0, y1 = body[:, 1].min(), body[:, 1].max()
            anns.append({
                "id": i + 1, "image_id": res["image_id"], "category_id": 1, "score": res["score"],
                "keypoints": k.reshape(-1).tolist(), "area": float((x1 - x0) * (y1 - y0)),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": 0,
            })
        return _coco({"images": self._images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]})

    def evaluate(
        self,
        results: Sequence[Mapping[str, Any]] | str | Path,
        *,
        source: str | None = None,
        image_ids: Collection[int] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> dict[str, dict[str, float]]:
        """Evaluate results (a list in the official format, or a path to one).

        `progress(line)` is told each step as it starts (reading, checking, each part).

        `image_ids` restricts the evaluation to those images (the GT persons of every other image
        are left out, as when predictions cover only part of the set); None: all GT images.

        Returns {"body": {"AP", "AR"}, "foot", "face", "hand", "wholebody"} with values in
        [0, 1]; a part with no labeled GT at all scores 0.

        Raises DataError: a result has a field of the wrong length, a non-finite value, an
        unknown image id or a category other than 1 (the message names the result index).
        """
        say = progress or (lambda line: None)
        if isinstance(results, (str, Path)):
            source = str(results)
            try:
                say(f"reading {source} ({Path(source).stat().st_size / 2**20:.1f} MiB) ...")
            except OSError:
                pass  # load_results says what is wrong with it
            results = load_results(results)
        say(f"checking {len(results)} results ...")
        checked = _check_results(results, self._image_ids, source)
        ids = self._subset(image_ids)
        stats = {}
        for n, part in enumerate(EVAL_PARTS, 1):
            say(f"evaluating {part} ({n}/{len(EVAL_PARTS)}) ...")
            stats[part] = self._evaluate_part(checked, part, ids)
        left, right = stats.pop("lefthand"), stats.pop("righthand")
        stats["hand"] = {"AP": (left["AP"] + right["AP"]) / 2, "AR": (left["AR"] + right["AR"]) / 2}
        return {part: stats[part] for part in REPORT_PARTS}

    def evaluate_parts(self, results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
        """As `evaluate`, with left and right hand reported separately (no "hand" mean)."""
        checked = _check_results(results, self._image_ids, None)
        return {part: self._evaluate_part(checked, part) for part in EVAL_PARTS}

    def _subset(self, image_ids: Collection[int] | None) -> list[int] | None:
        if image_ids is None:
            return None
        ids = sorted({int(i) for i in image_ids})
        unknown = [i for i in ids if i not in self._image_ids]
        if unknown:
            raise DataError(f"image_ids {unknown[:5]} are not in the ground truth", key="image_ids")
        return ids

    def _evaluate_part(self, results: list[dict[str, Any]], part: str, image_ids: list[int] | None = None) -> dict[str, float]:
        gt = self._gt_cocos[part]
        dt = self._dt_coco(results, part)
        sigmas = SIGMAS if part == "wholebody" else SIGMAS[PART_SLICES[part]]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
            ev = COCOeval(gt, dt, "keypoints")
            ev.params.kpt_oks_sigmas = np.array(sigmas)
            ev.params.useSegm = None
            if image_ids is not None:
                ev.params.imgIds = image_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        ap, ar = float(ev.stats[0]), float(ev.stats[5])
        # pycocotools reports -1 when there is nothing to evaluate (no GT in the part)
        return {"AP": max(ap, 0.0), "AR": max(ar, 0.0)}


def _coco(dataset: dict[str, Any]) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco
