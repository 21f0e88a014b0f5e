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


def test_the_pipeline_writes_what_the_serial_path_writes_in_input_order(tmp_path, export_dir, trained_tiny,
                                                                       monkeypatch):
    from nasplat.cli import predict as cli_predict

    images, ann = _val(trained_tiny)
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    files = sorted(folder.glob("*.jpg"))
    for i in range(3):  # more images than the read-ahead window, so the pipeline refills it
        for f in files:
            shutil.copy(f, folder / f"{f.stem}{i + 1}0000{f.suffix}")
    files = sorted(folder.glob("*.jpg"))
    dets = tmp_path / "dets.json"
    ids = [int(f.stem) for f in files]
    dets.write_text(json.dumps([{"image_id": i, "category_id": 1, "bbox": [20 + 60 * k, 30, 90, 220], "score": 0.9}
                                for n, i in enumerate(ids) for k in range(n % 4)]))
    real_imread = cv2.imread
    rank = {str(f): n for n, f in enumerate(files)}

    def slow_early_imread(path, flags):  # the earlier the image, the later its reader finishes
        import time

        time.sleep(0.004 * (len(files) - rank.get(path, 0)))
        return real_imread(path, flags)

    monkeypatch.setattr(cv2, "imread", slow_early_imread)
    got = {}
    for workers in (0, 3):
        report = cli_predict.predict_images(export_dir, [folder], tmp_path / f"w{workers}", boxes=dets, workers=workers,
                                            batch_size=3, threads=1, echo=lambda line: None)
        assert report.failed == 0 and report.images == len(files)
        got[workers] = tmp_path / f"w{workers}"
    serial = (got[0] / "results.json").read_bytes()
    assert (got[3] / "results.json").read_bytes() == serial  # bit-identical, same order
    order = [r["image_id"] for r in json.loads(serial)]
    assert order == sorted(order, key=ids.index)  # input order
    assert set(order) == {i for n, i in enumerate(ids) if n % 4}  # images without a box have no result
    for f in files:
        assert (got[3] / f"{f.stem}.png").read_bytes() == (got[0] / f"{f.stem}.png").read_bytes(), f.name


def test_the_summary_says_what_was_predicted_and_where_the_time_went(tmp_path, export_dir, trained_tiny):
    images, ann = _val(trained_tiny)
    res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "pred"), "--ann", str(ann))
    assert res.exit_code == 0, res.output
    summary = res.stderr.strip().splitlines()[-1]
    n = len(list(images.glob("*.jpg")))
    assert summary.startswith(f"predicted {n} persons in {n} images in "), summary
    for part in ("% of the time, 1 batched call;", "model load", "model.ort.onnx", "backend onnx",
                 str(tmp_path / "pred" / "results.json")):
        assert part in summary, summary


def test_the_summary_reads_as_a_sentence_with_plurals_that_agree(tmp_path):
    from nasplat.cli.predict import PredictReport
    from nasplat.subnet.predict import Timing

    one = PredictReport(out=tmp_path, backend="onnx", timing=Timing(network=1.358, load=0.02, calls=[1]),
                        model_file="model.onnx", images=1, persons=1, total=1.4)
    assert one.summary() == (f"predicted 1 person in 1 image in 1.4 s (network 97% of the time, 1 batched call; "
                             f"model load 0.02 s, model.onnx, backend onnx) -> {tmp_path / 'results.json'}")
    many = PredictReport(out=tmp_path, backend="torch", timing=Timing(network=3.0, calls=[8, 8, 2]),
                         model_file="model.pt", images=2, persons=18, total=12.0)
    assert many.summary().startswith("predicted 18 persons in 2 images in 12 s (network 25% of the time, "
                                     "3 batched calls;")
    none = PredictReport(out=tmp_path, backend="onnx", timing=Timing(), images=3, total=0.5)
    assert none.summary().startswith("predicted 0 persons in 3 images in 0.50 s (no network call;")


@pytest.mark.parametrize("device", ["cuda:99", "banana"])  # cuda:99: absent on any machine
def test_a_device_this_machine_lacks_is_one_line_naming_what_it_has(tmp_path, export_dir, trained_tiny, device):
    from nasplat.subnet.inference import available_devices

    images, _ = _val(trained_tiny)
    for backend in ([], ["--backend", "torch"]):
        res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "pred"), "--device", device, *backend)
        assert res.exit_code == 2, res.output
        (line,) = res.output.strip().splitlines()
        assert line.startswith("nasplat: error: --device: ") and repr(device) in line, line
        assert f"available here: {', '.join(available_devices())}" in line and "cpu" in line, line
    assert not (tmp_path / "pred").exists()


def test_an_arch_json_of_another_export_is_one_line_naming_both_files(tmp_path, export_dir, trained_tiny):
    images, _ = _val(trained_tiny)
    mixed = tmp_path / "mixed"
    shutil.copytree(export_dir, mixed)
    small = trained_tiny.space.min_arch()
    assert small.body.input_size != trained_tiny.space.max_arch().body.input_size
    (mixed / "arch.json").write_text(small.to_json())
    for onnx_file in ("model.ort.onnx", "model.onnx"):
        res = _predict(str(mixed), str(images), "--out", str(tmp_path / "pred"))
        assert res.exit_code == 2, res.output
        (line,) = res.output.strip().splitlines()
        h, w = small.body.input_size
        assert "arch.json" in line and onnx_file in line and f"{h} x {w}" in line, line
        assert not (tmp_path / "pred").exists()
        (mixed / "model.ort.onnx").unlink(missing_ok=True)  # then model.onnx is loaded


def test_dropped_detections_are_one_warning_line_with_counts_per_reason(tmp_path, export_dir, trained_tiny):
    images, ann = _val(trained_tiny)
    first = sorted(json.loads(ann.read_text())["images"], key=lambda i: i["id"])[0]
    w, h = first["width"], first["height"]

    def det(bbox, image_id=first["id"], score=0.9, category=1):
        return {"image_id": image_id, "category_id": category, "bbox": bbox, "score": score}

    bad = [det([w + 10, 5, 50, 80]), det([5, h, 50, 80]), det([-200, -200, 100, 100]),  # outside the image
           det([10, 10, -40, 80]), det([10, 10, 40, 0]),  # negative width, zero height
           det([10, 10, 40, 80], image_id=424242),  # no input has this image id
           det([10, 10, 40, 80], score=0.1), det([10, 10, 40, 80], category=3)]  # below --min-score, not a person
    (tmp_path / "dets.json").write_text(json.dumps(bad + [det([10, 10, 100, 200])]))
    res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "pred"), "--ann", str(ann),
                   "--boxes", str(tmp_path / "dets.json"), "--min-score", "0.5", "--no-draw")
    assert res.exit_code == 0, res.output
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("nasplat: warning:")]
    assert f"{tmp_path / 'dets.json'}: dropped 8 of 9 detections: " in line, line
    for part in ("3 outside their image", "2 with a width or height of 1 pixel or less",
                 "1 for an image that is not an input (image id 424242)", "1 scored below --min-score 0.5",
                 "1 not a person"):
        assert part in line, line
    assert [r["image_id"] for r in json.loads((tmp_path / "pred" / "results.json").read_text())] == [first["id"]]

    (tmp_path / "bad.json").write_text(json.dumps(bad))  # nothing left: stop before writing anything
    res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "none"), "--ann", str(ann),
                   "--boxes", str(tmp_path / "bad.json"), "--min-score", "0.5")
    assert res.exit_code == 2, res.output
    warning, error = res.stderr.strip().splitlines()
    assert warning.startswith("nasplat: warning:") and "dropped 8 of 8 detections" in warning
    assert error.startswith("nasplat: error: nothing left to predict: ") and "bad.json" in error, error
    assert not (tmp_path / "none").exists()


def test_a_folder_without_images_is_nothing_to_predict(tmp_path, export_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    res = _predict(str(export_dir), str(empty), "--out", str(tmp_path / "pred"))
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert line.startswith("nasplat: error: nothing left to predict: no images in ") and str(empty) in line, line
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize("value", ["nan", "-0.1", "1.5", "inf"])
def test_a_min_score_that_is_not_a_score_is_refused(tmp_path, export_dir, trained_tiny, value):
    images, _ = _val(trained_tiny)
    res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "pred"), "--min-score", value)
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert line.startswith("nasplat: error: --min-score: ") and "from 0 to 1" in line, line
    assert not (tmp_path / "pred").exists()


def test_drawings_are_compressed_pngs_by_default_or_jpegs_or_stored_pngs(tmp_path, export_dir, trained_tiny):
    from PIL import Image

    images, _ = _val(trained_tiny)
    files = sorted(images.glob("*.jpg"))
    runs = {"default": [], "stored": ["--png-compression", "0"], "jpg": ["--format", "jpg"]}
    for name, options in runs.items():
        res = _predict(str(export_dir), str(images), "--out", str(tmp_path / name), *options)
        assert res.exit_code == 0, res.output
    for f in files:
        shape = cv2.imread(str(f)).shape
        sizes = {}
        for name, kind in (("default", "PNG"), ("stored", "PNG"), ("jpg", "JPEG")):
            drawing = tmp_path / name / f"{f.stem}.{'jpg' if kind == 'JPEG' else 'png'}"
            with Image.open(drawing) as im:
                assert im.format == kind and (im.height, im.width, 3) == shape, drawing
            sizes[name] = drawing.stat().st_size
        assert sizes["default"] < 0.7 * sizes["stored"] and sizes["jpg"] < sizes["default"], sizes
        assert np.array_equal(cv2.imread(str(tmp_path / "default" / f"{f.stem}.png")),
                              cv2.imread(str(tmp_path / "stored" / f"{f.stem}.png")))  # both lossless
    assert not list((tmp_path / "jpg").glob("*.png"))
    for option, value in (("--format", "gif"), ("--png-compression", "10")):
        res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "bad"), option, value)
        assert res.exit_code == 2 and res.output.strip().splitlines() == [res.output.strip()], res.output
        assert option in res.output and not (tmp_path / "bad").exists()
    help_text = CliRunner().invoke(__import__("nasplat.cli.main", fromlist=["app"]).app, ["predict", "--help"]).output
    assert "--format png|jpg" in help_text and "--png-compression 0-9" in help_text


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_results_and_drawings_get_the_mode_of_a_new_file_under_the_umask(tmp_path, export_dir, trained_tiny, umask):
    import os
    import stat

    images, _ = _val(trained_tiny)
    old = os.umask(umask)
    try:
        res = _predict(str(export_dir), str(images), "--out", str(tmp_path / "pred"), "--png-compression", "0")
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "pred").iterdir()}
    assert len(modes) == 1 + len(list(images.glob("*.jpg")))
    assert set(modes.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in modes.items()}


def test_predict_loads_the_optimised_model_of_this_onnxruntime_and_else_model_onnx(tmp_path, export_dir, trained_tiny):
    import onnxruntime as ort

    from nasplat.subnet.predict import Predictor, whole_image

    images, _ = _val(trained_tiny)
    image = cv2.imread(str(sorted(images.glob("*.jpg"))[0]))
    persons = whole_image(image) * 3

    def keypoints(folder: Path) -> tuple[str, np.ndarray]:
        p = Predictor(folder, "onnx", threads=1)
        return p.model_file.name, p.predict([(image, persons)])[0][0]

    meta = json.loads((export_dir / "meta.json").read_text())
    assert meta["onnx"]["optimized"]["onnxruntime"] == ort.__version__
    name, optimised = keypoints(export_dir)
    assert name == "model.ort.onnx"

    other_version = tmp_path / "other-version"
    shutil.copytree(export_dir, other_version)
    meta["onnx"]["optimized"]["onnxruntime"] = "0.0.1"
    (other_version / "meta.json").write_text(json.dumps(meta))
    missing = tmp_path / "missing"
    shutil.copytree(export_dir, missing)
    (missing / "model.ort.onnx").unlink()
    damaged = tmp_path / "damaged"
    shutil.copytree(export_dir, damaged)
    (damaged / "model.ort.onnx").write_bytes(b"not a model")
    for folder in (other_version, missing, damaged):
        name, plain = keypoints(folder)
        assert name == "model.onnx", folder.name
        np.testing.assert_allclose(plain[..., :2], optimised[..., :2], atol=1e-3)
        np.testing.assert_allclose(plain[..., 2], optimised[..., 2], atol=1e-5)


def test_the_steps_compose_to_predict_across_batch_boundaries(export_dir, trained_tiny):
    from nasplat.subnet.predict import Person, Predictor

    images, _ = _val(trained_tiny)
    pictures = [cv2.imread(str(f)) for f in sorted(images.glob("*.jpg"))]
    persons = [[Person((10.0 + 30 * k, 20.0, 80.0, 200.0), 0.5 + 0.1 * k) for k in range(n)] for n in (2, 0, 3)]
    predictor = Predictor(export_dir, "onnx", threads=1, batch_size=2)
    together = predictor.predict(list(zip(pictures, persons)))
    for (image, ps), (kp, sc) in zip(zip(pictures, persons), together):
        assert kp.shape == (len(ps), 133, 3) and sc.shape == (len(ps),)
        if ps:  # one image alone, one network call
            prepared = predictor.prepare(image, ps)
            alone = predictor.finish(predictor.infer(prepared.crops), prepared.centers, prepared.scales,
                                     prepared.box_scores)
            np.testing.assert_allclose(kp, alone[0], atol=1e-4)
            np.testing.assert_allclose(sc, alone[1], atol=1e-6)


def _claims(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims width x height; the data stays what it was."""
    at = data.index(b"\xff\xc0") + 5  # marker, length (2), precision (1), then height, width
    return data[:at] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[at + 4:]


def test_an_image_claiming_a_huge_size_is_refused_before_it_is_decoded(tmp_path, export_dir, trained_tiny):
    import cv2
    import numpy as np

    ok, small = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    assert ok
    bomb = tmp_path / "000000000001.jpg"
    bomb.write_bytes(_claims(small.tobytes(), 20000, 20000))
    assert len(bomb.read_bytes()) < 1000
    res = _predict(str(export_dir), str(bomb), "--out", str(tmp_path / "pred"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    (line,) = [ln for ln in res.stderr.splitlines() if str(bomb) in ln]
    assert "20000 x 20000 pixels (400 megapixels)" in line and "not decoded" in line
    assert not list((tmp_path / "pred").glob("*.png"))


def test_an_output_folder_holding_the_input_images_is_refused_before_anything_is_written(tmp_path, export_dir,
                                                                                        trained_tiny):
    import cv2
    import hashlib

    images, _ = _val(trained_tiny)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for jpg in sorted(images.glob("*.jpg"))[:2]:
        cv2.imwrite(str(folder / f"{jpg.stem}.png"), cv2.imread(str(jpg)))
    before = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    res = _predict(str(export_dir), str(folder), "--out", str(folder))
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert "--out" in line and "is an input image and would be written over" in line
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before
    assert _predict(str(export_dir), str(folder), "--out", str(tmp_path / "elsewhere")).exit_code == 0
