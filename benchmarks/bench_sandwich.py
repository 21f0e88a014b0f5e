"""Sandwich overhead: a sandwich step (max + min + N random subnets, one optimizer step) against
one step of the max subnet alone, compared with what their FLOPs say it should cost.

    python benchmarks/bench_sandwich.py [--spaces cpu_small quickstart] [--batch 16] [--steps 6]
                                        [--threads 1] [--profile]

Per space, with a real synthetic batch and the cpu_small recipe: R = median sandwich step / median
max-subnet step (interleaved, same process), F = the FLOPs of the sandwich members over the max
subnet's (averaged over the same steps), and Q = R / F. Goal: Q <= 1.1 (the smaller members cost
no more per FLOP than the max subnet). Steps are timed in process CPU time (one intra-op thread),
which a machine shared with other jobs disturbs much less than wall time; wall-time R is printed
beside it. Then each role alone (min, random: one step of that member by itself) as a share of
the max step's time and of its FLOPs. `--profile` prints torch.profiler's top ops of one sandwich
step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasplat.config import load_experiment  # noqa: E402
from nasplat.data.synth import generate_dataset  # noqa: E402
from nasplat.data.topdown import collate  # noqa: E402
from nasplat.flops import analytic_gflops  # noqa: E402
from nasplat.models import build_supernet  # noqa: E402
from nasplat.train.data import train_dataset  # noqa: E402
from nasplat.train.loop import init_final_layers  # noqa: E402
from nasplat.train.sandwich import SandwichMember, SandwichSampler  # noqa: E402
from nasplat.train.step import sandwich_step  # noqa: E402


def measure(space_name: str, data: Path, out: Path, args: argparse.Namespace) -> dict:
    """R, F, the median CPU seconds of a max and a sandwich step, wall-time R, per-role shares."""
    exp_path = out / f"{space_name}.yaml"
    exp_path.write_text(
        f"name: bench\nspace: {ROOT / 'search_spaces' / (space_name + '.yaml')}\n"
        f"trainer: {ROOT / 'trainers' / 'cpu_small.yaml'}\ndata: {{root: {data}}}\noutput_dir: {out / 'out'}\n"
    )
    exp = load_experiment(exp_path)
    ds = train_dataset(exp)
    batch = collate([ds[i % len(ds)] for i in range(args.batch)])
    net = build_supernet(exp.space, seed=0)
    init_final_layers(net, 0.001, 0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sampler = SandwichSampler(exp.space, 0, exp.trainer.sandwich.num_random)
    max_arch = exp.space.max_arch()
    max_only = [SandwichMember("max", max_arch)]
    bpm = exp.space.all_blocks_per_module()

    def step(members: list[SandwichMember]) -> tuple[float, float]:
        """(CPU seconds, wall seconds) of one step."""
        c0, t0 = time.process_time(), time.perf_counter()
        opt.zero_grad(set_to_none=True)
        sandwich_step(net, batch, members, exp.trainer, epoch=10)
        opt.step()
        return time.process_time() - c0, time.perf_counter() - t0

    t_max: list[tuple[float, float]] = []
    t_sw: list[tuple[float, float]] = []
    flops: list[float] = []
    per_role: dict[str, list[tuple[float, float]]] = {}
    f_max = analytic_gflops(max_arch, bpm).total
    step(max_only)
    step(sampler.members(0))  # warm-up
    for i in range(1, args.steps + 1):  # interleaved: machine-load drift hits both alike
        members = sampler.members(i)
        t_max.append(step(max_only))
        t_sw.append(step(members))
        flops.append(sum(analytic_gflops(m.arch, bpm).total for m in members) / f_max)
        for m in members[1:]:
            role = m.role.rstrip("0123456789")
            per_role.setdefault(role, []).append((step([m])[0], analytic_gflops(m.arch, bpm).total / f_max))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(sampler.members(1))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    cpu_max = statistics.median(t for t, _ in t_max)
    cpu_sw = statistics.median(t for t, _ in t_sw)
    wall_r = statistics.median(t for _, t in t_sw) / statistics.median(t for _, t in t_max)
    roles = {role: (statistics.median(t for t, _ in v) / cpu_max, statistics.mean(f for _, f in v))
             for role, v in per_role.items()}
    return {"R": cpu_sw / cpu_max, "F": statistics.mean(flops), "max": cpu_max, "sandwich": cpu_sw,
            "wall_R": wall_r, "roles": roles}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", nargs="+", default=["cpu_small", "quickstart"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        generate_dataset(d / "data", 12, 2, seed=0)
        for name in args.spaces:
            rows.append((name, measure(name, d / "data", d, args)))
    print(f"batch {args.batch}, {args.threads} thread(s), {args.steps} interleaved steps per kind, process CPU time")
    print(f"{'space':<12}{'max step':>10}{'sandwich':>10}{'R':>8}{'F':>8}{'Q = R/F':>10}{'wall R':>9}")
    for name, r in rows:
        print(f"{name:<12}{r['max'] * 1000:>8.0f}ms{r['sandwich'] * 1000:>8.0f}ms{r['R']:>8.2f}{r['F']:>8.2f}"
              f"{r['R'] / r['F']:>10.2f}{r['wall_R']:>9.2f}")
        for role, (time_share, flop_share) in r["roles"].items():
            print(f"  {role:<10} alone: {time_share:.2f}x the max step's time for {flop_share:.2f}x its FLOPs")
    print("goal: Q <= 1.1")

if __name__ == "__main__":
    main()
