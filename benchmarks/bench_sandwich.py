"""Sandwich overhead: a sandwich step (max + min + N random subnets, one optimizer step) against
one step of the max subnet alone, compared with what their FLOPs say it should cost, and with what
the same members cost as static networks.

    python benchmarks/bench_sandwich.py [--spaces cpu_small quickstart] [--batch 16] [--steps 6]
                                        [--threads 1] [--floor-reps 1] [--no-floor] [--profile]
                                        [--interpolate]

Per space, with a real synthetic batch and the cpu_small recipe: R = median sandwich step / median
max-subnet step (interleaved, same process), F = the FLOPs of the sandwich members over the max
subnet's (averaged over the same steps), and Q = R / F. Goal: Q <= 1.1 (the smaller members cost
no more per FLOP than the max subnet). Steps are timed in process CPU time (one intra-op thread),
which a machine shared with other jobs disturbs much less than wall time; wall-time R is printed
beside it. Then each role alone (min, random: one step of that member by itself) as a share of
the max step's time and of its FLOPs.

The static floor (off with `--no-floor`): in the same interleaved loop, the same members are
extracted as static networks (`ZoomNetSupernet.extract`) and trained with the same step and loss
(`sandwich_step` over the static copies, one Adam step over their parameters), against the static
max subnet's step; `--floor-reps` static steps of each kind per interleaved step. That gives
R_static, Q_static = R_static / F, and Q / Q_static = R / R_static: what the supernet costs beyond
static networks of the same shapes (Q_static above 1 is what small convs cost per FLOP on this
machine, which no supernet change can remove). Like for like: on CPU the supernet runs a grouped
conv of fewer than DENSE_GROUPED_BELOW input channels per group as a dense conv with a
block-diagonal weight, so the floor's static copies run those convs the same way (a dense
nn.Conv2d holding the block-diagonal weight; the supernet's per-step mask multiply is not copied,
it is supernet overhead). Static steps are timed after their optimizer state exists, as the
supernet's is.

`--interpolate` runs every step with the fusions resized by F.interpolate, as before
`nn.resample`: run it beside a plain run to see what the resampling change is worth.

`--profile` prints torch.profiler's top ops of one sandwich step and, with the floor, the ops
whose self CPU time differs most between that step and the static copies' step of the same
members (one profiled step each: a single-step profile on a shared machine is only indicative).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import SPACES, TRAINERS, fusion_resize, interpolate, scratch_experiment  # noqa: E402
from nasplat.data.synth import generate_dataset  # noqa: E402
from nasplat.data.topdown import collate  # noqa: E402
from nasplat.flops import analytic_gflops  # noqa: E402
from nasplat.models import ZoomNet, ZoomNetSupernet, build_supernet  # noqa: E402
from nasplat.nn.elastic import DENSE_GROUPED_BELOW  # noqa: E402
from nasplat.nn.resample import resize  # noqa: E402
from nasplat.space import Arch  # noqa: E402
from nasplat.train.data import train_dataset  # noqa: E402
from nasplat.train.loop import init_final_layers  # noqa: E402
from nasplat.train.sandwich import SandwichMember, SandwichSampler  # noqa: E402
from nasplat.train.precision import Precision, recipe_precision  # noqa: E402
from nasplat.train.step import sandwich_step  # noqa: E402


def _block_diagonal_dense(conv: nn.Conv2d) -> nn.Conv2d:
    """The dense conv whose weight is `conv`'s groups laid on the block diagonal (same output)."""
    g = conv.groups
    dense = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    co, ci = conv.out_channels // g, conv.in_channels // g
    with torch.no_grad():
        dense.weight.zero_()
        for k in range(g):
            dense.weight[k * co : (k + 1) * co, k * ci : (k + 1) * ci] = conv.weight[k * co : (k + 1) * co]
        if conv.bias is not None and dense.bias is not None:
            dense.bias.copy_(conv.bias)
    return dense


def dense_small_groups(module: nn.Module) -> nn.Module:
    """Replace, in place, every grouped nn.Conv2d with fewer than DENSE_GROUPED_BELOW input
    channels per group by its block-diagonal dense twin: the conv the supernet runs on CPU."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and child.groups > 1 and child.in_channels // child.groups < DENSE_GROUPED_BELOW:
            setattr(module, name, _block_diagonal_dense(child))
        else:
            dense_small_groups(child)
    return module


def floor_copy(net: ZoomNetSupernet, arch: Arch, precision: Precision | None = None) -> ZoomNet:
    """Subnet `arch` as a static network whose convs run as the supernet's do on CPU, in the
    memory layout of `precision` (the recipe's) when given."""
    static = dense_small_groups(net.extract(arch))
    return precision.module(static) if precision is not None else static  # type: ignore[return-value]


class StaticMembers(nn.Module):
    """Static copies of a step's members behind the supernet's `set_arch` / `forward_body` /
    `forward_heads`, so `sandwich_step` trains them with exactly the supernet's step and loss."""

    def __init__(self, copies: dict[Arch, ZoomNet]) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copies.values())
        self._by_arch = dict(copies)
        self._active = next(iter(copies.values()))

    def set_arch(self, arch: Arch) -> None:
        self._active = self._by_arch[arch]

    def forward_body(self, images: torch.Tensor) -> Any:
        return self._active.forward_body(images)

    def forward_heads(self, features: list[torch.Tensor], part_boxes: torch.Tensor, input_size: tuple[int, int]) -> Any:
        return self._active.forward_heads(features, part_boxes, input_size)


def _adam_with_state(params: Any) -> torch.optim.Adam:
    """An Adam whose per-parameter state already exists (a zero-gradient step moves no weight),
    so a timed step does not pay for the first-step allocations the supernet's Adam paid long ago."""
    params = list(params)
    opt = torch.optim.Adam(params, lr=1e-3)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


def measure(space_name: str, data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """R, F, the median CPU seconds of a max and a sandwich step, wall-time R, per-role shares and,
    unless `args.no_floor`, the static floor (R_static and the static steps' median seconds)."""
    exp = scratch_experiment(out / f"{space_name}.yaml", name="bench", space=SPACES / f"{space_name}.yaml",
                             trainer=TRAINERS / "cpu_small.yaml", data_root=data, output_dir=out / "out")
    ds = train_dataset(exp)
    batch = collate([ds[i % len(ds)] for i in range(args.batch)])
    precision = recipe_precision(exp.trainer, "cpu")  # the layout (channels_last) training runs in
    net = precision.module(build_supernet(exp.space, seed=0))
    init_final_layers(net, 0.001, 0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sampler = SandwichSampler(exp.space, 0, exp.trainer.sandwich.num_random)
    max_arch = exp.space.max_arch()
    max_only = [SandwichMember("max", max_arch)]
    bpm = exp.space.all_blocks_per_module()

    def timed(model: nn.Module, optimizer: torch.optim.Optimizer, members: list[SandwichMember]) -> tuple[float, float]:
        """(CPU seconds, wall seconds) of one step of `model` on `members`."""
        c0, t0 = time.process_time(), time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        sandwich_step(model, batch, members, exp.trainer, epoch=10)
        optimizer.step()
        return time.process_time() - c0, time.perf_counter() - t0

    def step(members: list[SandwichMember]) -> tuple[float, float]:
        return timed(net, opt, members)

    floor = not args.no_floor
    static_max = StaticMembers({max_arch: floor_copy(net, max_arch, precision)}) if floor else None
    static_min = floor_copy(net, exp.space.min_arch(), precision) if floor else None
    opt_static_max = _adam_with_state(static_max.parameters()) if static_max is not None else None

    def static_group(members: list[SandwichMember]) -> tuple[StaticMembers, torch.optim.Adam]:
        """The members as static copies (max and min reused, the random ones extracted now)."""
        assert static_max is not None and static_min is not None
        copies: dict[Arch, ZoomNet] = {max_arch: static_max.copies[0], exp.space.min_arch(): static_min}
        for m in members:
            if m.arch not in copies:
                copies[m.arch] = floor_copy(net, m.arch, precision)
        group = StaticMembers(copies)
        return group, _adam_with_state(group.parameters())

    t_max: list[tuple[float, float]] = []
    t_sw: list[tuple[float, float]] = []
    s_max: list[float] = []
    s_sw: list[float] = []
    flops: list[float] = []
    per_role: dict[str, list[tuple[float, float]]] = {}
    f_max = analytic_gflops(max_arch, bpm).total
    step(max_only)
    step(sampler.members(0))  # warm-up
    if floor:
        assert static_max is not None and opt_static_max is not None
        timed(static_max, opt_static_max, max_only)
        timed(*static_group(sampler.members(0)), sampler.members(0))
    for i in range(1, args.steps + 1):  # interleaved: machine-load drift hits every kind alike
        members = sampler.members(i)
        t_max.append(step(max_only))
        t_sw.append(step(members))
        flops.append(sum(analytic_gflops(m.arch, bpm).total for m in members) / f_max)
        for m in members[1:]:
            role = m.role.rstrip("0123456789")
            per_role.setdefault(role, []).append((step([m])[0], analytic_gflops(m.arch, bpm).total / f_max))
        if floor:
            assert static_max is not None and opt_static_max is not None
            group, opt_group = static_group(members)  # extraction is not timed
            for _ in range(args.floor_reps):
                s_max.append(timed(static_max, opt_static_max, max_only)[0])
                s_sw.append(timed(group, opt_group, members)[0])
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        members = sampler.members(1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(members)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        if floor:
            group, opt_group = static_group(members)
            timed(group, opt_group, members)  # warm-up of the fresh copies
            with profile(activities=[ProfilerActivity.CPU]) as static_prof:
                timed(group, opt_group, members)
            _print_op_diff(space_name, prof, static_prof)
    cpu_max = statistics.median(t for t, _ in t_max)
    cpu_sw = statistics.median(t for t, _ in t_sw)
    wall_r = statistics.median(t for _, t in t_sw) / statistics.median(t for _, t in t_max)
    roles = {role: (statistics.median(t for t, _ in v) / cpu_max, statistics.mean(f for _, f in v))
             for role, v in per_role.items()}
    result: dict[str, Any] = {"R": cpu_sw / cpu_max, "F": statistics.mean(flops), "max": cpu_max, "sandwich": cpu_sw,
                              "wall_R": wall_r, "roles": roles}
    result["Q"] = result["R"] / result["F"]
    if floor:
        st_max, st_sw = statistics.median(s_max), statistics.median(s_sw)
        result.update({"static_max": st_max, "static_sandwich": st_sw, "R_static": st_sw / st_max})
        result["Q_static"] = result["R_static"] / result["F"]
        result["Q_over_Q_static"] = result["Q"] / result["Q_static"]
    return result


def _print_op_diff(space_name: str, elastic: Any, static: Any, rows: int = 20) -> None:
    """Self CPU ms per op of the profiled elastic and static sandwich steps, largest gaps first:
    where the supernet spends time that static networks of the same shapes do not."""
    el = {e.key: (e.self_cpu_time_total / 1000, e.count) for e in elastic.key_averages()}
    st = {e.key: (e.self_cpu_time_total / 1000, e.count) for e in static.key_averages()}
    total_el, total_st = sum(t for t, _ in el.values()), sum(t for t, _ in st.values())
    print(f"{space_name}: one sandwich step, self CPU: elastic {total_el:.0f} ms, static {total_st:.0f} ms")
    print(f"{'op':<48}{'elastic':>10}{'static':>10}{'gap':>9}{'calls el':>10}{'calls st':>10}")
    gap = {k: el.get(k, (0.0, 0))[0] - st.get(k, (0.0, 0))[0] for k in set(el) | set(st)}
    for k in sorted(gap, key=lambda k: -abs(gap[k]))[:rows]:
        (te, ne), (ts, ns) = el.get(k, (0.0, 0)), st.get(k, (0.0, 0))
        print(f"{k[:47]:<48}{te:>8.1f}ms{ts:>8.1f}ms{gap[k]:>+9.1f}{ne:>10}{ns:>10}")


def _table(rows: Sequence[tuple[str, dict[str, Any]]], args: argparse.Namespace, write: Callable[[str], None]) -> None:
    resizer = "F.interpolate" if args.interpolate else "nn.resample"
    write(f"batch {args.batch}, {args.threads} thread(s), {args.steps} interleaved steps per kind, process CPU time,"
          f" fusions resized by {resizer}")
    write(f"{'space':<12}{'max step':>10}{'sandwich':>10}{'R':>8}{'F':>8}{'Q = R/F':>10}{'wall R':>9}")
    for name, r in rows:
        write(f"{name:<12}{r['max'] * 1000:>8.0f}ms{r['sandwich'] * 1000:>8.0f}ms{r['R']:>8.2f}{r['F']:>8.2f}"
              f"{r['Q']:>10.2f}{r['wall_R']:>9.2f}")
        for role, (time_share, flop_share) in r["roles"].items():
            write(f"  {role:<10} alone: {time_share:.2f}x the max step's time for {flop_share:.2f}x its FLOPs")
    floor_rows = [(name, r) for name, r in rows if "R_static" in r]
    if floor_rows:
        write(f"static floor: the same members as static networks, {args.floor_reps} step(s) of each kind per interleaved step")
        write(f"{'space':<12}{'max':>8}{'sandwich':>10}{'R_static':>10}{'Q_static':>10}{'Q/Q_static':>12}"
              f"{'max el/st':>11}{'sw el/st':>10}")
        for name, r in floor_rows:
            write(f"{name:<12}{r['static_max'] * 1000:>6.0f}ms{r['static_sandwich'] * 1000:>8.0f}ms{r['R_static']:>10.2f}"
                  f"{r['Q_static']:>10.2f}{r['Q_over_Q_static']:>12.2f}{r['max'] / r['static_max']:>11.2f}"
                  f"{r['sandwich'] / r['static_sandwich']:>10.2f}")
        write("Q/Q_static: the supernet's own overhead beyond static networks of the same shapes;"
              " el/st: elastic step over static step")
    write("goal: Q <= 1.1")


def main(argv: Sequence[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Measure every space in `argv` (the command line by default), print the table, return the rows."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--spaces", nargs="+", default=["cpu_small", "quickstart"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--floor-reps", type=int, default=1, help="static steps of each kind per interleaved step")
    ap.add_argument("--no-floor", action="store_true", help="skip the static-subnet floor")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--interpolate", action="store_true",
                    help="the fusions resize with F.interpolate, as before nn.resample (to compare)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.floor_reps < 1 or args.batch < 1:
        ap.error("--steps, --floor-reps and --batch must be at least 1")
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        generate_dataset(d / "data", 12, 2, seed=0)
        with fusion_resize(interpolate if args.interpolate else resize):
            for name in args.spaces:
                rows.append((name, measure(name, d / "data", d, args)))
    _table(rows, args, print)
    return rows


if __name__ == "__main__":
    main()
