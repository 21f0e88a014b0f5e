"""What every MLflow writer of nasplat shares: a client bound to one tracking URI (never MLflow's
process-global fluent state), the experiment found or created with an explicit artifact location,
and errors turned into one line with any password in the URI redacted."""

from __future__ import annotations

import os
from pathlib import Path

from mlflow.tracking import MlflowClient

from nasplat.errors import NasplatError
from nasplat.store import redact_text, redact_url


def is_local(uri: str) -> bool:
    """True for a file-based tracking store (`sqlite:`, `file:` or a path), False for a server."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def tracking_error(uri: str, what: str, e: BaseException) -> NasplatError:
    """One redacted line for any tracking-store failure, naming `tracking.uri`."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return NasplatError(f"{what}: {redact_text(first, uri)}", source=redact_url(uri), key="tracking.uri")


# MLflow's HTTP client retries a refused connection for minutes by default (7 retries, backoff
# factor 2); nasplat probes the server before it starts, so a server that goes away later is
# given a bounded number of quick retries. A user's own settings win.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def client_for(uri: str) -> MlflowClient:
    """An MLflow client for `uri` (nothing is contacted yet)."""
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: MlflowClient, uri: str, name: str, artifact_dir: Path | None) -> str:
    """The id of MLflow experiment `name`, created if absent. For a local store a new experiment's
    artifacts go to `artifact_dir` (a server decides itself). Raises NasplatError (redacted)."""
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        location = None
        if artifact_dir is not None and is_local(uri):
            artifact_dir.mkdir(parents=True, exist_ok=True)
            location = artifact_dir.resolve().as_uri()
        return str(client.create_experiment(name, artifact_location=location))
    except Exception as e:  # noqa: BLE001 - one redacted line for any tracking-store failure
        raise tracking_error(uri, f"cannot open MLflow experiment {name!r}", e) from None


__all__ = ["client_for", "experiment_id", "is_local", "tracking_error"]
