"""Training throughput of 2 Ray Train CPU workers relative to one plain process.

Both train the same experiment (cpu_small space, synthetic data) for the same number of epochs;
throughput is the samples/s of the epochs after the first (start-up excluded), read from the
training log. The plain process uses all the machine's cores (`--threads`), each Ray worker one.

    python benchmarks/bench_ray_train.py [--epochs 3] [--steps-per-epoch 8] [--threads 2]

Goal: >= 0.85x on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks._common


def _throughput(log: Path) -> float:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    sps = [r["epoch_samples_per_s"] for r in rows if r["event"] == "epoch" and r["epoch"] > 1]
    return statistics.median(sps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps-per-epoch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="per worker; the plain process uses 2x")
    args = ap.parse_args()

    from nasplat.data.synth import generate_dataset
    from benchmarks._common import SPACES, TRAINERS, scratch_experiment
    from nasplat.orchestration.cluster import ray_session
    from nasplat.orchestration.training import TrainingMonitor
    from nasplat.train import WorkerContext, run_training
    from nasplat.train.distributed import train_with_ray

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        generate_dataset(d / "data", 120, 2, seed=0)
        out = {}
        for workers in (1, 2):
            files = {"space": SPACES / "cpu_small.yaml", "data_root": d / "data", "output_dir": d / f"out{workers}",
                     "cluster": {"num_workers": workers, "cpus_per_worker": 1}}
            exp = scratch_experiment(d / f"exp{workers}.yaml", name=f"bench{workers}", trainer=TRAINERS / "cpu_small.yaml",
                                     **files)
            recipe = dataclasses.replace(
                exp.trainer,
                batch_size=args.batch * (2 if workers == 1 else 1),
                schedule=dataclasses.replace(exp.trainer.schedule, epochs=args.epochs),
                max_steps_per_epoch=args.steps_per_epoch,
                eval=dataclasses.replace(exp.trainer.eval, every_epochs=0),
                torch_threads=args.threads if workers == 1 else 1,
            )
            exp = dataclasses.replace(exp, trainer=recipe)
            logger = TrainingMonitor(exp, mlflow=False)
            if workers == 1:
                run_training(exp, WorkerContext(progress=logger))
            else:  # the workers receive the experiment (this recipe included) by value
                with ray_session(None, num_cpus=2):
                    train_with_ray(exp, progress=logger)
            logger.close()
            out[workers] = _throughput(exp.output_dir / "train_log.jsonl")
    print(f"global batch {2 * args.batch}, {args.steps_per_epoch} steps/epoch, epochs 2..{args.epochs} timed")
    print(f"plain process ({args.threads} threads) {out[1]:.2f} samples/s, 2 Ray Train workers {out[2]:.2f} samples/s, "
          f"ratio {out[2] / out[1]:.2f}x (goal >= 0.85x)")


if __name__ == "__main__":
    main()
