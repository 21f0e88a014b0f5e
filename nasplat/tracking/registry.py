"""The MLflow Model Registry: one model version per export of a subnet.

`register_export` logs one run (`export <name>`) in the experiment's MLflow experiment with the
arch as params and the per-part AP and GFLOPs as metrics, saves the static network in the
`mlflow.pytorch` flavour under the run's `model` artifact with the export's files (`model.onnx`,
`MODEL_CARD.md`, `meta.json`, `arch.json`) as the flavour's extra files, and registers that
artifact as a new version of the registered model. `mlflow models`, the UI's Models page and
`mlflow.pytorch.load_model("models:/<name>/<version>")` then find it.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pytorch
import torch
from mlflow.exceptions import MlflowException

from nasplat.tracking.client import client_for, experiment_id, tracking_error

__all__ = ["RegisteredVersion", "find_version", "register_export"]


@dataclass(frozen=True)
class RegisteredVersion:
    name: str  # the registered model
    version: str
    run_id: str  # the export run holding the `model` artifact
    uri: str  # models:/<name>/<version>


def _pickle_format() -> dict[str, str]:
    # MLflow >= 3.x defaults to the `pt2` (torch.export) format, which cannot trace the
    # data-dependent part-box decoding; the pickle format stores the module as it is.
    params = inspect.signature(mlflow.pytorch.save_model).parameters
    return {"serialization_format": "pickle"} if "serialization_format" in params else {}


def _requirements() -> list[str]:
    # Given, not inferred: inference loads the model in a subprocess (seconds) to guess them.
    return [f"torch=={torch.__version__.split('+')[0]}", "nasplat"]


def find_version(uri: str, model_name: str, tag: str, value: str) -> RegisteredVersion | None:
    """The newest version of `model_name` whose tag `tag` is `value`, or None (no such model,
    or none tagged so). Raises NasplatError (tracking.uri, password redacted)."""
    client = client_for(uri)
    try:
        versions = client.search_model_versions(f"name='{model_name}'")
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise tracking_error(uri, f"cannot read model {model_name!r}", e) from None
    except Exception as e:  # noqa: BLE001 - one redacted line for any tracking-store failure
        raise tracking_error(uri, f"cannot read model {model_name!r}", e) from None
    found = [v for v in versions if (v.tags or {}).get(tag) == value]
    if not found:
        return None
    v = max(found, key=lambda v: int(v.version))
    return RegisteredVersion(model_name, str(v.version), str(v.run_id), f"models:/{model_name}/{v.version}")


def register_export(
    uri: str,
    experiment: str,
    model_name: str,
    network: torch.nn.Module,
    meta: Mapping[str, Any],
    files: Sequence[Path],
    *,
    artifact_dir: Path | str | None = None,
) -> RegisteredVersion:
    """Log the exported `network` (a static ZoomNet, eval mode) with `files` to a new run of MLflow
    experiment `experiment` at tracking URI `uri` and register it as a new version of
    `model_name`. `meta` is the export's meta dict (arch, metrics, GFLOPs, origin).

    Raises NasplatError (tracking.uri, password redacted) when the store cannot be written.
    """
    client = client_for(uri)
    exp_id = experiment_id(client, uri, experiment, artifact_dir)
    origin = {f"origin.{k}": str(v) for k, v in (meta.get("origin") or {}).items()}
    try:
        run = client.create_run(exp_id, run_name=f"export {meta['name']}",
                                tags={"nasplat.role": "export", "nasplat.kind": "export", "nasplat.export": str(meta["name"]),
                                      **origin})
        run_id = run.info.run_id
        params = [mlflow.entities.Param(k, str(v)) for k, v in sorted(meta["arch"].items())]
        metrics = [mlflow.entities.Metric(f"gflops.{k}", float(v), 0, 0) for k, v in meta["gflops"].items()]
        for part, m in (meta.get("metrics") or {}).items():  # {part: {metric: value}} or {metric: value}
            values = m.items() if isinstance(m, dict) else [(None, m)]
            metrics += [mlflow.entities.Metric(part if k is None else f"{part}.{k}", float(v), 0, 0) for k, v in values]
        metrics.append(mlflow.entities.Metric("params", float(meta["params"]), 0, 0))
        client.log_batch(run_id, metrics=metrics, params=params)
        with tempfile.TemporaryDirectory(prefix="nasplat-register-") as tmp:
            local = Path(tmp) / "model"
            mlflow.pytorch.save_model(network, str(local), extra_files=[str(f) for f in files],
                                      pip_requirements=_requirements(), **_pickle_format())
            client.log_artifacts(run_id, str(local), "model")
        for f in files:
            if f.suffix == ".md":  # the card also at the run's top level, where the UI opens it
                client.log_artifact(run_id, str(f))
        try:
            client.create_registered_model(model_name, description=f"{meta.get('model_name', 'ZoomNet')} subnets exported by nasplat from {experiment}")
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{run.info.artifact_uri}/model"
        version = client.create_model_version(model_name, source, run_id=run_id,
                                              tags={"nasplat.export": str(meta["name"]), **origin})
        client.set_terminated(run_id)
    except Exception as e:  # noqa: BLE001 - one redacted line for any tracking-store failure
        raise tracking_error(uri, f"cannot register model {model_name!r}", e) from None
    return RegisteredVersion(model_name, str(version.version), run_id, f"models:/{model_name}/{version.version}")
