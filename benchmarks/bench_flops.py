"""Analytic vs fvcore GFLOPs over random archs of a space: largest relative error and speed ratio.

    python benchmarks/bench_flops.py [--space search_spaces/zoomnas.yaml] [--archs 200] [--seed 0]

Goals: error <= 1 %, analytic >= 100x faster. The fvcore time includes building the static
subnet it traces (that is what counting a sampled arch with fvcore costs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from nasplat.flops import analytic_gflops, fvcore_gflops
from nasplat.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "zoomnas.yaml"))
    parser.add_argument("--archs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    space = load_space(args.space)
    bpm = tuple(space.blocks_per_module(n) for n in ("body", "face", "hand"))
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.archs)]

    repeats = 20
    start = time.perf_counter()
    for _ in range(repeats):
        analytic = [analytic_gflops(a, bpm) for a in archs]
    analytic_s = (time.perf_counter() - start) / (repeats * len(archs))

    worst = {part: 0.0 for part in ("body", "face", "hand", "total")}
    start = time.perf_counter()
    for i, (arch, a) in enumerate(zip(archs, analytic), 1):
        f = fvcore_gflops(arch, bpm)
        for part in worst:
            worst[part] = max(worst[part], abs(getattr(a, part) - getattr(f, part)) / getattr(f, part))
        if i % 10 == 0:  # partial results on stderr, so a run cut short still says something
            sys.stderr.write(f"{i} archs: worst {100 * max(worst.values()):.4f}%, fvcore {(time.perf_counter() - start) / i:.2f} s/arch\n")
    fvcore_s = (time.perf_counter() - start) / len(archs)

    totals = [a.total for a in analytic]
    print(f"space {space.name}, {len(archs)} random archs, total GFLOPs {min(totals):.2f}..{max(totals):.2f}")
    print("largest relative error: " + ", ".join(f"{k} {100 * v:.4f}%" for k, v in worst.items()))
    print(
        f"analytic {1e3 * analytic_s:.4f} ms/arch, fvcore {1e3 * fvcore_s:.1f} ms/arch, "
        f"ratio {fvcore_s / analytic_s:.0f}x"
    )


if __name__ == "__main__":
    main()
