"""`nasplat data synth|check` and `nasplat eval` through the typer app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from nasplat.cli.data import register as register_data
from nasplat.cli.eval import register as register_eval
from nasplat.data import annotation_path
from nasplat.data.keypoints import PART_FIELDS, PARTS
from nasplat.errors import DataError
from nasplat.metrics import make_results, write_results


def _app() -> typer.Typer:
    app = typer.Typer()
    register_data(app)
    register_eval(app)
    return app


def _error(r) -> str:  # noqa: ANN001
    """The error of a failed invocation: the DataError itself, or, once `nasplat.cli.main` has been
    imported (it guards every registered command), its one line on stderr with exit status 2."""
    if isinstance(r.exception, DataError):
        return str(r.exception)
    assert r.exit_code == 2, r.output
    return r.output


def test_synth_then_check_then_eval(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ds"
    r = runner.invoke(_app(), ["data", "synth", "--out", str(out), "--train", "3", "--val", "2", "--seed", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(_app(), ["data", "check", str(out), "--json"])
    assert r.exit_code == 0, r.output
    counts = json.loads(r.output)
    assert counts["train"]["images"] == 3 and counts["val"]["images"] == 2

    gt = annotation_path(out, "val")
    anns = [a for a in json.loads(gt.read_text())["annotations"] if not a["iscrowd"]]
    kps = np.stack([np.concatenate([np.asarray(a[PART_FIELDS[p]], float) for p in PARTS]).reshape(133, 3) for a in anns])
    pred = tmp_path / "pred.json"
    write_results(pred, make_results([a["image_id"] for a in anns], kps, np.ones(len(anns))))
    r = runner.invoke(_app(), ["eval", "--gt", str(gt), "--pred", str(pred), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)  # the steps go to stderr
    assert set(report) == {"body", "foot", "face", "hand", "wholebody"}
    assert report["body"]["AP"] == 1.0
    assert all(0.0 <= m[k] <= 1.0 for m in report.values() for k in ("AP", "AR"))

    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    r = runner.invoke(_app(), ["eval", "--gt", str(gt), "--pred", str(empty)])
    assert "results list is empty" in _error(r) and str(empty) in _error(r)


def test_check_of_a_broken_dataset_raises_data_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(_app(), ["data", "check", str(tmp_path)])
    assert "coco_wholebody_train_v1.0.json" in _error(r)


def _hand_box_widths(root: Path) -> np.ndarray:
    anns = json.loads(annotation_path(root, "train").read_text())["annotations"]
    boxes = [a["lefthand_box"] for a in anns if not a["iscrowd"] and a["lefthand_valid"]]
    heights = [a["bbox"][3] for a in anns if not a["iscrowd"] and a["lefthand_valid"]]
    return np.asarray([max(b[2], b[3]) / h for b, h in zip(boxes, heights)])


def test_synth_part_sizes_are_options_and_out_of_range_is_rejected(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["data", "synth", "--train", "4", "--val", "1", "--seed", "3"]
    assert runner.invoke(_app(), [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    r = runner.invoke(_app(), [*args, "--out", str(tmp_path / "b"), "--hand-length", "0.18"])
    assert r.exit_code == 0, r.output
    # the same people (same seed), hands 1.5x longer: their boxes grow by about that factor
    ratio = np.median(_hand_box_widths(tmp_path / "b")) / np.median(_hand_box_widths(tmp_path / "a"))
    assert 1.3 < ratio < 1.7
    r = runner.invoke(_app(), [*args, "--out", str(tmp_path / "c"), "--hand-length", "0.9"])
    assert "--hand-length" in _error(r)


def test_synth_refuses_an_empty_split_before_writing_anything(tmp_path: Path) -> None:
    runner = CliRunner()
    for train, val, name in (("0", "0", "--train"), ("0", "2", "--train"), ("3", "0", "--val"), ("-1", "2", "--train")):
        out = tmp_path / f"ds{train}_{val}"
        r = runner.invoke(_app(), ["data", "synth", "--out", str(out), "--train", train, "--val", val])
        line = _error(r)
        assert name in line and "at least 1" in line, line
        assert not out.exists()
    help_text = runner.invoke(_app(), ["data", "synth", "--help"]).output
    assert help_text.count("at least 1") == 2, help_text


def test_generate_dataset_refuses_an_empty_split(tmp_path: Path) -> None:
    from nasplat.data.synth import generate_dataset

    with pytest.raises(DataError, match="at least 1"):
        generate_dataset(tmp_path / "ds", 2, 0)
    assert not (tmp_path / "ds").exists()
