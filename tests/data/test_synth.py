"""The synthetic generator: release format, determinism, the label cases a real file has."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nasplat.data import annotation_path, image_dir, load_split
from nasplat.data.keypoints import FACE_FLIP_INDEX
from nasplat.data.synth import FACE_TEMPLATE, generate_split


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    a = generate_split(tmp_path / "a", "train", 3, seed=5)
    b = generate_split(tmp_path / "b", "train", 3, seed=5)
    c = generate_split(tmp_path / "c", "train", 3, seed=6)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    for img in sorted((tmp_path / "a" / "train2017").iterdir()):
        assert img.read_bytes() == (tmp_path / "b" / "train2017" / img.name).read_bytes()


def test_written_in_the_release_layout_with_all_fields(synth_root: Path) -> None:
    data = json.loads(annotation_path(synth_root, "train").read_text())
    assert {"images", "annotations", "categories"} <= set(data)
    assert len(data["categories"][0]["keypoints"]) == 17
    for img in data["images"]:
        assert (image_dir(synth_root, "train") / img["file_name"]).is_file()
    fields = {"segmentation", "num_keypoints", "area", "iscrowd", "keypoints", "image_id", "bbox", "category_id",
              "id", "face_box", "lefthand_box", "righthand_box", "lefthand_kpts", "righthand_kpts", "face_kpts",
              "face_valid", "lefthand_valid", "righthand_valid", "foot_valid", "foot_kpts"}
    for ann in data["annotations"]:
        assert fields <= set(ann)
        assert ann["num_keypoints"] == sum(1 for v in ann["keypoints"][2::3] if v > 0)


def test_label_cases_of_the_real_data_occur(synth_root: Path) -> None:
    ann = load_split(synth_root, "train")
    persons = [a for a in ann.annotations if not a.iscrowd]
    body_v = np.concatenate([a.keypoints[:17, 2] for a in persons])
    assert {0.0, 1.0, 2.0} <= set(body_v.tolist())  # unlabeled, occluded, visible
    assert any(a.iscrowd for a in ann.annotations)
    assert any(not a.part_valid[0] for a in persons) and any(not all(a.part_valid[1:]) for a in persons)
    for a in persons:
        for p, sl in enumerate((slice(23, 91), slice(91, 112), slice(112, 133))):
            if not a.part_valid[p]:
                assert not a.keypoints[sl].any() and not a.part_boxes[p].any()
        x, y, w, h = a.bbox
        assert 0 < a.area < w * h  # a segmentation area, not the box area


def test_people_are_large_and_faces_and_hands_small(synth_root: Path) -> None:
    ann = load_split(synth_root, "train")
    persons = [a for a in ann.annotations if not a.iscrowd and a.part_valid[0]]
    heights = np.array([a.bbox[3] for a in persons])
    assert np.median(heights) > 200
    face_h = np.array([a.part_boxes[0, 3] for a in persons])
    assert np.all(face_h < 0.25 * heights)


def test_face_template_is_mirror_symmetric_under_the_flip_pairs() -> None:
    mirrored = FACE_TEMPLATE[FACE_FLIP_INDEX] * np.array([-1.0, 1.0])
    np.testing.assert_allclose(mirrored, FACE_TEMPLATE, atol=1e-9)


def test_left_and_right_body_keypoints_sit_on_the_expected_sides(synth_root: Path) -> None:
    # people face the camera: the subject's left shoulder/hip is on the image right
    ann = load_split(synth_root, "train")
    for a in ann.annotations:
        k = a.keypoints
        for left, right in ((5, 6), (11, 12)):
            if k[left, 2] > 0 and k[right, 2] > 0:
                assert k[left, 0] > k[right, 0]
