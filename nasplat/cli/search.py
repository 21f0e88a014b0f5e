"""`nasplat search`, `nasplat status` and `nasplat ui`: run/resume a search, read its store, browse MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from nasplat.errors import NasplatError


def _trial_json(t: Any) -> dict[str, Any]:
    return {"trial": t.number, "gflops": round(t.evaluation.total_gflops, 6), "ap": round(t.evaluation.ap, 6)}


def search(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="Experiment YAML."),
    report: bool = typer.Option(False, "--report", help="Only re-tag the Pareto front and re-log its figures."),
    new_study: bool = typer.Option(False, "--new-study", help="Start a new study instead of resuming the current one."),
    cluster: bool = typer.Option(False, "--cluster", help="Join cluster.address instead of starting local Ray."),
    local: bool = typer.Option(False, "--local", help="Evaluate in this process, one at a time (no Ray)."),
    objective: Optional[str] = typer.Option(None, "--objective", help="Override search.objective (analytic | wholebody)."),
) -> None:
    """Run or resume the search to search.n_trials completed trials.

    \b
    Example:
      nasplat search experiments/quickstart.yaml
      nasplat search experiments/quickstart.yaml --objective analytic --local
    """
    from nasplat.cli.console import console as make_console
    from nasplat.cli.progress import search_bar
    from nasplat.config import load_experiment
    from nasplat.orchestration.cluster import for_command
    from nasplat.orchestration.run import report as run_report
    from nasplat.orchestration.run import run_search

    experiment = for_command(load_experiment(experiment_file), cluster=cluster)
    console = make_console(stderr=True)
    if report:
        result = run_report(experiment)
    else:
        with search_bar(console, experiment.search.n_trials) as update:
            result = run_search(experiment, objective=objective, new_study=new_study, progress=update, local=local)
    best = result.best
    console.print(
        f"study {result.study_name} at {result.storage}: {result.n_complete} completed, {result.n_failed} failed; "
        + (f"best trial {best.number} AP {best.evaluation.ap:.4f} at {best.evaluation.total_gflops:.4f} GFLOPs; " if best else "")
        + f"{len(result.pareto)} on the Pareto front"
    )


def status(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="Experiment YAML."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Phase, trials, best subnet and Pareto front, read from the store.

    \b
    Example:
      nasplat status experiments/quickstart.yaml --json
    """
    from rich.table import Table

    from nasplat.cli.console import console as make_console
    from nasplat.config import load_experiment
    from nasplat.orchestration.driver import summarize
    from nasplat.orchestration.phases import Phases
    from nasplat.store import load_current_study, redact_url

    experiment = load_experiment(experiment_file)
    url = experiment.storage_url
    row = Phases(experiment).current()
    store = load_current_study(url, experiment.name)
    out: dict[str, Any] = {
        "experiment": experiment.name,
        "storage": redact_url(url),
        "phase": row.phase if row else None,
        "checkpoint": row.checkpoint if row else None,
        "study": None,
        "trials": {},
        "n_trials": experiment.search.n_trials,
        "budget_gflops": experiment.search.budget_gflops,
        "best": None,
        "pareto": [],
        "retrain": json.loads(row.retrain_best) if row and row.retrain_best else None,
    }
    if store is not None:
        result = summarize(store, store.trials())
        attrs = store.attrs()
        out.update(
            study=store.study_name,
            trials=store.counts(),
            n_trials=attrs.get("n_trials", out["n_trials"]),
            budget_gflops=store.identity.budget_gflops,
            sampler=store.identity.sampler,
            best=None if result.best is None else _trial_json(result.best) | {"arch": result.best.arch.to_flat()},
            pareto=[_trial_json(t) for t in result.pareto],
        )
    if as_json:
        typer.echo(json.dumps(out))
        return
    console = make_console()
    console.print(f"[bold]{out['experiment']}[/bold]  phase: {out['phase']}  store: {out['storage']}")
    if out["retrain"] and out["retrain"]["best"]:
        r = out["retrain"]["best"]
        console.print(f"retrained ({out['retrain']['sweep']}, {out['retrain']['trials']} trials): best subnet {r['rank']} "
                      f"(study trial {r['study_trial']}) lr {r['lr']:g}, {r['epochs']} epochs: whole-body AP "
                      f"{r['before']['wholebody']:.4f} -> {r['after']['wholebody']:.4f}, exported to {r['export']}")
    if store is None:
        console.print("no study yet")
        return
    counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(out["trials"].items())) or "none"
    console.print(f"study {out['study']} ({out.get('sampler')}): trials {counts}; target {out['n_trials']} completed; budget {out['budget_gflops']} GFLOPs")
    if out["best"]:
        b = out["best"]
        console.print(f"best: trial {b['trial']}  AP {b['ap']:.4f}  {b['gflops']:.4f} GFLOPs")
    table = Table("trial", "GFLOPs", "whole-body AP", title="Pareto front")
    for p in out["pareto"]:
        table.add_row(str(p["trial"]), f"{p['gflops']:.4f}", f"{p['ap']:.4f}")
    console.print(table)


def ui(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="Experiment YAML."),
    port: int = typer.Option(5000, "--port", help="Port on 127.0.0.1."),
) -> None:
    """Start the MLflow UI on 127.0.0.1 for the experiment (Ctrl-C stops it).

    \b
    Example:
      nasplat ui experiments/quickstart.yaml --port 5001
    """
    from nasplat.config import load_experiment

    experiment = load_experiment(experiment_file)
    uri = experiment.tracking_uri
    if not (uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri):
        raise NasplatError(f"tracking.uri is a server ({uri.split('@')[-1]}); open it in a browser instead", key="tracking.uri")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    artifacts = Path(experiment.output_dir) / "mlartifacts"
    cmd += ["--default-artifact-root", artifacts.resolve().as_uri()]
    typer.echo(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)", err=True)
    subprocess.run(cmd, check=False)


def register(app: typer.Typer) -> None:
    """Add `search`, `status` and `ui` to the nasplat app."""
    app.command("search")(search)
    app.command("status")(status)
    app.command("ui")(ui)
