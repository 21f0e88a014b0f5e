"""Time of one sandwich step (max + min + N random subnets, one optimizer step) relative to one
step of the max subnet alone, on the cpu_small space with a real synthetic batch.

    python benchmarks/bench_sandwich.py [--batch 16] [--steps 6] [--threads 1]

Goal: a sandwich step costs <= 3x a max-subnet step (smaller members are cheaper).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "cpu_small.yaml"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from nasplat.data.synth import generate_dataset
    from nasplat.data.topdown import collate
    from nasplat.models import build_supernet
    from nasplat.config import load_experiment
    from nasplat.train.data import train_dataset
    from nasplat.train.loop import init_final_layers
    from nasplat.train.sandwich import SandwichMember, SandwichSampler
    from nasplat.train.step import sandwich_step

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        generate_dataset(d / "data", 12, 2, seed=0)
        (d / "exp.yaml").write_text(
            f"name: bench\nspace: {Path(args.space).resolve()}\ntrainer: {ROOT / 'trainers' / 'cpu_small.yaml'}\n"
            f"data: {{root: {d / 'data'}}}\noutput_dir: {d / 'out'}\n"
        )
        exp = load_experiment(d / "exp.yaml")
        ds = train_dataset(exp)
        batch = collate([ds[i % len(ds)] for i in range(args.batch)])
        net = build_supernet(exp.space, seed=0)
        init_final_layers(net, 0.001, 0)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        sampler = SandwichSampler(exp.space, 0, exp.trainer.sandwich.num_random)
        max_only = [SandwichMember("max", exp.space.max_arch())]

        def timed(members_for_step) -> list[float]:  # noqa: ANN001
            out = []
            for step in range(args.steps + 1):  # the first is warm-up
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                sandwich_step(net, batch, members_for_step(step), exp.trainer, epoch=10)
                opt.step()
                out.append(time.perf_counter() - t0)
            return out[1:]

        # interleave to share any drift in machine load between the two
        t_max, t_sw = [], []
        for _ in range(2):
            t_max += timed(lambda s: max_only)
            t_sw += timed(sampler.members)
    m, s = statistics.median(t_max), statistics.median(t_sw)
    n = len(sampler.members(0))
    print(f"batch {args.batch}, {args.threads} thread(s), {n} members per sandwich step")
    print(f"max-subnet step {m * 1000:.0f} ms, sandwich step {s * 1000:.0f} ms, ratio {s / m:.2f}x (goal <= 3x)")


if __name__ == "__main__":
    main()
