"""Export a subnet as a static model that loads without the supernet.

An export directory holds
- `model.pt`: torch.save of the static subnet's state_dict (after BN recalibration);
- `arch.json`: the arch's flat choices;
- `model.onnx`: the whole network in one ONNX graph (`nasplat.subnet.onnx_export`), verified
  against PyTorch on the validation crops;
- `model.ort.onnx`: the same graph as onnxruntime optimises it (fusions, constant folding), which
  loads faster; valid for the onnxruntime version `meta.json` records (`onnx_model_file` picks it
  when that is the one installed, else `model.onnx`);
- `meta.json`: GFLOPs, params, blocks-per-module, RoIAlign sampling ratio, the source experiment,
  study and checkpoint, per-part AP/AR and on which val set, recipe, data, the ONNX verification
  numbers and the latency of both backends;
- `MODEL_CARD.md`: the same for a reader (`nasplat.subnet.card`).

`export_subnet` writes all of it; `load_exported(dir)` rebuilds the static ZoomNet from
`arch.json` and loads the weights. Registering an export in the MLflow Model Registry is a
tracking side effect (`nasplat.tracking.registry`), done by `orchestration.run.publish_export`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch

from nasplat import __version__
from nasplat.config import Experiment
from nasplat.data.scaling import resize_batch
from nasplat.errors import ConfigError, TrainingError
from nasplat.files import atomic_write_json, atomic_write_text
from nasplat.flops import analytic_gflops, analytic_params
from nasplat.models import ZoomNet, build_static
from nasplat.space.arch import Arch
from nasplat.subnet.card import model_card
from nasplat.subnet.evaluator import SubnetEvaluator
from nasplat.subnet.onnx_export import (
    OPSET,
    export_onnx,
    latency_ms,
    onnx_session,
    run_onnx,
    save_optimized,
    torch_threads,
    verify_onnx,
)
from nasplat.train.checkpoint import atomic_torch_save

WEIGHTS = "model.pt"
ARCH = "arch.json"
META = "meta.json"
ONNX = "model.onnx"
ONNX_OPTIMIZED = "model.ort.onnx"
CARD = "MODEL_CARD.md"

VERIFY_CROPS = 64  # validation crops the ONNX graph is checked on


@dataclass(frozen=True)
class LatencyPlan:
    """What `export_subnet` times for the model card (benchmarks/bench_export.py times more)."""

    batches: tuple[int, ...] = (1, 8)  # batch sizes
    runs: int = 10  # timed calls per backend and batch size (the median is reported)
    threads: int = 2  # CPU threads of each backend
    warmup: int = 2  # untimed calls first


def export_subnet(experiment: Experiment, arch: Arch, out: Path, *, device: str = "cpu",
                  checkpoint: Path | None = None, net: ZoomNet | None = None,
                  metrics: Mapping[str, Mapping[str, float]] | None = None,
                  origin: Mapping[str, Any] | None = None, onnx: bool = True,
                  latency: LatencyPlan | None = LatencyPlan(),
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the static model of `arch` to `out` with its ONNX graph, metadata and model card.
    Returns the meta dict (what `meta.json` holds).

    By default the subnet is taken from the experiment's trained supernet (`checkpoint`, default
    its latest) and BN-recalibrated; `net` exports a static ZoomNet of `arch` as it is instead
    (e.g. a retrained subnet; no recalibration; it is moved to the CPU for the ONNX export). `metrics`
    ({part: {"AP", "AR"}}, on the experiment's validation set, which `meta["val"]` describes) are
    recorded as given, else the subnet is evaluated there. `origin` says where it
    came from (e.g. {"study": ..., "trial": ...}; recorded as given). `onnx=False` skips
    `model.onnx`, its verification and the latency; `latency` says what is timed (None: nothing).
    The ONNX check is recorded (`meta["onnx"]["verification"]`), not judged here: the tests hold
    it to <= 1e-5 and full argmax agreement. `progress` is called with one short line as each
    step starts ("recalibrating batch norm on 64 training images ...") and once at the end
    ("done in 41.2 s: <out>"); None: silent.
    Raises ArchError (arch not in the space), TrainingError (`net` is another arch, no
    checkpoint, the ONNX export or its checker fails), DataError.
    """
    experiment.space.validate(arch)
    if net is not None and net.arch != arch:
        raise TrainingError("the network given to export is not the arch given", key="arch")
    say = progress or (lambda line: None)
    started = time.perf_counter()
    if net is None:
        say("loading the supernet checkpoint and the data ...")
        ev = SubnetEvaluator(experiment, device, checkpoint=checkpoint, load_val=True)
        say(f"recalibrating batch norm on {len(ev.calibration)} training images ...")
        ev.recalibrate(arch)
        static = ev.net.extract(arch).eval()
        ev.net = static  # evaluate and verify the very model that is written
    else:
        static = net.to(device).eval()
        say("loading the data ...")
        ev = SubnetEvaluator(experiment, device, checkpoint=checkpoint, net=static, load_val=True)
    assert ev.val is not None  # load_val=True
    if metrics is None:
        say(f"evaluating on {len(ev.val)} validation persons ...")
        metrics = ev.evaluate(arch, recalibrate=False)["metrics"]
    bpm = ev.blocks_per_module
    meta: dict[str, Any] = {
        "name": out.name,
        "experiment": experiment.name,
        "experiment_file": str(experiment.path),
        "space": experiment.space.name,
        "checkpoint": None if ev.checkpoint is None else str(ev.checkpoint),
        "origin": dict(origin or {}),
        "exported_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nasplat_version": __version__,
        "arch": arch.to_flat(),
        "blocks_per_module": list(bpm),
        "sampling_ratio": int(getattr(static, "sampling_ratio", 1)),
        "input_size": list(arch.body.input_size),
        "gflops": analytic_gflops(arch, bpm).as_dict(),
        "params": int(analytic_params(arch, bpm)),
        "metrics": {p: {k: float(v) for k, v in m.items()} for p, m in metrics.items()},
        "val": _val_description(experiment, ev),
        "recipe": _recipe(experiment),
        "data": _data(experiment),
    }
    out.mkdir(parents=True, exist_ok=True)
    say(f"writing {WEIGHTS}")
    state = {k: v.detach().cpu() for k, v in static.state_dict().items()}
    atomic_torch_save(state, out / WEIGHTS)
    atomic_write_json(arch.to_flat(), out / ARCH)
    if onnx:
        static_cpu = static.cpu().eval()
        say(f"exporting {ONNX} ...")
        export_onnx(static_cpu, out / ONNX)
        session = onnx_session(out / ONNX, threads=latency.threads if latency else 1)
        crops = resize_batch(ev.val.images[:VERIFY_CROPS], arch.body.input_size)
        say(f"checking it against PyTorch on {crops.shape[0]} validation crops ...")
        verification = verify_onnx(static_cpu, session, crops)
        say(f"writing {ONNX_OPTIMIZED} (optimised by onnxruntime) and checking it ...")
        optimized = save_optimized(out / ONNX, out / ONNX_OPTIMIZED)
        check = verify_onnx(static_cpu, onnx_session(out / ONNX_OPTIMIZED, threads=1), crops)
        optimized.update(file=ONNX_OPTIMIZED, max_heatmap_abs_diff=check["max_heatmap_abs_diff"],
                         argmax_agreement=check["argmax_agreement"])
        meta["onnx"] = {"file": ONNX, "opset": OPSET, "verification": verification, "optimized": optimized}
        if latency is not None and latency.batches:
            say(f"timing PyTorch and onnxruntime (batches of {', '.join(map(str, latency.batches))}) ...")
            meta["latency"] = measure_latency(static_cpu, session, latency)
    else:
        for name in (ONNX, ONNX_OPTIMIZED):  # never leave a graph of an earlier export beside new weights
            (out / name).unlink(missing_ok=True)
    say(f"writing {META} and {CARD}")
    atomic_write_json(meta, out / META)
    atomic_write_text(model_card(meta), out / CARD)
    say(f"done in {time.perf_counter() - started:.1f} s: {out}")
    return meta


def measure_latency(net: ZoomNet, session: Any, plan: LatencyPlan = LatencyPlan()) -> dict[str, Any]:
    """Median latency of PyTorch eager (no_grad) and onnxruntime (`session`, made with
    `plan.threads` threads) at each batch size of `plan`, torch with `plan.threads` threads.
    Returns {"threads", "runs", "machine", "batches": {str(b): {"torch_ms", "onnx_ms"}}}."""
    h, w = net.arch.body.input_size
    result: dict[str, Any] = {"threads": plan.threads, "runs": plan.runs, "machine": machine(), "batches": {}}
    gen = torch.Generator().manual_seed(0)
    with torch_threads(plan.threads), torch.no_grad():
        for b in plan.batches:
            x = torch.randn(b, 3, h, w, generator=gen)
            x_np = x.numpy()
            eager = latency_ms(lambda: net(x), runs=plan.runs, warmup=plan.warmup)
            ort_ms = latency_ms(lambda: run_onnx(session, x_np), runs=plan.runs, warmup=plan.warmup)
            result["batches"][str(b)] = {"torch_ms": eager, "onnx_ms": ort_ms}
    return result


def machine() -> str:
    """The CPU model and core count, for latency numbers."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def _val_description(experiment: Experiment, ev: SubnetEvaluator) -> dict[str, Any]:
    assert ev.val is not None
    persons = len(ev.val)
    images = len(set(ev.val.image_id.tolist()))
    boxes = "GT person boxes" if experiment.data.detections is None else f"detections {experiment.data.detections}"
    ann = Path(experiment.data.root) / "annotations" / "coco_wholebody_val_v1.0.json"
    flip = experiment.trainer.eval.flip_test
    return {
        "annotations": str(ann),
        "persons": persons,
        "images": images,
        "boxes": boxes,
        "flip_test": flip,
        "description": f"{persons} persons of {images} images of `{ann}` ({boxes}, flip test {'on' if flip else 'off'})",
    }


def _recipe(experiment: Experiment) -> dict[str, Any]:
    r = experiment.trainer
    return {
        "trainer": f"{r.name} ({experiment.trainer_path})",
        "epochs": r.schedule.epochs,
        "batch_size": r.batch_size,
        "optimizer": f"{r.optimizer.name}, lr {r.optimizer.lr}, weight decay {r.optimizer.weight_decay}",
        "sandwich": f"max + min + {r.sandwich.num_random} random subnets per step",
        "distillation": "in-place from the max subnet" if r.distillation.enabled else "off",
        "workers": experiment.cluster.num_workers,
        "bn_recalibration": f"{r.bn_recalibration.images} training images",
    }


def _data(experiment: Experiment) -> dict[str, Any]:
    d = experiment.data
    out: dict[str, Any] = {"root": str(d.root)}
    if d.synthetic is not None:
        s = d.synthetic
        out["synthetic"] = f"generated: {s.train} train / {s.val} val images, seed {s.seed}, hand length {s.hand_length}"
    out["detections"] = None if d.detections is None else str(d.detections)
    return out


def load_exported(directory: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The static ZoomNet of an export directory, in eval mode. No supernet or space needed.

    Raises ConfigError (missing or malformed arch/meta) and TrainingError (weights do not fit).
    """
    d = Path(directory)
    arch, bpm, sampling = read_export(d)
    net = build_static(arch, bpm, sampling_ratio=sampling)  # type: ignore[arg-type]
    try:
        state = torch.load(d / WEIGHTS, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except FileNotFoundError as e:
        raise TrainingError("weights file is missing", source=str(d / WEIGHTS)) from e
    except RuntimeError as e:
        raise TrainingError(f"weights do not fit the arch ({str(e).splitlines()[0]})", source=str(d / WEIGHTS)) from e
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: torch raises many types
        raise TrainingError(f"cannot read the weights ({type(e).__name__})", source=str(d / WEIGHTS)) from e
    return net.to(device).eval()


def onnx_model_file(directory: str | Path) -> Path:
    """The ONNX file of an export directory to load: its onnxruntime-optimised model when
    `meta.json` says this onnxruntime version wrote it and the file is there, else `model.onnx`
    (an older export, another onnxruntime, or no optimised file)."""
    d = Path(directory)
    try:
        optimized = json.loads((d / META).read_text())["onnx"]["optimized"]
        name, version = optimized["file"], optimized["onnxruntime"]
    except (OSError, ValueError, KeyError, TypeError):
        return d / ONNX
    path = d / Path(str(name)).name  # a file of this folder, whatever meta.json says
    return path if version == ort.__version__ and path.is_file() else d / ONNX


def read_export(directory: str | Path) -> tuple[Arch, tuple[int, int, int], int]:
    """The arch, blocks per module and RoIAlign sampling ratio of an export directory.
    Raises ConfigError (missing or malformed arch/meta)."""
    d = Path(directory)
    try:
        arch = Arch.from_json((d / ARCH).read_text())
        meta = json.loads((d / META).read_text())
        bpm = tuple(int(b) for b in meta["blocks_per_module"])
        sampling = int(meta.get("sampling_ratio", 1))
    except FileNotFoundError as e:
        raise ConfigError(f"not an export directory: {e.filename} is missing", source=str(d)) from e
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"malformed export metadata ({e})", source=str(d / META)) from e
    return arch, bpm, sampling  # type: ignore[return-value]


__all__ = [
    "ARCH",
    "CARD",
    "META",
    "ONNX",
    "ONNX_OPTIMIZED",
    "WEIGHTS",
    "LatencyPlan",
    "export_subnet",
    "load_exported",
    "measure_latency",
    "onnx_model_file",
    "read_export",
]
