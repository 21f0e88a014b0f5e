"""GPU path check: training and evaluation throughput of the Table-2 supernet per precision.

    python benchmarks/gpu_check.py            # CUDA when there is one, else the CPU fallback
    bash benchmarks/gpu_check.sh              # the same, with pydantic brought along if missing

On CUDA (the paper's setting: `search_spaces/zoomnas.yaml`, `trainers/supernet.yaml`, 384x288
body crops, batch 16 per GPU) and for fp32, bf16 and bf16 + channels_last:
- a sandwich step (max + min + 2 random, one optimizer step) of the supernet: samples/s, peak memory;
- a step of the max subnet alone, run by the supernet and by its static copy (`extract`): the
  ratio supernet / static is the elastic ops' overhead (goal <= 1.2x);
- evaluator throughput: subnets per hour for a 5,000-person val set, extrapolated from the
  forwards `SubnetEvaluator` runs (BN recalibration over the recipe's images, then the flip-test
  prediction) timed on 500 crops. COCO scoring (CPU, pycocotools) is not included.

Without CUDA the same measurements run on the CPU-sized setting (`cpu_small` space and recipe,
batch 4, 100 crops, one thread) in a few minutes, timed in process CPU seconds; bf16 there is
CPU autocast.

Imports only torch, numpy, yaml, pydantic, cv2 (through nasplat.data) and nasplat's model,
config and training step: no Ray, MLflow, Optuna or pycocotools, which the GPU machine lacks.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import SPACES, TRAINERS, scratch_experiment  # noqa: E402
from nasplat.data.synth import generate_dataset  # noqa: E402
from nasplat.data.topdown import collate  # noqa: E402
from nasplat.flops import analytic_gflops  # noqa: E402
from nasplat.models import build_supernet, decode_part_boxes  # noqa: E402
from nasplat.train.data import train_dataset  # noqa: E402
from nasplat.train.loop import init_final_layers  # noqa: E402
from nasplat.train.precision import Precision  # noqa: E402
from nasplat.train.sandwich import SandwichMember, SandwichSampler  # noqa: E402
from nasplat.train.step import sandwich_step  # noqa: E402


def _load_bn_module():  # noqa: ANN202
    """nasplat/subnet/bn.py alone: the package's __init__ pulls in pycocotools and Optuna (the
    evaluator and the search objective), which the GPU machine does not have."""
    spec = importlib.util.spec_from_file_location("_nasplat_subnet_bn", ROOT / "nasplat" / "subnet" / "bn.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recalibrate_bn = _load_bn_module().recalibrate_bn


class _Static(torch.nn.Module):
    """A static subnet with the supernet's `set_arch` API, so `sandwich_step` can train it."""

    def __init__(self, static: torch.nn.Module) -> None:
        super().__init__()
        self.net = static

    def set_arch(self, arch) -> None:  # noqa: ANN001
        if arch != self.net.arch:
            raise ValueError("a static subnet runs only its own arch")

    def forward_body(self, x):  # noqa: ANN001, ANN201
        return self.net.forward_body(x)

    def forward_heads(self, *args):  # noqa: ANN002, ANN201
        return self.net.forward_heads(*args)


class _Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def now(self) -> float:
        """Wall seconds on CUDA; process CPU seconds on CPU, which other jobs on a shared machine
        disturb far less than wall time."""
        return time.perf_counter() if self.device.type == "cuda" else time.process_time()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB, process peak


def _steps(net, batch, members_for_step, recipe, precision, clock, steps, warmup):  # noqa: ANN001, ANN202
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    scaler = precision.grad_scaler()
    times = []
    clock.reset_peak()
    for step in range(warmup + steps):
        clock.sync()
        t0 = clock.now()
        opt.zero_grad(set_to_none=True)
        sandwich_step(net, batch, members_for_step(step), recipe, epoch=100, precision=precision, scaler=scaler)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        clock.sync()
        if step >= warmup:
            times.append(clock.now() - t0)
    return statistics.median(times), clock.peak_mb()


@torch.no_grad()
def _eval_seconds(net, arch, crops, recipe, precision, clock, calib_images):  # noqa: ANN001, ANN202
    """(BN recalibration seconds for `calib_images` images, flip-test predict seconds for the crops)."""
    net.set_arch(arch)
    size = arch.body.input_size
    bs_cal, bs_eval = recipe.bn_recalibration.batch_size, recipe.eval.batch_size

    def batches(n: int, bs: int):  # noqa: ANN202
        for start in range(0, n, bs):
            idx = torch.arange(start, min(start + bs, n)) % crops.shape[0]
            yield precision.input(torch.nn.functional.interpolate(crops[idx], size=size, mode="bilinear"))

    clock.sync()
    t0 = clock.now()
    with precision.autocast():
        recalibrate_bn(net, batches(calib_images, bs_cal), lambda m, x: m(x))
    clock.sync()
    t1 = clock.now()
    net.eval()
    with precision.autocast():
        for x in batches(crops.shape[0], bs_eval):
            body, features = net.forward_body(x)
            body_f, _ = net.forward_body(x.flip(-1))
            body = (body.float() + body_f.float().flip(-1)) / 2  # the channel swap is free
            net.forward_heads(features, decode_part_boxes(body), size)
    clock.sync()
    net.train()
    return t1 - t0, clock.now() - t1


def _layout(prec: Precision, *modules: torch.nn.Module) -> None:
    for m in modules:
        m.to(memory_format=torch.channels_last if prec.channels_last else torch.contiguous_format)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per setting (after warm-up)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--crops", type=int, default=None, help="val crops timed for the evaluator")
    ap.add_argument("--val-persons", type=int, default=5000)
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    space = SPACES / ("zoomnas.yaml" if cuda else "cpu_small.yaml")
    trainer = TRAINERS / ("supernet.yaml" if cuda else "cpu_small.yaml")
    steps = args.steps or (5 if cuda else 2)
    warmup = 2 if cuda else 1
    n_crops = args.crops or (500 if cuda else 100)
    if not cuda:
        torch.set_num_threads(1)  # OpenMP threads spin on a shared CPU; the ratios need no more

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        generate_dataset(d / "data", 8, 2, seed=0)
        exp = scratch_experiment(d / "exp.yaml", name="gpu_check", space=space, trainer=trainer,
                                 data_root=d / "data", output_dir=d / "out")
        recipe = exp.trainer
        batch_size = args.batch or (recipe.batch_size if cuda else 4)
        ds = train_dataset(exp)
        batch = collate([ds[i % len(ds)] for i in range(batch_size)])
        batch = {k: v.to(device) for k, v in batch.items()}
        crops = batch["image"][:1].repeat(n_crops, 1, 1, 1)  # [N, 3, H, W] at the max resolution

    space_ = exp.space
    max_arch, min_arch = space_.max_arch(), space_.min_arch()
    bpm = space_.all_blocks_per_module()
    sampler = SandwichSampler(space_, 0, recipe.sandwich.num_random)
    members = sampler.members(0)
    f_max = analytic_gflops(max_arch, bpm).total
    f_sw = sum(analytic_gflops(m.arch, bpm).total for m in members)
    h, w = max_arch.body.input_size
    name = "CUDA " + torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{name}, torch {torch.__version__}; space {space.name}, recipe {trainer.name}; body {h}x{w}, batch {batch_size}")
    print(f"max subnet {f_max:.2f} GFLOPs, sandwich members {[m.role for m in members]} {f_sw:.2f} GFLOPs "
          f"(F = {f_sw / f_max:.2f}x the max subnet)")

    net = build_supernet(space_, seed=0)
    init_final_layers(net, 0.001, 0)
    net = net.to(device)
    net.set_arch(max_arch)
    static = _Static(net.extract(max_arch)).to(device)
    clock = _Clock(device)
    max_only = [SandwichMember("max", max_arch)]
    calib = recipe.bn_recalibration.images
    settings = [("fp32", False), ("bf16", False), ("bf16", True)]
    print(f"\n{'precision':<18}{'sandwich':>18}{'max (supernet)':>22}{'max (static)':>22}{'super/static':>14}")
    rows = []
    for prec_name, cl in settings:
        prec = Precision.for_device(prec_name, device, channels_last=cl)
        _layout(prec, net, static)
        t_sw, m_sw = _steps(net, batch, sampler.members, recipe, prec, clock, steps, warmup)
        t_sup, m_sup = _steps(net, batch, lambda s: max_only, recipe, prec, clock, steps, warmup)
        t_st, m_st = _steps(static, batch, lambda s: max_only, recipe, prec, clock, steps, warmup)
        label = prec_name + (" + channels_last" if cl else "")
        rows.append((label, prec))
        print(f"{label:<18}{batch_size / t_sw:>8.1f} /s {m_sw:>6.0f} MB{batch_size / t_sup:>12.1f} /s {m_sup:>6.0f} MB"
              f"{batch_size / t_st:>12.1f} /s {m_st:>6.0f} MB{t_sup / t_st:>13.2f}x")
        print(f"{'':<18}sandwich step {t_sw * 1000:.0f} ms = {t_sw / t_st:.2f}x a static max step (F {f_sw / f_max:.2f}x)")
    print("(peak memory: CUDA max allocated per setting; on CPU the process's peak RSS so far;"
          " CPU rates are per process CPU second)")
    print("goal: max (supernet) / max (static) <= 1.2x")

    print(f"\nevaluator: BN recalibration over {calib} images (batch {recipe.bn_recalibration.batch_size}), "
          f"flip-test forwards of {n_crops} crops (batch {recipe.eval.batch_size}), extrapolated to "
          f"{args.val_persons} val persons; COCO scoring not included")
    for label, prec in rows:
        _layout(prec, net)
        for arch_name, arch in (("max", max_arch), ("min", min_arch)):
            _eval_seconds(net, arch, crops[: recipe.eval.batch_size], recipe, prec, clock, recipe.bn_recalibration.batch_size)  # warm-up
            t_cal, t_pred = _eval_seconds(net, arch, crops, recipe, prec, clock, min(calib, n_crops))
            t_cal *= calib / min(calib, n_crops)
            per_subnet = t_cal + t_pred * args.val_persons / n_crops
            print(f"  {label:<18} {arch_name} subnet: recalibration {t_cal:6.1f} s + predict {n_crops / t_pred:7.0f} crops/s"
                  f" -> {per_subnet:6.1f} s per subnet, {3600 / per_subnet:7.0f} subnets/hour")


if __name__ == "__main__":
    main()
