"""MLflow for `nasplat validate`: one run per validation sweep, nested under the study's search run.

Params: K, init, epochs, the study and the picked study trials; metrics: per part
`<part>.kendall_tau`, `<part>.spearman_rho` and their interval bounds (`..._ci_low`, `..._ci_high`),
`top3_overlap`, `regret`; artifacts: `validation.json` (every subnet's arch, inherited and
stand-alone per-part AP) and the scatter of inherited vs stand-alone whole-body AP, one point per
subnet with the search's choice marked (`validation.png`, and `validation.html` with the trial
number on hover). The run is found by its tags (`nasplat.role` = validate, `nasplat.sweep`), so the
same validation is logged once however often the command runs; a deleted tracking store gets it
again from the study store.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param

from nasplat.files import atomic_write_text
from nasplat.tracking.client import client_for, experiment_id, tracking_error
from nasplat.tracking.plots import save_png

ROLE, STUDY, SWEEP, PARENT = "nasplat.role", "nasplat.study", "nasplat.sweep", "mlflow.parentRunId"


def validation_png(validation: Any, path: Path) -> Path:
    """Scatter of inherited (x) vs stand-alone (y) whole-body AP, the chosen subnet marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    rest = [s for s in validation.subnets if not s.chosen]
    chosen = [s for s in validation.subnets if s.chosen]
    ax.scatter([s.inherited["wholebody"] for s in rest], [s.standalone["wholebody"] for s in rest], s=24,
               c="tab:blue", label="subnets")
    ax.scatter([s.inherited["wholebody"] for s in chosen], [s.standalone["wholebody"] for s in chosen], s=90,
               marker="*", c="tab:red", label="the search's choice")
    for s in validation.subnets:
        ax.annotate(str(s.study_trial), (s.inherited["wholebody"], s.standalone["wholebody"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    wb = validation.parts["wholebody"]
    ax.set_xlabel("whole-body AP, inherited weights (the search)")
    ax.set_ylabel(f"whole-body AP, trained alone ({validation.init}, {validation.epochs} epochs)")
    ax.set_title(f"Kendall tau {wb['kendall_tau']:.2f}, Spearman rho {wb['spearman_rho']:.2f} "
                 f"(K={len(validation.subnets)})")
    return save_png(fig, ax, path)


def validation_html(validation: Any, path: Path) -> Path:
    """The same scatter with plotly, self-contained (plotly.js embedded); hover names the trial."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for chosen, name, marker in ((False, "subnets", {"color": "#1f77b4", "size": 8}),
                                 (True, "the search's choice", {"color": "#d62728", "size": 14, "symbol": "star"})):
        group = [s for s in validation.subnets if s.chosen == chosen]
        fig.add_trace(go.Scatter(x=[s.inherited["wholebody"] for s in group], y=[s.standalone["wholebody"] for s in group],
                                 mode="markers", name=name, marker=marker,
                                 text=[f"trial {s.study_trial}, {s.gflops:.4f} GFLOPs" for s in group]))
    fig.update_layout(title=f"inherited vs stand-alone whole-body AP ({validation.sweep})",
                      xaxis_title="inherited (the search)", yaxis_title=f"trained alone ({validation.init})",
                      template="plotly_white")
    atomic_write_text(fig.to_html(include_plotlyjs=True, full_html=True), path)
    return path


def _metrics(validation: Any) -> dict[str, float]:
    out: dict[str, float] = {"top3_overlap": validation.top3_overlap, "regret": validation.regret}
    for part, stats in validation.parts.items():
        for name in ("kendall_tau", "spearman_rho"):
            out[f"{part}.{name}"] = stats[name]
            out[f"{part}.{name}_ci_low"], out[f"{part}.{name}_ci_high"] = stats[f"{name}_ci"]
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def log_validation(uri: str, experiment: str, validation: Any, *, artifact_dir: Path | str | None = None) -> str:
    """Log `validation` (a `orchestration.validate.Validation`) as its run, unless that run exists.
    Returns the run's id. Raises NasplatError (URI redacted) when the store cannot be written."""
    client = client_for(uri)
    try:
        exp_id = experiment_id(client, uri, experiment, artifact_dir)
        found = client.search_runs([exp_id], max_results=1,
                                   filter_string=f"tags.`{ROLE}` = 'validate' and tags.`{SWEEP}` = '{validation.sweep}'")
        if found and found[0].info.status == "FINISHED":
            return found[0].info.run_id
        if found:
            run_id = found[0].info.run_id
        else:
            tags = {ROLE: "validate", SWEEP: validation.sweep, STUDY: validation.study}
            search = client.search_runs([exp_id], max_results=1,
                                        filter_string=f"tags.`{ROLE}` = 'search' and tags.`{STUDY}` = '{validation.study}'")
            if search:
                tags[PARENT] = search[0].info.run_id
            run_id = client.create_run(exp_id, run_name=f"validate {validation.sweep}", tags=tags).info.run_id
        now = int(time.time() * 1000)
        params = {"k": len(validation.subnets), "init": validation.init, "epochs": validation.epochs,
                  "study": validation.study, "study_trials": ",".join(str(s.study_trial) for s in validation.subnets)}
        client.log_batch(run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()] if not found else [],
                         metrics=[Metric(k, v, now, 0) for k, v in _metrics(validation).items()])
        with tempfile.TemporaryDirectory() as d:
            folder = Path(d)
            atomic_write_text(json.dumps(validation.to_json(), indent=1), folder / "validation.json")
            validation_png(validation, folder / "validation.png")
            validation_html(validation, folder / "validation.html")
            client.log_artifacts(run_id, str(folder))
        client.set_terminated(run_id, status="FINISHED")
    except Exception as e:  # noqa: BLE001
        raise tracking_error(uri, "cannot log the validation to MLflow", e) from None
    return run_id


__all__ = ["log_validation", "validation_html", "validation_png"]
