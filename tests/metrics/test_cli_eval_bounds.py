"""`nasplat eval` reads its files with a bound: /dev/zero (or a pipe) and a file over the size limit
are one line, exit 2, at once, whatever memory the machine has."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from nasplat.cli.main import app


def test_dev_zero_and_an_oversized_file_are_one_line_at_once(tmp_path, monkeypatch, tiny_data):
    from nasplat import files
    from nasplat.metrics import wholebody

    gt = tiny_data / "annotations" / "coco_wholebody_val_v1.0.json"
    start = time.monotonic()
    res = CliRunner().invoke(app, ["eval", "--gt", str(gt), "--pred", "/dev/zero"])
    assert res.exit_code == 2 and time.monotonic() - start < 30
    *steps, line = res.output.strip().splitlines()
    assert line == "nasplat: error: /dev/zero: cannot read results: not a regular file"
    assert steps == [f"reading {gt} ...", "reading /dev/zero (0.0 MiB) ..."]  # progress, then the one error

    limit = gt.stat().st_size  # the ground truth fits, a results file twice its size does not
    big = tmp_path / "results.json"
    big.write_text("[" + ", ".join(["{}"] * limit) + "]")
    monkeypatch.setattr(files.read_json, "__kwdefaults__", {**files.read_json.__kwdefaults__, "limit": limit})
    monkeypatch.setattr(wholebody, "MAX_RESULTS_BYTES", limit)
    res = CliRunner().invoke(app, ["eval", "--gt", str(gt), "--pred", str(big)])
    assert res.exit_code == 2
    line = res.output.strip().splitlines()[-1]
    assert f"{big}: cannot read results: it is " in line and " limit" in line, line


def test_eval_shows_its_steps_and_states_its_bounds(tiny_data, tmp_path):
    from nasplat.data.coco import load_annotations
    from nasplat.metrics.wholebody import make_results, write_results

    gt = tiny_data / "annotations" / "coco_wholebody_val_v1.0.json"
    anns = load_annotations(gt, check_images=False)
    pred = tmp_path / "results.json"
    import numpy as np

    kp = np.stack([a.keypoints for a in anns.annotations])
    write_results(pred, make_results([a.image_id for a in anns.annotations], kp, [1.0] * len(kp)))
    res = CliRunner().invoke(app, ["eval", "--gt", str(gt), "--pred", str(pred), "--json"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0] == f"reading {gt} ..." and lines[1].startswith(f"reading {pred} (")
    assert lines[2] == f"checking {len(kp)} results ..."
    assert [ln.split(" (")[0] for ln in lines[3:-1]] == [
        f"evaluating {p}" for p in ("body", "foot", "face", "lefthand", "righthand", "wholebody")]
    help_text = CliRunner().invoke(app, ["eval", "--help"]).output
    assert "512 MiB" in help_text and "4 GiB" in help_text
