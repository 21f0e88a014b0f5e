"""The whole-body skeleton drawn on an image (OpenCV), for people to look at predictions.

Body, feet, face, left hand and right hand each have their own colour; a point (and every link
touching it) whose score is below `threshold` is drawn faint, blended into the image.
"""

from __future__ import annotations

import cv2
import numpy as np

from nasplat.data.keypoints import COCO_SKELETON, NUM_KEYPOINTS, PART_SLICES

__all__ = ["PART_COLOURS", "SKELETON", "draw_wholebody"]

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
    layer = image.copy()  # the faint strokes; blended whole, untouched pixels stay as they are
    strong: list[tuple[str, tuple[int, int], tuple[int, int] | None, tuple[int, int, int], int]] = []
    for person in kp:
        if not np.all(np.isfinite(person)):
            continue
        ok = person[:, 2] >= threshold
        pts = [_point(p) for p in person]
        for part, links in SKELETON.items():
            colour = PART_COLOURS[part]
            for a, b in links:
                if ok[a] and ok[b]:
                    strong.append(("line", pts[a], pts[b], colour, thick))
                else:
                    cv2.line(layer, pts[a], pts[b], colour, thick, cv2.LINE_AA)
        for part, sl in PART_SLICES.items():
            r = radius if part in ("body", "foot") else small
            for k in range(sl.start, sl.stop):
                if ok[k]:
                    strong.append(("dot", pts[k], None, PART_COLOURS[part], r))
                else:
                    cv2.circle(layer, pts[k], r, PART_COLOURS[part], -1, cv2.LINE_AA)
    # faint strokes first (a tint of the image beneath), the confident ones drawn over them
    out = cv2.addWeighted(layer, faint_alpha, image, 1.0 - faint_alpha, 0.0)
    for kind, p, q, colour, size in strong:
        if kind == "line":
            cv2.line(out, p, q, colour, size, cv2.LINE_AA)
        else:
            cv2.circle(out, p, size, colour, -1, cv2.LINE_AA)
    return out
