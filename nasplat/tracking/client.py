"""What every MLflow writer of nasplat shares: a client bound to one tracking URI (never MLflow's
process-global fluent state), the experiment found or created with an explicit artifact location,
and errors turned into one line with any password in the URI redacted."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from urllib.parse import quote

from mlflow.tracking import MlflowClient

from nasplat.errors import NasplatError
from nasplat.store import redact_text, redact_url

log = logging.getLogger(__name__)

SOURCE_NAME = "mlflow.source.name"  # what the UI shows as a run's source
NOTE = "mlflow.note.content"  # a run's description (markdown) in the UI


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
# Its artifact repositories for object stores (s3://, gs://) draw a progress bar on stderr for every
# download, a registered model's included; nasplat's own lines are the console's.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def client_for(uri: str) -> MlflowClient:
    """An MLflow client for `uri` (nothing is contacted yet)."""
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: MlflowClient, uri: str, name: str, artifact_dir: Path | str | None) -> str:
    """The id of MLflow experiment `name`, created if absent. For a local store a new experiment's
    artifacts go to `artifact_dir` (a folder, or an object-store URI such as s3://bucket/prefix,
    which MLflow reaches with the same AWS_* variables); a server puts them under its default
    artifact root. An existing
    local experiment whose artifacts live elsewhere is kept (MLflow cannot move them) with a
    warning naming both places. Raises NasplatError (redacted)."""
    try:
        exp = client.get_experiment_by_name(name)
        wanted = None
        if artifact_dir is not None and is_local(uri):
            wanted = artifact_dir if isinstance(artifact_dir, str) else artifact_dir.resolve().as_uri()
        if exp is not None:
            if wanted is not None and exp.artifact_location.rstrip("/") != wanted:
                log.warning("MLflow experiment %r keeps its artifacts at %s, not %s (it was created there)",
                            name, exp.artifact_location, wanted)
            return str(exp.experiment_id)
        if isinstance(artifact_dir, Path) and wanted is not None:
            artifact_dir.mkdir(parents=True, exist_ok=True)
        return str(client.create_experiment(name, artifact_location=wanted))
    except Exception as e:  # noqa: BLE001 - one redacted line for any tracking-store failure
        raise tracking_error(uri, f"cannot open MLflow experiment {name!r}", e) from None


def command_line() -> str:
    """The nasplat command this process runs, for a run's source: `nasplat run quickstart.yaml`
    (paths shortened to their names: the UI shows a source only after its last `/`). A process
    that is not the CLI (a test, a notebook) is named by its program (`pytest`)."""
    prog = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    if prog.name == "__main__.py":  # python -m <package>
        prog = prog.parent
    if prog.name != "nasplat":
        return prog.name
    args = [Path(a).name if "/" in a and not a.startswith("-") else a for a in sys.argv[1:]]
    return " ".join(["nasplat", *args])


PARETO_FILTER = "tags.pareto = 'true'"
BY_AP = "metrics.`wholebody_AP`"


def runs_view_url(base: str, experiment: str, *, search_filter: str = PARETO_FILTER, order_by: str = BY_AP,
                  ascending: bool = False) -> str:
    """The MLflow UI's table of the experiment's runs at `base` (e.g. `http://127.0.0.1:5000`) in
    the classic ML view (MLflow 3 opens on its GenAI page otherwise): by default only the
    Pareto-front trials, best whole-body AP first. The filter and the order are part of the URL
    (URL-encoded), so they replace whatever view the browser remembers."""
    query = "&".join([
        "workflowType=machine_learning",
        "searchFilter=" + quote(search_filter, safe=""),
        "orderByKey=" + quote(order_by, safe=""),
        f"orderByAsc={str(ascending).lower()}",
    ])
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs?{query}"


__all__ = ["BY_AP", "NOTE", "PARETO_FILTER", "SOURCE_NAME", "client_for", "command_line", "experiment_id", "is_local",
           "runs_view_url", "tracking_error"]
