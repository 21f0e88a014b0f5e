"""The whole-body skeleton drawn on an image (OpenCV), for people to look at predictions.

Body, feet, face, left hand and right hand each have their own colour; a point (and every link
touching it) whose score is below `threshold` is drawn faint, blended into the image.
"""

from __future__ import annotations

import cv2
import numpy as np

from nasplat.data.keypoints import COCO_SKELETON, NUM_KEYPOINTS, PART_SLICES

__all__ = ["PART_COLOURS", "PNG_PARAMS", "SKELETON", "draw_wholebody", "encode_png"]

# Drawn pictures are stored, not compressed: zlib level 0 without PNG row filters. On a 640x480
# drawing that took 1.4 ms against 23-46 ms for level 1 (any strategy or filter) and 0.75 s for
# level 9, for files 1.8x level 1's (benchmarks/bench_export.py prints the comparison).
PNG_PARAMS: list[int] = [cv2.IMWRITE_PNG_COMPRESSION, 0]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.10; before, libpng picks the filters
    PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]

# BGR, far apart in hue so the parts read apart at a glance
PART_COLOURS: dict[str, tuple[int, int, int]] = {
    "body": (0, 165, 255),  # orange
    "foot": (255, 160, 0),  # blue
    "face": (255, 255, 255),  # white
    "lefthand": (0, 230, 0),  # green
    "righthand": (230, 0, 230),  # magenta
}


def _chain(start: int, stop: int, closed: bool = False) -> list[tuple[int, int]]:
    links = [(k, k + 1) for k in range(start, stop - 1)]
    return links + [(stop - 1, start)] if closed else links


def _face_links(o: int) -> list[tuple[int, int]]:
    # the 68-point (300-W) layout: jaw, brows, nose bridge and base, eyes and lips closed
    spans = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
             (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]
    return [(o + a, o + b) for s, e, closed in spans for a, b in _chain(s, e, closed)]


def _hand_links(o: int) -> list[tuple[int, int]]:
    links = []
    for finger in range(5):
        first = 1 + 4 * finger
        links += [(o, o + first)] + [(o + a, o + b) for a, b in _chain(first, first + 4)]
    return links


def _skeleton() -> dict[str, list[tuple[int, int]]]:
    foot = [(15, 17), (15, 18), (15, 19), (17, 18), (16, 20), (16, 21), (16, 22), (20, 21)]
    return {
        "body": [(a - 1, b - 1) for a, b in COCO_SKELETON],
        "foot": foot,
        "face": _face_links(PART_SLICES["face"].start),
        "lefthand": _hand_links(PART_SLICES["lefthand"].start),
        "righthand": _hand_links(PART_SLICES["righthand"].start),
    }


SKELETON: dict[str, list[tuple[int, int]]] = _skeleton()  # part -> links (0-based, 133-point order)


def _point(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def draw_wholebody(image: np.ndarray, keypoints: np.ndarray, *, threshold: float = 0.3,
                   faint_alpha: float = 0.35) -> np.ndarray:
    """A copy of `image` ([H, W, 3] BGR uint8) with the skeletons of `keypoints` ([P, 133, 3]:
    x, y image pixels, score) drawn; points and links below `threshold` at `faint_alpha`."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    h, w = image.shape[:2]
    thick = max(1, round(min(h, w) / 250))
    radius = max(1, thick + 1)
    small = max(1, thick)  # face and hand points are dense: smaller dots
    faint: list[tuple[str, tuple[int, int], tuple[int, int] | None, tuple[int, int, int], int]] = []
    strong: list[tuple[str, tuple[int, int], tuple[int, int] | None, tuple[int, int, int], int]] = []
    for person in kp:
        if not np.all(np.isfinite(person)):
            continue
        ok = person[:, 2] >= threshold
        pts = [_point(p) for p in person]
        for part, links in SKELETON.items():
            colour = PART_COLOURS[part]
            for a, b in links:
                (strong if ok[a] and ok[b] else faint).append(("line", pts[a], pts[b], colour, thick))
        for part, sl in PART_SLICES.items():
            r = radius if part in ("body", "foot") else small
            for k in range(sl.start, sl.stop):
                (strong if ok[k] else faint).append(("dot", pts[k], None, PART_COLOURS[part], r))
    out = image.copy()
    if faint:
        # faint strokes first (a tint of the image beneath), blended in the region they touch only:
        # elsewhere the blend of the image with itself is the image
        xy = np.array([p for _, p, q, _, _ in faint for p in ((p,) if q is None else (p, q))])  # [N, 2]
        pad = radius + thick + 2  # dot radius, line width and antialiasing
        x0, y0 = np.clip(xy.min(axis=0) - pad, 0, (w, h))
        x1, y1 = np.clip(xy.max(axis=0) + pad + 1, 0, (w, h))
        if x1 > x0 and y1 > y0:
            layer = image[y0:y1, x0:x1].copy()
            for kind, p, q, colour, size in faint:
                _stroke(layer, kind, (p[0] - x0, p[1] - y0), None if q is None else (q[0] - x0, q[1] - y0),
                        colour, size)
            out[y0:y1, x0:x1] = cv2.addWeighted(layer, faint_alpha, image[y0:y1, x0:x1], 1.0 - faint_alpha, 0.0)
    for kind, p, q, colour, size in strong:  # the confident ones over them
        _stroke(out, kind, p, q, colour, size)
    return out


def _stroke(canvas: np.ndarray, kind: str, p: tuple[int, int], q: tuple[int, int] | None,
            colour: tuple[int, int, int], size: int) -> None:
    if kind == "line":
        cv2.line(canvas, p, q, colour, size, cv2.LINE_AA)
    else:
        cv2.circle(canvas, p, size, colour, -1, cv2.LINE_AA)


def encode_png(picture: np.ndarray, params: list[int] | None = None) -> bytes:
    """`picture` ([H, W, 3] BGR uint8) as PNG bytes, with `PNG_PARAMS` unless `params` are given.
    Raises OSError when OpenCV cannot encode it."""
    ok, png = cv2.imencode(".png", picture, PNG_PARAMS if params is None else params)
    if not ok:
        raise OSError("PNG encoding failed")
    return png.tobytes()
