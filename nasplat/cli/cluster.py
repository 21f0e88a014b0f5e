"""`nasplat cluster template`: launch files for running an experiment on a real cluster.

`nasplat run EXP.yaml --cluster` joins a Ray cluster that someone has to start, size and point at
the experiment's files; the templates (`nasplat.orchestration.templates`) derive all of that from
the experiment, for KubeRay, the Ray cluster launcher (`ray up`) or Slurm. They are meant to be
read and edited: each file starts with what it assumes and what to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

cluster_app = typer.Typer(help="Run experiments on a Ray cluster.", no_args_is_help=True)


@cluster_app.command("template")
def template(
    kind: str = typer.Argument(..., metavar="KIND", help="kuberay | ray-up | slurm"),
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="An experiment YAML file."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Folder to write the files into (created)."),
    image: Optional[str] = typer.Option(None, "--image", metavar="IMAGE",
                                        help="Container image with nasplat installed (default: "
                                             "cluster.runtime_env.image_uri, else a placeholder)."),
) -> None:
    """Write ready-to-edit launch files for `nasplat run EXPERIMENT.yaml --cluster`.

    kuberay: rayjob.yaml (a RayJob and a ConfigMap of the experiment's files) and README.md;
    ray-up: cluster.yaml, submit.sh and experiment/; slurm: nasplat.sbatch.

    \b
    Example:
      nasplat cluster template kuberay experiments/zoomnas.yaml --out deploy/k8s --image ghcr.io/me/nasplat:0.1.0
      nasplat cluster template slurm experiments/zoomnas.yaml --out deploy/slurm
    """
    from nasplat.config import load_experiment
    from nasplat.orchestration import templates

    templates.check_kind(kind)  # before the experiment is read: a typo is the first thing said
    experiment = load_experiment(experiment_file)
    for path in templates.write_templates(kind, experiment, out, image):
        typer.echo(str(path))
    for line in templates.notes(experiment, kind):
        if line.startswith("WARNING: "):
            typer.echo(f"nasplat: warning: {line.removeprefix('WARNING: ')}", err=True)
    typer.echo(f"next: {templates.next_step(kind, out)}")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
