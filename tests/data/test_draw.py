"""The drawn skeleton: each part in its own colour, low-score points faint, the image untouched."""

from __future__ import annotations

import numpy as np

from nasplat.data.draw import PART_COLOURS, SKELETON, draw_wholebody
from nasplat.data.keypoints import PART_SLICES


def _one_person(score: float) -> np.ndarray:
    kp = np.zeros((1, 133, 3))
    kp[0, :, 0] = 20 + (np.arange(133) % 19) * 30  # a grid of distinct points
    kp[0, :, 1] = 20 + (np.arange(133) // 19) * 40
    kp[0, :, 2] = score
    return kp


def test_confident_points_take_their_part_colour_and_faint_ones_are_blended():
    image = np.full((320, 600, 3), 40, dtype=np.uint8)
    before = image.copy()
    strong = draw_wholebody(image, _one_person(0.9))
    faint = draw_wholebody(image, _one_person(0.1))
    assert np.array_equal(image, before) and strong.shape == image.shape
    for part, sl in PART_SLICES.items():
        x, y = (int(v) for v in _one_person(0.9)[0, sl.start, :2])
        colour = np.array(PART_COLOURS[part])
        assert np.array_equal(strong[y, x], colour), part
        tint = faint[y, x].astype(float)
        assert np.all(np.abs(tint - (0.35 * colour + 0.65 * 40)) <= 2), part  # faint: a blend, not the colour


def test_parts_have_distinct_colours_and_links_stay_inside_the_133_points():
    assert len(set(PART_COLOURS.values())) == len(PART_COLOURS) == 5
    for part, links in SKELETON.items():
        assert links and all(0 <= a < 133 and 0 <= b < 133 for a, b in links), part


def test_drawings_are_stored_as_lossless_pngs_of_the_image_size():
    import cv2

    from nasplat.data.draw import encode_png

    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    picture = draw_wholebody(image, _one_person(0.9))
    back = cv2.imdecode(np.frombuffer(encode_png(picture), dtype=np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(back, picture)
