"""Forward time of the supernet set to an arch vs its extracted static subnet, same input.

    python benchmarks/bench_supernet_forward.py [--space search_spaces/cpu_small.yaml] [--batch 8]

For the max, min and a middle arch (median GFLOPs of 64 samples) it times eval forwards and
train-mode forward + backward, interleaving the two nets so load changes hit both alike, and
prints the median times and the supernet / static ratio (goal at max: <= 1.15x).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nasplat.flops import analytic_gflops
from nasplat.models import build_supernet
from nasplat.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def _interleaved(a: Callable[[], object], b: Callable[[], object], runs: int) -> tuple[float, float]:
    ta, tb = [], []
    a(), b()  # warm-up
    for _ in range(runs):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "cpu_small.yaml"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    space = load_space(args.space)
    bpm = space.all_blocks_per_module()
    rng = np.random.default_rng(0)
    samples = sorted((space.sample(rng) for _ in range(64)), key=lambda a: analytic_gflops(a, bpm).total)
    archs = {"max": space.max_arch(), "middle": samples[len(samples) // 2], "min": space.min_arch()}
    net = build_supernet(space, seed=0)
    print(f"space {space.name}, batch {args.batch}, {torch.get_num_threads()} threads, median of {args.runs}")
    for label, arch in archs.items():
        net.set_arch(arch)
        static = net.extract(arch)
        h, w = arch.body.input_size
        x = torch.randn(args.batch, 3, h, w)
        gflops = analytic_gflops(arch, bpm).total
        net.eval(), static.eval()
        with torch.no_grad():
            sup, sta = _interleaved(lambda: net(x), lambda: static(x), args.runs)
        print(
            f"{label:6s} ({gflops:.3f} GFLOPs/sample) eval forward: supernet {1e3 * sup:.1f} ms, "
            f"static {1e3 * sta:.1f} ms, ratio {sup / sta:.3f}x"
        )
        net.train(), static.train()

        def step(model: torch.nn.Module) -> Callable[[], None]:
            def run() -> None:
                out = model(x)
                (out.body_heatmaps.square().mean() + out.face_heatmaps.square().mean() + out.hand_heatmaps.square().mean()).backward()

            return run

        sup, sta = _interleaved(step(net), step(static), max(3, args.runs // 2))
        print(
            f"{label:6s} train forward+backward: supernet {1e3 * sup:.1f} ms, static {1e3 * sta:.1f} ms, "
            f"ratio {sup / sta:.3f}x"
        )


if __name__ == "__main__":
    main()
