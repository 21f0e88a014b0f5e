from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner


def test_subnet_eval_json_and_export(tmp_path, trained_tiny):
    from nasplat.cli.main import app
    from nasplat.subnet.export import load_exported

    runner = CliRunner()
    res = runner.invoke(app, ["subnet", "eval", str(trained_tiny.path), "--arch", "min", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["arch"] == trained_tiny.space.min_arch().to_flat()
    assert set(out["gflops"]) == {"body", "face", "hand", "total"}
    assert set(out["metrics"]["wholebody"]) == {"AP", "AR"}

    arch_file = tmp_path / "arch.json"
    arch_file.write_text(trained_tiny.space.max_arch().to_json())
    res = runner.invoke(app, ["subnet", "export", str(trained_tiny.path), "--arch", str(arch_file),
                              "--out", str(tmp_path / "exp"), "--no-latency"])
    assert res.exit_code == 0, res.output
    assert load_exported(tmp_path / "exp").arch == trained_tiny.space.max_arch()
    assert (tmp_path / "exp" / "model.onnx").is_file() and (tmp_path / "exp" / "MODEL_CARD.md").is_file()


def test_a_bad_arch_is_one_error_line_and_exit_2(trained_tiny, tmp_path):
    from nasplat.cli.main import app

    res = CliRunner().invoke(app, ["subnet", "eval", str(trained_tiny.path), "--arch", str(tmp_path / "nope.json")])
    assert res.exit_code == 2
    assert "nope.json" in res.output and "Traceback" not in res.output


def test_train_on_a_missing_experiment_file_is_exit_2(tmp_path):
    from nasplat.cli.main import app

    res = CliRunner().invoke(app, ["train", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "missing.yaml" in res.output


@pytest.mark.parametrize("device", ["banana", "cuda:99", "meta"])
def test_a_bad_device_is_one_error_line_naming_what_this_machine_has(trained_tiny, device, tmp_path):
    from nasplat.cli.main import app
    from nasplat.subnet.inference import available_devices

    for command in (["subnet", "eval", str(trained_tiny.path)], ["subnet", "export", str(trained_tiny.path), "--out", str(tmp_path / "x")]):
        res = CliRunner().invoke(app, [*command, "--device", device])
        assert res.exit_code == 2, res.output
        (line,) = res.output.strip().splitlines()
        assert line.startswith("nasplat: error: --device: ") and repr(device) in line, line
        assert line.endswith(f"available here: {', '.join(available_devices())}"), line
    assert not (tmp_path / "x").exists()


def test_subnet_eval_checks_the_device_before_reading_the_experiment(tmp_path):
    from nasplat.cli.main import app

    res = CliRunner().invoke(app, ["subnet", "eval", str(tmp_path / "missing.yaml"), "--device", "cuda:99"])
    assert res.exit_code == 2 and "--device" in res.output and "missing.yaml" not in res.output, res.output


def test_resolve_device_gives_the_torch_device_or_one_config_error():
    import torch

    from nasplat.errors import ConfigError
    from nasplat.subnet.inference import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("banana", "cuda:99", "meta", ""):
        with pytest.raises(ConfigError, match="available here: cpu") as e:
            resolve_device(bad)
        assert e.value.key == "--device"


def test_subnet_export_shows_each_step_on_stderr_as_it_happens(trained_tiny, tmp_path):
    import re

    from nasplat.cli.main import app

    out = tmp_path / "exp"
    res = CliRunner().invoke(app, ["subnet", "export", str(trained_tiny.path), "--arch", "min", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.stderr.strip().splitlines()
    steps = ["loading the supernet checkpoint", "recalibrating batch norm on ", "evaluating on ", "writing model.pt",
             "exporting model.onnx", "checking it against PyTorch", "writing model.ort.onnx",
             "timing PyTorch and onnxruntime", "writing meta.json", "done in "]
    assert [next((s for s in steps if line.startswith(s)), line) for line in lines] == steps, lines
    assert re.fullmatch(r"recalibrating batch norm on \d+ training images \.\.\.", lines[1]), lines[1]
    assert re.fullmatch(rf"done in \d+\.\d s: {re.escape(str(out))}", lines[-1]), lines[-1]
    assert res.stdout.strip().splitlines() == [res.stdout.strip()] and res.stdout.startswith(f"exported to {out} (")
