"""The paper's ablations (ZoomNAS Tables 9 and 10) in kind, on one trained supernet.

Each row is a search of the experiment's space under the same total GFLOPs budget (its
`search:` section: sampler, trials, budget), followed by retraining the row's best subnet with
the experiment's retrain recipe and epochs (`retrain:`; in this process, the recipe a Tune trial
of the retrain phase runs), once per seed (the search seed and the retraining seed):

- Table 9, connection search: `search` (every dimension searched, as ZoomNAS) vs `fixed`
  (`search.fix` pins every head's `feature_stage` to 0 and `roi_expansion` to 1.0, as ZoomNet).
- Table 10, computation allocation: `search` (automatic: only the total is limited) vs
  `proportional` (body, face and hand budgets in the proportions of the space's max subnet,
  scaled so that they add up to the total budget, hand counted twice as in the total).

Each row's studies are stored beside the experiment's own (experiment name
`<name>-ablation-<row>-s<seed>`), so a rerun resumes or reads them; the supernet is trained first
when the experiment has none (the same as `nasplat train`). With `--out`, each row is written there
as it ends and a rerun reads the rows it holds instead of running them again. Prints both tables in the paper's
layout (per-part GFLOPs; body, foot, face, hand and whole-body AP, inherited and retrained; mean
and spread over seeds) and writes them as JSON (`--out`).

    python benchmarks/bench_ablations.py experiments/quickstart.yaml --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("body", "foot", "face", "hand", "wholebody")
GFLOPS = ("body", "face", "hand", "total")
PAPER = {  # ZoomNAS on COCO-WholeBody V1.0 (Tables 9 and 10): AP in %, GFLOPs
    "table9": {"fixed": {"ap": [73.9, 59.2, 84.6, 58.3, 63.9]}, "search": {"ap": [74.0, 61.7, 88.9, 62.5, 65.4]}},
    "table10": {"proportional": {"gflops": [10.20, 2.65, 2.62, 18.10], "ap": [70.0, 45.2, 91.3, 62.4, 62.0]},
                "search": {"gflops": [12.71, 0.57, 2.37, 18.02], "ap": [74.0, 61.7, 88.9, 62.5, 65.4]}},
}
LABELS = {"search": "all searched (ZoomNAS)", "fixed": "w/o connection search (ZoomNet's)",
          "proportional": "proportional allocation"}


def fixed_connections(space: Any) -> dict[str, float]:
    """`search.fix` pinning ZoomNet's connections: every head's feature_stage 0, roi_expansion 1.0."""
    return {f"{head}.{key}": value for head in ("face", "hand") for key, value in
            (("feature_stage", 0), ("roi_expansion", 1.0))}


def proportional_budgets(space: Any, total: float) -> dict[str, float]:
    """Body, face and hand budgets in the proportions of the space's max subnet, scaled to `total`
    (the total counts the hand head twice, as `nasplat.flops.GFlops` does)."""
    from nasplat.search.cost import gflops_parts

    biggest = gflops_parts(space)(space.max_arch())
    scale = total / biggest["total"]
    return {part: round(biggest[part] * scale, 6) for part in ("body", "face", "hand")}


def variant(experiment: Any, row: str, seed: int) -> Any:
    """The experiment of one row and seed: its own name (its own study and phase rows), the search
    seed and the retraining seed; `fixed` pins the connections, `proportional` adds part budgets."""
    search = dataclasses.replace(experiment.search, seed=seed)
    total = experiment.search.budget_gflops
    if row == "fixed":
        search = dataclasses.replace(search, fix={**(search.fix or {}), **fixed_connections(experiment.space)})
    elif row == "proportional":
        search = dataclasses.replace(search, budget_gflops={"total": total,
                                                            **proportional_budgets(experiment.space, total)})
    return dataclasses.replace(experiment, name=f"{experiment.name}-ablation-{row}-s{seed}", search=search,
                               seed=experiment.seed + seed)


def retrain_best(experiment: Any, arch: Any) -> dict[str, float]:
    """Per-part AP of `arch` after the experiment's retraining (in this process, one run per
    learning rate of `retrain.lr`, the best by whole-body AP kept, as the retrain phase keeps its
    best trial); the AP before is the search's."""
    import torch

    from nasplat.subnet import latest_checkpoint
    from nasplat.subnet.retrain import SubnetRetrainer, retrain_recipe

    rc = experiment.retrain
    best: dict[str, float] = {}
    for lr in rc.lr or [None]:
        recipe = dataclasses.replace(retrain_recipe(experiment, lr=lr), torch_threads=os.cpu_count() or 1)
        trainer = SubnetRetrainer(experiment, arch, recipe, init=rc.init, device="cpu",
                                  checkpoint=latest_checkpoint(experiment))
        metrics: dict[str, float] = {}
        while trainer.epoch < rc.epochs:
            metrics = trainer.run_epoch()
        if not best or metrics["wholebody_ap"] > best["wholebody"]:
            best = {p: float(metrics[f"{p}_ap"]) for p in PARTS}
    torch.set_num_threads(os.cpu_count() or 1)
    return best


def run_row(experiment: Any, row: str, seed: int, local: bool = False) -> dict[str, Any]:
    from nasplat.orchestration.run import run_search

    exp = variant(experiment, row, seed)
    started = time.monotonic()
    result = run_search(exp, track=False, local=local)
    searched = time.monotonic() - started
    best = result.best
    if best is None:
        raise SystemExit(f"row {row} seed {seed}: no subnet was evaluated successfully")
    ev = best.evaluation
    retrained = retrain_best(exp, best.arch)
    out = {"row": row, "seed": seed, "study": result.study_name, "trial": best.number, "arch": best.arch.to_flat(),
           "gflops": {k: float(ev.gflops[k]) for k in GFLOPS},
           "inherited": {p: float(ev.metrics[p]["AP"]) for p in PARTS}, "retrained": retrained,
           "search_s": round(searched, 1), "retrain_s": round(time.monotonic() - started - searched, 1),
           "part_budgets": exp.search.part_budgets}
    print(f"  {row} seed {seed}: trial {best.number}, {ev.total_gflops:.4f} GFLOPs, whole-body AP "
          f"{out['inherited']['wholebody']:.4f} inherited, {retrained['wholebody']:.4f} retrained "
          f"(search {out['search_s']:.0f} s, retrain {out['retrain_s']:.0f} s)", flush=True)
    return out


def _cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}±{statistics.stdev(values) * scale:.{digits}f}"


LABEL = 46  # the width of the row label


def table(rows: list[dict[str, Any]], order: tuple[str, ...], title: str, paper: dict[str, Any]) -> str:
    """One ablation table: per row the mean over seeds of per-part GFLOPs, and the mean ± sd of
    per-part AP (%), inherited and retrained; the paper's numbers beneath (its AP is that of
    its retrained models)."""
    aps = " ".join(f"{p[:5]:>9s}" for p in PARTS)
    lines = [title,
             f"{'':{LABEL}s} {'GFLOPs (hand: one head)':^31s} | {'AP inherited (%)':^49s} | {'AP retrained (%)':^49s}",
             f"{'':{LABEL}s} {'body':>7s} {'face':>7s} {'hand':>7s} {'total':>7s} | {aps} | {aps}"]
    for name in order:
        mine = [r for r in rows if r["row"] == name]
        if not mine:
            continue
        g = " ".join(f"{statistics.fmean(r['gflops'][k] for r in mine):>7.4f}" for k in GFLOPS)
        inh = " ".join(f"{_cell([r['inherited'][p] for r in mine]):>9s}" for p in PARTS)
        ret = " ".join(f"{_cell([r['retrained'][p] for r in mine]):>9s}" for p in PARTS)
        lines.append(f"{LABELS[name] + f' (n={len(mine)})':{LABEL}s} {g} | {inh} | {ret}")
    for name in order:
        p = paper.get(name)
        if p:
            g = " ".join(f"{v:>7.2f}" for v in p["gflops"]) if "gflops" in p else f"{'':31s}"
            lines.append(f"{'paper: ' + LABELS[name]:{LABEL}s} {g} | {'':49s} | " + " ".join(f"{v:>9.1f}" for v in p["ap"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path, help="the experiment YAML (its search: and retrain: sections)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="search and retraining seeds")
    parser.add_argument("--rows", nargs="+", default=["search", "fixed", "proportional"], choices=list(LABELS))
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--local", action="store_true", help="evaluate in this process (no Ray actors)")
    args = parser.parse_args()

    from nasplat.config import load_experiment
    from nasplat.orchestration.phases import Phase, Phases
    from nasplat.orchestration.training import train_supernet
    from nasplat.subnet import latest_checkpoint

    experiment = load_experiment(args.experiment)
    if experiment.retrain is None:
        raise SystemExit(f"{args.experiment}: the experiment has no retrain: section (each row retrains its best subnet)")
    if experiment.search.budget_gflops is None:
        raise SystemExit(f"{args.experiment}: search.budget_gflops: the ablations compare searches under one total budget")
    started = time.monotonic()
    state = Phases(experiment).current()
    if state is None or state.phase not in {p.value for p in Phase if p.order >= Phase.TRAINED.order}:
        train_supernet(experiment, mlflow=False)  # none, or one whose training stopped: finish it
    print(f"supernet of {experiment.name}: {latest_checkpoint(experiment)}", flush=True)
    total = experiment.search.budget_gflops
    print(f"rows {args.rows}, seeds {args.seeds}; total budget {total} GFLOPs; proportional budgets "
          f"{proportional_budgets(experiment.space, total)}; fixed connections {fixed_connections(experiment.space)}",
          flush=True)
    done = {}  # rows of an earlier run of the same command (--out), not run again
    if args.out is not None and args.out.is_file():
        done = {(r["row"], r["seed"]): r for r in json.loads(args.out.read_text())["rows"]}
    rows = []
    for seed in args.seeds:
        for row in args.rows:
            rows.append(done.get((row, seed)) or run_row(experiment, row, seed, args.local))
            if args.out is not None:  # after each row: an interrupted run keeps what it measured
                args.out.write_text(json.dumps({"rows": [*rows, *(r for k, r in done.items() if r not in rows)],
                                                "paper": PAPER}, indent=1))
    print()
    print(table(rows, ("fixed", "search"), "Table 9 in kind: connection search", PAPER["table9"]))
    print()
    print(table(rows, ("proportional", "search"), "Table 10 in kind: computation allocation", PAPER["table10"]))
    print(f"\n{len(rows)} rows ({sum(1 for r in rows if r in done.values())} read from {args.out}) in "
          f"{(time.monotonic() - started) / 60:.1f} min; per row: search "
          f"{statistics.fmean(r['search_s'] for r in rows):.0f} s, retrain {statistics.fmean(r['retrain_s'] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
