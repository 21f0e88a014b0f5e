"""Analytic vs fvcore GFLOPs over random archs of a space: largest relative error and speed ratio.

    python benchmarks/bench_flops.py [--space search_spaces/zoomnas.yaml] [--archs 200] [--seed 0] [--jobs 1]

Goals: error <= 1 %, analytic >= 100x faster. The fvcore time includes building the static
subnet it traces (that is what counting a sampled arch with fvcore costs). With --jobs N the fvcore
counts run in N single-threaded processes (on N idle cores) and its time is the mean time of one
count inside its process, comparable with the analytic time of this single-threaded process.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from nasplat.flops import analytic_gflops, fvcore_gflops
from nasplat.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def _fvcore_counts(archs: list, bpm: tuple[int, int, int]) -> list[tuple[dict[str, float], float]]:
    """fvcore GFLOPs per part and the seconds each count took, in this (single-threaded) process."""
    import torch

    torch.set_num_threads(1)
    out = []
    for arch in archs:
        start = time.perf_counter()
        f = fvcore_gflops(arch, bpm)
        out.append(({p: getattr(f, p) for p in ("body", "face", "hand", "total")}, time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "zoomnas.yaml"))
    parser.add_argument("--archs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="processes for the fvcore counts")
    args = parser.parse_args()

    space = load_space(args.space)
    bpm = space.all_blocks_per_module()
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.archs)]

    repeats = 20
    start = time.perf_counter()
    for _ in range(repeats):
        analytic = [analytic_gflops(a, bpm) for a in archs]
    analytic_s = (time.perf_counter() - start) / (repeats * len(archs))

    worst = {part: 0.0 for part in ("body", "face", "hand", "total")}
    chunk = 10
    pieces = [archs[i : i + chunk] for i in range(0, len(archs), chunk)]
    seconds: list[float] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = 0
        for piece, counts in zip(pieces, pool.map(_fvcore_counts, pieces, [bpm] * len(pieces))):
            for a, (f, sec) in zip(analytic[done : done + len(piece)], counts):
                seconds.append(sec)
                for part in worst:
                    worst[part] = max(worst[part], abs(getattr(a, part) - f[part]) / f[part])
            done += len(piece)
            # partial results on stderr, so a run cut short still says something
            sys.stderr.write(f"{done} archs: worst {100 * max(worst.values()):.4f}%, fvcore {sum(seconds) / done:.2f} s/arch\n")
    fvcore_s = sum(seconds) / len(seconds)

    totals = [a.total for a in analytic]
    print(f"space {space.name}, {len(archs)} random archs, total GFLOPs {min(totals):.2f}..{max(totals):.2f}")
    print("largest relative error: " + ", ".join(f"{k} {100 * v:.4f}%" for k, v in worst.items()))
    print(
        f"analytic {1e3 * analytic_s:.4f} ms/arch, fvcore {1e3 * fvcore_s:.1f} ms/arch "
        f"({args.jobs} process{'es' if args.jobs > 1 else ''}), ratio {fvcore_s / analytic_s:.0f}x"
    )


if __name__ == "__main__":
    main()
