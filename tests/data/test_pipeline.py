"""Crops, targets, decoding and flips: the coordinate conventions everyone relies on."""

from __future__ import annotations

import math
import warnings

from pathlib import Path

import numpy as np
import pytest
import torch

from nasplat.data import (
    AugmentParams,
    TopDownDataset,
    body_targets,
    crop_to_image,
    decode_heatmaps,
    flip_back,
    head_heatmap_to_input,
    load_split,
    make_loader,
    render_in_boxes,
    train_instances,
    val_instances,
)
from nasplat.data.keypoints import BODY_CHANNEL_FLIP_INDEX, FLIP_INDEX
from nasplat.data.transforms import apply_affine, crop_matrix

INPUT = (128, 96)


def test_crop_to_image_inverts_the_crop_affine() -> None:
    rng = np.random.default_rng(0)
    center, scale, rot = np.array([300.0, 200.0]), np.array([150.0, 200.0]), 27.0
    pts = rng.uniform(0, 400, size=(10, 2))
    m = crop_matrix(center, scale, rot, INPUT)
    crop = apply_affine(pts, m)
    back = crop_to_image(
        torch.tensor(crop)[None], torch.tensor(center)[None], torch.tensor(scale)[None], torch.tensor([rot]), INPUT
    )[0]
    np.testing.assert_allclose(back.numpy(), pts, atol=1e-6)
    # the crop centre is the region's centre, and the region's width maps to the input width
    np.testing.assert_allclose(apply_affine(center[None], crop_matrix(center, scale, 0.0, INPUT))[0], (48, 64))


def test_body_targets_peak_at_the_stride_4_pixel_and_weights() -> None:
    kp = torch.zeros(1, 133, 3)
    kp[0, 0] = torch.tensor([40.0, 20.0, 1.0])  # -> heatmap (x=10, y=5)
    kp[0, 1] = torch.tensor([500.0, 20.0, 1.0])  # outside
    boxes = torch.tensor([[[8.0, 8.0, 24.0, 16.0], [0, 0, 0, 0], [40.0, 40.0, 48.0, 60.0]]])
    valid = torch.tensor([[1.0, 0.0, 1.0]])
    target, weight = body_targets(kp, boxes, valid, INPUT, sigma=2.0)
    assert target.shape == (1, 38, 32, 24) and weight.shape == (1, 38)
    assert target[0, 0, 5, 10] == pytest.approx(1.0)
    assert weight[0, 0] == 1 and weight[0, 1] == 0 and weight[0, 2] == 0  # labeled / outside / unlabeled
    assert target[0, 1].abs().sum() == 0
    # face box corners: TL (8, 8) -> (2, 2); BR (24, 16) -> (6, 4); centre (16, 12) -> (4, 3)
    assert target[0, 23, 2, 2] == pytest.approx(1.0)
    assert target[0, 25, 4, 6] == pytest.approx(1.0)
    assert target[0, 27, 3, 4] == pytest.approx(1.0)
    assert weight[0, 23:28].tolist() == [1.0] * 5
    assert weight[0, 28:33].tolist() == [0.0] * 5  # invalid left hand
    assert weight[0, 33:38].sum() == 5


def test_box_sigma_narrows_only_the_box_keypoint_gaussians() -> None:
    kp = torch.zeros(1, 133, 3)
    kp[0, 0] = torch.tensor([40.0, 20.0, 1.0])  # heatmap (10, 5)
    boxes = torch.tensor([[[8.0, 8.0, 24.0, 16.0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    valid = torch.tensor([[1.0, 0.0, 0.0]])
    wide, _ = body_targets(kp, boxes, valid, INPUT, sigma=2.0)
    narrow, _ = body_targets(kp, boxes, valid, INPUT, sigma=2.0, box_sigma=1.0)
    torch.testing.assert_close(narrow[:, :23], wide[:, :23])  # body/foot keypoints unchanged
    assert narrow[0, 23, 2, 2] == pytest.approx(1.0)  # same peak
    assert narrow[0, 23, 2, 3] == pytest.approx(math.exp(-0.5))  # one pixel off: sigma 1
    assert wide[0, 23, 2, 3] == pytest.approx(math.exp(-1 / 8))  # sigma 2
    same, _ = body_targets(kp, boxes, valid, INPUT, sigma=2.0, box_sigma=2.0)
    torch.testing.assert_close(same, wide)

def test_render_in_boxes_uses_the_head_pixel_convention() -> None:
    boxes = torch.tensor([[10.0, 20.0, 42.0, 52.0]])  # 32 px box, R = 16 -> 2 px per head pixel
    kp = torch.tensor([[[10.0 + 2 * 5.5, 20.0 + 2 * 3.5, 1.0], [100.0, 100.0, 1.0], [20.0, 30.0, 0.0]]])
    heat, weight = render_in_boxes(kp, boxes, 16, sigma=1.5)
    assert heat.shape == (1, 3, 16, 16)
    assert heat[0, 0, 3, 5] == pytest.approx(1.0)
    assert weight[0].tolist() == [1.0, 0.0, 0.0]
    coords, _ = decode_heatmaps(heat[:, :1])
    np.testing.assert_allclose(head_heatmap_to_input(coords, boxes, 16)[0, 0].numpy(), kp[0, 0, :2].numpy())


def test_decode_recovers_rendered_points_within_a_quarter_pixel() -> None:
    rng = np.random.default_rng(1)
    kp = torch.zeros(4, 133, 3)
    kp[:, :23, 0] = torch.tensor(rng.uniform(8, 88, size=(4, 23)), dtype=torch.float32)
    kp[:, :23, 1] = torch.tensor(rng.uniform(8, 120, size=(4, 23)), dtype=torch.float32)
    kp[:, :23, 2] = 1
    target, _ = body_targets(kp, torch.zeros(4, 3, 4), torch.zeros(4, 3), INPUT, sigma=2.0)
    coords, scores = decode_heatmaps(target[:, :23])
    err = (coords * 4 - kp[:, :23, :2]).abs()
    assert err.max() <= 4 * 0.25 + 1e-4  # at most a quarter heatmap pixel per axis after the offset
    assert err.mean() < 0.6
    assert torch.all(scores > 0.8)


def test_flip_back_with_shift_undoes_a_flip() -> None:
    kp = torch.zeros(1, 133, 3)
    kp[0, :23, 0] = torch.linspace(10, 80, 23)
    kp[0, :23, 1] = torch.linspace(10, 110, 23)
    kp[0, :23, 2] = 1
    boxes = torch.tensor([[[10.0, 10.0, 30.0, 30.0], [50.0, 60.0, 60.0, 70.0], [20.0, 60.0, 30.0, 72.0]]])
    valid = torch.ones(1, 3)
    target, _ = body_targets(kp, boxes, valid, INPUT, sigma=2.0)
    # the same person in the horizontally flipped crop: x -> W - 1 - x, pairs swapped
    kf = kp.clone()
    kf[0, :, 0] = INPUT[1] - 1 - kp[0, :, 0]
    kf = kf[:, torch.tensor(FLIP_INDEX)]
    bf = boxes.clone()
    bf[0, :, 0], bf[0, :, 2] = INPUT[1] - 1 - boxes[0, :, 2], INPUT[1] - 1 - boxes[0, :, 0]
    bf = bf[:, [0, 2, 1]]
    flipped, _ = body_targets(kf, bf, valid, INPUT, sigma=2.0)
    assert not BODY_CHANNEL_FLIP_INDEX.flags.writeable
    with warnings.catch_warnings():  # the read-only table is copied, not shared (PyTorch warns once per process)
        warnings.simplefilter("error")
        back = flip_back(flipped, BODY_CHANNEL_FLIP_INDEX)
    c0, _ = decode_heatmaps(target)
    c1, _ = decode_heatmaps(back)
    assert (c0 - c1).abs().max() <= 0.5 + 1e-5  # within half a heatmap pixel


def test_dataset_items_follow_the_contract(synth_root: Path) -> None:
    ann = load_split(synth_root, "val")
    ds = TopDownDataset(val_instances(ann), ann, INPUT)
    item = ds[0]
    shapes = {k: tuple(v.shape) for k, v in item.items()}
    assert shapes == {
        "image": (3, 128, 96), "target": (38, 32, 24), "target_weight": (38,), "keypoints": (133, 3),
        "part_boxes": (3, 4), "part_valid": (3,), "center": (2,), "scale": (2,), "rotation": (),
        "image_id": (), "ann_id": (), "area": (), "score": (),
    }
    assert abs(float(item["image"].mean())) < 2.0  # normalised, not raw 0-255
    # labeled keypoints map back to their image coordinates
    inst = ds.instances[0]
    lab = inst.keypoints[:, 2] > 0
    back = crop_to_image(item["keypoints"][None, :, :2], item["center"][None], item["scale"][None],
                         item["rotation"][None], INPUT)[0]
    np.testing.assert_allclose(back[torch.as_tensor(lab)].numpy(), inst.keypoints[lab, :2], atol=1e-2)
    assert float(item["scale"][0]) / float(item["scale"][1]) == pytest.approx(96 / 128)


def test_flip_augmentation_mirrors_keypoints_and_swaps_hands(synth_root: Path) -> None:
    ann = load_split(synth_root, "train")
    inst = train_instances(ann)
    plain = TopDownDataset(inst, ann, INPUT)
    flipped = TopDownDataset(inst, ann, INPUT, augment=AugmentParams(0.0, 0.0, 0.0, flip_prob=1.0))
    for i in range(3):
        a, b = plain[i], flipped[i]
        kb = b["keypoints"][torch.tensor(FLIP_INDEX)]  # back to the unflipped labels
        lab = a["keypoints"][:, 2] > 0
        assert torch.equal(lab, kb[:, 2] > 0)
        np.testing.assert_allclose(kb[lab, 0].numpy(), (INPUT[1] - a["keypoints"][lab, 0]).numpy(), atol=1e-3)
        np.testing.assert_allclose(kb[lab, 1].numpy(), a["keypoints"][lab, 1].numpy(), atol=1e-3)
        assert torch.equal(b["part_valid"], a["part_valid"][[0, 2, 1]])
        # the left-shoulder channel of the flipped crop sits where the right shoulder was
        assert torch.allclose(b["target_weight"][5], a["target_weight"][6])


def test_augmentation_is_deterministic_per_seed_epoch_and_index(synth_root: Path) -> None:
    ann = load_split(synth_root, "train")
    inst = train_instances(ann)
    ds = TopDownDataset(inst, ann, INPUT, augment=AugmentParams(), seed=3)
    first = ds.crop_params(2)
    assert ds.crop_params(2) == first
    ds.set_epoch(1)
    assert ds.crop_params(2) != first
    scales = []
    for e in range(40):
        ds.set_epoch(e)
        p = ds.crop_params(0)
        scales.append(p.scale[1])
        assert abs(p.rotation) <= 40.0
    base = TopDownDataset(inst, ann, INPUT).crop_params(0).scale[1]
    assert 0.5 * base - 1e-6 <= min(scales) < max(scales) <= 1.5 * base + 1e-6


@pytest.mark.timeout(120)  # forked workers used to deadlock after the parent ran cv2 threads
def test_loader_batches_with_two_workers(synth_root: Path) -> None:
    ann = load_split(synth_root, "train")
    ds = TopDownDataset(train_instances(ann), ann, INPUT, augment=AugmentParams(), seed=0)
    batch = next(iter(make_loader(ds, 4, shuffle=True, num_workers=2, seed=0)))
    assert batch["image"].shape == (4, 3, 128, 96) and batch["target"].shape == (4, 38, 32, 24)
    assert batch["image_id"].dtype == torch.int64
