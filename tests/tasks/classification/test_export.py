"""Exporting a classification subnet and predicting with it: the folder and its metadata, the ONNX
graph against PyTorch, the loader against the recalibrated subnet, the recorded accuracy against a
recount, the two predictor backends, and `nasplat predict` on a classification export."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import nasplat
from nasplat.cli.main import app
from nasplat.config import Experiment, load_experiment
from nasplat.errors import ConfigError
from nasplat.subnet.evaluator import load_supernet
from nasplat.subnet.onnx_export import onnx_session
from nasplat.tasks import get_task
from nasplat.tasks.classification.data import IMAGENET_MEAN, IMAGENET_STD, ClassificationDataset
from nasplat.tasks.classification.evaluate import calibration_images, kept_bn_statistics, recalibrate_subnet
from nasplat.tasks.classification.export import (
    export_classifier,
    is_classifier_export,
    load_exported_classifier,
)
from nasplat.tasks.classification.predict import MAX_BATCH, ClassifierPredictor
from nasplat.tasks.classification.space import MobileNetArch
from nasplat.train.loop import run_training
from nasplat.train.precision import recipe_precision
from tests.conftest import one_torch_thread
from tests.tasks.conftest import write_classify_experiment

# module scope: it must also cover the module-scoped training and export below
_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

FILES = {"model.pt", "arch.json", "model.onnx", "meta.json", "MODEL_CARD.md"}
CLASSES = ["class_00", "class_01", "class_02", "class_03"]  # the tiny set: 4 classes, 4 val images each
LINE = re.compile(r"^(?P<path>.+): (?P<top>(class_0\d \d\.\d{3})(, class_0\d \d\.\d{3})*)$")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, classify_data: Path) -> tuple[Experiment, Path]:
    """The tiny experiment trained for one epoch, and its checkpoint."""
    directory = tmp_path_factory.mktemp("classify_export")
    path = write_classify_experiment(directory, classify_data)
    recipe = yaml.safe_load((directory / "trainer.yaml").read_text())
    recipe["schedule"] = {**recipe["schedule"], "epochs": 1, "milestones": [1]}
    (directory / "trainer.yaml").write_text(yaml.safe_dump(recipe))
    experiment = load_experiment(path)
    get_task(experiment.task).ensure_data(experiment)
    checkpoint = run_training(experiment)
    assert checkpoint is not None
    return experiment, checkpoint


@pytest.fixture(scope="module")
def exported(trained: tuple[Experiment, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The max subnet exported from the checkpoint (with ONNX), and the meta dict returned."""
    experiment, checkpoint = trained
    out = tmp_path_factory.mktemp("exports") / "best"
    meta = export_classifier(experiment, experiment.space.max_arch(), out, checkpoint=checkpoint,
                             origin={"study": "tiny", "trial": 3})
    return out, meta


def _val(experiment: Experiment, resolution: int) -> ClassificationDataset:
    return ClassificationDataset(experiment.data.root, "val", train=False, resolution=resolution,
                                 augment=experiment.data.augment)


def _val_batch(experiment: Experiment, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    val = _val(experiment, resolution)
    items = [val[i] for i in range(len(val))]
    return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])


def _val_files(experiment: Experiment) -> list[Path]:
    val = _val(experiment, 32)
    return [val.index.path(i) for i in range(len(val))]


# --- the folder ----------------------------------------------------------------------------------
def test_the_export_folder_is_whole_and_its_meta_says_what_the_model_is(trained, exported) -> None:
    experiment, checkpoint = trained
    out, meta = exported
    arch = experiment.space.max_arch()
    task = get_task("classification")
    assert set(os.listdir(out)) == FILES  # no temporary file left behind
    assert json.loads((out / "meta.json").read_text()) == meta
    assert MobileNetArch.from_json((out / "arch.json").read_text()) == arch

    assert (meta["task"], meta["model_name"], meta["format"]) == ("classification", task.model, 1)
    assert meta["arch"] == arch.to_flat() and meta["resolution"] == arch.resolution == 32
    assert meta["num_classes"] == 4 and meta["classes"] == CLASSES
    assert meta["normalize"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert meta["gflops"] == {"total": pytest.approx(task.gflops(experiment)(arch)["total"])}
    assert meta["gflops"]["total"] > 0
    model = load_exported_classifier(out)
    assert meta["params"] == sum(p.numel() for p in model.parameters())
    assert set(meta["metrics"]) == {"top1", "top5"}
    assert 0.0 <= meta["metrics"]["top1"] <= meta["metrics"]["top5"] == 1.0  # 4 classes: top-5 is all
    assert meta["val_images"] == 16
    assert meta["origin"] == {"study": "tiny", "trial": 3}
    assert meta["checkpoint"] == str(checkpoint)
    assert (meta["nasplat_version"], meta["torch_version"]) == (nasplat.__version__, torch.__version__)
    created = datetime.fromisoformat(meta["created"])
    assert created.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - created) < timedelta(hours=1)
    onnx = meta["onnx"]
    assert (onnx["file"], onnx["input"], onnx["output"], onnx["images"]) == ("model.onnx", "images", "logits", 16)
    assert onnx["top1_agreement"] >= 0.99
    assert onnx["max_abs_logit_diff"] <= onnx["allowed_logit_diff"] == pytest.approx(
        1e-3 * max(1.0, onnx["max_abs_logit"]))

    card = (out / "MODEL_CARD.md").read_text()
    assert f"nasplat predict {out}" in card and "class_03" in card
    assert f"{meta['metrics']['top1']:.4f}" in card and f"{meta['params']:,}" in card
    assert is_classifier_export(out)


def test_the_onnx_graph_gives_the_logits_of_the_torch_model_at_any_batch_size(trained, exported) -> None:
    experiment, _ = trained
    out, _ = exported
    images, _ = _val_batch(experiment, 32)
    model = load_exported_classifier(out)
    session = onnx_session(out / "model.onnx", threads=1)
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (images[:1], images[1:6], images):  # [N, 3, 32, 32], N = 1, 5, 16
        with torch.no_grad():
            want = model(batch)  # [N, 4]
        got = torch.from_numpy(session.run(["logits"], {"images": batch.numpy()})[0])
        assert got.shape == want.shape == (batch.shape[0], 4)
        # within 1e-3 of the logits' scale: a one-epoch net with recalibrated BN has logits of ~40,
        # which fp32 itself computes only to ~3e-4 (see export.MAX_LOGIT_DIFF)
        assert float((got - want).abs().max()) <= 1e-3 * max(1.0, float(want.abs().max()))
        assert torch.equal(got.argmax(1), want.argmax(1))


def test_the_loaded_model_is_the_subnet_recalibrated_as_the_evaluator_does(trained, exported) -> None:
    experiment, checkpoint = trained
    out, _ = exported
    arch = experiment.space.max_arch()
    net, _ = load_supernet(checkpoint)
    raw = net.extract(arch).eval()  # the supernet's own BN statistics
    recipe = experiment.trainer
    with kept_bn_statistics(net):
        recalibrate_subnet(net, arch, calibration_images(experiment), batch_size=recipe.bn_recalibration.batch_size,
                           precision=recipe_precision(recipe, "cpu"))
        recalibrated = net.extract(arch).eval()
    loaded = load_exported_classifier(out)
    assert not loaded.training and loaded.arch == arch
    images, _ = _val_batch(experiment, 32)
    with torch.no_grad():
        logits = loaded(images)
        assert torch.equal(logits, recalibrated(images))
        assert not torch.allclose(logits, raw(images), atol=1e-3)  # the export did recalibrate


def test_the_recorded_top1_is_the_saved_models_accuracy_on_the_val_split(trained, exported) -> None:
    experiment, _ = trained
    out, meta = exported
    model = load_exported_classifier(out)
    images, labels = _val_batch(experiment, meta["resolution"])
    with torch.no_grad():
        predicted = model(images).argmax(1)
    assert meta["metrics"]["top1"] == int((predicted == labels).sum()) / len(labels)


def test_an_export_from_a_supernet_in_memory_leaves_it_as_it_was_and_onnx_off_removes_an_old_graph(
        trained, exported, tmp_path: Path) -> None:
    experiment, checkpoint = trained
    out, _ = exported
    net, _ = load_supernet(checkpoint)
    min_arch = experiment.space.min_arch()
    net.set_arch(min_arch)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    again = tmp_path / "again"
    shutil.copytree(out, again)  # an earlier export with a graph
    meta = export_classifier(experiment, experiment.space.max_arch(), again, net=net, onnx=False)

    assert net.arch == min_arch and net.training
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert set(os.listdir(again)) == FILES - {"model.onnx"}
    assert meta["onnx"] is None and meta["checkpoint"] is None and meta["origin"] == {}
    first = torch.load(out / "model.pt", weights_only=True)
    second = torch.load(again / "model.pt", weights_only=True)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert ClassifierPredictor(again).backend == "torch"
    with pytest.raises(ConfigError) as e:
        ClassifierPredictor(again, "onnx")
    assert e.value.source == str(again / "model.onnx")


# --- the predictor -------------------------------------------------------------------------------
def test_the_predictor_preprocesses_as_the_validation_pipeline_and_its_backends_agree(trained, exported,
                                                                                      monkeypatch) -> None:
    experiment, _ = trained
    out, meta = exported
    files = _val_files(experiment)
    val = _val(experiment, 32)
    images = [Image.open(f) for f in files]
    by_torch = ClassifierPredictor(out, "torch")
    by_onnx = ClassifierPredictor(out, "onnx")
    assert ClassifierPredictor(out).backend == "onnx"  # the default when the graph is there
    assert by_torch.classes == tuple(CLASSES)
    for i, image in enumerate(images):
        assert torch.equal(by_torch.preprocess(image), val[i]["image"])

    t = by_torch.topk(images, 4)
    o = by_onnx.topk(images, 4)
    assert [r[0][0] for r in t] == [r[0][0] for r in o]
    for rt, ro in zip(t, o):
        assert [c for c, _ in rt] and sorted(c for c, _ in rt) == CLASSES  # k = all: every class once
        probs = [p for _, p in rt]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0)
        assert [p for _, p in ro] == pytest.approx(probs, abs=1e-3)
    correct = sum(r[0][0] == CLASSES[int(val[i]["label"])] for i, r in enumerate(t))
    assert correct / len(t) == meta["metrics"]["top1"]
    # numpy RGB arrays are the same images
    assert by_torch.topk([np.asarray(im.convert("RGB")) for im in images[:3]], 2) == by_torch.topk(images[:3], 2)

    calls: list[int] = []
    logits = by_torch.logits
    monkeypatch.setattr(by_torch, "logits", lambda batch: calls.append(batch.shape[0]) or logits(batch))
    many = by_torch.topk(images * 3, 1)  # 48 images
    assert calls == [MAX_BATCH, 48 - MAX_BATCH]
    assert many == [r[:1] for r in t] * 3
    for k in (0, 5):
        with pytest.raises(ValueError):
            by_torch.topk(images[:1], k)


def test_a_broken_export_is_one_config_error_naming_the_file_and_key(exported, tmp_path: Path) -> None:
    out, meta = exported
    broken = tmp_path / "broken"

    def fresh() -> Path:
        shutil.rmtree(broken, ignore_errors=True)
        return Path(shutil.copytree(out, broken))

    fresh()
    (broken / "model.pt").unlink()
    with pytest.raises(ConfigError) as e:
        load_exported_classifier(broken)
    assert e.value.source == str(broken / "model.pt")

    fresh()
    (broken / "meta.json").write_text(json.dumps({**meta, "format": 2}))
    with pytest.raises(ConfigError) as e:
        load_exported_classifier(broken)
    assert (e.value.source, e.value.key) == (str(broken / "meta.json"), "format")

    fresh()
    (broken / "arch.json").write_text(json.dumps({**meta["arch"], "stage1.depth": "four"}))
    with pytest.raises(ConfigError) as e:
        load_exported_classifier(broken)
    assert (e.value.source, e.value.key) == (str(broken / "arch.json"), "stage1.depth")

    assert not is_classifier_export(tmp_path / "nothing")
    (tmp_path / "pose").mkdir()
    (tmp_path / "pose" / "meta.json").write_text(json.dumps({"blocks_per_module": [1, 1, 1]}))
    assert not is_classifier_export(tmp_path / "pose")


# --- nasplat predict -----------------------------------------------------------------------------
def _predict(*args: str) -> object:
    return CliRunner().invoke(app, ["predict", *args])


def test_nasplat_predict_prints_the_top_k_of_each_image_and_writes_predictions_json(trained, exported,
                                                                                    tmp_path: Path) -> None:
    experiment, _ = trained
    out, _ = exported
    files = _val_files(experiment)
    folder = files[0].parent  # class_00: 4 images
    res = _predict(str(out), str(folder), str(files[-1]), "--out", str(tmp_path / "pred"), "--top-k", "3")
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    inputs = sorted(folder.glob("*.png")) + [files[-1]]
    assert len(lines) == len(inputs) == 5
    doc = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert (doc["model"], doc["top_k"]) == (str(out), 3)
    want = ClassifierPredictor(out).topk([Image.open(p) for p in inputs], 3)
    assert [r["file"] for r in doc["images"]] == [str(p) for p in inputs]
    for line, record, top in zip(lines, doc["images"], want):
        m = LINE.match(line)
        assert m is not None, line
        assert m["path"] == record["file"]
        assert [(r["class"], r["prob"]) for r in record["top"]] == pytest.approx(top)
        assert m["top"] == ", ".join(f"{c} {p:.3f}" for c, p in top)
    assert "predictions.json" in res.stderr


def test_nasplat_predict_warns_of_an_unreadable_image_and_goes_on(trained, exported, tmp_path: Path) -> None:
    experiment, _ = trained
    out, _ = exported
    images = tmp_path / "images"
    images.mkdir()
    for f in _val_files(experiment)[:2]:
        shutil.copy(f, images / f"{f.parent.name}_{f.name}")
    (images / "broken.png").write_bytes(b"not a png")
    res = _predict(str(out), str(images), "--out", str(tmp_path / "pred"), "--top-k", "1")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(images / "broken.png") in warnings[0]
    assert len(res.stdout.strip().splitlines()) == 2
    doc = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert [Path(r["file"]).name for r in doc["images"]] == ["class_00_00000.png", "class_00_00001.png"]


@pytest.mark.parametrize("value", ["0", "5", "-1"])
def test_a_top_k_outside_the_classes_is_one_line_and_exit_2(trained, exported, tmp_path: Path, value: str) -> None:
    experiment, _ = trained
    out, _ = exported
    res = _predict(str(out), str(_val_files(experiment)[0]), "--out", str(tmp_path / "pred"), "--top-k", value)
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [res.output.strip()]
    assert "--top-k" in res.output and "1 to 4" in res.output
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize("damage", ["truncated", "wrong type"])
def test_a_corrupt_meta_json_is_one_line_naming_it_and_exit_2(trained, exported, tmp_path: Path, damage: str) -> None:
    experiment, _ = trained
    out, meta = exported
    broken = Path(shutil.copytree(out, tmp_path / "broken"))
    text = (out / "meta.json").read_text()
    if damage == "truncated":
        (broken / "meta.json").write_text(text[: len(text) // 2])
    else:
        (broken / "meta.json").write_text(json.dumps({**meta, "classes": "class_00"}))
    assert is_classifier_export(broken)  # its own reader says what is wrong, not the pose task's
    res = _predict(str(broken), str(_val_files(experiment)[0]), "--out", str(tmp_path / "pred"))
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [res.output.strip()]
    assert res.output.startswith("nasplat: error: ") and str(broken / "meta.json") in res.output
    if damage == "wrong type":
        assert "classes" in res.output
    assert not (tmp_path / "pred").exists()
