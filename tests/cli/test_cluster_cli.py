"""`nasplat cluster template KIND EXP.yaml --out DIR`: lists what it wrote and the next command;
a bad kind or a folder holding other files is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from nasplat.cli.main import app
from tests.conftest import write_tiny_experiment

ROOT = Path(__file__).resolve().parents[2]


def _experiment(tmp_path: Path) -> Path:
    path = write_tiny_experiment(tmp_path / "exp", tmp_path / "data")
    path.write_text(path.read_text() + "storage_path: s3://bucket/prefix\n")
    return path


def _nasplat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasplat", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_kuberay_template_prints_the_files_and_the_next_command(tmp_path):
    out = tmp_path / "k8s"
    res = CliRunner().invoke(app, ["cluster", "template", "kuberay", str(_experiment(tmp_path)), "--out", str(out),
                                   "--image", "ghcr.io/me/nasplat:1"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[:-1] == [str(out / "rayjob.yaml"), str(out / "README.md")]
    assert lines[-1] == f"next: kubectl apply -f {out / 'rayjob.yaml'}"
    job = next(yaml.safe_load_all((out / "rayjob.yaml").read_text()))
    assert job["kind"] == "RayJob"
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/me/nasplat:1"
    assert "kubectl apply -f rayjob.yaml" in (out / "README.md").read_text()


def test_slurm_and_ray_up_name_their_next_command(tmp_path):
    exp = _experiment(tmp_path)
    res = CliRunner().invoke(app, ["cluster", "template", "slurm", str(exp), "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == f"next: sbatch {tmp_path / 's' / 'nasplat.sbatch'}"
    res = CliRunner().invoke(app, ["cluster", "template", "ray-up", str(exp), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1].startswith(f"next: ray up -y {tmp_path / 'r' / 'cluster.yaml'}")


def test_bad_kind_is_one_line_and_exit_2(tmp_path):
    res = _nasplat("cluster", "template", "nomad", str(_experiment(tmp_path)), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "nomad" in lines[0] and "kuberay, ray-up, slurm" in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_different_file_in_out_is_one_line_naming_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "nasplat.sbatch").write_text("#!/bin/bash\n# mine\n")
    res = _nasplat("cluster", "template", "slurm", str(_experiment(tmp_path)), "--out", str(out))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "nasplat.sbatch" in lines[0], res.stderr
    assert (out / "nasplat.sbatch").read_text() == "#!/bin/bash\n# mine\n"


def test_help_has_an_example():
    res = CliRunner().invoke(app, ["cluster", "template", "--help"])
    assert res.exit_code == 0
    assert "Example:" in res.output and "nasplat cluster template kuberay" in res.output
