"""Whole-body skeletons drawn on an image (Pillow), for people to look at predictions.

Drawn as the pose tools people know draw them (mmpose's and rtmlib's visualisers): each person's
box in a colour of its own with a `#k score` label, then opaque limbs and points with a thin dark
outline, so that they read on any background and apart from whatever the photo shows. Limb width
and point radius follow the size of the person's box (between `MIN_*` and `MAX_*`). Colours say the
part and the side: warm for the person's right (orange body, yellow foot, pink hand), cool for the
left (green body, cyan foot, violet hand), blue for the middle of the body, white for the face.
A keypoint scored below `threshold` is not drawn, nor is any link touching it.

`encode_picture` writes a drawing as PNG (zlib level `PNG_COMPRESSION` by default; level 0 is a
stored PNG, the fastest) or JPEG. Every function here is pure: arrays in, arrays or bytes out.
"""

from __future__ import annotations

import colorsys
import io
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nasplat.data.keypoints import COCO_SKELETON, NAMES, NUM_KEYPOINTS, PART_SLICES

__all__ = [
    "FORMATS",
    "JPEG_QUALITY",
    "PART_COLOURS",
    "PNG_COMPRESSION",
    "PNG_PARAMS",
    "SKELETON",
    "draw_wholebody",
    "encode_picture",
    "encode_png",
    "keypoint_colour",
    "person_colour",
    "stroke_sizes",
]

FORMATS = ("png", "jpg")
PNG_COMPRESSION = 1  # on a 640x480 drawing: 39% of the stored size in 8 ms (zlib level 6: 35% in 110 ms)
JPEG_QUALITY = 90

# The stored PNG (`encode_png`, `--png-compression 0`): zlib level 0 without PNG row filters. On a
# 640x480 drawing that took 1.4 ms against 23-46 ms for level 1 and 0.75 s for level 9
# (benchmarks/bench_export.py prints the comparison).
PNG_PARAMS: list[int] = [cv2.IMWRITE_PNG_COMPRESSION, 0]
# Level 1, the default: Huffman coding only (no string matching) after the Up filter. On a 640x480
# drawing 8 ms and 349 KiB, against 23 ms and 367 KiB for zlib level 1 with libpng's own filters.
PNG_FAST_PARAMS: list[int] = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.10; before, libpng picks the filters
    PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    PNG_FAST_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]

RGB = tuple[int, int, int]

# RGB. Right warm, left cool, so a mirrored skeleton is seen at once; saturated and outlined in
# dark, unlike the muted colours of photos (and the synthetic people's flat limb colours).
PART_COLOURS: dict[str, RGB] = {
    "body-middle": (40, 150, 255),  # blue
    "body-left": (0, 230, 120),  # green
    "body-right": (255, 130, 0),  # orange
    "foot-left": (0, 220, 255),  # cyan
    "foot-right": (255, 225, 0),  # yellow
    "face": (255, 255, 255),  # white
    "lefthand": (170, 90, 255),  # violet
    "righthand": (255, 60, 150),  # pink
}
OUTLINE: RGB = (20, 20, 20)

# (limb width, point radius) of a body link or point, in pixels, for a person whose box's longer
# side is `size` pixels: size / WIDTH_DIVISOR and size / RADIUS_DIVISOR, clamped
WIDTH_DIVISOR, MIN_WIDTH, MAX_WIDTH = 80.0, 2, 12
RADIUS_DIVISOR, MIN_RADIUS, MAX_RADIUS = 60.0, 2, 14
# feet, faces and hands are smaller and denser than the body: their share of its limb width and
# point radius (a hand's points must leave its finger links visible, a face's its outline)
LINK_SCALE: dict[str, float] = {"body": 1.0, "foot": 0.75, "face": 0.35, "lefthand": 0.5, "righthand": 0.5}
POINT_SCALE: dict[str, float] = {"body": 1.0, "foot": 0.75, "face": 0.2, "lefthand": 0.35, "righthand": 0.35}


def _part(k: int) -> str:
    return next(part for part, sl in PART_SLICES.items() if sl.start <= k < sl.stop)


def _side(k: int) -> str:
    name = NAMES[k]
    return "left" if name.startswith("left_") else "right" if name.startswith("right_") else "middle"


def keypoint_colour(k: int) -> RGB:
    """The colour of keypoint `k` (0-based, 133-point order) and of its links."""
    part = _part(k)
    return PART_COLOURS[f"{part}-{_side(k)}"] if part in ("body", "foot") else PART_COLOURS[part]


def _link_colour(a: int, b: int) -> RGB:
    sides = {_side(a), _side(b)} - {"middle"}
    if _part(a) == "body" and len(sides) != 1:  # across the body (shoulders, hips, eyes): the middle
        return PART_COLOURS["body-middle"]
    return keypoint_colour(a if _side(a) != "middle" else b)


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
_LINK_COLOURS: dict[tuple[int, int], RGB] = {link: _link_colour(*link) for links in SKELETON.values() for link in links}
_POINT_COLOURS: tuple[RGB, ...] = tuple(keypoint_colour(k) for k in range(NUM_KEYPOINTS))
_POINT_PARTS: tuple[str, ...] = tuple(_part(k) for k in range(NUM_KEYPOINTS))


def person_colour(index: int) -> RGB:
    """The box colour of the `index`-th person of an image: hues a golden-ratio turn apart, so any
    two persons drawn together get clearly different colours."""
    r, g, b = colorsys.hsv_to_rgb((0.02 + index * 0.618034) % 1.0, 0.85, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def stroke_sizes(box_size: float) -> tuple[int, int]:
    """(limb width, point radius) in pixels of the body of a person whose box's longer side is
    `box_size` pixels (feet, face and hands take `LINK_SCALE` and `POINT_SCALE` of them)."""
    width = int(np.clip(round(box_size / WIDTH_DIVISOR), MIN_WIDTH, MAX_WIDTH))
    radius = int(np.clip(round(box_size / RADIUS_DIVISOR), MIN_RADIUS, MAX_RADIUS))
    return width, radius


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled font (needs FreeType)
    except (AttributeError, ImportError, OSError, TypeError):
        return ImageFont.load_default()


def _person_box(person: np.ndarray, shown: np.ndarray) -> tuple[float, float, float, float] | None:
    """xywh around the shown keypoints (5% margin), None when fewer than two are shown."""
    if shown.sum() < 2:
        return None
    xy = person[shown, :2]
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    pad = 0.05 * max(x1 - x0, y1 - y0)
    return x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad


def draw_wholebody(image: np.ndarray, keypoints: np.ndarray, *, scores: np.ndarray | None = None,
                   boxes: np.ndarray | None = None, threshold: float = 0.3) -> np.ndarray:
    """A copy of `image` ([H, W, 3] BGR uint8, as OpenCV reads it) with the people of `keypoints`
    ([P, 133, 3]: x, y image pixels, score) drawn: person p's box (`boxes` [P, 4] xywh pixels;
    without it, the box around its drawn keypoints) labelled `#p+1` and, with `scores` [P], its
    score (`#1: 0.87`), then its links and keypoints scored at least `threshold`. `image` is not
    changed."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    h, w = image.shape[:2]
    canvas = Image.fromarray(np.ascontiguousarray(image[..., ::-1]))  # RGB
    draw = ImageDraw.Draw(canvas)
    far = 4.0 * max(h, w)  # Pillow takes C ints: a wild prediction is drawn off the image instead
    labels = []
    for p, person in enumerate(kp):
        shown = np.isfinite(person).all(axis=1) & (person[:, 2] >= threshold)
        person = np.where(np.isfinite(person), np.clip(person, -far, far), 0.0)
        box = tuple(float(v) for v in boxes[p]) if boxes is not None else _person_box(person, shown)
        if box is None or not all(np.isfinite(box)):
            continue
        x, y, bw, bh = box
        width, radius = stroke_sizes(max(bw, bh))
        colour = person_colour(p)
        draw.rectangle([x, y, x + bw, y + bh], outline=colour, width=max(1, round(0.6 * width)))
        score = "" if scores is None else f": {float(scores[p]):.2f}"
        labels.append(((x, y), f"#{p + 1}{score}", colour, max(bw, bh)))
        _draw_person(draw, person, shown, width, radius)
    for corner, text, colour, size in labels:  # last: no skeleton hides a label
        _draw_label(draw, corner, text, colour, size, (w, h))
    return np.asarray(canvas)[..., ::-1].copy()


def _draw_person(draw: ImageDraw.ImageDraw, person: np.ndarray, shown: np.ndarray, width: int, radius: int) -> None:
    """Links, then points, part by part (body first: the small face and hand strokes on top), each
    stroke over a dark copy one outline wider."""
    for part, links in SKELETON.items():
        lw = max(1, round(width * LINK_SCALE[part]))
        edge = max(1, round(lw / 3))
        for a, b in links:
            if shown[a] and shown[b]:
                ends = [(float(person[a, 0]), float(person[a, 1])), (float(person[b, 0]), float(person[b, 1]))]
                draw.line(ends, fill=OUTLINE, width=lw + 2 * edge)
                draw.line(ends, fill=_LINK_COLOURS[(a, b)], width=lw)
    for part, sl in PART_SLICES.items():
        r = max(1, int(radius * POINT_SCALE[part]))
        edge = max(1, round(r / 3))
        for k in range(sl.start, sl.stop):
            if shown[k]:
                px, py = float(person[k, 0]), float(person[k, 1])
                # a dark disc under the coloured one (Pillow's own outline fills a 1-pixel dot); a
                # 3-pixel "disc" is a plus sign: squares read better at that size
                shape = draw.ellipse if r > 1 else draw.rectangle
                shape([px - r - edge, py - r - edge, px + r + edge, py + r + edge], fill=OUTLINE)
                shape([px - r, py - r, px + r, py + r], fill=_POINT_COLOURS[k])


def _draw_label(draw: ImageDraw.ImageDraw, corner: tuple[float, float], text: str, colour: RGB, box_size: float,
                image_size: tuple[int, int]) -> None:
    """`text` on a tab of `colour` above the box's top-left corner (inside the box when there is no
    room above), kept inside the image."""
    font = _font(int(np.clip(round(box_size / 18), 11, 36)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 5)
    tw, th = right - left + 2 * pad, bottom - top + 2 * pad
    x = float(np.clip(corner[0], 0, max(0, image_size[0] - tw)))
    y = corner[1] - th if corner[1] - th >= 0 else max(0.0, corner[1])
    y = float(min(y, max(0, image_size[1] - th)))
    draw.rectangle([x, y, x + tw, y + th], fill=colour)
    ink = (0, 0, 0) if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140 else (255, 255, 255)
    draw.text((x + pad - left, y + pad - top), text, fill=ink, font=font)


def encode_png(picture: np.ndarray, params: list[int] | None = None) -> bytes:
    """`picture` ([H, W, 3] BGR uint8) as PNG bytes written by OpenCV, with `PNG_PARAMS` (stored:
    the fastest) unless `params` are given. Raises OSError when OpenCV cannot encode it."""
    ok, png = cv2.imencode(".png", picture, PNG_PARAMS if params is None else params)
    if not ok:
        raise OSError("PNG encoding failed")
    return png.tobytes()


def encode_picture(picture: np.ndarray, fmt: str = "png", *, png_compression: int = PNG_COMPRESSION,
                   jpeg_quality: int = JPEG_QUALITY) -> bytes:
    """`picture` ([H, W, 3] BGR uint8) as the bytes of a `fmt` file: `png` (lossless, by OpenCV;
    `png_compression` 0: stored, the fastest and 2.4 times larger; 1: Huffman coding after the Up
    filter, `PNG_FAST_PARAMS`; 2-9: those zlib levels, smaller and 2 to 70 times slower) or
    `jpg` (quality `jpeg_quality`, no chroma subsampling: thin coloured lines stay sharp).
    Raises ValueError for another format or level."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if fmt == "png":
        if not 0 <= png_compression <= 9 or isinstance(png_compression, bool):
            raise ValueError(f"PNG compression {png_compression!r}; allowed: 0-9")
        return encode_png(picture, PNG_FAST_PARAMS if png_compression == 1 else
                          PNG_PARAMS if png_compression == 0 else [cv2.IMWRITE_PNG_COMPRESSION, png_compression])
    rgb = Image.fromarray(np.ascontiguousarray(picture[..., ::-1]))
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
    return buffer.getvalue()
