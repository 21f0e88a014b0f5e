"""Part metrics of the WholeBody-Face (WBF) and WholeBody-Hand (WBH) benchmarks.

All take predictions and GT as [N, K, 2] pixel coordinates and an optional mask [N, K] of
labeled points (default: all); masked-out points do not count anywhere.
"""

from __future__ import annotations

import numpy as np

from nasplat.data.keypoints import FACE_OUTER_EYE_CORNERS
from nasplat.errors import DataError


def _prepare(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != 2 or p.shape != g.shape:
        raise DataError(f"expected pred and gt of the same shape [N, K, 2], got {p.shape} and {g.shape}")
    m = np.ones(p.shape[:2], dtype=bool) if mask is None else np.asarray(mask) > 0
    if m.shape != p.shape[:2]:
        raise DataError(f"mask shape {m.shape} does not match [N, K] = {p.shape[:2]}")
    if not (np.all(np.isfinite(p[m])) and np.all(np.isfinite(g[m]))):
        raise DataError("pred or gt contains NaN or infinity at a labeled point")
    if not m.any():
        raise DataError("no labeled point to evaluate")
    return p, g, m


def _distances(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p - g, axis=-1)  # [N, K]


def nme_inter_ocular(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Face NME: per face, the mean distance over its labeled landmarks divided by the
    inter-ocular distance (GT outer eye corners, landmarks 36 and 45 of the 68-point layout);
    averaged over faces with at least one labeled landmark.

    pred, gt [N, 68, 2]. Raises DataError: shapes, non-finite values, no labeled point, or a
    face whose outer eye corners coincide.
    """
    p, g, m = _prepare(pred, gt, mask)
    if p.shape[1] != 68:
        raise DataError(f"expected 68 face landmarks, got {p.shape[1]}")
    a, b = FACE_OUTER_EYE_CORNERS
    ocular = np.linalg.norm(g[:, a] - g[:, b], axis=-1)  # [N]
    has = m.any(axis=1)
    if np.any(ocular[has] <= 0):
        raise DataError("a face has zero inter-ocular distance (outer eye corners 36 and 45 coincide)")
    d = _distances(p, g)
    per_face = (d * m).sum(axis=1)[has] / m.sum(axis=1)[has] / ocular[has]
    return float(per_face.mean())


def pck_hand(
    pred: np.ndarray, gt: np.ndarray, boxes: np.ndarray, mask: np.ndarray | None = None, threshold: float = 0.2
) -> float:
    """Hand PCK: the fraction of labeled points whose distance divided by the **longer side of
    the hand's GT box**, max(w, h), is at most `threshold` (0.2 in the paper).

    pred, gt [N, 21, 2]; boxes [N, 4] xywh (the released `*hand_box`). Raises DataError: shapes,
    non-finite values, no labeled point, or an empty box.
    """
    p, g, m = _prepare(pred, gt, mask)
    bx = np.asarray(boxes, dtype=np.float64)
    if bx.shape != (p.shape[0], 4):
        raise DataError(f"expected boxes [N, 4] = [{p.shape[0]}, 4], got {bx.shape}")
    norm = np.maximum(bx[:, 2], bx[:, 3])  # [N]
    if np.any(norm[m.any(axis=1)] <= 0):
        raise DataError("a hand box has zero width and height")
    d = _distances(p, g) / np.where(norm > 0, norm, 1.0)[:, None]
    return float((d[m] <= threshold).mean())


def auc_hand(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, max_threshold: float = 30.0, steps: int = 31
) -> float:
    """Hand AUC: the area under the PCK curve for pixel thresholds 0..`max_threshold`
    (`steps` evenly spaced values, trapezoid rule), divided by `max_threshold` so it is in [0, 1].

    Raises DataError: shapes, non-finite values, no labeled point, bad thresholds.
    """
    if max_threshold <= 0 or steps < 2:
        raise DataError(f"need max_threshold > 0 and steps >= 2, got {max_threshold}, {steps}")
    p, g, m = _prepare(pred, gt, mask)
    d = _distances(p, g)[m]  # [M]
    thresholds = np.linspace(0.0, max_threshold, steps)
    pck = (d[None, :] <= thresholds[:, None]).mean(axis=1)  # [steps]
    area = float(np.sum((pck[1:] + pck[:-1]) * 0.5 * np.diff(thresholds)))
    return area / max_threshold


def epe(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """End-point error: the mean Euclidean distance in pixels over labeled points.

    Raises DataError: shapes, non-finite values, no labeled point.
    """
    p, g, m = _prepare(pred, gt, mask)
    return float(_distances(p, g)[m].mean())
