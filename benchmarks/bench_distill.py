"""Min-subnet AP with vs without in-place distillation, at equal training steps.

Trains the quickstart supernet (its space, recipe and synthetic data) twice from the same seed, once
with the recipe's in-place distillation and once with every member on ground truth only, as two
single-worker processes side by side (one core each), then BN-recalibrates and evaluates the min and
max subnets of each on the synthetic val set.

    python benchmarks/bench_distill.py [--epochs N (default: the recipe's)] [--gt-weight W] [--data DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks._common
VARIANTS = ("distillation", "ground truth only")


def train_and_evaluate(variant: str, data: Path, out: Path, epochs: int | None, gt_weight: float | None) -> dict:
    from benchmarks._common import SPACES, TRAINERS, scratch_experiment
    from nasplat.config import DistillationConfig
    from nasplat.subnet.evaluator import SubnetEvaluator
    from nasplat.train import WorkerContext, run_training

    base = scratch_experiment(out / "exp.yaml", name="bench", space=SPACES / "quickstart.yaml",
                              trainer=TRAINERS / "cpu_small.yaml", data_root=data, output_dir=out / "run")
    recipe = base.trainer
    schedule = recipe.schedule
    if epochs is not None:
        schedule = dataclasses.replace(schedule, epochs=epochs,
                                       milestones=tuple(m for m in schedule.milestones if m < epochs))
    if variant == "distillation":
        dist = recipe.distillation
        if gt_weight is not None:
            dist = dataclasses.replace(dist, gt_weight=gt_weight)
    else:
        dist = DistillationConfig(enabled=False)
    exp = dataclasses.replace(base, trainer=dataclasses.replace(recipe, schedule=schedule, distillation=dist))
    t0 = time.perf_counter()
    run_training(exp, WorkerContext())
    minutes = (time.perf_counter() - t0) / 60
    ev = SubnetEvaluator(exp)
    m_min = ev.evaluate(exp.space.min_arch())["metrics"]
    m_max = ev.evaluate(exp.space.max_arch())["metrics"]
    return {"variant": variant, "epochs": schedule.epochs, "minutes": minutes,
            "min": {p: m_min[p]["AP"] for p in m_min}, "max": {p: m_max[p]["AP"] for p in m_max}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--gt-weight", type=float, default=None, help="students' GT weight with distillation (default: recipe)")
    ap.add_argument("--data", default=None, help="reuse a generated data root")
    ap.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.variant is not None:  # one training run, in a child process
        print(json.dumps(train_and_evaluate(args.variant, Path(args.data), Path(args.out), args.epochs, args.gt_weight)))
        return

    from nasplat.config import load_experiment
    from nasplat.train.data import ensure_data

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        data = Path(args.data) if args.data else d / "data"
        # the quickstart's own synthetic spec, generated the way `nasplat train` generates it
        quickstart = load_experiment(ROOT / "experiments" / "quickstart.yaml")
        ensure_data(dataclasses.replace(quickstart, data=dataclasses.replace(quickstart.data, root=data)))
        procs = []
        for i, variant in enumerate(VARIANTS):
            cmd = [sys.executable, __file__, "--variant", variant, "--data", str(data), "--out", str(d / f"v{i}")]
            if args.epochs is not None:
                cmd += ["--epochs", str(args.epochs)]
            if args.gt_weight is not None:
                cmd += ["--gt-weight", str(args.gt_weight)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
        rows = []
        for p in procs:
            stdout, _ = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"a training run failed (exit {p.returncode})")
            rows.append(json.loads(stdout.strip().splitlines()[-1]))
    print(f"equal steps ({rows[0]['epochs']} epochs, same seed and data, one worker each), "
          "AP after BN recalibration:")
    for r in rows:
        print(f"  {r['variant']:18s} min subnet whole-body {r['min']['wholebody']:.3f} (body {r['min']['body']:.3f}, "
              f"face {r['min']['face']:.3f}, hand {r['min']['hand']:.3f})   max subnet whole-body "
              f"{r['max']['wholebody']:.3f}   ({r['minutes']:.1f} min)")
    dist, gt = rows
    print(f"min-subnet AP gain from in-place distillation: whole-body {dist['min']['wholebody'] - gt['min']['wholebody']:+.3f}, "
          f"body {dist['min']['body'] - gt['min']['body']:+.3f}, face {dist['min']['face'] - gt['min']['face']:+.3f}")


if __name__ == "__main__":
    main()
