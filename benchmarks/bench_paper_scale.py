"""The paper's setting, measured here: one sandwich step of the Table-2 supernet and the cost of
the paper's schedule projected from it.

    python benchmarks/bench_paper_scale.py [--samples-per-s 40] [--batch 2] [--threads 2]

Loads the shipped `experiments/zoomnas.yaml` (space `search_spaces/zoomnas.yaml`, recipe
`trainers/supernet.yaml`, 16 workers), runs one sandwich step (max + min + 2 random subnets, one
optimizer step) at 384x288 on CPU at batch 2 on a generated batch, and prints its time, the peak
resident memory, each member's analytic GFLOPs, and the projected cost of the schedule (the
recipe's epochs over COCO-WholeBody train, `cluster.num_workers` workers) at the measured CPU
throughput and at `--samples-per-s` per worker (e.g. what `benchmarks/gpu_check.sh` measured).
A top-down epoch visits every annotated person: `--train-samples` (default 149,813, the person
instances mmpose's COCO train2017 top-down loader reports; unconfirmed here); the 118,287 train
images are printed beside it as a lower bound.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import scratch_experiment  # noqa: E402
from nasplat.config import load_experiment  # noqa: E402
from nasplat.data.synth import generate_dataset  # noqa: E402
from nasplat.data.topdown import collate  # noqa: E402
from nasplat.flops import analytic_gflops  # noqa: E402
from nasplat.models import build_supernet  # noqa: E402
from nasplat.train.data import train_dataset  # noqa: E402
from nasplat.train.loop import init_final_layers  # noqa: E402
from nasplat.train.precision import recipe_precision  # noqa: E402
from nasplat.train.sandwich import SandwichSampler  # noqa: E402
from nasplat.train.step import sandwich_step  # noqa: E402

TRAIN_IMAGES = 118_287  # COCO 2017 train images (COCO-WholeBody uses the same split)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h ({seconds / 86400:,.1f} days)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "zoomnas.yaml"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--step", type=int, default=0, help="global step whose random members are drawn")
    ap.add_argument("--samples-per-s", type=float, default=None, help="per-worker training throughput to project with")
    ap.add_argument("--train-samples", type=int, default=149_813)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    shipped = load_experiment(args.experiment)
    recipe, space = shipped.trainer, shipped.space
    workers = shipped.cluster.num_workers
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        generate_dataset(d / "data", 4, 1, seed=0)
        exp = scratch_experiment(d / "exp.yaml", name="paper_scale", space=shipped.space_path,
                                 trainer=shipped.trainer_path, data_root=d / "data", output_dir=d / "out")
        ds = train_dataset(exp)
        batch = collate([ds[i % len(ds)] for i in range(args.batch)])
    h, w = batch["image"].shape[-2:]
    bpm = space.all_blocks_per_module()
    members = SandwichSampler(space, shipped.seed, recipe.sandwich.num_random).members(args.step)
    print(f"{shipped.path.name}: space {shipped.space_path.name}, recipe {shipped.trainer_path.name}, "
          f"{workers} workers x batch {recipe.batch_size}, {recipe.schedule.epochs} epochs")
    print(f"one sandwich step on CPU ({args.threads} threads), body {h}x{w}, batch {args.batch}")
    total_gf = 0.0
    for m in members:
        g = analytic_gflops(m.arch, bpm)
        total_gf += g.total
        res = m.arch.body.input_size
        print(f"  {m.role:<8} {res[0]}x{res[1]}  GFLOPs/sample body {g.body:7.2f} face {g.face:6.2f} hand {g.hand:6.2f}"
              f" total {g.total:7.2f}")
    print(f"  sandwich forward {total_gf:.2f} GFLOPs/sample (training ~3x: {3 * total_gf:.1f})")

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    net = build_supernet(space, seed=0)
    init_final_layers(net, 0.001, 0)
    params = sum(p.numel() for p in net.parameters())
    build_s = time.perf_counter() - t0
    opt = torch.optim.Adam(net.parameters(), lr=recipe.optimizer.lr)
    precision = recipe_precision(recipe, "cpu")
    t0, c0 = time.perf_counter(), time.process_time()
    opt.zero_grad(set_to_none=True)
    logs = sandwich_step(net, batch, members, recipe, epoch=recipe.head_boxes.gt_box_epochs, precision=precision)
    opt.step()
    step_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    print(f"supernet {params / 1e6:.1f} M parameters, built in {build_s:.1f} s; precision {precision.name}")
    print(f"step {step_s:.1f} s wall, {cpu_s:.1f} s process CPU (on a shared machine the wall time is"
          f" inflated by the other jobs; CPU / threads is a dedicated machine's)")
    print(f"loss {logs['total']:.4g}; peak RSS {_rss_mb():,.0f} MB (before the net: {rss0:,.0f} MB)")
    achieved = 3 * total_gf * args.batch / step_s
    print(f"achieved ~{achieved:.1f} GFLOP/s (3x forward FLOPs per sample)")

    cpu_rate = args.batch / step_s
    print(f"\nprojected supernet training: {recipe.schedule.epochs} epochs, {workers} workers")
    rates = [("CPU measured", cpu_rate)] + ([("given", args.samples_per_s)] if args.samples_per_s else [])
    for n in (args.train_samples, TRAIN_IMAGES):
        for label, rate in rates:
            wall = recipe.schedule.epochs * n / (rate * workers)
            print(f"  {n:>7,} samples/epoch at {rate:8.3f} samples/s per worker ({label}): wall {_hours(wall)},"
                  f" {wall * workers / 3600:,.0f} worker-hours")

if __name__ == "__main__":
    main()
