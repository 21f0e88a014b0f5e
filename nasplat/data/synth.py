"""A synthetic COCO-WholeBody: the release's layout and fields, drawn people, learnable labels.

Every image shows one to three people facing the camera, drawn as articulated figures:
- limbs are thick lines in a colour per limb type with a thin stripe along one side (the limb's
  own left for left limbs, its right for right limbs), so a horizontal flip turns a left limb
  into something that looks exactly like a right limb and the flip pairs stay learnable;
- body joints are filled blobs in a colour per joint type;
- the face is a skin-coloured ellipse whose 68 landmarks follow a fixed, mirror-symmetric
  iBUG-style template (jaw, brows, nose, eyes, mouth are drawn), moved by a similarity
  transform (scale, small roll);
- hands are a palm and five fingers following a 21-point template with small random finger
  angles; the thumb side tells left from right (palms face the camera).

Labels follow the release: body v in {0, 1, 2} (1 = hidden by a later person or an occluder,
0 = outside the image or dropped), foot v 2/1/0, face v = 1.0, hand v = float confidences in
(0.1, 1]; invalid faces/hands (drawn without detail, or cut by the image border, or occluded)
have `*_valid` false and all-zero keypoints and box; `area` is the visible mask's pixel count and
`segmentation` its polygons; some images carry a crowd annotation over a group of small figures.

Generation is a pure function of (seed, split, image index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nasplat.data.coco import annotation_path, image_dir
from nasplat.data.keypoints import BODY_NAMES, COCO_SKELETON, PART_SLICES
from nasplat.errors import DataError
from nasplat.files import atomic_write_bytes, atomic_write_json

_SPLIT_CODES = {"train": 0, "val": 1}
_VAL_ID_OFFSET = 1_000_000


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator (the defaults are the tested, learnable setting)."""

    width: int = 640
    height: int = 480
    person_counts: tuple[int, ...] = (1, 2, 3)
    person_count_probs: tuple[float, ...] = (0.3, 0.45, 0.25)
    min_height: float = 180.0  # person height in pixels
    max_height: float = 440.0
    face_width: float = 0.13  # of the person height
    hand_length: float = 0.12  # wrist to middle fingertip, of the person height
    crowd_prob: float = 0.1  # images with a crowd annotation
    invalid_face_prob: float = 0.08
    invalid_hand_prob: float = 0.12
    drop_prob: float = 0.03  # body/foot points left unlabeled
    occluder_prob: float = 0.12  # people with an occluder in front of a leg
    jpeg_quality: int = 95
    noise: int = 6  # background noise amplitude (grey levels)


# --------------------------------------------------------------------------------------------
# Templates


def _face_template() -> np.ndarray:
    """68 (x, y) points in face units (jaw width 1, x right, y down), mirror-symmetric under the
    face flip pairs."""
    pts = np.zeros((68, 2))
    for i in range(17):  # jaw, image-left ear level -> chin -> image-right ear level
        a = math.pi * (1.0 - i / 16.0)
        pts[i] = (0.5 * math.cos(a), -0.15 + 0.70 * math.sin(a))
    brow = [(-0.40, -0.27), (-0.33, -0.33), (-0.25, -0.35), (-0.17, -0.34), (-0.09, -0.31)]
    for j, (x, y) in enumerate(brow):  # 17-21 image-left brow, outer -> inner
        pts[17 + j] = (x, y)
        pts[26 - j] = (-x, y)  # 22-26 mirrored: 22 inner ... 26 outer
    for j in range(4):  # 27-30 nose bridge
        pts[27 + j] = (0.0, -0.20 + 0.10 * j)
    for j, (x, y) in enumerate([(-0.10, 0.13), (-0.05, 0.15), (0.0, 0.16), (0.05, 0.15), (0.10, 0.13)]):
        pts[31 + j] = (x, y)
    # image-left eye 36-41: outer corner, two upper lid, inner corner, two lower lid
    cx, cy, rx, ry = -0.21, -0.14, 0.10, 0.045
    eye = [(cx - rx, cy), (cx - 0.35 * rx, cy - ry), (cx + 0.35 * rx, cy - ry), (cx + rx, cy),
           (cx + 0.35 * rx, cy + ry), (cx - 0.35 * rx, cy + ry)]
    for j, p in enumerate(eye):
        pts[36 + j] = p
    mirror_eye = {45: 36, 44: 37, 43: 38, 42: 39, 47: 40, 46: 41}
    for k, src in mirror_eye.items():
        pts[k] = (-pts[src, 0], pts[src, 1])
    mx, my = 0.0, 0.32
    for j, deg in enumerate([180, 150, 120, 90, 60, 30, 0, -30, -60, -90, -120, -150]):  # 48-59
        a = math.radians(deg)
        pts[48 + j] = (mx + 0.18 * math.cos(a), my - 0.07 * math.sin(a))
    for j, deg in enumerate([180, 135, 90, 45, 0, -45, -90, -135]):  # 60-67
        a = math.radians(deg)
        pts[60 + j] = (mx + 0.12 * math.cos(a), my - 0.025 * math.sin(a))
    return pts


FACE_TEMPLATE = _face_template()
FACE_TEMPLATE.setflags(write=False)

# Left hand, (lateral, forward) in hand lengths; lateral points to the thumb side.
_HAND_TEMPLATE = np.array([
    (0.00, 0.00),
    (0.16, 0.12), (0.30, 0.28), (0.40, 0.43), (0.48, 0.56),  # thumb
    (0.14, 0.50), (0.16, 0.70), (0.17, 0.83), (0.18, 0.95),  # forefinger
    (0.03, 0.52), (0.03, 0.75), (0.03, 0.89), (0.03, 1.00),  # middle
    (-0.08, 0.50), (-0.10, 0.70), (-0.11, 0.83), (-0.12, 0.94),  # ring
    (-0.18, 0.45), (-0.22, 0.60), (-0.24, 0.70), (-0.26, 0.79),  # pinky
])

# BGR colours. Joint types share a colour on both sides; the limb stripes carry the side.
_JOINT_COLOURS = {
    5: (40, 40, 230), 6: (40, 40, 230),  # shoulders
    7: (0, 150, 255), 8: (0, 150, 255),  # elbows
    9: (0, 235, 255), 10: (0, 235, 255),  # wrists
    11: (230, 60, 30), 12: (230, 60, 30),  # hips
    13: (240, 230, 40), 14: (240, 230, 40),  # knees
    15: (40, 210, 40), 16: (40, 210, 40),  # ankles
    17: (220, 40, 220), 20: (220, 40, 220),  # big toes
    18: (150, 40, 120), 21: (150, 40, 120),  # small toes
    19: (120, 220, 160), 22: (120, 220, 160),  # heels
}
_LIMB_COLOURS = {"upper_arm": (60, 110, 190), "forearm": (90, 170, 120), "thigh": (150, 90, 60),
                 "shin": (110, 70, 150), "neck": (120, 150, 190)}
_FINGER_COLOURS = [(30, 80, 220), (30, 200, 230), (60, 200, 60), (220, 160, 40), (200, 60, 200)]
_SKIN = [(150, 180, 225), (120, 160, 210), (90, 130, 180), (70, 100, 150), (170, 200, 235)]
_HAIR = [(20, 20, 30), (30, 60, 100), (40, 40, 60), (90, 140, 190)]
_SHIRT = [(80, 80, 80), (130, 100, 70), (70, 110, 90), (150, 150, 150), (60, 60, 120), (110, 80, 120)]


def _rot(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _dir(deg_from_down: float) -> np.ndarray:
    """Unit vector at `deg` from straight down, positive toward +x."""
    a = math.radians(deg_from_down)
    return np.array([math.sin(a), math.cos(a)])


# --------------------------------------------------------------------------------------------
# One person


@dataclass
class _Person:
    kpts: np.ndarray  # [133, 2] image coordinates
    height: float
    face_ok: bool
    hands_ok: list[bool]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    head_center: np.ndarray
    head_axes: tuple[float, float]
    head_angle: float
    face_scale: float


def _make_person(rng: np.random.Generator, cfg: SynthConfig, height: float, cx: float, foot_y: float) -> _Person:
    h = height
    k = np.zeros((133, 2))
    lean = float(np.clip(rng.normal(0, 6), -12, 12))
    up = _dir(lean + 180)  # unit vector pointing up the torso
    side = np.array([-up[1], up[0]])  # toward image right (the subject's left)
    pelvis = np.array([cx, foot_y - 0.46 * h])
    neck = pelvis + 0.33 * h * up
    k[5], k[6] = neck + 0.13 * h * side, neck - 0.13 * h * side
    k[11], k[12] = pelvis + 0.09 * h * side, pelvis - 0.09 * h * side
    # head and face
    tilt = lean + float(np.clip(rng.normal(0, 6), -12, 12))
    face_scale = cfg.face_width * h * float(rng.uniform(0.95, 1.05))
    head_center = neck + 0.11 * h * _dir(tilt + 180)
    r = _rot(tilt)
    face_origin = head_center + r @ np.array([0.0, 0.12]) * face_scale
    k[23:91] = face_origin + (FACE_TEMPLATE @ r.T) * face_scale
    k[0] = k[23 + 30]
    k[1] = k[23 + 42:23 + 48].mean(0)
    k[2] = k[23 + 36:23 + 42].mean(0)
    k[3] = face_origin + r @ np.array([0.60, -0.16]) * face_scale
    k[4] = face_origin + r @ np.array([-0.60, -0.16]) * face_scale
    # arms (s = +1 left, on image right)
    forearm_dirs = []
    for s, (sh, el, wr) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
        a1 = float(rng.uniform(-25, 150))
        a2 = a1 + float(rng.uniform(-110, 110))
        d1, d2 = _dir(s * a1), _dir(s * a2)
        k[el] = k[sh] + 0.17 * h * d1
        k[wr] = k[el] + 0.15 * h * d2
        forearm_dirs.append(d2)
    # legs and feet
    for s, (hip, kn, an, toes) in ((1, (11, 13, 15, 17)), (-1, (12, 14, 16, 20))):
        a1 = float(rng.uniform(-8, 30))
        a2 = a1 + float(rng.uniform(-25, 15))
        k[kn] = k[hip] + 0.22 * h * _dir(s * a1)
        k[an] = k[kn] + 0.21 * h * _dir(s * a2)
        fdir = _dir(s * float(rng.uniform(10, 35)))
        fside = np.array([fdir[1], -fdir[0]])  # toward the outside of the foot
        fside = fside if fside[0] * s > 0 else -fside
        k[toes] = k[an] + 0.065 * h * fdir - 0.015 * h * fside  # big toe, inner side
        k[toes + 1] = k[an] + 0.055 * h * fdir + 0.025 * h * fside  # small toe
        k[toes + 2] = k[an] + np.array([0.0, 0.03 * h])  # heel
    # hands
    length = cfg.hand_length * h * float(rng.uniform(0.92, 1.08))
    for hand, s, fwd in ((91, 1, forearm_dirs[0]), (112, -1, forearm_dirs[1])):
        fwd = _rot(float(rng.normal(0, 15))) @ fwd
        lat = np.array([fwd[1], -fwd[0]]) * s  # thumb side: left hand (fy, -fx), right mirrored
        pts = _HAND_TEMPLATE.copy()
        for f in range(5):
            base = 1 + 4 * f
            pivot = pts[base] if f > 0 else pts[0]
            chain = slice(base + 1, base + 4) if f > 0 else slice(1, 5)
            spread = float(rng.uniform(-20, 15)) if f == 0 else float(rng.uniform(-12, 12))
            curl = float(rng.uniform(0.65, 1.0))
            rel = (pts[chain] - pivot) @ _rot(spread).T * curl
            pts[chain] = pivot + rel
        wrist = k[9] if s == 1 else k[10]
        k[hand:hand + 21] = wrist + length * (pts[:, 0:1] * lat + pts[:, 1:2] * fwd)
    return _Person(
        kpts=k,
        height=h,
        face_ok=bool(rng.random() >= cfg.invalid_face_prob),
        hands_ok=[bool(rng.random() >= cfg.invalid_hand_prob) for _ in range(2)],
        skin=_SKIN[int(rng.integers(len(_SKIN)))],
        hair=_HAIR[int(rng.integers(len(_HAIR)))],
        shirt=_SHIRT[int(rng.integers(len(_SHIRT)))],
        head_center=head_center,
        head_axes=(0.62 * face_scale, 0.86 * face_scale),
        head_angle=tilt,
        face_scale=face_scale,
    )


def _ip(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]) * 16)), int(round(float(p[1]) * 16))


_SHIFT = 4  # cv2 sub-pixel drawing: coordinates carry 4 fractional bits


def _line(img: np.ndarray, a: np.ndarray, b: np.ndarray, colour: Any, thick: float) -> None:
    cv2.line(img, _ip(a), _ip(b), colour, max(1, int(round(thick))), cv2.LINE_AA, _SHIFT)


def _blob(img: np.ndarray, p: np.ndarray, radius: float, colour: Any) -> None:
    cv2.circle(img, _ip(p), max(16, int(round(radius * 16))), colour, -1, cv2.LINE_AA, _SHIFT)


def _poly(img: np.ndarray, pts: np.ndarray, colour: Any) -> None:
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], colour, cv2.LINE_AA, _SHIFT)


def _limb(img: np.ndarray, mask: np.ndarray, a: np.ndarray, b: np.ndarray, colour: Any, thick: float, side: int) -> None:
    """A thick limb with a thin stripe offset to one side of the a->b direction (chirality)."""
    _line(img, a, b, colour, thick)
    _line(mask, a, b, 255, thick)
    d = b - a
    n = np.array([d[1], -d[0]]) / (np.linalg.norm(d) + 1e-6)  # limb's own left (y down)
    off = n * side * thick * 0.3
    _line(img, a + off + d * 0.15, b + off - d * 0.15, (245, 245, 245), max(1.0, thick * 0.2))


def _draw_person(img: np.ndarray, mask: np.ndarray, p: _Person) -> None:
    k, h = p.kpts, p.height
    limb_t = 0.075 * h  # bulky enough that the mask area is a person-like share of the box
    # torso
    torso = np.array([k[5], k[6], k[12], k[11]])
    _poly(img, torso, p.shirt)
    _poly(mask, torso, 255)
    _line(img, (k[5] + k[6]) / 2, p.head_center, _LIMB_COLOURS["neck"], 0.06 * h)
    _line(mask, (k[5] + k[6]) / 2, p.head_center, 255, 0.06 * h)
    # legs, feet
    for s, (hip, kn, an, toe) in ((1, (11, 13, 15, 17)), (-1, (12, 14, 16, 20))):
        _limb(img, mask, k[hip], k[kn], _LIMB_COLOURS["thigh"], limb_t * 1.2, s)
        _limb(img, mask, k[kn], k[an], _LIMB_COLOURS["shin"], limb_t, s)
        foot = np.array([k[toe + 2], k[toe], k[toe + 1]])
        _poly(img, foot, (60, 60, 60))
        _poly(mask, foot, 255)
    # arms
    for s, (sh, el, wr) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
        _limb(img, mask, k[sh], k[el], _LIMB_COLOURS["upper_arm"], limb_t, s)
        _limb(img, mask, k[el], k[wr], _LIMB_COLOURS["forearm"], limb_t * 0.85, s)
    for j, colour in _JOINT_COLOURS.items():
        _blob(img, k[j], 0.028 * h if j < 17 else 0.014 * h, colour)
    # hands
    for hand_i, base in enumerate((91, 112)):
        _draw_hand(img, mask, k[base:base + 21], p, detailed=p.hands_ok[hand_i])
    # head
    _draw_head(img, mask, p)


def _draw_hand(img: np.ndarray, mask: np.ndarray, pts: np.ndarray, p: _Person, detailed: bool) -> None:
    size = np.linalg.norm(pts[12] - pts[0]) + 1e-6
    if not detailed:  # a fist-like blob: a hand too unclear to label
        c = pts[[0, 5, 9, 13, 17]].mean(0)
        _blob(img, c, 0.35 * size, tuple(int(v * 0.8) for v in p.skin))
        _blob(mask, c, 0.35 * size, 255)
        return
    palm = pts[[0, 1, 5, 9, 13, 17]]
    hull = cv2.convexHull(palm.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    _poly(img, hull, p.skin)
    _poly(mask, hull, 255)
    ft = max(1.0, 0.07 * size)
    for f in range(5):
        chain = [1 + 4 * f + j for j in range(4)]  # MCP (thumb: CMC) -> tip
        for a, b in zip(chain[:-1], chain[1:]):
            _line(img, pts[a], pts[b], _FINGER_COLOURS[f], ft)
            _line(mask, pts[a], pts[b], 255, ft)
        for level, j in enumerate(chain):
            shade = 1.0 - 0.22 * level
            _blob(img, pts[j], max(0.8, 0.04 * size), tuple(int(c * shade) for c in _FINGER_COLOURS[f]))
    _blob(img, pts[0], max(0.8, 0.05 * size), (255, 255, 255))


def _draw_head(img: np.ndarray, mask: np.ndarray, p: _Person) -> None:
    ax = p.head_axes
    centre = p.head_center
    hair_c = centre + _rot(p.head_angle) @ np.array([0.0, -0.18]) * p.face_scale
    axes16 = (int(ax[0] * 16 * 1.04), int(ax[1] * 16 * 0.9))
    cv2.ellipse(img, _ip(hair_c), axes16, p.head_angle, 0, 360, p.hair, -1, cv2.LINE_AA, _SHIFT)
    cv2.ellipse(mask, _ip(hair_c), axes16, p.head_angle, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
    face_c = centre + _rot(p.head_angle) @ np.array([0.0, 0.08]) * p.face_scale
    axes16 = (int(ax[0] * 16), int(ax[1] * 16 * 0.82))
    cv2.ellipse(img, _ip(face_c), axes16, p.head_angle, 0, 360, p.skin, -1, cv2.LINE_AA, _SHIFT)
    cv2.ellipse(mask, _ip(face_c), axes16, p.head_angle, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
    k = p.kpts
    for ear in (3, 4):
        _blob(img, k[ear], 0.07 * p.face_scale, tuple(int(c * 0.7) for c in p.skin))
    if not p.face_ok:  # a face too unclear to label (e.g. covered): no features drawn
        _blob(img, k[23 + 30], 0.35 * p.face_scale, (90, 90, 90))
        return
    f = k[23:91]
    t = max(1.0, 0.035 * p.face_scale)
    dark = (30, 40, 60)
    cv2.polylines(img, [np.round(f[0:17] * 16).astype(np.int32)], False, dark, int(round(t)), cv2.LINE_AA, _SHIFT)
    for a, b in ((17, 22), (22, 27)):
        cv2.polylines(img, [np.round(f[a:b] * 16).astype(np.int32)], False, (20, 30, 40), int(round(t * 1.6)), cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, [np.round(f[27:31] * 16).astype(np.int32)], False, dark, int(round(t)), cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, [np.round(f[31:36] * 16).astype(np.int32)], False, dark, int(round(t)), cv2.LINE_AA, _SHIFT)
    for a in (36, 42):
        _poly(img, f[a:a + 6], (250, 250, 250))
        _blob(img, f[a:a + 6].mean(0), 0.035 * p.face_scale, (40, 20, 10))
    _poly(img, f[48:60], (60, 50, 200))
    _poly(img, f[60:68], (40, 20, 90))


# --------------------------------------------------------------------------------------------
# Images


def _background(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    h, w = cfg.height, cfg.width
    top = rng.uniform(90, 210, size=3)
    bottom = rng.uniform(70, 200, size=3)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = (top * (1 - t) + bottom * t).astype(np.float32) * np.ones((1, w, 1), np.float32)
    small = rng.integers(-cfg.noise, cfg.noise + 1, size=(h // 4, w // 4, 3)).astype(np.float32)
    img += cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):  # muted clutter
        c = tuple(int(v) for v in rng.uniform(60, 190, size=3))
        g = float(np.mean(c))
        c = tuple(int(0.5 * v + 0.5 * g) for v in c)
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        kind = int(rng.integers(3))
        if kind == 0:
            sx, sy = rng.uniform(20, 120, size=2)
            cv2.rectangle(img, (int(x), int(y)), (int(x + sx), int(y + sy)), c, -1)
        elif kind == 1:
            cv2.circle(img, (int(x), int(y)), int(rng.uniform(10, 60)), c, -1, cv2.LINE_AA)
        else:
            x2, y2 = rng.uniform(0, w), rng.uniform(0, h)
            cv2.line(img, (int(x), int(y)), (int(x2), int(y2)), c, int(rng.integers(2, 8)), cv2.LINE_AA)
    return img


def _stick_figure(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, x: float, y: float, h: float) -> None:
    c = tuple(int(v) for v in rng.uniform(40, 160, size=3))
    head = np.array([x, y - 0.9 * h])
    hip = np.array([x, y - 0.45 * h])
    for a, b in ((head, hip), (hip, hip + h * np.array([-0.15, 0.45])), (hip, hip + h * np.array([0.15, 0.45])),
                 (head + [0, 0.2 * h], head + h * np.array([-0.25, 0.45])),
                 (head + [0, 0.2 * h], head + h * np.array([0.25, 0.45]))):
        _line(img, a, b, c, 0.06 * h)
        _line(mask, a, b, 255, 0.06 * h)
    _blob(img, head, 0.1 * h, c)
    _blob(mask, head, 0.1 * h, 255)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE (column-major runs starting with zeros), as crowd annotations use."""
    flat = (mask.T.reshape(-1) > 0).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2)
        if len(c) >= 3:
            polys.append([float(v) for v in c.reshape(-1)])
    return polys


def _xywh(points: np.ndarray) -> list[float]:
    x1, y1 = points.min(0)
    x2, y2 = points.max(0)
    return [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)]


def _kp_list(points: np.ndarray, vis: np.ndarray) -> list[float]:
    out: list[float] = []
    for (x, y), v in zip(points, vis):
        if v > 0:
            out += [round(float(x), 2), round(float(y), 2), float(v)]
        else:
            out += [0.0, 0.0, 0.0]
    return out


def render_image(
    rng: np.random.Generator, cfg: SynthConfig, image_id: int, first_ann_id: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image and its annotations (ids from `first_ann_id`). Returns (BGR image, anns)."""
    img = _background(rng, cfg)
    h, w = cfg.height, cfg.width
    anns: list[dict[str, Any]] = []
    ann_id = first_ann_id
    if rng.random() < cfg.crowd_prob:
        cmask = np.zeros((h, w), np.uint8)
        gx, gy = float(rng.uniform(40, w - 200)), float(rng.uniform(60, h * 0.45))
        for _ in range(int(rng.integers(6, 11))):
            _stick_figure(img, cmask, rng, gx + float(rng.uniform(0, 160)), gy + float(rng.uniform(0, 30)),
                          float(rng.uniform(35, 60)))
        ys, xs = np.nonzero(cmask)
        box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        anns.append(_empty_annotation(ann_id, image_id, box, float((cmask > 0).sum()), _rle(cmask), crowd=True))
        ann_id += 1
    n = int(rng.choice(cfg.person_counts, p=cfg.person_count_probs))
    slot = w / n
    max_h = min(cfg.max_height, slot / 0.62, h * 0.95)
    people = []
    for i in range(n):
        ph = float(rng.uniform(min(cfg.min_height, max_h * 0.8), max_h))
        cx = slot * (i + 0.5) + float(rng.uniform(-0.12, 0.12)) * slot
        foot_y = float(rng.uniform(ph * 0.97, h + 0.04 * ph))
        people.append(_make_person(rng, cfg, ph, cx, foot_y))
    order = rng.permutation(n)  # drawing order = depth order, back to front
    masks = []
    for i in order:
        m = np.zeros((h, w), np.uint8)
        _draw_person(img, m, people[i])
        masks.append(m)
    occluders = np.zeros((h, w), np.uint8)
    for i in order:
        if rng.random() < cfg.occluder_prob:
            p = people[i]
            j = int(rng.choice([13, 14, 15, 16]))
            size = p.height * float(rng.uniform(0.06, 0.12))
            c = p.kpts[j] + rng.uniform(-0.5, 0.5, size=2) * size
            x1, y1 = int(c[0] - size), int(c[1] - size * 0.7)
            colour = tuple(int(v) for v in rng.uniform(70, 170, size=3))
            cv2.rectangle(img, (x1, y1), (int(x1 + 2 * size), int(y1 + 1.4 * size)), colour, -1)
            cv2.rectangle(occluders, (x1, y1), (int(x1 + 2 * size), int(y1 + 1.4 * size)), 255, -1)
    for depth, i in enumerate(order):
        covered = occluders.copy()
        for m in masks[depth + 1:]:
            covered |= m
        anns.append(_person_annotation(rng, cfg, people[i], masks[depth], covered, ann_id, image_id))
        ann_id += 1
    return img, anns


def _empty_annotation(ann_id: int, image_id: int, bbox: list[float], area: float, seg: Any, crowd: bool) -> dict[str, Any]:
    return {
        "segmentation": seg, "num_keypoints": 0, "area": area, "iscrowd": int(crowd),
        "keypoints": [0.0] * 51, "image_id": image_id, "bbox": bbox, "category_id": 1, "id": ann_id,
        "face_box": [0.0] * 4, "lefthand_box": [0.0] * 4, "righthand_box": [0.0] * 4,
        "lefthand_kpts": [0.0] * 63, "righthand_kpts": [0.0] * 63, "face_kpts": [0.0] * 204,
        "face_valid": False, "lefthand_valid": False, "righthand_valid": False, "foot_valid": False,
        "foot_kpts": [0.0] * 18,
    }


def _person_annotation(
    rng: np.random.Generator, cfg: SynthConfig, p: _Person, mask: np.ndarray, covered: np.ndarray,
    ann_id: int, image_id: int,
) -> dict[str, Any]:
    h, w = mask.shape
    k = p.kpts
    inside = (k[:, 0] >= 0) & (k[:, 0] <= w - 1) & (k[:, 1] >= 0) & (k[:, 1] <= h - 1)
    xi = np.clip(np.round(k[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(k[:, 1]).astype(int), 0, h - 1)
    hidden = covered[yi, xi] > 0
    visible_mask = np.where(covered > 0, 0, mask)
    # body + foot
    vis = np.where(inside[:23], np.where(hidden[:23], 1.0, 2.0), 0.0)
    vis[rng.random(23) < cfg.drop_prob] = 0.0
    ann = _empty_annotation(ann_id, image_id, [0.0] * 4, 0.0, [], crowd=False)
    ann["keypoints"] = _kp_list(k[:17], vis[:17])
    ann["num_keypoints"] = int(np.count_nonzero(vis[:17]))
    ann["foot_kpts"] = _kp_list(k[17:23], vis[17:23])
    ann["foot_valid"] = bool(np.any(vis[17:23] > 0))
    # face: valid when drawn with detail, fully inside and not mostly hidden
    face = PART_SLICES["face"]
    if p.face_ok and inside[face].all() and hidden[face].mean() < 0.3:
        ann["face_kpts"] = _kp_list(k[face], np.ones(68))
        ann["face_box"] = _xywh(k[face])
        ann["face_valid"] = True
    for side in ("lefthand", "righthand"):
        sl = PART_SLICES[side]
        ok = p.hands_ok[0 if side == "lefthand" else 1]
        if ok and inside[sl].all() and hidden[sl].mean() < 0.3:
            conf = np.round(rng.uniform(0.1, 1.0, size=21), 4)
            ann[f"{side}_kpts"] = _kp_list(k[sl], conf)
            ann[f"{side}_box"] = _xywh(k[sl])
            ann[f"{side}_valid"] = True
    ys, xs = np.nonzero(visible_mask)
    if len(xs):
        ann["bbox"] = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    ann["area"] = float(np.count_nonzero(visible_mask))
    ann["segmentation"] = _polygons(visible_mask)
    return ann


def generate_split(
    out: str | Path, split: str, count: int, seed: int = 0, config: SynthConfig | None = None
) -> Path:
    """Write `count` images of `split` under `out` in the release layout; returns the
    annotation file. Deterministic for (seed, split, config).

    Raises DataError: unknown split, negative count.
    """
    if split not in _SPLIT_CODES:
        raise DataError(f"unknown split {split!r}; allowed: train, val", key="split")
    if count < 0:
        raise DataError(f"image count {count} is negative", key=split)
    cfg = config or SynthConfig()
    out = Path(out)
    images_out = image_dir(out, split)
    images_out.mkdir(parents=True, exist_ok=True)
    offset = _VAL_ID_OFFSET if split == "val" else 0
    images, annotations = [], []
    next_ann = offset * 10 + 1
    for i in range(count):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
        image_id = offset + i + 1
        img, anns = render_image(rng, cfg, image_id, next_ann)
        next_ann += len(anns)
        name = f"{image_id:012d}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        if not ok:
            raise DataError(f"cannot encode image {name}", source=str(images_out))
        atomic_write_bytes(buf.tobytes(), images_out / name)
        images.append({"license": 1, "file_name": name, "height": cfg.height, "width": cfg.width, "id": image_id})
        annotations.extend(anns)
    data = {
        "info": {"description": "nasplat synthetic COCO-WholeBody", "version": "1.0", "seed": seed},
        "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [{
            "supercategory": "person", "id": 1, "name": "person",
            "keypoints": list(BODY_NAMES), "skeleton": [list(p) for p in COCO_SKELETON],
        }],
    }
    ann_file = annotation_path(out, split)
    atomic_write_json(data, ann_file, indent=None)
    return ann_file


def generate_dataset(
    out: str | Path, n_train: int, n_val: int, seed: int = 0, config: SynthConfig | None = None
) -> tuple[Path, Path]:
    """Write both splits under `out`; returns (train annotation file, val annotation file).

    Raises DataError, before writing anything, for a split of fewer than 1 image: a data set with
    no training or no validation image cannot be trained on or searched with."""
    for split, count in (("train", n_train), ("val", n_val)):
        if count < 1:
            raise DataError(f"{count} {split} images: a split needs at least 1 image", key=split)
    return (
        generate_split(out, "train", n_train, seed, config),
        generate_split(out, "val", n_val, seed, config),
    )
