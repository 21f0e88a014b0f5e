"""`nasplat latency`: a table holding a negative or non-finite number, and a profile `--out` that
cannot be written, are each one line and exit 2 (the latter before anything is profiled)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasplat.cli.main import app
from nasplat.space import load_space
from tests.latency._tables import synthetic_table

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"


def _one_error_line(res) -> str:  # noqa: ANN001
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasplat: error: "), res.output
    return lines[0]


@pytest.mark.parametrize("value", [-305.8, float("nan")])
def test_predict_refuses_a_table_with_a_negative_or_nan_correction(tmp_path: Path, value: float) -> None:
    data = synthetic_table(load_space(QUICKSTART)).to_dict()
    data["correction"]["offset_ms"] = value
    lut = tmp_path / "lut.json"
    lut.write_text(json.dumps(data))
    line = _one_error_line(CliRunner().invoke(app, ["latency", str(QUICKSTART), "--arch", "min", "--lut", str(lut)]))
    assert str(lut) in line and "correction.offset_ms" in line and " ms" not in line.split("correction.offset_ms")[0]


def _never_profile(*args: object, **kwargs: object) -> None:
    raise AssertionError("profiled before checking --out")


@pytest.mark.parametrize("out", ["a_file/lut.json", "a_dir"])
def test_profile_into_a_place_it_cannot_write_fails_before_profiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     out: str) -> None:
    monkeypatch.setattr("nasplat.latency.profile.profile_space", _never_profile)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_dir").mkdir()
    line = _one_error_line(CliRunner().invoke(app, ["latency", "profile", str(QUICKSTART), "--out", str(tmp_path / out)]))
    assert str(tmp_path / out.split("/")[0]) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file"]  # and no probe file left behind
    assert list((tmp_path / "a_dir").iterdir()) == []


def test_profile_checks_and_creates_the_folder_of_out_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def profile(space, settings, out, **kwargs):  # noqa: ANN001, ANN202
        seen.append(out.parent.is_dir())
        raise KeyboardInterrupt  # stop here: only the check before profiling is under test

    monkeypatch.setattr("nasplat.latency.profile.profile_space", profile)
    out = tmp_path / "new" / "deeper" / "lut.json"
    CliRunner().invoke(app, ["latency", "profile", str(QUICKSTART), "--out", str(out)])
    assert seen == [True] and list(out.parent.iterdir()) == []


def test_the_missing_table_hint_is_a_command_that_can_be_copied(tmp_path: Path) -> None:
    """The hint names paths with a space quoted: pasted into a shell, it profiles the right space
    into the right file."""
    import shlex

    from nasplat.config import load_experiment
    from nasplat.errors import ConfigError
    from nasplat.orchestration.latency import latency_cost

    folder = tmp_path / "my runs"
    folder.mkdir()
    (folder / "space one.yaml").write_text(QUICKSTART.read_text())
    path = folder / "exp.yaml"
    path.write_text(f"name: t\nspace: space one.yaml\ntrainer: {ROOT / 'trainers' / 'cpu_small.yaml'}\n"
                    "data: {root: data}\noutput_dir: out\n"
                    "search: {budget_latency_ms: 10, latency_lut: lut files/lut.json}\n")
    with pytest.raises(ConfigError) as e:
        latency_cost(load_experiment(path), profile=False)
    command = str(e.value).split("`")[-2]
    assert shlex.split(command) == ["nasplat", "latency", "profile", str(folder / "space one.yaml"),
                                    "--out", str(folder / "lut files" / "lut.json")]
