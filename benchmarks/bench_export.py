"""The exported subnet on the CPU: PyTorch eager vs onnxruntime latency, and `nasplat predict` end
to end.

1. Latency at batch 1 and 8 of the exported best quickstart subnet (`--export`, default
   outputs/quickstart/exports/best): PyTorch eager (no_grad) vs onnxruntime (CPU execution
   provider), both with `--threads` threads, median of `--runs` calls; the ratio side by side.
   Goal: onnxruntime <= 0.3x eager at batch 1, <= 0.5x at batch 8. (`--predict-only` skips it.)
2. Model load, side by side: an onnxruntime session of `model.onnx` vs of the export's
   onnxruntime-optimised `model.ort.onnx`, interleaved, median of 7 loads each.
3. Encoding of the drawn pictures, as `nasplat predict` writes them (`draw.encode_picture`):
   PNG level 1 (the default: Huffman coding after the Up filter), stored PNG (`--png-compression
   0`), zlib levels 2 and 6, and JPEG (`--format jpg`): ms per image and size, interleaved.
4. `nasplat predict` (in this process, `predict_images`, what the command runs) on `--images`
   synthetic images (or the images of `--image-dir`), whole image as one person, PNGs drawn, for
   each of `--backends`, serial (`--workers 0`) and pipelined (`--workers`) side by side,
   interleaved, the run of median time of `--repeats` (every number of a row from it): images/s end to end (model load included), the model
   load on its own, and the share of the time spent outside the network (reading, crops,
   decoding, drawing, writing) in the steady state, from the start of the first network call to
   the end of the last: the goal < 25% is judged there. The share over the whole run (model load
   and the last drawings included) is printed beside it.

Without a quickstart export (`nasplat run experiments/quickstart.yaml` makes one) the script
exports the largest-GFLOPs subnet under the quickstart budget among 300 seeded samples, with random
weights: latency does not depend on the weights. It says which one it measured.

Run: python benchmarks/bench_export.py [--export DIR] [--runs 20] [--threads 2] [--images 50]
     [--image-dir DIR] [--predict-only] [--backends onnx,torch] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from nasplat.cli.predict import predict_images
from nasplat.data.draw import JPEG_QUALITY, draw_wholebody, encode_picture
from nasplat.data.synth import generate_split
from nasplat.files import atomic_write_json
from nasplat.flops import analytic_gflops
from nasplat.models import build_static
from nasplat.space import load_space
from nasplat.subnet.export import ONNX, ONNX_OPTIMIZED, LatencyPlan, load_exported, measure_latency, onnx_model_file
from nasplat.subnet.onnx_export import export_onnx, onnx_session, save_optimized
from nasplat.subnet.predict import BACKENDS, IMAGE_SUFFIXES, Predictor, whole_image

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_EXPORT = ROOT / "outputs" / "quickstart" / "exports" / "best"
QUICKSTART_SPACE = ROOT / "search_spaces" / "quickstart.yaml"
BUDGET = 0.1  # experiments/quickstart.yaml search.budget_gflops
LOADS = 7  # model loads per file
PNG_IMAGES = 10  # drawn pictures encoded per level


def stand_in_export(out: Path) -> str:
    """A quickstart-space subnet near the budget, random weights, written like an export (with
    the onnxruntime-optimised copy)."""
    space = load_space(QUICKSTART_SPACE)
    bpm = space.all_blocks_per_module()
    rng = np.random.default_rng(0)
    under = [a for a in (space.sample(rng) for _ in range(300)) if analytic_gflops(a, bpm).total <= BUDGET]
    arch = max(under, key=lambda a: analytic_gflops(a, bpm).total)
    net = build_static(arch, bpm, seed=0).eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "model.pt")
    atomic_write_json(arch.to_flat(), out / "arch.json")
    export_onnx(net, out / ONNX)
    optimized = dict(save_optimized(out / ONNX, out / ONNX_OPTIMIZED), file=ONNX_OPTIMIZED)
    atomic_write_json({"blocks_per_module": list(bpm), "sampling_ratio": 1, "onnx": {"file": ONNX, "optimized": optimized}},
                      out / "meta.json")
    return f"stand-in: quickstart-space subnet of {analytic_gflops(arch, bpm).total:.4f} GFLOPs, random weights"


def latency_table(export: Path, runs: int, threads: int) -> None:
    net = load_exported(export)
    plan = LatencyPlan(batches=(1, 8), runs=runs, threads=threads, warmup=3)
    lat = measure_latency(net, onnx_session(export / ONNX, threads=threads), plan)
    print(f"latency, median of {runs} runs, {threads} threads per backend, {lat['machine']}")
    print(f"{'batch':>5}  {'eager ms':>9}  {'onnxruntime ms':>14}  {'ratio':>6}  goal")
    for b, goal in (("1", 0.3), ("8", 0.5)):
        v = lat["batches"][b]
        ratio = v["onnx_ms"] / v["torch_ms"]
        print(f"{b:>5}  {v['torch_ms']:9.1f}  {v['onnx_ms']:14.1f}  {ratio:5.2f}x  <= {goal}x "
              f"{'met' if ratio <= goal else 'NOT met'}")


def model_loads(export: Path, threads: int) -> None:
    chosen = onnx_model_file(export)
    if chosen.name == ONNX:
        print(f"model load: the export has no {ONNX_OPTIMIZED} for this onnxruntime; {ONNX} only")
        files = [export / ONNX]
    else:
        files = [export / ONNX, chosen]
    times: dict[str, list[float]] = {f.name: [] for f in files}
    for _ in range(LOADS):
        for f in files:
            t = time.perf_counter()
            onnx_session(f, threads=threads)
            times[f.name].append(time.perf_counter() - t)
    cells = ", ".join(f"{name} {statistics.median(v) * 1000:.0f} ms" for name, v in times.items())
    print(f"model load (onnxruntime session, {threads} threads), median of {LOADS} interleaved: {cells}")


def png_levels(export: Path, images: list[Path], threads: int) -> None:
    predictor = Predictor(export, "onnx", threads=threads)
    pictures = []
    for path in images[:PNG_IMAGES]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        (kp, _), = predictor.predict([(image, whole_image(image))])
        pictures.append(draw_wholebody(image, kp))
    settings = {"PNG 1 (Huffman only)*": ("png", 1), "stored PNG (0)": ("png", 0),
                "PNG zlib 2": ("png", 2), "PNG zlib 6": ("png", 6), f"JPEG q{JPEG_QUALITY}": ("jpg", 1)}
    ms: dict[str, list[float]] = {k: [] for k in settings}
    size: dict[str, list[int]] = {k: [] for k in settings}
    for picture in pictures:
        for name, (fmt, level) in settings.items():
            t = time.perf_counter()
            png = encode_picture(picture, fmt, png_compression=level)
            ms[name].append((time.perf_counter() - t) * 1000)
            size[name].append(len(png))
    h, w = pictures[0].shape[:2]
    cells = ", ".join(f"{name} {statistics.median(ms[name]):.1f} ms {statistics.mean(size[name]) / 1024:.0f} KiB"
                      for name in settings)
    print(f"encoding of {len(pictures)} drawn {w}x{h} pictures: median ms, mean size "
          f"(* = what predict writes by default): {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=QUICKSTART_EXPORT)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=50, help="synthetic images for predict")
    parser.add_argument("--image-dir", type=Path, default=None, help="predict these images instead")
    parser.add_argument("--predict-only", action="store_true", help="skip the latency table")
    parser.add_argument("--backends", default=",".join(("onnx", "torch")), help="comma-separated predict backends")
    parser.add_argument("--workers", type=int, default=2, help="predict's pipelined --workers")
    parser.add_argument("--repeats", type=int, default=3, help="predict runs per setting (the median is printed)")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in BACKENDS for b in backends):
        parser.error(f"--backends {args.backends!r}: a comma-separated list of {', '.join(BACKENDS)}")

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp_dir:
        tmp = Path(tmp_dir)
        if (args.export / ONNX).is_file():
            export, what = args.export, f"export {args.export}"
        else:
            export = tmp / "export"
            shown = os.path.relpath(args.export / ONNX, Path.cwd())
            what = stand_in_export(export) + f" (no {shown})"
        arch = Predictor(export, "torch", load=False).arch
        print(f"model: {what}; body input {arch.body.input_size}")
        if not args.predict_only:
            latency_table(export, args.runs, args.threads)
        model_loads(export, args.threads)

        if args.image_dir is not None:
            images = args.image_dir
        else:
            generate_split(tmp / "data", "val", args.images, seed=1)
            images = tmp / "data" / "val2017"
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        png_levels(export, files, args.threads)

        settings = [(b, w) for b in backends for w in dict.fromkeys((0, args.workers))]
        reports: dict[tuple[str, int], list] = {s: [] for s in settings}
        for r in range(args.repeats):
            for backend, workers in settings:
                out = tmp / f"pred-{backend}-{workers}-{r}"
                report = predict_images(export, [images], out, backend=backend, threads=args.threads, workers=workers)
                if report.failed:
                    raise SystemExit(f"nasplat predict failed on {report.failed} input(s)")
                reports[(backend, workers)].append(report)
        print(f"nasplat predict on {len(files)} images of {images if args.image_dir else 'a synthetic val set'}, "
              f"whole image as one person, PNGs drawn, the median-time run of {args.repeats} interleaved; outside = share "
              "of the time not in network calls")
        for (backend, workers), runs in reports.items():
            mid = sorted(runs, key=lambda rep: rep.total)[len(runs) // 2]  # every number of a row from this run
            t = mid.timing
            spread = f"{min(r.images_per_s for r in runs):.1f}-{max(r.images_per_s for r in runs):.1f}"
            print(f"  --backend {backend} --workers {workers}: {mid.images} images in {mid.total:.2f} s = "
                  f"{mid.images_per_s:.1f} images/s end to end (all runs {spread}); model load ({mid.model_file}) "
                  f"{t.load:.2f} s; network {t.network:.2f} s in {len(t.calls)} calls; steady state {t.steady:.2f} s, "
                  f"{mid.outside_steady:.0%} outside the network (goal < 25%: "
                  f"{'met' if mid.outside_steady < 0.25 else 'NOT met'}); whole run {mid.outside_total:.0%} outside")

if __name__ == "__main__":
    main()
