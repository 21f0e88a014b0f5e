"""Min-subnet AP with vs without in-place distillation, at equal training steps.

Trains the cpu_small supernet twice from the same seed on the same synthetic data, once with the
recipe's in-place distillation and once with every member on ground truth only, then
BN-recalibrates and evaluates the min (and max) subnet of each on the synthetic val set.

    python benchmarks/bench_distill.py [--epochs 5] [--train-images 400] [--gt-weight 0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-images", type=int, default=400)
    ap.add_argument("--val-images", type=int, default=100)
    ap.add_argument("--gt-weight", type=float, default=None, help="students' GT weight with distillation (default: recipe)")
    ap.add_argument("--data", default=None, help="reuse a generated data root")
    args = ap.parse_args()

    from nasplat.data.synth import generate_dataset
    from nasplat.train.config import DistillationConfig, load_experiment
    from nasplat.train.evaluation import SubnetEvaluator
    from nasplat.train.loop import WorkerContext, run_training

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        data = Path(args.data) if args.data else d / "data"
        if not (data / "annotations").exists():
            generate_dataset(data, args.train_images, args.val_images, seed=0)
        (d / "exp.yaml").write_text(
            f"name: bench\nspace: {ROOT / 'search_spaces' / 'cpu_small.yaml'}\n"
            f"trainer: {ROOT / 'trainers' / 'cpu_small.yaml'}\ndata: {{root: {data}}}\noutput_dir: {d / 'out'}\n"
        )
        base = load_experiment(d / "exp.yaml")
        recipe = base.trainer
        schedule = dataclasses.replace(recipe.schedule, epochs=args.epochs,
                                       milestones=tuple(m for m in recipe.schedule.milestones if m < args.epochs))
        dist = recipe.distillation
        if args.gt_weight is not None:
            dist = dataclasses.replace(dist, gt_weight=args.gt_weight)
        variants = {
            "distillation": dataclasses.replace(recipe, schedule=schedule, distillation=dist),
            "ground truth only": dataclasses.replace(recipe, schedule=schedule,
                                                     distillation=DistillationConfig(enabled=False)),
        }
        rows = []
        for name, r in variants.items():
            exp = dataclasses.replace(base, trainer=r, output_dir=d / name.replace(" ", "_"))
            t0 = time.perf_counter()
            run_training(exp, WorkerContext())
            minutes = (time.perf_counter() - t0) / 60
            ev = SubnetEvaluator(exp)
            m_min = ev.evaluate(exp.space.min_arch())["metrics"]
            m_max = ev.evaluate(exp.space.max_arch())["metrics"]
            rows.append((name, m_min["wholebody"]["AP"], m_max["wholebody"]["AP"], minutes,
                         m_min["body"]["AP"], m_max["body"]["AP"]))
    steps = f"{args.epochs} epochs"
    print(f"equal steps ({steps}, same seed and data), whole-body AP after BN recalibration:")
    for name, ap_min, ap_max, minutes, body_min, body_max in rows:
        print(f"  {name:18s} min subnet AP {ap_min:.3f} (body {body_min:.3f})   "
              f"max subnet AP {ap_max:.3f} (body {body_max:.3f})   ({minutes:.1f} min)")
    print(f"min-subnet AP gain from in-place distillation: whole-body {rows[0][1] - rows[1][1]:+.3f}, "
          f"body {rows[0][4] - rows[1][4]:+.3f}")


if __name__ == "__main__":
    main()
