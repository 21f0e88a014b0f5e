"""Training telemetry: MLflow metrics, a JSON-lines log in the output directory, per-epoch eval.

A `TrainLogger` is the loop's `progress` callback on rank 0. Steps log the loss of every sandwich
member and part, the lr and samples/s; epochs additionally log the max and min subnets' val AP
after BN recalibration (every `eval.every_epochs` epochs). The MLflow run id is kept in the
checkpoint directory so a resumed training continues the same run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from nasplat.train.config import Experiment

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id.txt"


class TrainLogger:
    """Logs training events to `<output_dir>/train_log.jsonl` and MLflow (if `mlflow` is True)."""

    def __init__(self, experiment: Experiment, *, mlflow: bool = True, evaluate: bool = True) -> None:
        self.experiment = experiment
        self.recipe = experiment.trainer
        self.path = experiment.output_dir / "train_log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")
        self._evaluate = evaluate and self.recipe.eval.every_epochs > 0
        self._evaluator: Any = None
        self._mlflow: Any = None
        self.last_eval: dict[str, Any] = {}
        if mlflow:
            self._start_mlflow()

    def _start_mlflow(self) -> None:
        import mlflow

        exp = self.experiment
        mlflow.set_tracking_uri(exp.tracking_uri)
        mlflow.set_experiment(exp.tracking_experiment)
        id_file = exp.checkpoint_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        try:
            run = mlflow.start_run(run_id=run_id, run_name=None if run_id else "supernet")
        except Exception:  # the stored run is gone (a fresh tracking store): start a new one
            run = mlflow.start_run(run_name="supernet")
        if run_id is None:
            from nasplat.train.checkpoint import atomic_write_text

            atomic_write_text(run.info.run_id, id_file)
            mlflow.log_params({"experiment": exp.name, "space": exp.space.name, "trainer": self.recipe.name,
                               "seed": exp.seed, "num_workers": exp.cluster.num_workers,
                               "batch_size": self.recipe.batch_size, "lr": self.recipe.optimizer.lr,
                               "epochs": self.recipe.schedule.epochs,
                               "sandwich_random": self.recipe.sandwich.num_random,
                               "distillation": self.recipe.distillation.enabled})
        self._mlflow = mlflow

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        metrics = {f"loss/{k}": v for k, v in event["losses"].items()}
        metrics["samples_per_s"] = event["samples_per_s"]
        if kind == "step":
            metrics["lr"] = event["lr"]
            if event["step"] % self.recipe.log_every_steps == 0 and self._mlflow is not None:
                self._mlflow.log_metrics(metrics, step=event["step"])
            if event["step"] % self.recipe.log_every_steps == 0:
                self._write({"event": "step", "time": time.time(), "epoch": event["epoch"], "step": event["step"],
                             **metrics})
            return
        epoch = event["epoch"]
        record: dict[str, Any] = {"event": "epoch", "time": time.time(), "epoch": epoch, "step": event["step"],
                                  **{f"epoch_{k}": v for k, v in metrics.items()}}
        every = self.recipe.eval.every_epochs
        if self._evaluate and (epoch % every == 0 or epoch == self.recipe.schedule.epochs):
            record.update(self._eval(event["net"]))
        if self._mlflow is not None:
            self._mlflow.log_metrics({k: v for k, v in record.items() if isinstance(v, float)}, step=event["step"])
        self._write(record)

    def _eval(self, net: Any) -> dict[str, float]:
        from nasplat.train.evaluation import SubnetEvaluator

        if self._evaluator is None:
            self._evaluator = SubnetEvaluator(self.experiment, device=str(next(net.parameters()).device), net=net,
                                              max_images=self.recipe.eval.max_images)
        out: dict[str, float] = {}
        space = self.experiment.space
        for role, arch in (("max", space.max_arch()), ("min", space.min_arch())):
            metrics = self._evaluator.evaluate(arch)["metrics"]
            for part, values in metrics.items():
                out[f"val/{role}/{part}_AP"] = float(values["AP"])
        self.last_eval = out
        log.info("val AP: max %.3f, min %.3f", out["val/max/wholebody_AP"], out["val/min/wholebody_AP"])
        return out

    def close(self) -> None:
        self._file.close()
        if self._mlflow is not None:
            self._mlflow.end_run()
            self._mlflow = None


__all__ = ["TrainLogger"]
