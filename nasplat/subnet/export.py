"""Export a subnet as a static model that loads without the supernet.

An export directory holds `model.pt` (torch.save of the static subnet's state_dict, after BN
recalibration), `arch.json` (the arch's flat choices) and `meta.json` (GFLOPs, params,
blocks-per-module, RoIAlign sampling ratio, source experiment and checkpoint).
`load_exported(dir)` rebuilds the static ZoomNet from `arch.json` and loads the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nasplat.config import Experiment
from nasplat.errors import ConfigError, TrainingError
from nasplat.files import atomic_write_json
from nasplat.flops import analytic_gflops, analytic_params
from nasplat.models import build_static
from nasplat.space.arch import Arch
from nasplat.subnet.evaluator import SubnetEvaluator
from nasplat.train.checkpoint import atomic_torch_save

WEIGHTS = "model.pt"
ARCH = "arch.json"
META = "meta.json"


def export_subnet(experiment: Experiment, arch: Arch, out: Path, *, device: str = "cpu",
                  checkpoint: Path | None = None) -> dict[str, Any]:
    """BN-recalibrate `arch` in the experiment's trained supernet and write its static model to
    `out`. Returns the meta dict. Raises ArchError (arch not in the space), TrainingError."""
    experiment.space.validate(arch)
    ev = SubnetEvaluator(experiment, device, checkpoint=checkpoint, load_val=False)
    ev.recalibrate(arch)
    static = ev.net.extract(arch).eval()
    bpm = ev.blocks_per_module
    meta = {
        "experiment": experiment.name,
        "space": experiment.space.name,
        "checkpoint": str(ev.checkpoint),
        "blocks_per_module": list(bpm),
        "sampling_ratio": int(getattr(static, "sampling_ratio", 1)),
        "input_size": list(arch.body.input_size),
        "gflops": analytic_gflops(arch, bpm).as_dict(),
        "params": int(analytic_params(arch, bpm)),
    }
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in static.state_dict().items()}
    atomic_torch_save(state, out / WEIGHTS)
    atomic_write_json(arch.to_flat(), out / ARCH)
    atomic_write_json(meta, out / META)
    return meta


def load_exported(directory: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The static ZoomNet of an export directory, in eval mode. No supernet or space needed.

    Raises ConfigError (missing or malformed arch/meta) and TrainingError (weights do not fit).
    """
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
    net = build_static(arch, bpm, sampling_ratio=sampling)  # type: ignore[arg-type]
    try:
        state = torch.load(d / WEIGHTS, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except FileNotFoundError as e:
        raise TrainingError("weights file is missing", source=str(d / WEIGHTS)) from e
    except RuntimeError as e:
        raise TrainingError(f"weights do not fit the arch ({str(e).splitlines()[0]})", source=str(d / WEIGHTS)) from e
    return net.to(device).eval()


__all__ = ["export_subnet", "load_exported"]
