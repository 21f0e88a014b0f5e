"""Data throughput: synthetic generation, the top-down loader, and what training consumes.

Prints, in one run:
- synthetic generation speed (images/s, one process; the target is >= 50 images/s);
- loader throughput (samples/s) with N workers at the small CPU input size (128x96), with the
  recipe's augmentation;
- with --model (default on when nasplat.models is importable), the samples/s one training step
  of the cpu_small space's largest subnet consumes (forward + backward, body and heads; a
  sandwich step runs several subnets, so it consumes fewer), and the ratio loader/consumption
  (the goal is >= 2x).

Usage: python benchmarks/bench_loader.py [--images 120] [--workers 2] [--batch 16] [--no-model]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _synth(root: Path, n: int) -> float:
    from nasplat.data.synth import generate_split

    t0 = time.perf_counter()
    generate_split(root, "train", n, seed=0)
    return n / (time.perf_counter() - t0)


def _loader_rate(root: Path, workers: int, batch: int, input_size: tuple[int, int], epochs: int) -> float:
    from nasplat.data import AugmentParams, TopDownDataset, load_split, make_loader, train_instances

    ann = load_split(root, "train")
    ds = TopDownDataset(train_instances(ann), ann, input_size, sigma=2.0,
                        augment=AugmentParams(scale_factor=0.25, rotation_deg=20, rotation_prob=0.5), seed=0)
    loader = make_loader(ds, batch, shuffle=True, num_workers=workers, seed=0, drop_last=True)
    next(iter(loader))  # worker start-up is not throughput
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for b in loader:
            n += b["image"].shape[0]
    return n / (time.perf_counter() - t0)


def _train_rate(batch: int, steps: int) -> tuple[float, tuple[int, int]]:
    from nasplat.data.targets import body_targets, render_in_boxes
    from nasplat.models import build_supernet
    from nasplat.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "cpu_small.yaml")
    net = build_supernet(space, seed=0)
    arch = space.max_arch()
    net.set_arch(arch)
    h, w = arch.body.input_size
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, h, w, generator=g)
    kp = torch.zeros(batch, 133, 3)
    kp[..., 0] = torch.rand(batch, 133, generator=g) * w
    kp[..., 1] = torch.rand(batch, 133, generator=g) * h
    kp[..., 2] = 1
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [50.0, 60.0, 62.0, 72.0], [20.0, 60.0, 32.0, 72.0]]).expand(batch, 3, 4)
    valid = torch.ones(batch, 3)

    def step() -> None:
        out = net(images, part_boxes=boxes)
        target, weight = body_targets(kp, boxes, valid, (h, w), 2.0)
        loss = ((out.body_heatmaps - target) ** 2 * weight[..., None, None]).mean()
        rf, rh = out.face_heatmaps.shape[-1], out.hand_heatmaps.shape[-1]
        ft, fw = render_in_boxes(kp[:, 23:91], out.boxes[:, 0].detach(), rf, 1.5)
        loss = loss + ((out.face_heatmaps - ft) ** 2 * fw[..., None, None]).mean()
        for side, sl in ((0, slice(91, 112)), (1, slice(112, 133))):
            ht, hw = render_in_boxes(kp[:, sl], out.boxes[:, 1 + side].detach(), rh, 1.5)
            loss = loss + ((out.hand_heatmaps[:, side] - ht) ** 2 * hw[..., None, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0), (h, w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no-model", action="store_true", help="Measure the loader only.")
    args = parser.parse_args()
    torch.set_num_threads(2)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synth = _synth(root, args.images)
        print(f"synthetic generation: {synth:.1f} images/s (target >= 50)")
        input_size = (128, 96)
        model_ok = not args.no_model
        train = None
        if model_ok:
            try:
                train, input_size = _train_rate(args.batch, args.steps)
            except ImportError as e:
                print(f"model not available ({e}); loader only")
        loader = _loader_rate(root, args.workers, args.batch, input_size, args.epochs)
        print(f"loader ({args.workers} workers, {input_size[0]}x{input_size[1]}, batch {args.batch}): {loader:.1f} samples/s")
        if train is not None:
            print(f"training step (cpu_small max subnet, fwd+bwd): {train:.1f} samples/s")
            print(f"loader {loader:.1f} samples/s, training {train:.1f} samples/s, ratio {loader / train:.1f}x (goal >= 2x)")


if __name__ == "__main__":
    main()
