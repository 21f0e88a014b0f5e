"""Loading and validating the released COCO-WholeBody format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nasplat.data import annotation_path, check_dataset, load_split, train_instances, val_instances
from nasplat.errors import DataError


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(root, dst)
    return dst


def _edit(root: Path, split: str, fn) -> int:
    path = annotation_path(root, split)
    data = json.loads(path.read_text())
    ann_id = fn(data)
    path.write_text(json.dumps(data))
    return ann_id


def test_counts_of_a_valid_dataset(synth_root: Path) -> None:
    counts = check_dataset(synth_root)
    assert set(counts) == {"train", "val"}
    assert counts["train"].images == 24 and counts["val"].images == 8
    assert counts["train"].persons >= 24
    assert 0 < counts["train"].valid_faces <= counts["train"].persons
    assert 0 < counts["train"].valid_hands <= 2 * counts["train"].persons


def test_float_hand_visibilities_count_as_labeled(synth_root: Path) -> None:
    ann = load_split(synth_root, "train")
    hand_v = np.concatenate([a.keypoints[91:, 2] for a in ann.annotations])
    frac = hand_v[(hand_v > 0) & (hand_v < 1)]
    assert frac.size > 0  # the file really has float confidences
    inst = {i.ann_id: i for i in train_instances(ann)}
    for a in ann.annotations:
        if a.ann_id in inst and a.part_valid[1]:
            assert np.all(inst[a.ann_id].keypoints[91:112, 2] == (a.keypoints[91:112, 2] > 0))


def test_training_instances_skip_crowd_and_people_without_body_points(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, tmp_path)

    def strip_body(data: dict) -> int:
        ann = next(a for a in data["annotations"] if not a["iscrowd"])
        ann["keypoints"] = [0.0] * 51
        ann["num_keypoints"] = 0
        return ann["id"]

    stripped = _edit(root, "train", strip_body)
    ann = load_split(root, "train")
    ids = {i.ann_id for i in train_instances(ann)}
    assert stripped not in ids
    crowd = [a.ann_id for a in ann.annotations if a.iscrowd]
    assert crowd and not (set(crowd) & ids)
    assert stripped in {i.ann_id for i in val_instances(ann)}


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("face_kpts", [0.0] * 200, "face_kpts"),
        ("keypoints", "oops", "keypoints"),
        ("lefthand_valid", "yes", "lefthand_valid"),
        ("bbox", [1, 2, 3], "bbox"),
        ("image_id", 123456789, "image_id"),
    ],
)
def test_malformed_annotation_names_file_and_annotation_id(
    synth_root: Path, tmp_path: Path, field: str, value, needle: str
) -> None:
    root = _copy(synth_root, tmp_path)

    def corrupt(data: dict) -> int:
        ann = data["annotations"][3]
        ann[field] = value
        return ann["id"]

    ann_id = _edit(root, "val", corrupt)
    with pytest.raises(DataError) as info:
        check_dataset(root)
    msg = str(info.value)
    assert "coco_wholebody_val_v1.0.json" in msg and needle in msg and str(ann_id) in msg


def test_missing_field_is_reported(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, tmp_path)
    ann_id = _edit(root, "train", lambda d: d["annotations"][0].pop("righthand_box") and d["annotations"][0]["id"])
    with pytest.raises(DataError, match=f"annotation id {ann_id}.*righthand_box"):
        load_split(root, "train")


def test_missing_image_names_the_file_and_annotation(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, tmp_path)
    ann = load_split(root, "val")
    victim = ann.annotations[0]
    ann.images[victim.image_id].path.unlink()
    with pytest.raises(DataError) as info:
        check_dataset(root)
    assert ann.images[victim.image_id].file_name in str(info.value)
    assert "annotation id" in str(info.value)


def test_detections_become_val_instances(synth_root: Path, tmp_path: Path) -> None:
    ann = load_split(synth_root, "val")
    image_id = next(iter(ann.images))
    dets = [
        {"image_id": image_id, "category_id": 1, "bbox": [10, 20, 100, 200], "score": 0.9},
        {"image_id": image_id, "category_id": 1, "bbox": [10, 20, 100, 200], "score": 0.01},
        {"image_id": image_id, "category_id": 2, "bbox": [10, 20, 100, 200], "score": 0.9},
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    inst = val_instances(ann, path, min_score=0.05)
    assert len(inst) == 1 and inst[0].ann_id == -1 and inst[0].score == pytest.approx(0.9)
    assert inst[0].bbox[2] > 0 and not inst[0].keypoints.any()
    path.write_text(json.dumps([{"image_id": 42424242, "bbox": [0, 0, 5, 5], "score": 1.0}]))
    with pytest.raises(DataError, match="42424242"):
        val_instances(ann, path)
