"""`nasplat space show` and the CLI's error contract: one line on stderr, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _nasplat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasplat", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_space_show_json():
    r = _nasplat("space", "show", "search_spaces/zoomnas.yaml", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    names = [d["name"] for d in data["dimensions"]]
    assert "body.resolution" in names and "hand.roi_expansion" in names
    assert data["log10_size"] > 25
    assert 0 < data["min_gflops"] < data["max_gflops"]


def test_zoomnet_space_is_28_49_gflops():
    r = _nasplat("space", "show", "search_spaces/zoomnet.yaml", "--json")
    data = json.loads(r.stdout)
    assert abs(data["max_gflops"] - 28.49) / 28.49 < 0.01
    assert data["min_gflops"] == data["max_gflops"]


def test_bad_space_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "search_spaces/cpu_small.yaml").read_text().replace('"[96, 128; 32]"', '"[128, 96; 32]"'))
    r = _nasplat("space", "show", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(bad) in lines[0] and "body.resolution" in lines[0] and "inverted" in lines[0]
    assert "Traceback" not in r.stderr


def test_missing_file_is_one_line(tmp_path):
    r = _nasplat("space", "show", str(tmp_path / "none.yaml"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "file not found" in r.stderr
