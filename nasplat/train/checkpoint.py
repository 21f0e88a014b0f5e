"""Checkpoints that survive a kill at any moment and resume bit-for-bit.

A checkpoint is one `torch.save` file of tensors, primitives, dicts and lists only, so it loads with
`weights_only=True`. It is written atomically (`nasplat.files.atomic_write`: a temporary file in
the same directory moved into place with `os.replace`), so a reader sees either the previous
complete checkpoint or the new complete one. `latest.pt` is always the newest; numbered step checkpoints are kept for `keep` steps.

The supernet's training checkpoint has one schema, written and read here only: `supernet_payload`
writes it (the training loop), `continuation_problem` says whether a payload can continue an
experiment's training (resume, and "is the training finished"), `supernet_from_payload` rebuilds
the network it holds through its task (evaluation, export, benchmarks).

The trained supernet is published under the experiment's storage root as `checkpoints/latest.pt`
(`publish_supernet`), and every process that evaluates or retrains subnets, on any node, reads
it from there (`supernet_checkpoint`: the folder itself, or a cached copy from an object store).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasplat.config import Experiment
from nasplat.errors import NasplatError, TrainingError
from nasplat.files import atomic_write
from nasplat.tasks import DEFAULT_TASK, get_task

LATEST = "latest.pt"
CHECKPOINT_VERSION = 2  # 2: heads keep one block of first-layer weights per feature stage
_STEP_RE = re.compile(r"^step-(\d+)\.pt$")


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """torch.save to `path` atomically (a temporary file beside it, fsync, os.replace)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


# ------------------------------------------------------------------------------------------------
# RNG state
# ------------------------------------------------------------------------------------------------


def _generator_state(gen: np.random.Generator) -> dict[str, Any]:
    state = gen.bit_generator.state
    # PCG64 state holds 128-bit ints; store them as decimal strings so weights_only loads them.
    return {"bit_generator": state["bit_generator"], "state": _ints_to_str(state["state"]),
            "has_uint32": int(state.get("has_uint32", 0)), "uinteger": int(state.get("uinteger", 0))}


def _ints_to_str(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _ints_to_str(v) for k, v in obj.items()}
    if isinstance(obj, int):
        return str(obj)
    return obj


def _str_to_ints(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _str_to_ints(v) for k, v in obj.items()}
    if isinstance(obj, str):
        return int(obj)
    return obj


def _set_generator_state(gen: np.random.Generator, saved: dict[str, Any]) -> None:
    gen.bit_generator.state = {
        "bit_generator": saved["bit_generator"],
        "state": _str_to_ints(saved["state"]),
        "has_uint32": saved["has_uint32"],
        "uinteger": saved["uinteger"],
    }


def capture_rng_state(generators: dict[str, np.random.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state a training step may touch: torch (CPU and CUDA), python `random`, and the
    named numpy Generators, as weights_only-loadable values."""
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {name: _generator_state(g) for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, np.random.Generator] | None = None) -> None:
    """Restore what `capture_rng_state` captured, into the global RNGs and the given Generators.

    Raises TrainingError if a named Generator has no saved state.
    """
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in (generators or {}).items():
        if name not in state["numpy"]:
            raise TrainingError(f"checkpoint has no state for RNG {name!r}", key="rng.numpy")
        _set_generator_state(gen, state["numpy"][name])


# ------------------------------------------------------------------------------------------------
# Checkpoint files
# ------------------------------------------------------------------------------------------------


def save_checkpoint(directory: Path, payload: dict[str, Any], *, step: int, keep: int, numbered: bool) -> Path:
    """Write `payload` as the latest checkpoint (and, if `numbered`, as `step-<step>.pt`).

    Only the `keep` newest numbered checkpoints are kept. Returns the latest checkpoint's path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    latest = directory / LATEST
    atomic_torch_save(payload, latest)
    if numbered:
        atomic_torch_save(payload, directory / f"step-{step:08d}.pt")
        steps = sorted(
            (int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_RE.match(p.name))
        )
        for _, old in steps[:-keep]:
            old.unlink(missing_ok=True)
    return latest


def copy_checkpoint(source: Path, target: Path) -> Path:
    """Copy a checkpoint file to `target` atomically (see `nasplat.files.atomic_write`)."""
    if target.exists() and source.resolve() == target.resolve():
        return target
    with source.open("rb") as f:
        return atomic_write(target, lambda out: shutil.copyfileobj(f, out))


def find_latest(directory: Path) -> Path | None:
    """The newest complete checkpoint in `directory`, or None."""
    latest = directory / LATEST
    return latest if latest.is_file() else None


SUPERNET_KEY = f"checkpoints/{LATEST}"  # under the storage root: the supernet every node reads


def publish_supernet(experiment: Experiment, checkpoint: Path) -> str:
    """Put the trained supernet where every node finds it: `checkpoints/latest.pt` under the
    experiment's storage root (nothing to copy when the root is the folder it is in). Returns its
    URI. Raises StorageError."""
    return experiment.storage.upload(checkpoint, SUPERNET_KEY)


def supernet_checkpoint(experiment: Experiment) -> Path | None:
    """This node's path of the experiment's trained supernet: the newest in its checkpoint folder
    when the storage root is a folder, else a copy of `checkpoints/latest.pt` from the object
    store in this node's cache. None when there is none. Raises StorageError."""
    if experiment.storage.local is not None:
        return find_latest(experiment.checkpoint_dir)
    return experiment.storage.cached(SUPERNET_KEY)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True. Raises TrainingError naming the file if unreadable."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as e:
        raise TrainingError("checkpoint not found", source=str(path)) from e
    except Exception as e:  # a truncated or foreign file
        raise TrainingError(f"cannot load checkpoint ({type(e).__name__}: {e})", source=str(path)) from e
    if not isinstance(payload, dict):
        raise TrainingError("not a nasplat checkpoint (not a dict)", source=str(path))
    return payload


def network_payload(experiment: Experiment, net: nn.Module, **extra: Any) -> dict[str, Any]:
    """A file of `net` alone (no training position) that `supernet_from_payload` rebuilds: its
    task, model name, own arguments and weights, with `extra` entries (e.g. what it was made
    from)."""
    return {
        "version": CHECKPOINT_VERSION,
        "experiment": experiment.name,
        "task": experiment.task,
        "model_name": get_task(experiment.task).model,  # the registered supernet builder ("model" is its state)
        "space_fingerprint": experiment.space.fingerprint(),
        "supernet_config": json.dumps(net.config.to_dict()),
        "model": net.state_dict(),
        **extra,
    }


def supernet_payload(experiment: Experiment, net: nn.Module, *, optimizer: dict[str, Any], scaler: dict[str, Any] | None,
                     rng: dict[str, Any], sampler: dict[str, Any], epoch: int, batch_in_epoch: int, step: int,
                     samples: int, world_size: int) -> dict[str, Any]:
    """The training checkpoint of `net` at a position of `experiment`'s training: everything a
    resume needs to continue bit-for-bit, and the network's own arguments (`net.config`) with
    its task and model name, so any process can rebuild it."""
    return network_payload(
        experiment, net,
        optimizer=optimizer,
        scheduler={"kind": "multistep_warmup", "step": step},
        scaler=scaler,
        rng=rng,
        sampler=sampler,
        epoch=epoch,
        batch_in_epoch=batch_in_epoch,
        step=step,
        samples=samples,
        world_size=world_size,
        seed=experiment.seed,
    )


def continuation_problem(payload: dict[str, Any], experiment: Experiment, world_size: int) -> tuple[str, str | None] | None:
    """Why the training checkpoint `payload` cannot continue `experiment`'s training on
    `world_size` workers, as (message, key of the experiment), or None when it can. A checkpoint
    without `task` is ZoomNAS's (written before tasks)."""
    if payload.get("version") != CHECKPOINT_VERSION:
        return f"checkpoint version {payload.get('version')!r}, expected {CHECKPOINT_VERSION}", None
    task = payload.get("task", DEFAULT_TASK)
    if task != experiment.task:
        return (f"checkpoint holds a supernet of task {task!r}, this experiment's task is {experiment.task!r};"
                " use a new output_dir", "task")
    if payload.get("space_fingerprint") != experiment.space.fingerprint():
        return "checkpoint was trained on another search space; use a new output_dir or the original space", "space"
    if payload.get("world_size") != world_size:
        return (f"checkpoint was written by {payload.get('world_size')} workers, this run has {world_size};"
                " resume with the same cluster.num_workers", "cluster.num_workers")
    return None


def supernet_from_payload(payload: dict[str, Any]) -> nn.Module:
    """The network a training checkpoint holds, rebuilt by its task from its own arguments, with
    its weights. Raises TrainingError when the payload is not a supernet checkpoint (the message
    says why; the caller names the file) or names an unknown task."""
    try:
        net = get_task(payload.get("task", DEFAULT_TASK)).supernet_from_config(json.loads(payload["supernet_config"]))
        net.load_state_dict(payload["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise TrainingError(f"not a nasplat supernet checkpoint ({e})") from e
    except NasplatError as e:  # an unknown task
        raise TrainingError(f"not a supernet this installation can build ({e.detail})") from e
    return net


__all__ = [
    "CHECKPOINT_VERSION",
    "LATEST",
    "continuation_problem",
    "supernet_from_payload",
    "supernet_payload",
    "network_payload",
    "SUPERNET_KEY",
    "publish_supernet",
    "supernet_checkpoint",
    "copy_checkpoint",
    "atomic_torch_save",
    "capture_rng_state",
    "find_latest",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]
