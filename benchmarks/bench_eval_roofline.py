"""Subnet evaluation near the machine's limit: the evaluator's achieved GMAC/s over that of a bare
PyTorch stack of the same conv shapes, for random quickstart subnets.

    python benchmarks/bench_eval_roofline.py [--archs 20] [--threads 1] [--repeats 3]
                                             [--profile-archs 3] [--checkpoint CKPT]

For each arch (seeded samples of `search_spaces/quickstart.yaml`, the quickstart's supernet,
random weights unless `--checkpoint`, on the quickstart's synthetic data: 400 train / 100 val
images), BN is recalibrated (timed separately) and the val crops are predicted with the flip test,
in three modes, interleaved in one process (their order rotates from arch to arch):

- elastic:     the prediction runs the elastic supernet (`SubnetEvaluator(static_predict=False)`);
- interpolate: it runs a static copy of the subnet with BN folded into the convs, made per arch
               (`subnet.inference.inference_copy`), its fusions resized by F.interpolate;
- evaluator:   the same copy with the fusions resized by `nn.resample.resize` (two small matmuls):
               what the evaluator does by default, and the mode the goal is for.

MACs are those of the subnet's convs as the supernet runs them (true groups), recorded once per
arch with forward hooks. The bare stack replays the same conv calls (input shape, weight shape,
stride, padding, groups) in the same order on preallocated random tensors with `F.conv2d`, in the
memory layout the recipe runs the evaluator in (`channels_last`: NHWC for cpu_small). The
ratio = evaluator GMAC/s / bare-stack GMAC/s = bare time / predict time; goal >= 0.7. Times are
process CPU time (one intra-op thread by default, as an evaluator actor runs), the best of
`--repeats` rounds, each of which runs every mode and the bare stack once, so that a drift in the
machine's speed hits all of them alike. Then torch.profiler splits the `evaluator` prediction of `--profile-archs` archs into
where its time goes: conv kernels, memory-bound ops (add, ReLU, upsample, cat, copies), the
per-arch copy, RoI align and decoding, and what no op accounts for (Python, dispatch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import fusion_resize, interpolate, quickstart_evaluator  # noqa: E402
from nasplat.nn.elastic import DENSE_GROUPED_BELOW, ElasticConv2d  # noqa: E402
from nasplat.nn.resample import RESIZE_RANGE, resize  # noqa: E402
from nasplat.subnet.evaluator import COPY_RANGE, SubnetEvaluator, load_supernet  # noqa: E402
from nasplat.subnet.inference import inference_copy  # noqa: E402

ConvCall = tuple[tuple[int, ...], tuple[int, int, int, int], int, int, int]  # x shape, weight, stride, pad, groups


def _cpu() -> float:
    return time.process_time()


def record_convs(evaluator: SubnetEvaluator, arch: Any) -> list[ConvCall]:
    """The conv calls of one prediction of `arch` (flip test on) as the elastic supernet makes them."""
    calls: list[ConvCall] = []

    def hook(module: ElasticConv2d, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        g = module.groups
        w = (module.out_channels, module.in_channels // g, module.kernel_size, module.kernel_size)
        calls.append((tuple(inputs[0].shape), w, module.stride, module.padding, g))

    handles = [m.register_forward_hook(hook) for m in evaluator.net.modules() if isinstance(m, ElasticConv2d)]
    try:
        evaluator.predict(arch, flip_test=True)
    finally:
        for h in handles:
            h.remove()
    return calls


def macs(calls: list[ConvCall], *, dense_small_groups: bool = False) -> int:
    total = 0
    for x, (out, cin_g, kh, kw), stride, _, g in calls:
        h, w = -(-x[2] // stride), -(-x[3] // stride)
        per_out = cin_g * kh * kw
        if dense_small_groups and g > 1 and cin_g < DENSE_GROUPED_BELOW:
            per_out *= g  # the dense block-diagonal conv does every group's columns
        total += x[0] * out * h * w * per_out
    return total


def bare_stack(calls: list[ConvCall], channels_last: bool) -> Callable[[], float]:
    """A function that replays the conv calls with F.conv2d once, in the evaluator's memory layout
    (NHWC with `channels_last`), and returns its CPU seconds."""
    g = torch.Generator().manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    inputs: dict[tuple[int, ...], torch.Tensor] = {}
    weights: dict[tuple[int, ...], torch.Tensor] = {}
    for x, w, *_ in calls:
        if x not in inputs:
            inputs[x] = torch.randn(x, generator=g).contiguous(memory_format=layout)
        if w not in weights:
            weights[w] = torch.randn(w, generator=g).contiguous(memory_format=layout)

    @torch.no_grad()
    def run() -> float:
        t0 = _cpu()
        for x, w, stride, pad, groups in calls:
            F.conv2d(inputs[x], weights[w], None, stride, pad, 1, groups)
        return _cpu() - t0

    return run


def timed_predict(evaluator: SubnetEvaluator, arch: Any) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `predict(arch, flip_test=True)`."""
    t0, w0 = _cpu(), time.perf_counter()
    evaluator.predict(arch, flip_test=True)
    return _cpu() - t0, time.perf_counter() - w0


_CATEGORIES = (  # first match wins; matched against the op name
    ("conv kernels", ("conv",)),
    ("add", ("aten::add",)),
    ("ReLU", ("relu", "clamp_min", "threshold")),
    ("upsample", ("upsample", "interpolate")),
    ("cat", ("aten::cat",)),
    ("copies, allocation", ("copy_", "clone", "contiguous", "aten::to", "_to_copy", "empty", "zero_", "fill_", "resize_")),
    ("RoI align", ("grid_sampler", "roi", "index", "gather")),
)


def _category(name: str) -> str:
    for label, keys in _CATEGORIES:
        if any(k in name for k in keys):
            return label
    return "decode and other ops"


_RANGES = {COPY_RANGE: "per-arch copy", RESIZE_RANGE: "upsample"}  # named ranges -> their category


def _range_label(event: Any) -> str | None:
    """The category of the innermost named range holding `event` (itself included), if any."""
    while event is not None:
        if event.name in _RANGES:
            return _RANGES[event.name]
        event = event.cpu_parent
    return None


def where_time_goes(evaluator: SubnetEvaluator, archs: list[Any]) -> tuple[dict[str, float], float]:
    """Seconds per category of the default (`evaluator`) prediction of `archs` (profiled, one pass each), and
    their wall total."""
    from torch.profiler import ProfilerActivity, profile

    seconds: dict[str, float] = defaultdict(float)
    wall = 0.0
    for arch in archs:
        evaluator.recalibrate(arch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            w0 = time.perf_counter()
            evaluator.predict(arch, flip_test=True)
            wall += time.perf_counter() - w0
        for event in prof.events():
            label = _range_label(event) or _category(event.name)
            seconds[label] += event.self_cpu_time_total / 1e6
    seconds["Python, dispatch (no op)"] = max(0.0, wall - sum(seconds.values()))
    return dict(seconds), wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile-archs", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained quickstart supernet (default: random)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        static = quickstart_evaluator(Path(tmp), "roofline", 400,  # the default: static BN-folded copy
                                      load_supernet(args.checkpoint)[0] if args.checkpoint else None)
        experiment, net = static.experiment, static.net
        elastic = SubnetEvaluator(experiment, net=net, static_predict=False)
        torch.set_num_threads(args.threads)  # the data pipeline may have changed it
        rng = np.random.default_rng(args.seed)
        archs = [experiment.space.sample(rng) for _ in range(args.archs)]

        modes = {  # name -> (evaluator, fusions resized by F.interpolate)
            "elastic": (elastic, False), "interpolate": (static, True), "evaluator": (static, False)}
        rows = []
        for i, arch in enumerate(archs):
            t0 = _cpu()
            static.recalibrate(arch)  # both evaluators share the net: one recalibration serves both
            recal = _cpu() - t0
            calls = record_convs(elastic, arch)
            n_macs = macs(calls)
            order = list(modes)
            order = order[i % 3 :] + order[: i % 3]  # rotate the order: no mode always runs first
            run_bare = bare_stack(calls, static.precision.channels_last)
            t = {name: (float("inf"), float("inf")) for name in modes}
            bare = float("inf")
            for _ in range(args.repeats):  # rounds of every mode and the bare stack: drift hits all alike
                for name in order:
                    ev, interp = modes[name]
                    with fusion_resize(interpolate if interp else resize):
                        cpu, wall = timed_predict(ev, arch)
                    t[name] = (min(t[name][0], cpu), min(t[name][1], wall))
                bare = min(bare, run_bare())
            t0 = _cpu()
            inference_copy(net, arch)
            copy_s = _cpu() - t0
            rows.append({"macs": n_macs, "dense_macs": macs(calls, dense_small_groups=True), "recal": recal,
                         "bare": bare, "copy": copy_s, **{m: t[m][0] for m in modes},
                         **{f"wall_{m}": t[m][1] for m in modes}})
            r = rows[-1]
            print(f"arch {i:2d}: {n_macs / 1e9:6.3f} GMAC  bare {n_macs / bare / 1e9:6.2f} GMAC/s  "
                  + "  ".join(f"{m} {n_macs / r[m] / 1e9:6.2f} ({bare / r[m]:.3f})" for m in modes)
                  + f"  BN recal {recal:.2f} s  copy {1e3 * copy_s:.0f} ms", flush=True)

        layout = "NHWC (channels_last)" if static.precision.channels_last else "NCHW"
        print(f"\n{len(rows)} quickstart subnets, 100 val crops, flip test, {args.threads} thread(s), "
              f"{'trained' if args.checkpoint else 'random'} weights, {layout} as the recipe says, "
              f"bare stack alike; CPU time, best of {args.repeats}")
        print("evaluator GMAC/s / bare conv stack GMAC/s, median (min-max):")
        for m, label in (("elastic", "elastic supernet"), ("interpolate", "static copy, fusions by F.interpolate"),
                         ("evaluator", "the evaluator (static copy, nn.resample)")):
            ratio = [r["bare"] / r[m] for r in rows]
            goal = "   goal >= 0.7" if m == "evaluator" else ""
            print(f"  {label:42s} {statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}){goal}")
        for m in ("elastic", "interpolate"):
            cpu = statistics.median(r[m] / r["evaluator"] for r in rows)
            wall = statistics.median(r[f"wall_{m}"] / r["wall_evaluator"] for r in rows)
            print(f"median predict time {m}/evaluator: CPU {cpu:.3f}x, wall {wall:.3f}x")
        print(f"BN recalibration median {statistics.median(r['recal'] for r in rows):.2f} s (timed apart, not in the ratio)")
        extra = statistics.median(r["dense_macs"] / r["macs"] - 1 for r in rows)
        print(f"per-arch copy (extract + fold): median {100 * statistics.median(r['copy'] / r['evaluator'] for r in rows):.1f}%"
              f" of the evaluator's prediction; dense small-group convs: median {100 * extra:.1f}% extra MACs")

        if args.profile_archs:
            seconds, wall = where_time_goes(static, archs[: args.profile_archs])
            bare_s = sum(r["bare"] for r in rows[: args.profile_archs])
            print(f"\nwhere the evaluator's prediction time goes ({args.profile_archs} archs, profiled, "
                  f"{wall:.2f} s wall; the bare conv stack: {bare_s:.2f} s CPU):")
            for label, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
                print(f"  {label:28s} {s:7.3f} s  {100 * s / wall:5.1f}%")
            moves = sum(seconds.get(k, 0.0) for k in ("add", "ReLU", "upsample", "cat", "copies, allocation"))
            print(f"  memory-bound data movement (add, ReLU, upsample, cat, copies): {100 * moves / wall:.1f}%")


if __name__ == "__main__":
    main()
