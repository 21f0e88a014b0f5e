"""Where an experiment's MLflow runs live, decided on the driver before any phase runs.

`open_experiment(experiment)` finds or creates the MLflow experiment with its artifacts under
`<output_dir>/mlartifacts` (a local store) or the server's default artifact root, so a training
run logged from a Ray worker (whose working directory is Ray's) and the search run logged by the
driver share one experiment and one artifact location. `supernet_run` is the link from the search
run to the supernet's training run; `runs_url` the UI's view of the Pareto front.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from nasplat.config import Experiment
from nasplat.errors import NasplatError
from nasplat.files import shell_command
from nasplat.orchestration.phases import Phases
from nasplat.store.costs import phase_cost, phase_costs
from nasplat.tasks import get_task
from nasplat.tracking.client import client_for, experiment_id, is_local, runs_view_url, tracking_error
from nasplat.tracking.costs import cost_metrics, log_cost_metrics, pieces

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id.txt"  # beside the checkpoints: a resumed training continues its run
ARTIFACTS = "mlartifacts"  # under output_dir: the artifact location of a local store
UI_PORT = 5000  # `nasplat ui`'s default port


def open_experiment(experiment: Experiment) -> str:
    """The id of the experiment's MLflow experiment, created with its artifact location if
    absent. Raises NasplatError (URI redacted) when the tracking store cannot be opened."""
    uri = experiment.tracking_uri
    return experiment_id(client_for(uri), uri, experiment.tracking_experiment, experiment.artifact_location)


def find_experiment(experiment: Experiment) -> str | None:
    """The id of the experiment's MLflow experiment, None before anything was logged (nothing is
    created). Raises NasplatError (URI redacted) when the tracking store cannot be opened."""
    uri = experiment.tracking_uri
    try:
        found = client_for(uri).get_experiment_by_name(experiment.tracking_experiment)
    except Exception as e:  # noqa: BLE001 - one redacted line for any tracking-store failure
        raise tracking_error(uri, f"cannot open MLflow experiment {experiment.tracking_experiment!r}", e) from None
    return None if found is None else str(found.experiment_id)


def supernet_run(experiment: Experiment) -> str | None:
    """The MLflow run id of the experiment's supernet training, if it was logged."""
    path = experiment.checkpoint_dir / RUN_ID_FILE
    return path.read_text().strip() or None if path.is_file() else None


def ui_base(experiment: Experiment, port: int = UI_PORT) -> str:
    """Where the MLflow UI of the experiment is: `nasplat ui`'s 127.0.0.1 `port` for a local
    store, the tracking server itself otherwise (its URL without any credentials)."""
    uri = experiment.tracking_uri
    if is_local(uri):
        base = f"http://127.0.0.1:{port}"
    else:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        base = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"
    return base


def runs_url(experiment: Experiment, experiment_id: str, port: int = UI_PORT) -> str:
    """The UI's runs view of the Pareto front (`tracking.client.runs_view_url` at `ui_base`), best
    first by the task's objective."""
    return runs_view_url(ui_base(experiment, port), experiment_id,
                         order_by=f"metrics.`{get_task(experiment.task).objective}`")


def ui_hint(experiment: Experiment, experiment_file: Path | str, experiment_id: str) -> str:
    """Where to see the Pareto front, printed at the end of a search: the runs view URL, after
    `nasplat ui` for a local store."""
    url = runs_url(experiment, experiment_id)
    if is_local(experiment.tracking_uri):
        return f"Pareto front in MLflow: run `{shell_command('nasplat', 'ui', experiment_file)}`, then open {url}"
    return f"Pareto front in MLflow: {url}"


def log_costs(experiment: Experiment, study_name: str | None = None) -> str | None:
    """Log the experiment's phase costs as summed in its study store (`cost.<phase>.*` and
    `cost.total.*`, `tracking.costs.cost_metrics`) on the search run of `study_name` (default: the
    experiment's current study). Returns the run's id; None when nothing was recorded, there is no
    study yet (the supernet's cost is logged when the search ends) or the study has no search run.
    Creates nothing. Raises StoreError, NasplatError (URLs redacted)."""
    costs = phase_costs(experiment.storage_url, experiment.name)
    if study_name is None:
        state = Phases(experiment).current()
        study_name = state.study_name if state is not None else None
    if not costs or study_name is None:
        return None
    return log_cost_metrics(experiment.tracking_uri, experiment.tracking_experiment, study_name, cost_metrics(costs),
                            pieces(costs))


@contextmanager
def tracked_phase_cost(experiment: Experiment, phase: str, *, cpus: float, gpus: float = 0.0,
                       track: bool = True) -> Iterator[None]:
    """`store.costs.phase_cost` for the block, then, with `track`, `log_costs` however the block
    ended. The store holds the costs: a tracking store that fails here costs a warning (the next
    phase logs the sums again), not the phase."""
    try:
        with phase_cost(experiment.storage_url, experiment.name, phase, cpus=cpus, gpus=gpus):
            yield
    finally:
        if track:
            try:
                log_costs(experiment)
            except NasplatError as e:
                log.warning("%s", e)


__all__ = ["ARTIFACTS", "RUN_ID_FILE", "UI_PORT", "find_experiment", "log_costs", "open_experiment", "runs_url",
           "supernet_run", "tracked_phase_cost", "ui_base", "ui_hint"]
