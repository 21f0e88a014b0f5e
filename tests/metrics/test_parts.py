"""NME / PCK / AUC / EPE on cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from nasplat.errors import DataError
from nasplat.metrics import auc_hand, epe, nme_inter_ocular, pck_hand


def _face(ocular: float) -> np.ndarray:
    g = np.zeros((1, 68, 2))
    g[0, 36] = (0.0, 0.0)
    g[0, 45] = (ocular, 0.0)
    return g


def test_nme_divides_mean_error_by_outer_eye_corner_distance() -> None:
    gt = _face(50.0)
    pred = gt.copy()
    pred[0, 10] += (3.0, 4.0)  # error 5 at one of 68 points
    assert nme_inter_ocular(pred, gt) == pytest.approx(5.0 / 68 / 50.0)


def test_nme_averages_per_face_and_respects_mask() -> None:
    gt = np.concatenate([_face(10.0), _face(20.0)])
    pred = gt + np.array([1.0, 0.0])  # every point off by 1
    mask = np.ones((2, 68))
    mask[1, :34] = 0
    # face 0: 1/10; face 1: 1/20 -> mean 0.075
    assert nme_inter_ocular(pred, gt, mask) == pytest.approx(0.075)


def test_nme_rejects_coincident_eye_corners() -> None:
    with pytest.raises(DataError, match="inter-ocular"):
        nme_inter_ocular(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)))


def test_pck_normalises_by_the_longer_box_side() -> None:
    gt = np.zeros((1, 21, 2))
    pred = gt.copy()
    pred[0, :10, 0] = 9.0  # 9 / max(50, 40) = 0.18 -> correct
    pred[0, 10:, 0] = 11.0  # 0.22 -> wrong
    boxes = np.array([[0.0, 0.0, 40.0, 50.0]])
    assert pck_hand(pred, gt, boxes) == pytest.approx(10 / 21)
    assert pck_hand(pred, gt, boxes, threshold=0.25) == pytest.approx(1.0)


def test_epe_is_mean_distance_over_labeled_points() -> None:
    gt = np.zeros((2, 21, 2))
    pred = gt.copy()
    pred[0, 0] = (3.0, 4.0)
    pred[1, 0] = (6.0, 8.0)  # masked out
    mask = np.ones((2, 21))
    mask[1, 0] = 0
    assert epe(pred, gt, mask) == pytest.approx(5.0 / 41)


def test_auc_hand_by_hand() -> None:
    gt = np.zeros((1, 2, 2))
    pred = np.array([[[0.0, 0.0], [15.0, 0.0]]])  # errors 0 and 15 px
    # PCK(t) = 0.5 for t < 15, 1 for t >= 15; thresholds 0..30 step 1 (trapezoid):
    # area = 14 * 0.5 + (0.5 + 1) / 2 + 15 * 1 = 22.75 -> / 30
    assert auc_hand(pred, gt) == pytest.approx(22.75 / 30)
    assert auc_hand(gt, gt) == pytest.approx(1.0)


@pytest.mark.parametrize("fn", [epe, auc_hand])
def test_bad_input_raises(fn) -> None:
    with pytest.raises(DataError):
        fn(np.zeros((1, 21, 2)), np.zeros((1, 20, 2)))
    bad = np.zeros((1, 21, 2))
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError):
        fn(bad, np.zeros((1, 21, 2)))
