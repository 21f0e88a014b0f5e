"""`nasplat predict`: results that `nasplat eval` accepts, one PNG of the image's size per image,
the same keypoints from both backends, person boxes from a detection file, and bad input as one
line naming the file (exit 2) while the other images are still processed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, trained_tiny) -> Path:
    import torch

    from nasplat.subnet.export import export_subnet

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("predict") / "best"
    export_subnet(trained_tiny, trained_tiny.space.max_arch(), out, latency=None)
    torch.set_num_threads(threads)
    return out


def _val(experiment) -> tuple[Path, Path]:
    root = Path(experiment.data.root)
    return root / "val2017", root / "annotations" / "coco_wholebody_val_v1.0.json"


def _predict(*args: str):
    from nasplat.cli.main import app

    return CliRunner().invoke(app, ["predict", *args, "--threads", "1"])


def test_results_are_accepted_by_eval_and_each_image_gets_a_png_of_its_size(tmp_path, export_dir, trained_tiny):
    from nasplat.cli.main import app

    images, ann = _val(trained_tiny)
    res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "pred"), "--ann", str(ann))
    assert res.exit_code == 0, res.output
    assert "backend onnx" in res.stderr  # the default on the CPU when the export has model.onnx
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    files = sorted(images.glob("*.jpg"))
    gt = json.loads(ann.read_text())
    assert sorted(r["image_id"] for r in results) == sorted(i["id"] for i in gt["images"])  # one person each
    for f in files:
        png = cv2.imread(str(tmp_path / "pred" / f"{f.stem}.png"))
        assert png is not None and png.shape == cv2.imread(str(f)).shape
    ev = CliRunner().invoke(app, ["eval", "--gt", str(ann), "--pred", str(tmp_path / "pred" / "results.json"), "--json"])
    assert ev.exit_code == 0, ev.output
    assert set(json.loads(ev.stdout)) == {"body", "foot", "face", "hand", "wholebody"}


def test_both_backends_give_the_same_keypoints(tmp_path, export_dir, trained_tiny):
    images, ann = _val(trained_tiny)
    got = {}
    for backend in ("torch", "onnx"):
        res = _predict(str(export_dir), str(images), "--out", str(tmp_path / backend), "--ann", str(ann),
                       "--backend", backend, "--no-draw", "--batch-size", "2")
        assert res.exit_code == 0, res.output
        got[backend] = sorted(json.loads((tmp_path / backend / "results.json").read_text()), key=lambda r: r["image_id"])
    for a, b in zip(got["torch"], got["onnx"]):
        for field in ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts"):
            xa, xb = np.array(a[field]).reshape(-1, 3), np.array(b[field]).reshape(-1, 3)
            np.testing.assert_allclose(xa[:, :2], xb[:, :2], atol=2e-3)  # rounded to 3 decimals
            np.testing.assert_allclose(xa[:, 2], xb[:, 2], atol=2e-3)


def test_persons_come_from_a_detection_file(tmp_path, export_dir, trained_tiny):
    images, ann = _val(trained_tiny)
    first, second = sorted(json.loads(ann.read_text())["images"], key=lambda i: i["id"])[:2]
    dets = [
        {"image_id": first["id"], "category_id": 1, "bbox": [10, 10, 100, 200], "score": 0.9},
        {"image_id": first["id"], "category_id": 1, "bbox": [200, 50, 120, 300], "score": 0.8},
        {"image_id": first["id"], "category_id": 2, "bbox": [0, 0, 50, 50], "score": 0.99},  # not a person
        {"image_id": second["id"], "category_id": 1, "bbox": [-20, -20, 5000, 5000], "score": 0.7},  # clipped
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "pred"), "--ann", str(ann),
                   "--boxes", str(tmp_path / "dets.json"), "--no-draw")
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    counts = {}
    for r in results:
        counts[r["image_id"]] = counts.get(r["image_id"], 0) + 1
    assert counts == {first["id"]: 2, second["id"]: 1}  # the third image has no box: no person


def test_bad_images_are_one_line_each_and_the_others_are_still_processed(tmp_path, export_dir, trained_tiny):
    images, _ = _val(trained_tiny)
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "000000000785.jpg").write_bytes(b"not a jpeg")
    (folder / "holiday.jpg").write_bytes((folder / sorted(p.name for p in images.glob("*.jpg"))[0]).read_bytes())
    missing = tmp_path / "missing.jpg"
    res = _predict(str(export_dir), str(folder), str(missing), "--out", str(tmp_path / "pred"))
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.startswith("nasplat: error:")]
    assert any("000000000785.jpg" in line and "cannot read" in line for line in lines)
    assert any("holiday.jpg" in line and "image id" in line for line in lines)
    assert any(str(missing) in line for line in lines)
    assert "Traceback" not in res.output
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert len(results) == len(list(images.glob("*.jpg")))  # the good ones, ids from their file names


def test_a_box_file_that_does_not_parse_stops_before_anything_is_written(tmp_path, export_dir, trained_tiny):
    images, _ = _val(trained_tiny)
    (tmp_path / "dets.json").write_text("[{\"image_id\": 1, \"bbox\": [1, 2]}]")
    res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "pred"), "--boxes", str(tmp_path / "dets.json"))
    assert res.exit_code == 2
    assert "dets.json" in res.stderr and "bbox" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pred").exists()


def test_an_export_without_weights_is_one_line_naming_the_file(tmp_path, export_dir, trained_tiny):
    images, _ = _val(trained_tiny)
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    (broken / "model.pt").unlink()
    (broken / "model.onnx").unlink()
    res = _predict(str(broken), str(images), "--out", str(tmp_path / "pred"))
    assert res.exit_code == 2
    assert str(broken / "model.pt") in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pred").exists()


def test_image_ids_come_from_coco_style_names():
    from nasplat.subnet.predict import image_id_from_name

    assert image_id_from_name(Path("000000000785.jpg")) == 785
    assert image_id_from_name(Path("COCO_val2014_000000000042.png")) == 42
    assert image_id_from_name(Path("holiday.jpg")) is None
