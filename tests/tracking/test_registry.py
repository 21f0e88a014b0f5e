"""An export registered in the MLflow Model Registry loads back with `mlflow.pytorch.load_model`
and gives the same heatmaps; every export is one more version."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import torch

from nasplat.models import build_static
from nasplat.space import load_space

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


def _uri(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/mlflow.db"
    uri = os.environ.get("NASPLAT_TEST_MLFLOW_URI")  # `.ci/run` starts `mlflow server` on 127.0.0.1
    if not uri:
        pytest.skip("NASPLAT_TEST_MLFLOW_URI is not set")
    return uri


def _export_files(tmp_path: Path) -> list[Path]:
    files = []
    for name, text in (("MODEL_CARD.md", "# card\n"), ("model.onnx", "not really a graph")):
        (tmp_path / name).write_text(text)
        files.append(tmp_path / name)
    return files


@pytest.mark.parametrize("kind", ["sqlite", "server"])
def test_registered_export_round_trips_and_each_export_is_a_version(tmp_path: Path, kind: str) -> None:
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    from nasplat.tracking.registry import register_export

    uri = _uri(kind, tmp_path)
    space = load_space(SPACE)
    arch = space.min_arch()
    net = build_static(arch, space.all_blocks_per_module(), seed=0).eval()
    meta = {"name": "best", "arch": arch.to_flat(), "gflops": {"body": 0.1, "face": 0.01, "hand": 0.01, "total": 0.13},
            "params": 1234, "metrics": {"wholebody": {"AP": 0.25, "AR": 0.5}}, "origin": {"study": "s", "trial": 4}}
    name = f"registry-test-{uuid.uuid4().hex[:8]}"
    files = _export_files(tmp_path)
    first = register_export(uri, name, name, net, meta, files, artifact_dir=tmp_path / "mlartifacts")
    second = register_export(uri, name, name, net, meta, files, artifact_dir=tmp_path / "mlartifacts")
    assert (first.version, second.version) == ("1", "2")

    client = MlflowClient(tracking_uri=uri)
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    run = client.get_run(first.run_id)
    assert run.data.params["body.resolution"] == str(arch.body.resolution)
    assert run.data.metrics["wholebody.AP"] == 0.25
    assert run.data.tags["origin.trial"] == "4"

    saved = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pytorch.load_model(first.uri)
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{first.run_id}/model", dst_path=str(tmp_path / "dl")))
    finally:
        mlflow.set_tracking_uri(saved)
    x = torch.randn(2, 3, *arch.body.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(net(x), loaded.eval()(x)):
            assert torch.equal(a, b)
    extra = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"MODEL_CARD.md", "model.onnx", "MLmodel"} <= extra


def test_an_unwritable_store_is_one_redacted_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasplat.errors import NasplatError
    from nasplat.tracking.registry import register_export

    space = load_space(SPACE)
    net = build_static(space.min_arch(), space.all_blocks_per_module(), seed=0)
    meta = {"name": "best", "arch": {}, "gflops": {}, "params": 1}
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # nothing listens there: fail at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(NasplatError) as err:
        register_export("http://user:s3cret@127.0.0.1:9", "e", "m", net, meta, [])
    assert "s3cret" not in str(err.value)
