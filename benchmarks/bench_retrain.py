"""Inherited vs retrained weights of the searched subnets, per part AP, on the same val set.

Reads an experiment whose retrain phase has run (`nasplat run` or `nasplat retrain`), loads each
exported retrained subnet (`exports/retrained-<k>`) and the same arch with the supernet's sliced
weights (BN recalibrated, as the search scored it), evaluates both with one `SubnetEvaluator` on
the experiment's whole val set, and prints per part AP side by side with the difference, plus what
the phase itself recorded (`retrain.json`) and its epochs and learning rate.

    python benchmarks/bench_retrain.py [EXPERIMENT.yaml (default: experiments/quickstart.yaml)]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", default=str(ROOT / "experiments" / "quickstart.yaml"))
    args = parser.parse_args()

    import torch

    from nasplat.config import load_experiment
    from nasplat.space import Arch
    from nasplat.subnet import SubnetEvaluator, load_exported
    from nasplat.subnet.retrain import PARTS, FixedArch

    torch.set_num_threads(2)
    experiment = load_experiment(args.experiment)
    exports = sorted((experiment.output_dir / "exports").glob("retrained-*"))
    if not exports:
        print(f"no exports/retrained-* under {experiment.output_dir}; run `nasplat run {args.experiment}` first")
        return 1
    # the supernet with the BN recalibration of each arch: what the search measured
    supernet = SubnetEvaluator(experiment)
    worse = 0
    for export in exports:
        info = json.loads((export / "retrain.json").read_text())
        arch = Arch.from_json((export / "arch.json").read_text())
        inherited = supernet.evaluate(arch)["metrics"]
        retrained_net = FixedArch(load_exported(export))
        retrained = SubnetEvaluator(experiment, net=retrained_net, checkpoint=None).evaluate(arch, recalibrate=False)["metrics"]
        print(f"\n{export.name}: study trial {info['study_trial']}, init {info['init']}, lr {info['lr']:g}, "
              f"{info['epochs']} epochs, val persons {len(supernet.val)}")
        print(f"{'part':<10} {'inherited AP':>13} {'retrained AP':>13} {'delta':>8}   (phase recorded: before -> after)")
        for part in PARTS:
            a, b = inherited[part]["AP"], retrained[part]["AP"]
            print(f"{part:<10} {a:>13.4f} {b:>13.4f} {b - a:>+8.4f}   ({info['before'][part]:.4f} -> {info['after'][part]:.4f})")
        worse += retrained["wholebody"]["AP"] < inherited["wholebody"]["AP"]
    print(f"\nretrained whole-body AP not below inherited: {len(exports) - worse}/{len(exports)} subnets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
