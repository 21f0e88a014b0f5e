"""RoIAlign against a direct bilinear computation, and part-box decoding on hand-made heatmaps."""

from __future__ import annotations

import math

import pytest
import torch

from nasplat.models import decode_part_boxes, expand_boxes, roi_align


def _bilinear(fmap: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """Feature value at column u, row v (pixel units); pixels outside the map read zero."""
    c, h, w = fmap.shape
    x0, y0 = math.floor(u), math.floor(v)
    out = torch.zeros(c, dtype=torch.float64)
    for yy, wy in ((y0, 1 - (v - y0)), (y0 + 1, v - y0)):
        for xx, wx in ((x0, 1 - (u - x0)), (x0 + 1, u - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * fmap[:, yy, xx].double()
    return out


def _reference(fmap: torch.Tensor, box: list[float], r: int, stride: float, s: int) -> torch.Tensor:
    x1, y1, x2, y2 = box
    out = torch.zeros(fmap.shape[0], r, r, dtype=torch.float64)
    for i in range(r):
        for j in range(r):
            acc = torch.zeros(fmap.shape[0], dtype=torch.float64)
            for a in range(s):
                for b in range(s):
                    x = x1 + (j + (b + 0.5) / s) * (x2 - x1) / r  # body-input pixels
                    y = y1 + (i + (a + 0.5) / s) * (y2 - y1) / r
                    acc += _bilinear(fmap, x / stride, y / stride)
            out[:, i, j] = acc / (s * s)
    return out


@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_roi_align_matches_direct_bilinear_sampling(sampling_ratio: int) -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 9, 7, generator=gen)
    # inside, partly outside the map, a thin box, and one far outside
    boxes = torch.tensor(
        [[[2.0, 3.0, 17.5, 20.0], [-6.0, -4.0, 10.0, 12.0]], [[5.0, 5.0, 6.0, 30.0], [40.0, 50.0, 60.0, 70.0]]]
    )
    out = roi_align(feats, boxes, 5, stride=4.0, sampling_ratio=sampling_ratio)
    assert out.shape == (2, 2, 3, 5, 5)
    for b in range(2):
        for p in range(2):
            ref = _reference(feats[b], boxes[b, p].tolist(), 5, 4.0, sampling_ratio)
            torch.testing.assert_close(out[b, p].double(), ref, atol=1e-5, rtol=1e-5)
    assert torch.all(out[1, 1] == 0)


@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_roi_align_of_nhwc_features_is_the_same_crops_laid_out_nhwc(sampling_ratio: int) -> None:
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 6, 9, 7, generator=gen)
    boxes = torch.tensor([[[2.0, 3.0, 17.5, 20.0], [-6.0, -4.0, 10.0, 12.0]], [[5.0, 5.0, 6.0, 30.0], [1.0, 2.0, 9.0, 8.0]]])
    nchw = roi_align(feats, boxes, 5, sampling_ratio=sampling_ratio)
    nhwc = roi_align(feats.contiguous(memory_format=torch.channels_last), boxes, 5, sampling_ratio=sampling_ratio)
    assert torch.equal(nchw, nhwc)
    crops = nhwc.flatten(0, 1)  # what the heads' first convs read
    assert crops.is_contiguous(memory_format=torch.channels_last) and crops.data_ptr() == nhwc.data_ptr()
    assert nchw.flatten(0, 1).is_contiguous()  # NCHW features keep NCHW crops


def test_roi_align_hits_feature_pixels_exactly_at_their_input_points() -> None:
    feats = torch.arange(30.0).view(1, 1, 5, 6)
    # a 1x1 output of box centred on input point (8, 12) = feature pixel (row 3, col 2)
    out = roi_align(feats, torch.tensor([[[6.0, 10.0, 10.0, 14.0]]]), 1)
    assert out.item() == pytest.approx(feats[0, 0, 3, 2].item())


def test_roi_align_gradient_flows_to_features() -> None:
    feats = torch.randn(1, 2, 8, 8, requires_grad=True)
    roi_align(feats, torch.tensor([[[4.0, 4.0, 20.0, 20.0]]]), 4).sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_decode_part_boxes_takes_the_minimum_rectangle_of_five_argmax_points() -> None:
    # isolated one-pixel peaks: no neighbour is higher, so no sub-pixel step
    hm = torch.zeros(1, 38, 10, 8)
    # face: corners at (row, col) and a centre, in the order TL, TR, BR, BL, C
    face = [(2, 1), (2, 5), (6, 5), (6, 1), (4, 3)]
    left = [(1, 1), (1, 1), (1, 1), (1, 1), (1, 1)]  # degenerate: all on one pixel
    right = [(9, 7), (0, 7), (9, 0), (3, 3), (5, 5)]  # shuffled corners still give the min rectangle
    for part, points in enumerate((face, left, right)):
        for k, (i, j) in enumerate(points):
            hm[0, 23 + 5 * part + k, i, j] = 1.0
    boxes = decode_part_boxes(hm)
    expected = torch.tensor([[[4.0, 8.0, 20.0, 24.0], [4.0, 4.0, 4.0, 4.0], [0.0, 0.0, 28.0, 36.0]]])
    torch.testing.assert_close(boxes, expected)


def test_decode_part_boxes_steps_a_quarter_pixel_toward_the_higher_neighbour() -> None:
    hm = torch.zeros(1, 38, 10, 8)
    # left hand: TL peak at (row 2, col 2) leaning left/up, BR peak at (4, 4) leaning right/down
    for k, (i, j) in enumerate([(2, 2), (2, 4), (4, 4), (4, 2), (3, 3)]):
        hm[0, 28 + k, i, j] = 1.0
    hm[0, 28, 2, 1] = hm[0, 28, 1, 2] = 0.5  # TL: higher neighbour to the left and above
    hm[0, 30, 4, 5] = hm[0, 30, 5, 4] = 0.5  # BR: higher neighbour to the right and below
    box = decode_part_boxes(hm)[0, 1]
    torch.testing.assert_close(box, torch.tensor([4 * 1.75, 4 * 1.75, 4 * 4.25, 4 * 4.25]))


def test_expand_boxes_scales_about_the_centre_with_a_minimum_size() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [5.0, 5.0, 5.0, 5.0], [8.0, 8.0, 2.0, 2.0]])
    out = expand_boxes(boxes, 1.5, min_size=4.0)
    torch.testing.assert_close(out[0], torch.tensor([5.0, 10.0, 35.0, 70.0]))
    torch.testing.assert_close(out[1], torch.tensor([3.0, 3.0, 7.0, 7.0]))
    assert torch.all(out[2, 2:] - out[2, :2] == 4.0)  # inverted box: treated as empty
    feats = torch.randn(1, 2, 6, 6)
    assert torch.isfinite(roi_align(feats, out[None], 3)).all()
