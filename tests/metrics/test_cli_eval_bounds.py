"""`nasplat eval` reads its files with a bound: /dev/zero (or a pipe) and a file over the size limit
are one line, exit 2, at once, whatever memory the machine has."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from nasplat.cli.main import app


def test_dev_zero_and_an_oversized_file_are_one_line_at_once(tmp_path, monkeypatch, tiny_data):
    from nasplat import files

    gt = tiny_data / "annotations" / "coco_wholebody_val_v1.0.json"
    start = time.monotonic()
    res = CliRunner().invoke(app, ["eval", "--gt", str(gt), "--pred", "/dev/zero"])
    assert res.exit_code == 2 and time.monotonic() - start < 30
    (line,) = res.output.strip().splitlines()
    assert line == "nasplat: error: /dev/zero: cannot read results: not a regular file"

    limit = gt.stat().st_size  # the ground truth fits, a results file twice its size does not
    big = tmp_path / "results.json"
    big.write_text("[" + ", ".join(["{}"] * limit) + "]")
    monkeypatch.setattr(files.read_json, "__kwdefaults__", {**files.read_json.__kwdefaults__, "limit": limit})
    res = CliRunner().invoke(app, ["eval", "--gt", str(gt), "--pred", str(big)])
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert f"{big}: cannot read results: it is " in line and " limit" in line, line
