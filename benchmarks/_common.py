"""What the benchmarks share: the repository's folders; a scratch experiment file around
generated data (`scratch_experiment`), written as a user would write one and loaded through
`load_experiment`, so every benchmark runs the same validation and defaults as `nasplat run`; and
a switch for what the fusions resize with (`fusion_resize`), to time `nn.resample` against
F.interpolate.

Imports only nasplat's config layer (pydantic, yaml) at the top, torch only inside the switch:
`gpu_check.py` uses it on a machine without Ray, MLflow or Optuna.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from nasplat.config import Experiment, load_experiment

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
TRAINERS = ROOT / "trainers"


def scratch_experiment(path: Path, *, space: Path, trainer: Path, data_root: Path, output_dir: Path,
                       name: str | None = None, **sections: Any) -> Experiment:
    """Write the experiment file `path` (name: its stem unless given; the space and trainer files,
    `data.root`, `output_dir`, and any further top-level `sections`, e.g. `cluster={...}`) and
    load it."""
    text: dict[str, Any] = {
        "name": name or path.stem, "space": str(space), "trainer": str(trainer),
        "data": {"root": str(data_root)}, "output_dir": str(output_dir), **sections,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    return load_experiment(path)


def quickstart_evaluator(folder: Path, name: str, train_images: int, net: Any = None) -> Any:
    """A `SubnetEvaluator` on the quickstart space and the cpu_small recipe, over synthetic data
    made in `folder` (`train_images` train, 100 val), for `net` (default: a random supernet) laid
    out as training leaves it (the recipe's `channels_last`)."""
    from nasplat.data.synth import generate_dataset
    from nasplat.models import build_supernet
    from nasplat.subnet.evaluator import SubnetEvaluator
    from nasplat.train.precision import recipe_precision

    generate_dataset(folder / "data", train_images, 100, seed=0)
    experiment = scratch_experiment(folder / "exp.yaml", name=name, space=SPACES / "quickstart.yaml",
                                    trainer=TRAINERS / "cpu_small.yaml", data_root=folder / "data",
                                    output_dir=folder / "out")
    net = net if net is not None else build_supernet(experiment.space, seed=0)
    return SubnetEvaluator(experiment, net=recipe_precision(experiment.trainer, "cpu").module(net))


@contextmanager
def fusion_resize(fn: Callable[..., Any]) -> Iterator[None]:
    """Within the block, the HRNet and head fusions call `fn(x, size, mode)` instead of
    `nasplat.nn.resample.resize`, e.g. F.interpolate as before it, or a recorder."""
    import nasplat.models.zoomnet as zoomnet
    import nasplat.nn.hrnet as hrnet

    saved = hrnet.resize, zoomnet.resize
    hrnet.resize = zoomnet.resize = fn
    try:
        yield
    finally:
        hrnet.resize, zoomnet.resize = saved


def interpolate(x: Any, size: Any, mode: str) -> Any:
    """What the fusions ran before `nn.resample`: F.interpolate (bilinear: align_corners=False)."""
    import torch.nn.functional as F

    return F.interpolate(x, size=size, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


__all__ = ["ROOT", "SPACES", "TRAINERS", "fusion_resize", "interpolate", "quickstart_evaluator", "scratch_experiment"]
