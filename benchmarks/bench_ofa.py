"""nasplat's MobileNetV3 supernet against Once-for-All's own code (the `ofa` package), same archs.

    python benchmarks/bench_ofa.py [--space search_spaces/classification/ofa_mbv3.yaml] [--archs 20]
                                   [--seed 0] [--classes 1000] [--dropout 0.1] [--threads 2]
                                   [--batch 16] [--steps 10] [--warmup 1] [--random 2]
                                   [--resolution-cap PX] [--json PATH]

Parity: for `--archs` archs of nasplat's space (max, min, then seeded samples), each arch as OFA's
(ks, e, d) lists builds a static subnet in both libraries (OFA: `OFAMobileNetV3.get_active_subnet`,
nasplat: `MobileNetV3Supernet.extract`). Both are counted by fvcore at the arch's resolution with
the same op handling: multiply-adds of conv and linear layers only, batch norm and pooling count
zero (OFA pools with two `mean`s, which fvcore does not count; an `adaptive_avg_pool2d` it would),
as `nasplat.flops` counts. Parameters are `sum(p.numel())`. nasplat's analytic counts
(`analytic_macs`, `analytic_params`) are compared with its fvcore counts. Goal: no arch differs.

Speed: both supernets in train mode, in this process, with `--threads` torch threads; one sandwich
step = for each member (max, min, `--random` seeded random archs; the same members for both
libraries) set the active subnet, forward a `--batch` of images at its resolution (capped at
`--resolution-cap`), cross-entropy on random labels, backward; then zero the gradients. After
`--warmup` steps each, `--steps` steps of each are timed, interleaved and alternating which
library goes first, so that load changes hit both alike. Goal: median nasplat step / median OFA
step (wall time) <= 1.0. Beside it: the median of the per-step ratios (the two runs of a step are
back to back) and the ratio of median process CPU times, which other jobs on a shared machine
disturb less; when the three disagree, the machine was busy: rerun.

Accuracy on real data no one here wrote: scikit-learn's 1,797 handwritten digits, written as an
ImageFolder (32x32, a stratified 75 / 25 split, seed 0), train nasplat's classification supernet
through the platform's training loop (`nasplat.train.run_training`, the quickstart's space and
recipe: `search_spaces/classification/quickstart.yaml`, `trainers/classify_cpu.yaml`), then the
max, min and `--digits-subnets` random subnets are scored on the held-out quarter after BN
recalibration. Goal: top-1 >= 0.95. The run is kept in `--digits-dir`, so a rerun only scores.
`--sections` picks what runs (default: all three).

Importing OFA's networks pulls in its ImageNet data utilities, which import torchvision; the
torchvision on PyPI does not import beside this project's CPU torch, so `import_ofa` imports OFA
with the stand-in in benchmarks/_ofa_standin/ (see its README) when no torchvision is loaded.

Exit code 0; 1 when a parity check fails; 2 (one line on stdout) when `ofa` or nasplat's
classification task cannot be imported, or the space does not load or is not OFA's net.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasplat.errors import NasplatError  # noqa: E402

STANDIN = Path(__file__).resolve().parent / "_ofa_standin"
OFA_BLOCKS_PER_STAGE = 4  # OFA's ks / e lists hold max(depth_list) entries per stage, inactive ones ignored
OFA_STAGES = 5
# fvcore's default handles that are not conv / linear multiply-adds (set_op_handle(op, None) would
# leave the default in place, so they get a handle that counts nothing)
NOT_MACS = (
    "aten::batch_norm", "aten::group_norm", "aten::layer_norm", "aten::instance_norm",
    "aten::adaptive_avg_pool2d", "aten::upsample_nearest2d", "aten::upsample_bilinear2d", "aten::grid_sampler",
)
GOAL_RATIO = 1.0


class Unavailable(Exception):
    """A library the benchmark compares cannot be imported; the message says why."""


# --- the two libraries ---


def import_ofa() -> tuple[type[nn.Module], str]:
    """OFA's `OFAMobileNetV3` class and how torchvision was provided ("stand-in" or the real one's
    version). Raises Unavailable when `ofa` is not installed or its import fails in any way (a
    package last released in 2023 may trip over a newer torch at import time)."""
    loaded = sys.modules.get("torchvision")
    use_standin = loaded is None
    if use_standin:
        sys.path.insert(0, str(STANDIN))
    try:
        from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
    except Exception as e:
        raise Unavailable(f"ofa is not importable ({type(e).__name__}: {e}); pip install ofa") from e
    finally:
        if use_standin:
            sys.path.remove(str(STANDIN))
    import torchvision  # the one OFA imported: ours or one already loaded

    how = "stand-in (benchmarks/_ofa_standin)" if getattr(torchvision, "STANDIN", False) else torchvision.__version__
    return OFAMobileNetV3, how


def ofa_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ofa")
    except PackageNotFoundError:
        return "unknown"


def import_nasplat() -> Any:
    """nasplat's classification task modules (space, model, flops) as a namespace. Raises
    Unavailable when they do not import."""
    try:
        from nasplat.tasks.classification import flops, model, space
    except ImportError as e:
        raise Unavailable(f"nasplat's classification task is not importable ({type(e).__name__}: {e})") from e
    return argparse.Namespace(space=space, model=model, flops=flops)


def ofa_setting(arch: Any) -> dict[str, list[int]]:
    """nasplat's `MobileNetArch` as OFA's `set_active_subnet` keywords: per block (5 stages x 4)
    kernel size `ks` and expand ratio `e`, per stage depth `d`. Entries of inactive blocks repeat the
    stage's last active block (OFA ignores them). Raises ValueError for an arch OFA's MobileNetV3
    cannot hold."""
    if len(arch.stages) != OFA_STAGES:
        raise ValueError(f"OFA's MobileNetV3 has {OFA_STAGES} elastic stages, the arch {len(arch.stages)}")
    ks: list[int] = []
    e: list[int] = []
    d: list[int] = []
    for i, stage in enumerate(arch.stages):
        if not 1 <= len(stage) <= OFA_BLOCKS_PER_STAGE:
            raise ValueError(f"stage {i + 1}: {len(stage)} blocks, OFA's MobileNetV3 holds 1-{OFA_BLOCKS_PER_STAGE}")
        pad = OFA_BLOCKS_PER_STAGE - len(stage)
        ks += [b.kernel for b in stage] + [stage[-1].kernel] * pad
        e += [b.expand for b in stage] + [stage[-1].expand] * pad
        d.append(len(stage))
    return {"ks": ks, "e": e, "d": d}


# OFAMobileNetV3's fixed structure at width_mult 1.0, as its constructor hard-codes it
# (ofa/imagenet_classification/elastic_nn/networks/ofa_mbv3.py): the space must describe this net
OFA_STRUCTURE = {
    "stem_channels": 16, "first_block_channels": 16, "stage_channels": (24, 40, 80, 112, 160),
    "stage_strides": (2, 2, 2, 1, 2), "stage_activations": ("relu", "relu", "hswish", "hswish", "hswish"),
    "stage_se": (False, True, False, True, True), "max_depth": OFA_BLOCKS_PER_STAGE,
    "final_expand_channels": 960, "feature_mix_channels": 1280,
}


def structure_differences(config: Any) -> list[str]:
    """Where nasplat's supernet config (`MobileNetV3Config`) differs from OFAMobileNetV3's fixed
    structure, one "field: nasplat X, OFA Y" each; empty when OFA can build the same nets."""
    return [f"{k}: nasplat {getattr(config, k)}, OFA {v}" for k, v in OFA_STRUCTURE.items() if getattr(config, k) != v]


def _silent(fn: Callable[[], Any]) -> Any:
    # fvcore traces with torch.jit, deprecated in recent torch: it warns, the trace still works
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _count_nothing(inputs: Any, outputs: Any) -> Counter[str]:
    return Counter()


def fvcore_macs(model: nn.Module, resolution: int) -> int:
    """Multiply-adds of `model`'s conv and linear layers on one image of `resolution` squared,
    counted by fvcore's FlopCountAnalysis (its other default handles count nothing)."""

    def count() -> int:
        from fvcore.nn import FlopCountAnalysis

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                analysis = FlopCountAnalysis(model, torch.zeros(1, 3, resolution, resolution))
                for op in NOT_MACS:
                    analysis.set_op_handle(op, _count_nothing)
                analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                analysis.tracer_warnings("none")
                return int(analysis.total())
        finally:
            model.train(was_training)

    return _silent(count)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- parity ---


class Named(NamedTuple):
    """An arch with its label in the tables (max, min, random<i>)."""

    label: str
    arch: Any


def parity_archs(space: Any, n: int, seed: int) -> list[Named]:
    """max, min, then `n - 2` archs sampled from `space` with a generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    fixed = [Named("max", space.max_arch()), Named("min", space.min_arch())][:n]
    return fixed + [Named(f"random{i}", space.sample(rng)) for i in range(n - len(fixed))]


def parity(ofa_net: Any, nas_net: Any, nas: Any, archs: Sequence[Named]) -> list[dict[str, Any]]:
    """One row per arch: OFA's and nasplat's static subnets counted alike, and nasplat's analytic
    counts; `equal` says whether all of them agree."""
    rows = []
    for named in archs:
        arch, setting = named.arch, ofa_setting(named.arch)
        ofa_net.set_active_subnet(**setting)
        ofa_static = ofa_net.get_active_subnet(preserve_weight=True)
        nas_static = nas_net.extract(arch)
        row = {
            "arch": named.label, "resolution": arch.resolution, "ofa": setting,
            "macs_ofa": fvcore_macs(ofa_static, arch.resolution),
            "macs_nasplat": fvcore_macs(nas_static, arch.resolution),
            "macs_analytic": nas.flops.analytic_macs(arch, nas_net.config),
            "params_ofa": num_params(ofa_static), "params_nasplat": num_params(nas_static),
            "params_analytic": nas.flops.analytic_params(arch, nas_net.config),
        }
        row["equal"] = row["macs_ofa"] == row["macs_nasplat"] and row["params_ofa"] == row["params_nasplat"]
        row["analytic_equal"] = (row["macs_analytic"] == row["macs_nasplat"]
                                 and row["params_analytic"] == row["params_nasplat"])
        rows.append(row)
    return rows


def print_parity(rows: Sequence[dict[str, Any]], classes: int) -> None:
    print(f"\nparity: static subnets, fvcore conv + linear multiply-adds at the arch's resolution, "
          f"{classes} classes")
    head = ("arch", "res", "depths", "MACs OFA", "MACs nasplat", "MACs analytic",
            "params OFA", "params nasplat", "params analytic", "equal?", "analytic?")
    widths = (9, 4, 10, 12, 12, 13, 10, 14, 15, 6, 9)
    print("  ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    for r in rows:
        cells = (r["arch"], r["resolution"], "".join(map(str, r["ofa"]["d"])), r["macs_ofa"], r["macs_nasplat"],
                 r["macs_analytic"], r["params_ofa"], r["params_nasplat"], r["params_analytic"],
                 "yes" if r["equal"] else "NO", "yes" if r["analytic_equal"] else "NO")
        print("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    differ = sum(not r["equal"] for r in rows)
    analytic = sum(not r["analytic_equal"] for r in rows)
    print(f"OFA vs nasplat (fvcore MACs, params): {differ} of {len(rows)} archs differ; "
          f"nasplat analytic vs fvcore: {analytic} of {len(rows)} differ")


# --- speed ---


def sandwich_members(space: Any, steps: int, n_random: int, seed: int) -> list[list[Named]]:
    """The members of each step: max, min and `n_random` archs sampled from a generator seeded by
    (`seed`, 1), a stream apart from the parity samples."""
    rng = np.random.default_rng([seed, 1])
    top, bottom = Named("max", space.max_arch()), Named("min", space.min_arch())
    return [[top, bottom, *(Named("random", space.sample(rng)) for _ in range(n_random))] for _ in range(steps)]


class Batches(NamedTuple):
    """One batch of images per input size and labels per (step, member), shared by both libraries."""

    images: dict[int, torch.Tensor]  # size -> (batch, 3, size, size)
    labels: list[list[torch.Tensor]]  # [step][member] -> (batch,)


def make_batches(members: Sequence[Sequence[Named]], size_of: Callable[[Any], int], batch: int, classes: int,
                 seed: int) -> Batches:
    gen = torch.Generator().manual_seed(seed)
    sizes = sorted({size_of(m.arch) for step in members for m in step})
    images = {s: torch.randn(batch, 3, s, s, generator=gen) for s in sizes}
    labels = [[torch.randint(0, classes, (batch,), generator=gen) for _ in step] for step in members]
    return Batches(images, labels)


def sandwich_step(net: nn.Module, activate: Callable[[Any], None], step: Sequence[Named],
                  labels: Sequence[torch.Tensor], images: Callable[[Any], torch.Tensor]) -> None:
    """Each member's forward at its size, cross-entropy, backward; then the gradients are zeroed."""
    for member, target in zip(step, labels):
        activate(member.arch)
        logits = net(images(member.arch))  # (batch, classes)
        F.cross_entropy(logits, target).backward()
    net.zero_grad(set_to_none=True)


def time_interleaved(runs: dict[str, Callable[[int], None]], steps: int,
                     warmup: int) -> dict[str, dict[str, list[float]]]:
    """Wall and process CPU seconds of `run(i)` for i in range(steps), per name ({"wall": [...],
    "cpu": [...]}); step i of every run follows step i - 1 of all of them, and the order rotates by
    one each step. `warmup` untimed steps each first."""
    names = list(runs)
    for i in range(warmup):
        for name in names:
            runs[name](i % steps)
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in names}
    for i in range(steps):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = time.perf_counter(), time.process_time()
            runs[name](i)
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def speed(ofa_net: Any, nas_net: Any, members: Sequence[Sequence[Named]], args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved sandwich steps of both supernets (train mode) on the same members and batches."""
    cap = args.resolution_cap

    def size_of(arch: Any) -> int:
        return min(arch.resolution, cap) if cap else arch.resolution

    batches = make_batches(members, size_of, args.batch, args.classes, args.seed)
    settings = {m.arch: ofa_setting(m.arch) for step in members for m in step}

    def images(arch: Any) -> torch.Tensor:
        return batches.images[size_of(arch)]

    def ofa_activate(arch: Any) -> None:
        ofa_net.set_active_subnet(**settings[arch])

    def ofa_run(i: int) -> None:
        sandwich_step(ofa_net, ofa_activate, members[i], batches.labels[i], images)

    def nasplat_run(i: int) -> None:
        sandwich_step(nas_net, nas_net.set_arch, members[i], batches.labels[i], images)

    ofa_net.train(), nas_net.train()
    times = time_interleaved({"nasplat": nasplat_run, "ofa": ofa_run}, args.steps, args.warmup)
    wall = {name: [1e3 * t for t in times[name]["wall"]] for name in times}
    cpu = {name: [1e3 * t for t in times[name]["cpu"]] for name in times}
    ms = {name: statistics.median(t) for name, t in wall.items()}
    cpu_ms = {name: statistics.median(t) for name, t in cpu.items()}
    ratio = ms["nasplat"] / ms["ofa"]
    return {
        "members_per_step": len(members[0]), "batch": args.batch, "resolution_cap": cap,
        "sizes": sorted(batches.images), "ms_per_step": ms, "cpu_ms_per_step": cpu_ms,
        "times_ms": wall, "cpu_times_ms": cpu,
        "ratio": ratio,
        # the same step of both libraries ran back to back: a load change between steps cancels
        "paired_ratio": statistics.median(a / b for a, b in zip(wall["nasplat"], wall["ofa"])),
        # what other processes on the machine take from this one shows less in CPU time
        "cpu_ratio": cpu_ms["nasplat"] / cpu_ms["ofa"],
        "goal": GOAL_RATIO, "met": ratio <= GOAL_RATIO,
    }


def print_speed(s: dict[str, Any], steps: int, threads: int) -> None:
    cap = f", sizes capped at {s['resolution_cap']}" if s["resolution_cap"] else ""
    print(f"\nspeed: sandwich step (max, min, {s['members_per_step'] - 2} random; forward + cross-entropy + "
          f"backward each), train mode, batch {s['batch']}, {threads} threads, median of {steps} interleaved steps"
          f"{cap} (input sizes {', '.join(map(str, s['sizes']))})")
    print(f"{'library':>8}  {'ms/step':>9}  {'min ms':>9}  {'max ms':>9}  {'CPU ms/step':>11}")
    for name, label in (("ofa", "OFA"), ("nasplat", "nasplat")):
        t = s["times_ms"][name]
        print(f"{label:>8}  {s['ms_per_step'][name]:9.1f}  {min(t):9.1f}  {max(t):9.1f}  "
              f"{s['cpu_ms_per_step'][name]:11.1f}")
    verdict = "met" if s["met"] else "not met"
    print(f"ratio nasplat/OFA: {s['ratio']:.3f} (median of per-step ratios {s['paired_ratio']:.3f}, "
          f"CPU time {s['cpu_ratio']:.3f}); goal <= {s['goal']:.1f}: {verdict}")


# --- the run ---


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "classification" / "ofa_mbv3.yaml")
    parser.add_argument("--archs", type=int, default=20, help="archs in the parity table: max, min, then samples")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampled archs, images and labels")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dropout", type=float, default=0.1, help="before the classifier, in both supernets")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed sandwich steps per library")
    parser.add_argument("--warmup", type=int, default=1, help="untimed sandwich steps per library first")
    parser.add_argument("--random", type=int, default=2, help="random members per sandwich step")
    parser.add_argument("--resolution-cap", type=int, default=None, metavar="PX",
                        help="speed only: images at most PX square (default: each arch's resolution)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the numbers here")
    parser.add_argument("--sections", nargs="+", choices=("parity", "speed", "accuracy"),
                        default=["parity", "speed", "accuracy"], help="what to run (default: all)")
    parser.add_argument("--digits-dir", type=Path, default=ROOT / "outputs" / "bench_ofa_digits",
                        help="the digits data set and the supernet trained on it (reused when present)")
    parser.add_argument("--digits-recipe", type=Path, default=ROOT / "trainers" / "classify_cpu.yaml",
                        help="the trainer recipe of the digits supernet (default: the quickstart's)")
    parser.add_argument("--digits-scale", type=float, default=0.85,
                        help="smallest area of the random resized crop (a digit fills its 8x8 frame: a small crop cuts strokes)")
    parser.add_argument("--digits-subnets", type=int, default=3, help="random subnets scored besides max and min")
    args = parser.parse_args(argv)
    for name in ("archs", "threads", "batch", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.random < 0 or args.warmup < 0 or (args.resolution_cap is not None and args.resolution_cap < 32):
        parser.error("--random and --warmup must be >= 0, --resolution-cap >= 32")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        ofa_cls, torchvision_how = import_ofa()
        nas = import_nasplat()
    except Unavailable as e:
        print(f"bench_ofa: {e}")
        return 2

    try:
        space = nas.space.load_classification_space(args.space)
        config = nas.model.MobileNetV3Config.from_space(space, args.classes, args.dropout)
    except NasplatError as e:
        print(f"bench_ofa: {e}")
        return 2
    differences = structure_differences(config)
    if differences:
        print(f"bench_ofa: {args.space} is not OFA's MobileNetV3-Large w1.0 space ({'; '.join(differences)})")
        return 2
    archs = parity_archs(space, args.archs, args.seed)
    members = sandwich_members(space, args.steps, args.random, args.seed)
    spec = space.spec
    ks, es, ds = list(spec.kernel_sizes), list(spec.expand_ratios), list(spec.depths)
    torch.manual_seed(args.seed)  # OFA initialises from the global RNG; nasplat's init below too
    ofa_net = ofa_cls(n_classes=args.classes, dropout_rate=args.dropout, width_mult=1.0,
                      ks_list=ks, expand_ratio_list=es, depth_list=ds)
    nas_net = nas.model.MobileNetV3Supernet(config)
    print(f"OFA {ofa_version()} (torchvision: {torchvision_how}) vs nasplat, space {args.space.name}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"supernets: OFA ks {ks} e {es} d {ds}, {num_params(ofa_net)} params; nasplat {num_params(nas_net)} params")

    context = Context(args=args, space=space, nas=nas, ofa_net=ofa_net, nas_net=nas_net, archs=archs, members=members)
    results: dict[str, Any] = {
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "torch": torch.__version__, "ofa": ofa_version(), "torchvision": torchvision_how,
                     "threads_used": torch.get_num_threads()},
    }
    for name, section in SECTIONS:
        if name in args.sections:
            results[name] = section(context)
    if args.json:
        write_json(args.json, results)
    parity_ok = "parity" not in results or (results["parity"]["differ"] == 0 and results["parity"]["analytic_differ"] == 0)
    return 0 if parity_ok else 1


class Context(NamedTuple):
    """What every section reads: the arguments, nasplat's space and task modules, both supernets,
    the parity archs and the sandwich members."""

    args: argparse.Namespace
    space: Any
    nas: Any
    ofa_net: Any
    nas_net: Any
    archs: list[Named]
    members: list[list[Named]]


def parity_section(c: Context) -> dict[str, Any]:
    rows = parity(c.ofa_net, c.nas_net, c.nas, c.archs)
    print_parity(rows, c.args.classes)
    return {"rows": rows, "differ": sum(not r["equal"] for r in rows),
            "analytic_differ": sum(not r["analytic_equal"] for r in rows)}


def speed_section(c: Context) -> dict[str, Any]:
    s = speed(c.ofa_net, c.nas_net, c.members, c.args)
    print_speed(s, c.args.steps, torch.get_num_threads())
    return s


def digits_experiment(directory: Path, recipe: Path, scale: float) -> Path:
    """The experiment file of the digits run in `directory`: the classification quickstart's space
    and `recipe`, scikit-learn's digits as its data, one worker in this process."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": "bench_ofa_digits",
        "task": "classification",
        "space": str(ROOT / "search_spaces" / "classification" / "quickstart.yaml"),
        "trainer": str(recipe.resolve()),
        "data": {"root": str((directory / "data").resolve()),
                 "digits": {"val_fraction": 0.25, "size": 32, "seed": 0},
                 "augment": {"scale": [scale, 1.0], "flip": False, "crop_fraction": 1.0}},
        "output_dir": str(directory.resolve()),
        "seed": 0,
    }
    path = directory / "experiment.yaml"
    text = yaml.safe_dump(doc, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def accuracy_section(c: Context) -> dict[str, Any]:
    from nasplat.config import load_experiment
    from nasplat.tasks import get_task
    from nasplat.tasks.classification.evaluate import ClassificationEvaluator
    from nasplat.train.checkpoint import load_checkpoint, supernet_from_payload
    from nasplat.train.loop import WorkerContext, run_training

    experiment = load_experiment(digits_experiment(c.args.digits_dir, c.args.digits_recipe, c.args.digits_scale))
    task = get_task(experiment.task)
    task.ensure_data(experiment)
    start = time.perf_counter()
    trained: list[int] = []  # the epochs this run trained (none: the checkpoint was complete)

    def report(event: dict[str, Any]) -> None:
        if event.get("event") == "epoch":
            trained.append(int(event["epoch"]))
            print(f"  digits supernet: epoch {event['epoch']}/{experiment.trainer.schedule.epochs}, "
                  f"loss {event['losses'].get('total', float('nan')):.3f}", flush=True)

    # resumes, or returns at once when the run is complete
    checkpoint = run_training(experiment, WorkerContext(progress=report))
    trained_s = time.perf_counter() - start
    payload = load_checkpoint(checkpoint)
    net = supernet_from_payload(payload)
    evaluator = ClassificationEvaluator(experiment, net)
    space = experiment.space
    rng = np.random.default_rng([c.args.seed, 0xD161])
    archs = [Named("max", space.max_arch()), Named("min", space.min_arch())]
    archs += [Named(f"random{i}", space.sample(rng)) for i in range(c.args.digits_subnets)]
    gflops = task.gflops(experiment)
    rows = []
    for named in archs:
        scores = evaluator.evaluate(named.arch)
        rows.append({"arch": named.label, "resolution": named.arch.resolution, "depths": list(named.arch.depths),
                     "mflops": 1024 * gflops(named.arch)["total"], **scores})
    n_train = len(task.train_dataset(experiment))
    n_val = int(evaluator.labels.shape[0])
    print(f"\naccuracy: scikit-learn digits ({n_train} train / {n_val} held-out images, 32x32), the quickstart space "
          f"and recipe ({experiment.trainer.name}: {payload['epoch']} epochs, {payload['step']} steps; "
          f"{'trained in ' + format(trained_s / 60, '.1f') + ' min' if trained else 'read from ' + str(checkpoint)})")
    print(f"{'arch':>9} {'res':>4} {'depths':>8} {'MFLOPs':>8} {'top-1':>7} {'top-5':>7}")
    for r in rows:
        print(f"{r['arch']:>9} {r['resolution']:>4} {''.join(map(str, r['depths'])):>8} {r['mflops']:>8.2f} "
              f"{r['top1']:>7.4f} {r['top5']:>7.4f}")
    best = max(r["top1"] for r in rows)
    at_max = rows[0]["top1"]
    print(f"max subnet top-1 {at_max:.4f}, best {best:.4f}; goal >= 0.95: {'met' if at_max >= 0.95 else 'not met'}")
    return {"rows": rows, "train_images": n_train, "val_images": n_val, "epochs": payload["epoch"],
            "trained_s": trained_s, "trained_epochs": trained, "max_top1": at_max, "goal_met": at_max >= 0.95}


# Each section prints its table and returns what --json records under its name.
SECTIONS: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
    ("parity", parity_section),
    ("speed", speed_section),
    ("accuracy", accuracy_section),
]


if __name__ == "__main__":
    raise SystemExit(main())
