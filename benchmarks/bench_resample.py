"""The fusions' resizing: `nn.resample.resize` against F.interpolate, call by call.

    python benchmarks/bench_resample.py [--archs 3] [--threads 1] [--reps 20] [--seed 0]

Records every resize call (input shape, output size, mode) that BN recalibration and one
flip-test prediction of the quickstart evaluator make for `--archs` seeded subnets (quickstart
space and recipe, random weights, synthetic data: 100 train / 100 val images), then times each
distinct call alone with both implementations, forward (no grad) and forward + backward, as
process CPU time, the median of `--reps`, interleaved. Prints, per mode, the time the calls of one
prediction take with each (each call's time x how often it was made) and the ratio, and the
largest difference between the two outputs. The ratio is the resampling alone; what it is worth
to a whole prediction is `bench_eval_roofline.py`'s `interpolate` vs `evaluator` modes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import fusion_resize, interpolate, quickstart_evaluator  # noqa: E402
from nasplat.nn.resample import resize  # noqa: E402
from nasplat.subnet.evaluator import SubnetEvaluator  # noqa: E402

Call = tuple[tuple[int, int, int, int], tuple[int, int], str]  # input shape, output size, mode


def record_calls(evaluator: SubnetEvaluator, archs: list[Any]) -> Counter[Call]:
    calls: Counter[Call] = Counter()

    def recorder(x: torch.Tensor, size: Any, mode: str) -> torch.Tensor:
        calls[(tuple(x.shape), (int(size[0]), int(size[1])), mode)] += 1  # type: ignore[index]
        return resize(x, size, mode)

    with fusion_resize(recorder):
        for arch in archs:
            evaluator.recalibrate(arch)
            evaluator.predict(arch, flip_test=True)
    return calls


def _median_cpu(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up: the matrices are made and cached on the first call
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def time_call(call: Call, reps: int) -> dict[str, float]:
    """Seconds of one call: {impl}_fwd, {impl}_fwdbwd for impl in interpolate, resize; and diff."""
    shape, size, mode = call
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    grad = torch.randn(shape[0], shape[1], *size, generator=gen)
    impls = {"interpolate": interpolate, "resize": resize}
    out: dict[str, float] = {}
    for name, fn in impls.items():  # forward, then forward + backward, each impl in turn
        with torch.no_grad():
            out[f"{name}_fwd"] = _median_cpu(lambda fn=fn: fn(x, size, mode), reps)
    for name, fn in impls.items():
        out[f"{name}_fwdbwd"] = _median_cpu(lambda fn=fn: fn(x, size, mode).backward(grad), reps)
    with torch.no_grad():
        out["diff"] = float((resize(x, size, mode) - interpolate(x, size, mode)).abs().max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        evaluator = quickstart_evaluator(Path(tmp), "resample", 100)
        experiment = evaluator.experiment
        torch.set_num_threads(args.threads)  # the data pipeline may have changed it
        rng = np.random.default_rng(args.seed)
        archs = [experiment.space.sample(rng) for _ in range(args.archs)]
        calls = record_calls(evaluator, archs)

    totals: dict[tuple[str, str], float] = {}
    worst = {"nearest": 0.0, "bilinear": 0.0}
    for call, n in sorted(calls.items()):
        t = time_call(call, args.reps)
        mode = call[2]
        for key, seconds in t.items():
            if key != "diff":
                totals[(mode, key)] = totals.get((mode, key), 0.0) + n * seconds / args.archs
        worst[mode] = max(worst[mode], t["diff"])
    print(f"{sum(calls.values()) / args.archs:.0f} resize calls per subnet (BN recalibration + one flip-test "
          f"prediction of 100 val crops), {len(calls)} distinct; {args.archs} quickstart subnets, "
          f"{args.threads} thread(s), CPU time, median of {args.reps}")
    for mode in ("nearest", "bilinear"):
        if (mode, "resize_fwd") not in totals:
            continue
        for kind, label in (("fwd", "forward"), ("fwdbwd", "forward + backward")):
            a, b = totals[(mode, f"interpolate_{kind}")], totals[(mode, f"resize_{kind}")]
            print(f"  {mode:8s} {label:19s} F.interpolate {1e3 * a:7.1f} ms   nn.resample {1e3 * b:7.1f} ms   "
                  f"{a / b:5.2f}x faster")
        print(f"  {mode:8s} largest |difference| {worst[mode]:.1e}")


if __name__ == "__main__":
    main()
