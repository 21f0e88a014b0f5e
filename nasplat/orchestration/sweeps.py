"""Resumable Ray Tune sweeps under the storage root: the retrain phase's and `nasplat validate`'s.

- `tune_defaults()`: the Tune settings both sweeps run under (the sweep state written at every
  step, no new-style console output, no warning about those writes);
- `restored_tuner(experiment, kind, sweep, trainable)`: `Tuner.restore` of the sweep
  `<kind>/<sweep>` when it can be restored, its state files made whole first under a folder root;
  None for a new sweep;
- the sweep's saved state (below): `CheckpointPruner`, `prune_trial_checkpoints`,
  `prune_sweep`, `restore_whole_state`, `checkpoint_config`;
- `error_line`: the line a failed trial's error ends with.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import pickletools
import re
import shutil
from pathlib import Path
from typing import Any

from ray.tune import Callback

from nasplat.config import Experiment
from nasplat.files import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)


def tune_defaults() -> None:
    """Tune's settings for a resumable sweep, unless the environment sets them: the sweep's state
    saved at every step of the Tune loop, so a kill right after a trial ends does not lose that it
    ended (Tune's default throttles these writes to every 10 s or more); the old console output
    (Tune's tables ignore verbose=0 on a restore otherwise); and no warning about those writes."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def restored_tuner(experiment: Experiment, kind: str, sweep: str, trainable: Any) -> Any:
    """The Tuner of the sweep `<kind>/<sweep>` under the storage root, restored (errored trials
    resumed) when there is one to restore; None otherwise (start a new one)."""
    from ray import tune

    path = experiment.storage.join(kind, sweep)
    # a folder's state files may be cut off by a kill while Tune rewrote them in place (see
    # below); an object store's put is atomic, so there Tune's own restore contract is enough
    restorable = restore_whole_state(Path(path)) if experiment.storage.local else True
    if restorable and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    return None


def pruners(experiment: Experiment) -> list[Callback]:
    """The sweep's checkpoint pruner under a folder root (an object store keeps every checkpoint)."""
    return [CheckpointPruner()] if experiment.storage.local else []


def prune_sweep(experiment: Experiment, kind: str, sweep: str) -> None:
    """After a fit, under a folder root: each trial keeps only the checkpoints the final saved
    state names."""
    if not experiment.storage.local:
        return
    for trial_dir in (experiment.local_root / kind / sweep).iterdir():
        if trial_dir.is_dir():
            prune_trial_checkpoints(trial_dir)


# ------------------------------------------------------------------------------------------------
# The sweep's saved state: a whole copy kept beside it, trial checkpoints pruned behind that copy
# ------------------------------------------------------------------------------------------------
#
# Tune's own pruning (`CheckpointConfig(num_to_keep=k)`) deletes a trial's oldest checkpoint the
# moment a new one is registered, while the sweep state on storage (what `Tuner.restore` reads)
# still names the old one until the next snapshot has been written and synced. A kill in that
# window leaves a sweep that cannot resume ("Could not recover from checkpoint as it does not
# exist on storage anymore"). And Tune's syncer rewrites the state files (`experiment_state-*.json`,
# the search algorithm's `basic-variant-state-*.json`) in place at every step: a kill while it
# writes leaves a truncated file, from which Tune "fails to restore the run state" and starts an
# empty run. So Tune keeps every checkpoint; at each new checkpoint, when every state file is
# whole, this module keeps a copy of them beside the sweep (`.<sweep>.state`, outside the folder
# Tune syncs), deletes a trial's checkpoints older than the one that copy resumes it from, and
# before a restore puts the copy back over any state file that is not whole.

_CHECKPOINT = re.compile(r"checkpoint_(\d{6})")
_SESSION = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")  # Tune's session stamp in its state file names


def _state_files(experiment_dir: Path) -> list[Path]:
    """Tune's state files of a sweep: the top-level .json and .pkl files (what Tune reads back on a
    restore), tuner.pkl included."""
    return sorted(p for p in experiment_dir.iterdir() if p.is_file() and p.suffix in (".json", ".pkl"))


def _whole(name: str, data: bytes) -> bool:
    """Whether a state file's bytes are a complete record: the sweep state parses as JSON; the
    others (pickles, whatever their suffix) are walked opcode by opcode to the end, not loaded."""
    if name.startswith("experiment_state-"):
        try:
            return isinstance(json.loads(data).get("trial_data"), list)
        except (ValueError, AttributeError):
            return False
    try:
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
        return True
    except Exception:  # noqa: BLE001 - genops raises ValueError, EOFError, ... on a cut-off stream
        try:
            json.loads(data)
            return True
        except ValueError:
            return False


def _state_copy_path(experiment_dir: Path) -> Path:
    return experiment_dir.parent / f".{experiment_dir.name}.state"


def _keep_whole_state(experiment_dir: Path) -> dict[str, Any] | None:
    """When every state file of the sweep is whole, copy them (atomically, one file) beside the
    sweep and return the parsed newest sweep state; None, and the copy untouched, otherwise."""
    try:
        files = {p.name: p.read_bytes() for p in _state_files(experiment_dir)}
    except OSError:
        return None
    states = sorted(n for n in files if n.startswith("experiment_state-"))
    if not states or not all(_whole(n, b) for n, b in files.items()):
        return None
    atomic_write_json({n: base64.b64encode(b).decode("ascii") for n, b in files.items()}, _state_copy_path(experiment_dir), indent=None)
    return json.loads(files[states[-1]])


def restore_whole_state(experiment_dir: Path) -> bool:
    """Make the sweep's state files whole before `Tuner.restore`: each one that is not is replaced
    by the copy kept beside the sweep, or, when the copy has none of that name, deleted with the
    rest of its Tune session's files. Returns whether a sweep state is left to restore from."""
    if not experiment_dir.is_dir():
        return False
    try:
        kept = {n: base64.b64decode(b) for n, b in json.loads(_state_copy_path(experiment_dir).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        kept = {}
    for path in _state_files(experiment_dir):
        if not path.exists():  # dropped with its session below
            continue
        if _whole(path.name, path.read_bytes()):
            continue
        if path.name in kept:
            log.warning("the sweep state file %s was cut off (a kill while Tune wrote it): restored from the last whole copy", path)
            atomic_write_bytes(kept[path.name], path)
            continue
        stamp = _SESSION.search(path.name)
        log.warning("the sweep state file %s was cut off before any whole copy of it was kept: its Tune session is dropped", path)
        for other in _state_files(experiment_dir):
            if other == path or (stamp is not None and stamp.group(0) in other.name and other.name not in kept):
                other.unlink(missing_ok=True)
    return any(p.name.startswith("experiment_state-") for p in _state_files(experiment_dir)) and (experiment_dir / "tuner.pkl").is_file()


def _trial_checkpoint(state: dict[str, Any], trial_dir: str) -> int | None:
    """The index of the newest checkpoint the parsed sweep `state` holds for the trial in
    `trial_dir` (a directory name): its checkpoint manager (a cloudpickled, hex-encoded field; only
    that field counts: the trial's last result can name a checkpoint not yet registered)."""
    for entry in state.get("trial_data", []):
        try:
            if json.loads(entry[0]).get("relative_logdir") != trial_dir:
                continue
            manager = json.loads(entry[1])["checkpoint_manager"]
            text = bytes.fromhex(manager["value"]).decode("utf-8", "replace") if isinstance(manager, dict) else str(manager)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError):
            return None
        found = [int(m) for m in _CHECKPOINT.findall(text)]
        return max(found) if found else None
    return None


def prune_trial_checkpoints(trial_dir: Path) -> list[Path]:
    """Keep a whole copy of the sweep's state (see above) and delete the checkpoints of the trial in
    `trial_dir` older than the one that copy resumes it from; returns what was deleted. The
    checkpoint it names and every later one stay, so a kill at any moment leaves a resumable
    sweep. Nothing is deleted while a state file is being written."""
    state = _keep_whole_state(trial_dir.parent)
    keep_from = _trial_checkpoint(state, trial_dir.name) if state is not None else None
    if keep_from is None:
        return []
    deleted = []
    for d in sorted(trial_dir.glob("checkpoint_*")):
        m = _CHECKPOINT.fullmatch(d.name)
        if m and int(m.group(1)) < keep_from and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            deleted.append(d)
    return deleted


def checkpoint_config() -> Any:
    """The sweep's Tune CheckpointConfig: Tune deletes nothing, CheckpointPruner does."""
    from ray import tune

    return tune.CheckpointConfig(num_to_keep=None)


class CheckpointPruner(Callback):
    """Prunes a trial's checkpoints behind the saved sweep state at each new one: a trial holds
    the checkpoints of the few epochs that the state on storage lags behind, not all of them."""

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        prune_trial_checkpoints(Path(trial.path))


def error_line(error: BaseException) -> str:
    """The last non-empty line of a failed trial's error (a RayTaskError's text ends with the
    original exception's line)."""
    text = str(error).strip().splitlines()
    return next((ln for ln in reversed(text) if ln.strip()), type(error).__name__)


__all__ = ["CheckpointPruner", "checkpoint_config", "error_line", "prune_sweep", "prune_trial_checkpoints", "pruners",
           "restore_whole_state", "restored_tuner", "tune_defaults"]
