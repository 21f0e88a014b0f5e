"""The drawn people: each person's box in its own colour with a label, opaque outlined strokes sized
by the box, colours that tell parts and sides apart, low-score points left out, the image
untouched; drawings written as compressed PNG, stored PNG or JPEG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from nasplat.data.draw import (
    MAX_RADIUS,
    MAX_WIDTH,
    MIN_RADIUS,
    MIN_WIDTH,
    OUTLINE,
    PART_COLOURS,
    SKELETON,
    draw_wholebody,
    encode_picture,
    keypoint_colour,
    person_colour,
    stroke_sizes,
)
from nasplat.data.keypoints import FLIP_PAIRS, NAMES, PART_SLICES

GREY = 90


def _bgr(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.array(rgb[::-1])


def _one_person(score: float, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    kp = np.zeros((1, 133, 3))
    kp[0, :, 0] = 20 + (np.arange(133) % 19) * 30 + offset[0]  # a grid of distinct points
    kp[0, :, 1] = 20 + (np.arange(133) // 19) * 40 + offset[1]
    kp[0, :, 2] = score
    return kp


def _image(h: int = 320, w: int = 600) -> np.ndarray:
    return np.full((h, w, 3), GREY, dtype=np.uint8)


def test_confident_points_are_opaque_in_their_colour_and_the_image_is_not_changed():
    image = _image(400, 600)
    before = image.copy()
    kp = _one_person(0.9, offset=(0, 60))  # room above for the label
    drawn = draw_wholebody(image, kp)
    assert np.array_equal(image, before) and drawn.shape == image.shape and drawn.dtype == np.uint8
    for k in (0, 5, 6, 17, 20, 23, 91, 112):  # nose, shoulders, feet, face, hands
        x, y = (int(v) for v in kp[0, k, :2])
        assert np.array_equal(drawn[y, x], _bgr(keypoint_colour(k))), NAMES[k]


def test_a_keypoint_below_the_threshold_is_not_drawn_nor_its_links():
    kp = np.zeros((1, 133, 3))
    kp[0, [5, 7, 9], :2] = [(100, 100), (200, 100), (300, 100)]  # left shoulder, elbow, wrist in a row
    kp[0, [5, 7], 2] = 0.9
    kp[0, 9, 2] = 0.2  # the wrist: its point and the elbow-wrist link go
    drawn = draw_wholebody(_image(), kp, boxes=np.array([[80.0, 80.0, 240.0, 200.0]]), threshold=0.3)
    assert np.array_equal(drawn[100, 150], _bgr(keypoint_colour(7)))  # the shoulder-elbow link
    assert np.all(drawn[90:111, 230:311] == GREY)  # no elbow-wrist link, no wrist
    faint = draw_wholebody(_image(), _one_person(0.1), boxes=np.array([[0.0, 0.0, 1.0, 1.0]]))
    assert np.all(faint[40:] == GREY)  # below the box's label: nothing


def test_strokes_grow_with_the_person_box_between_bounds():
    sizes = [stroke_sizes(s) for s in (10, 100, 200, 400, 800, 5000)]
    assert sizes[0] == (MIN_WIDTH, MIN_RADIUS) and sizes[-1] == (MAX_WIDTH, MAX_RADIUS)
    widths, radii = zip(*sizes)
    assert list(widths) == sorted(widths) and list(radii) == sorted(radii) and widths[-2] > widths[1]

    def drawn_radius(box_side: float) -> int:
        kp = np.zeros((1, 133, 3))
        kp[0, 0] = (300, 300, 0.9)  # the nose alone
        drawn = draw_wholebody(_image(600, 600), kp, boxes=np.array([[300 - box_side / 2, 300 - box_side / 2,
                                                                       box_side, box_side]]))
        row = drawn[300, 300:]
        return int(np.argmax(np.all(row == _bgr(OUTLINE), axis=1)))  # pixels from the centre to the dark ring

    assert drawn_radius(500) > drawn_radius(150) > 0


def test_each_person_gets_its_own_box_colour_and_a_label():
    colours = [person_colour(i) for i in range(6)]
    assert len(set(colours)) == 6
    assert all(max(abs(a - b) for a, b in zip(colours[i], colours[i + 1])) > 80 for i in range(5))  # neighbours
    kp = np.concatenate([_one_person(0.1), _one_person(0.1)])  # no keypoint drawn: boxes and labels only
    boxes = np.array([[20.0, 60.0, 200.0, 200.0], [300.0, 60.0, 200.0, 200.0]])
    drawn = draw_wholebody(_image(), kp, scores=np.array([0.9, 0.5]), boxes=boxes)
    for (x, y, w, h), colour in zip(boxes, colours):
        assert np.array_equal(drawn[int(y + h / 2), int(x)], _bgr(colour))  # the left edge
        tab = drawn[int(y) - 12 : int(y), int(x) : int(x) + 30].reshape(-1, 3)  # the label above the corner
        text = [px for px in tab if not np.array_equal(px, _bgr(colour)) and not np.all(px == GREY)]
        assert any(np.array_equal(px, _bgr(colour)) for px in tab) and text


def test_without_boxes_the_box_encloses_the_drawn_keypoints():
    kp = np.zeros((1, 133, 3))
    kp[0, 5:13, :2] = [(200, 100), (260, 100), (190, 150), (270, 150), (185, 200), (275, 200), (210, 210), (250, 210)]
    kp[0, 5:13, 2] = 0.9
    drawn = draw_wholebody(_image(), kp)
    box = np.all(drawn == _bgr(person_colour(0)), axis=2)
    ys, xs = np.nonzero(box)
    assert xs.min() < 185 and xs.max() > 275 and ys.min() < 100 and ys.max() > 210
    assert xs.min() > 160 and xs.max() < 300  # a margin, not the whole image


def test_parts_and_sides_have_their_own_colours_and_links_stay_inside_the_133_points():
    assert len(set(PART_COLOURS.values())) == len(PART_COLOURS)
    for part, links in SKELETON.items():
        assert links and all(0 <= a < 133 and 0 <= b < 133 for a, b in links), part
    for left, right in FLIP_PAIRS:
        if left < PART_SLICES["face"].start or left >= PART_SLICES["lefthand"].start:  # body, feet, hands
            assert keypoint_colour(left) != keypoint_colour(right), (NAMES[left], NAMES[right])
    by_part = {part: {keypoint_colour(k) for k in range(sl.start, sl.stop)} for part, sl in PART_SLICES.items()}
    for a in by_part:
        for b in by_part:
            assert a == b or not by_part[a] & by_part[b] - {PART_COLOURS["body-middle"]}, (a, b)


def test_strokes_have_a_dark_outline():
    kp = np.zeros((1, 133, 3))
    kp[0, 0] = (300, 160, 0.9)
    drawn = draw_wholebody(_image(), kp, boxes=np.array([[100.0, 10.0, 400.0, 300.0]]))
    row = drawn[160, 300:330]
    ring = int(np.argmax(np.all(row == _bgr(OUTLINE), axis=1)))
    assert ring > 0 and np.all(row[:ring] == _bgr(keypoint_colour(0))) and np.all(row[ring + 3 :] == GREY)


def test_pictures_are_written_as_compressed_png_stored_png_or_jpeg():
    picture = draw_wholebody(np.random.default_rng(0).integers(80, 120, (240, 320, 3), dtype=np.uint8),
                             _one_person(0.9))
    sizes = {}
    for name, fmt, level, kind in (("png", "png", 6, "PNG"), ("stored", "png", 0, "PNG"), ("jpg", "jpg", 6, "JPEG")):
        data = encode_picture(picture, fmt, png_compression=level)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == kind and im.size == (320, 240) and im.mode == "RGB"
            back = np.asarray(im)[..., ::-1]
        if fmt == "png":
            assert np.array_equal(back, picture), name  # lossless, colours in their place
        else:
            assert np.abs(back.astype(int) - picture).mean() < 10  # lossy, but the same picture
        sizes[name] = len(data)
    assert sizes["png"] < 0.8 * sizes["stored"] and sizes["jpg"] < sizes["png"]
    with pytest.raises(ValueError):
        encode_picture(picture, "gif")
    with pytest.raises(ValueError):
        encode_picture(picture, "png", png_compression=10)


def test_the_command_s_format_defaults_are_the_drawing_module_s():
    from nasplat.cli import predict as cli
    from nasplat.data import draw

    assert (cli.FORMATS, cli.PNG_COMPRESSION, cli.JPEG_QUALITY) == (draw.FORMATS, draw.PNG_COMPRESSION,
                                                                    draw.JPEG_QUALITY)
