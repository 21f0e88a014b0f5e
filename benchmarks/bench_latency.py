"""Latency tables: predictor accuracy against end-to-end measurements, build and prediction time,
and what searching on latency instead of FLOPs changes.

    python benchmarks/bench_latency.py [--spaces quickstart,cpu_small] [--backends onnx,torch]
        [--batches 1,8] [--subnets 100] [--threads 2] [--device cpu] [--repeats 25] [--seed 0]
        [--statistic min|median] [--passes 3] [--no-remeasure] [--lut-dir DIR]

For each (space, backend, batch): build the table (`profile_space`, timed; kept in --lut-dir and
reused when it is there, so the benchmark can be run in parts), sample --subnets random subnets
(seeded), measure each whole static subnet end to end on the table's backend (`Timer.time_archs`:
the same passes / warm-up / repeats / statistic as the table) and predict it. Printed per row: share within
+-10 % (goal >= 95 %), RMSE in %, Kendall tau, table build time (goal <= 300 s for quickstart on
2 cores), time per prediction (goal <= 1 ms; a fresh predictor over the distinct subnets: listing the
units, looking them up, correcting).

The measurement's own noise, beside it: every subnet is measured a second time (a fresh session,
after a pass over all the others) and the two measurements are compared the same way (`rep10%`,
`repRMSE`). No predictor can agree with a measurement more often than the measurement agrees with
itself; where `rep10%` is far below 95 % the machine, not the table, sets the limit.

FLOPs vs latency, from the same subnets with the analytic AP objective: the (GFLOPs, AP) Pareto
front vs the (predicted latency, AP) front (how many subnets are on one and not the other), and
at AP targets (quartiles of the subnets' AP) the measured latency of the cheapest subnet by GFLOPs
vs the fastest by predicted latency that reach the target.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from nasplat.latency import LatencyPredictor, load_table
from nasplat.latency.profile import profile_space
from nasplat.latency.timing import Timer, TimingSettings
from nasplat.search import AnalyticObjective, pareto_indices, total_gflops_fn
from nasplat.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def _subnets(space, n: int, seed: int) -> list:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    seen: dict[str, object] = {}
    for _ in range(100 * n):
        if len(seen) >= n:
            break
        a = space.sample(rng)
        seen.setdefault(a.key(), a)
    return list(seen.values())


def _agreement(estimate: list[float], measured: list[float]) -> tuple[float, float]:
    """(% of estimates within +-10 % of the measurement, RMSE of the relative error in %)."""
    err = [(e - m) / m for e, m in zip(estimate, measured)]
    return 100 * sum(abs(x) <= 0.10 for x in err) / len(err), 100 * math.sqrt(sum(x * x for x in err) / len(err))


def _prediction_ms(table, space, archs: list) -> float:  # noqa: ANN001
    """Milliseconds per prediction of a fresh predictor (nothing cached yet; archs distinct)."""
    predictor = LatencyPredictor(table, space)
    start = time.perf_counter()
    for arch in archs:
        predictor(arch)
    return 1e3 * (time.perf_counter() - start) / len(archs)


def _fronts(space, archs: list, predicted: list[float], measured: list[float]) -> list[str]:  # noqa: ANN001
    objective = AnalyticObjective(space)
    gflops = total_gflops_fn(space)
    ap = [objective.evaluate(a).ap for a in archs]
    g = [gflops(a) for a in archs]
    flops_front = set(pareto_indices(list(zip(g, ap))))
    latency_front = set(pareto_indices(list(zip(predicted, ap))))
    lines = [f"    fronts: {len(flops_front)} on the GFLOPs-AP front, {len(latency_front)} on the latency-AP front, "
             f"{len(flops_front ^ latency_front)} on one only, {len(flops_front & latency_front)} on both"]
    for q in (25, 50, 75):
        target = float(np.percentile(ap, q))
        ok = [i for i in range(len(archs)) if ap[i] >= target]
        by_flops = min(ok, key=lambda i: g[i])
        by_latency = min(ok, key=lambda i: predicted[i])
        lines.append(
            f"    AP >= {target:.4f} (p{q}): GFLOPs pick {g[by_flops]:.4f} GFLOPs, AP {ap[by_flops]:.4f}, measured "
            f"{measured[by_flops]:.2f} ms | latency pick {g[by_latency]:.4f} GFLOPs, AP {ap[by_latency]:.4f}, measured "
            f"{measured[by_latency]:.2f} ms | GFLOPs pick / latency pick = {measured[by_flops] / measured[by_latency]:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default="quickstart,cpu_small", help="space names under search_spaces/ or paths")
    parser.add_argument("--backends", default="onnx,torch")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--subnets", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=25, help="timed runs per block and per subnet")
    parser.add_argument("--statistic", default="min", choices=("min", "median"), help="how the timed runs are reduced")
    parser.add_argument("--passes", type=int, default=3, help="passes over each group of blocks or subnets")
    parser.add_argument("--no-remeasure", action="store_true", help="skip the second measurement (the noise floor)")
    parser.add_argument("--calibration", type=int, default=6, help="whole subnets the correction is fitted on")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random subnets (the tables fit their correction on seed 0)")
    parser.add_argument("--lut-dir", default=str(ROOT / "outputs" / "bench_latency"), help="tables are kept (and reused) here")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured, also in a log file

    lut_dir = Path(args.lut_dir)
    lut_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench_latency: {args.subnets} random subnets (seed {args.seed}), {args.threads} threads, device {args.device}, "
          f"{args.statistic} of {args.passes} passes x {args.repeats} runs")
    print(f"{'space':<11}{'backend':<8}{'batch':>5}{'blocks':>7}{'build s':>9}{'within10%':>10}{'RMSE %':>8}"
          f"{'tau':>7}{'pred ms':>9}{'measured ms (min-max)':>24}{'scale':>7}{'offset':>8}{'rep10%':>8}{'repRMSE':>8}")
    for name in args.spaces.split(","):
        path = Path(name) if name.endswith(".yaml") else ROOT / "search_spaces" / f"{name}.yaml"
        space = load_space(path)
        archs = _subnets(space, args.subnets, args.seed)
        for backend in args.backends.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                settings = TimingSettings(backend=backend, device=args.device, threads=args.threads,  # type: ignore[arg-type]
                                          batch=batch, repeats=args.repeats, statistic=args.statistic,
                                          passes=args.passes)
                lut = lut_dir / f"{space.name}_{backend}_{args.device}_t{args.threads}_b{batch}.json"
                if lut.exists():
                    table = load_table(lut)
                    built = f"{table.build_seconds:.0f}*"
                else:
                    table = profile_space(space, settings, lut, calibration=args.calibration)
                    built = f"{table.build_seconds:.0f}"
                predictor = LatencyPredictor(table, space)
                timer = Timer(settings)
                bpm = space.all_blocks_per_module()
                measured = timer.time_archs(archs, bpm)
                predicted = [predictor(a) for a in archs]
                within, rmse = _agreement(predicted, measured)
                noise = "    -       -"
                if not args.no_remeasure:
                    again = timer.time_archs(archs, bpm)
                    noise = "{:>7.0f}%{:>8.1f}".format(*_agreement(again, measured))
                tau = kendalltau(predicted, measured).statistic
                per = _prediction_ms(table, space, archs)
                print(f"{space.name:<11}{backend:<8}{batch:>5}{len(table.entries):>7}{built:>9}{within:>9.0f}%{rmse:>8.1f}"
                      f"{tau:>7.3f}{per:>9.3f}{f'{min(measured):.2f}-{max(measured):.2f}':>24}{table.scale:>7.3f}"
                      f"{table.offset_ms:>8.2f}{noise}")
                for line in _fronts(space, archs, predicted, measured):
                    print(line)
    print("(* table reused from --lut-dir; its build time is the stored one)")


if __name__ == "__main__":
    main()
