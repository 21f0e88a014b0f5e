"""The exported subnet on the CPU: PyTorch eager vs onnxruntime latency, and `nasplat predict` end
to end.

1. Latency at batch 1 and 8 of the exported best quickstart subnet (`--export`, default
   outputs/quickstart/exports/best): PyTorch eager (no_grad) vs onnxruntime (CPU execution
   provider), both with `--threads` threads, median of `--runs` calls; the ratio side by side.
   Goal: onnxruntime <= 0.3x eager at batch 1, <= 0.5x at batch 8.
2. `nasplat predict` (in this process, default backend) on `--images` synthetic images, whole image
   as one person, PNGs drawn: images/s and the share of the time spent outside the network
   (reading, crops, decoding, drawing, writing). Goal: < 25%.

Without a quickstart export (`nasplat run experiments/quickstart.yaml` makes one) the script
exports the largest-GFLOPs subnet under the quickstart budget among 300 seeded samples, with random
weights: latency does not depend on the weights. It says which one it measured.

Run: python benchmarks/bench_export.py [--export DIR] [--runs 20] [--threads 2] [--images 50]
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from nasplat.cli.main import app
from nasplat.data.synth import generate_split
from nasplat.files import atomic_write_json
from nasplat.flops import analytic_gflops
from nasplat.models import build_static
from nasplat.space import load_space
from nasplat.subnet.export import LatencyPlan, load_exported, measure_latency
from nasplat.subnet.onnx_export import export_onnx, onnx_session

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_EXPORT = ROOT / "outputs" / "quickstart" / "exports" / "best"
QUICKSTART_SPACE = ROOT / "search_spaces" / "quickstart.yaml"
BUDGET = 0.1  # experiments/quickstart.yaml search.budget_gflops


def stand_in_export(out: Path) -> str:
    """A quickstart-space subnet near the budget, random weights, written like an export."""
    space = load_space(QUICKSTART_SPACE)
    bpm = space.all_blocks_per_module()
    rng = np.random.default_rng(0)
    under = [a for a in (space.sample(rng) for _ in range(300)) if analytic_gflops(a, bpm).total <= BUDGET]
    arch = max(under, key=lambda a: analytic_gflops(a, bpm).total)
    net = build_static(arch, bpm, seed=0).eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "model.pt")
    atomic_write_json(arch.to_flat(), out / "arch.json")
    atomic_write_json({"blocks_per_module": list(bpm), "sampling_ratio": 1}, out / "meta.json")
    export_onnx(net, out / "model.onnx")
    return f"stand-in: quickstart-space subnet of {analytic_gflops(arch, bpm).total:.4f} GFLOPs, random weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=QUICKSTART_EXPORT)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp_dir:
        tmp = Path(tmp_dir)
        if (args.export / "model.onnx").is_file():
            export, what = args.export, f"export {args.export}"
        else:
            export = tmp / "export"
            shown = os.path.relpath(args.export / "model.onnx", Path.cwd())
            what = stand_in_export(export) + f" (no {shown})"
        net = load_exported(export)
        g = analytic_gflops(net.arch, net.blocks_per_module)
        print(f"model: {what}; {g.total:.4f} GFLOPs, body input {net.arch.body.input_size}")

        plan = LatencyPlan(batches=(1, 8), runs=args.runs, threads=args.threads, warmup=3)
        lat = measure_latency(net, onnx_session(export / "model.onnx", threads=args.threads), plan)
        print(f"latency, median of {args.runs} runs, {args.threads} threads per backend, {lat['machine']}")
        print(f"{'batch':>5}  {'eager ms':>9}  {'onnxruntime ms':>14}  {'ratio':>6}  goal")
        for b, goal in (("1", 0.3), ("8", 0.5)):
            v = lat["batches"][b]
            ratio = v["onnx_ms"] / v["torch_ms"]
            print(f"{b:>5}  {v['torch_ms']:9.1f}  {v['onnx_ms']:14.1f}  {ratio:5.2f}x  <= {goal}x "
                  f"{'met' if ratio <= goal else 'NOT met'}")

        generate_split(tmp / "data", "val", args.images, seed=1)
        images = tmp / "data" / "val2017"
        n = len(list(images.glob("*.jpg")))
        for backend in ("onnx", "torch"):
            start = time.perf_counter()
            res = CliRunner().invoke(app, ["predict", str(export), str(images), "--out", str(tmp / f"pred-{backend}"),
                                           "--backend", backend, "--threads", str(args.threads)])
            wall = time.perf_counter() - start
            if res.exit_code != 0:
                raise SystemExit(f"nasplat predict failed: {res.output}")
            outside = re.search(r"(\d+)% of the time outside the network", res.stderr)
            share = int(outside.group(1)) if outside else -1
            print(f"nasplat predict --backend {backend}: {n} images in {wall:.2f} s = {n / wall:.1f} images/s, "
                  f"{share}% outside the network (goal < 25%: {'met' if 0 <= share < 25 else 'NOT met'})")


if __name__ == "__main__":
    main()
