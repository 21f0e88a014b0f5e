"""`export_best`: the export folder with its ONNX graph and card, one registered model version in
the experiment's tracking store per distinct export (the same inputs again write and register
nothing), and the phase recorded."""

from __future__ import annotations

import dataclasses
import json

import torch


def test_export_best_writes_the_folder_registers_a_version_and_marks_the_phase(tmp_path, trained_tiny):
    from mlflow.tracking import MlflowClient

    from nasplat.config.experiment import TrackingConfig
    from nasplat.orchestration.phases import Phase, Phases
    from nasplat.orchestration.run import export_best
    from nasplat.subnet.evaluator import latest_checkpoint

    torch.set_num_threads(1)
    checkpoint = latest_checkpoint(trained_tiny)
    experiment = dataclasses.replace(trained_tiny, output_dir=tmp_path / "out",
                                     tracking=TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db"))
    arch = experiment.space.min_arch()
    out, meta, version = export_best(experiment, arch, checkpoint=checkpoint, origin={"study": "tiny", "trial": 0},
                                     latency=None)
    assert out == experiment.output_dir / "exports" / "best"
    assert {p.name for p in out.iterdir()} >= {"model.pt", "arch.json", "meta.json", "model.onnx", "MODEL_CARD.md"}
    assert meta["onnx"]["verification"]["argmax_agreement"] == 1.0
    assert Phases(experiment).current().phase == Phase.EXPORTED.value

    _, _, again = export_best(experiment, arch, checkpoint=checkpoint, latency=None)
    assert (version.version, again.version) == ("1", "2")
    client = MlflowClient(tracking_uri=experiment.tracking_uri)
    assert {str(v.version) for v in client.search_model_versions(f"name='{experiment.name}'")} == {"1", "2"}

    # the same inputs again (a rerun of a finished `nasplat run`): nothing written, no new version
    stamp = (out / "model.pt").stat().st_mtime_ns
    _, meta3, same = export_best(experiment, arch, checkpoint=checkpoint, latency=None)
    assert same.version == "2" and meta3 == json.loads((out / "meta.json").read_text())
    assert (out / "model.pt").stat().st_mtime_ns == stamp
    assert {str(v.version) for v in client.search_model_versions(f"name='{experiment.name}'")} == {"1", "2"}
    assert client.get_model_version(experiment.name, "2").tags["origin.inputs"] == meta3["origin"]["inputs"]
