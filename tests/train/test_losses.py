import torch

from nasplat.train.losses import (
    box_iou,
    choose_head_boxes,
    resample_body_heatmaps,
    warp_head_heatmaps,
    weighted_mse,
)


def _gauss(h: int, w: int, cx: float, cy: float, sigma: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))


def test_weighted_mse_ignores_zero_weight_channels():
    pred = torch.zeros(1, 2, 3, 3)
    target = torch.ones(1, 2, 3, 3)
    assert weighted_mse(pred, target, torch.tensor([[1.0, 0.0]])).item() == 0.5


def test_body_resampling_keeps_the_peak_at_the_same_image_point():
    # teacher input 128x96 -> heatmap 32x24; a keypoint at image (48, 64) peaks at index (16, 12).
    teacher = _gauss(32, 24, cx=12, cy=16, sigma=2)[None, None]
    student = resample_body_heatmaps(teacher, scale=(0.75, 0.75), size=(24, 18))  # 96x72 input
    idx = int(student[0, 0].argmax())
    i, j = divmod(idx, 18)
    assert (i, j) == (12, 9)  # image point (36, 48) in the student crop = (48, 64) * 0.75


def test_head_warp_moves_the_peak_to_the_same_image_point_in_the_student_box():
    r = 32
    teacher_box = torch.tensor([[10.0, 20.0, 42.0, 52.0]])  # 32 px wide: 1 px per heatmap cell
    # image point (30.5, 40.5) sits at teacher cell (20, 20)
    teacher = _gauss(r, r, cx=20, cy=20, sigma=1.5)[None, None]
    student_box = torch.tensor([[22.0, 32.0, 38.0, 48.0]])  # 16 px box, resolution 16: 1 px per cell
    warped, mask = warp_head_heatmaps(teacher, teacher_box, student_box, 16)
    i, j = divmod(int(warped[0, 0].argmax()), 16)
    # image x = 22 + j + 0.5 = 30.5 -> j = 8; y = 32 + i + 0.5 = 40.5 -> i = 8
    assert (i, j) == (8, 8)
    assert mask.all()


def test_head_warp_masks_student_pixels_outside_the_teacher_box():
    teacher = torch.ones(1, 1, 8, 8)
    warped, mask = warp_head_heatmaps(teacher, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[4.0, 0.0, 12.0, 8.0]]), 8)
    assert mask[0, 0, :, :4].all() and not mask[0, 0, :, 4:].any()


def test_box_choice_falls_back_to_gt_when_the_prediction_is_poor():
    gt = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]])
    pred = torch.tensor([[[1.0, 1, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]]])
    valid = torch.tensor([[1.0, 1.0, 0.0]])
    boxes, used = choose_head_boxes(pred, gt, valid, iou_threshold=0.5, gt_only=False)
    assert used.tolist() == [[True, False, False]]
    assert torch.equal(boxes[0, 1], gt[0, 1])
    boxes, used = choose_head_boxes(pred, gt, valid, iou_threshold=0.5, gt_only=True)
    assert not used.any() and torch.equal(boxes[0, 0], gt[0, 0])
    assert abs(box_iou(pred[0, 0], gt[0, 0]).item() - 0.81) < 1e-6
