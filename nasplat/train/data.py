"""The supernet's training data: this node's copy of the data set (synced from an object store,
or the synthetic set generated when asked for), the augmented training crops, and the
deterministic sharded order in which each worker sees them.

Crops are cut once at the space's largest body resolution; each sandwich member resizes them to
its own input size (`nasplat.data.scaling`). The order of an epoch is a function of (seed, epoch)
alone, so a resumed run sees exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from torch.utils.data import Sampler

from nasplat.config import Experiment, TrainerRecipe
from nasplat.data.coco import annotation_path, load_split, train_instances
from nasplat.data.source import sync_data
from nasplat.data.synth import SynthConfig, generate_dataset
from nasplat.data.topdown import TopDownDataset
from nasplat.data.transforms import AugmentParams
from nasplat.errors import DataError
from nasplat.storage import Storage
from nasplat.tasks import get_task

log = logging.getLogger(__name__)


def _has_data(root: Path) -> bool:
    return annotation_path(root, "train").is_file() and annotation_path(root, "val").is_file()


@contextmanager
def _node_lock(experiment: Experiment, doing: str) -> Iterator[None]:
    """Held by one process of this node at a time: a lock file beside the data root."""
    root = Path(experiment.data.root)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        lock = (root.parent / f".{root.name}.lock").open("a")
    except OSError as e:
        raise DataError(f"cannot {doing} into {root}: {e.strerror}",
                        source=str(experiment.path), key="data.root") from e
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def ensure_data(experiment: Experiment) -> None:
    """Make the experiment's data readable on this node: its task's `ensure_data`. Every process
    that reads the data calls this on its own node (the driver, each Ray Train worker, each
    evaluator, each retrain trial): nodes that share no disk each get their own copy. Raises
    DataError."""
    get_task(experiment.task).ensure_data(experiment)


def ensure_wholebody_data(experiment: Experiment) -> None:
    """Make the COCO-WholeBody data set readable under `experiment.data.root` on this node.

    Every process that reads the data calls this on its own node (the driver, each Ray Train
    worker, each evaluator, each retrain trial): nodes that share no disk each get their own copy.
    - `data.root` a URI (`data.source`): the data set is copied from the store into `data.root`,
      this node's cache folder; a later call fetches only what changed in the store
      (`nasplat.data.source.sync_data`). The folder was resolved when the driver loaded the
      experiment (`$NASPLAT_CACHE_DIR` there) and every node uses that same absolute path: it must
      be node-local disk, writable on every node, with room for the data set.
    - `data.synthetic`: the set is generated from its seed when it is absent; the generator
      writes the same bytes everywhere.
    Processes of one node do either once: the first holds a lock beside the root while the others
    wait for it, and then find the data up to date.

    Raises DataError naming `data.root` when there is no data and nothing to generate, or the
    store cannot be read or has no annotations.
    """
    root = Path(experiment.data.root)
    source = experiment.data.source
    if source is not None:
        shown = Storage(source).redacted()
        with _node_lock(experiment, f"copy {shown}"):
            try:
                sync_data(source, root)
            except DataError as e:
                raise DataError(e.detail, source=str(experiment.path), key="data.root") from e
            except OSError as e:  # the local side: a full or read-only disk
                raise DataError(f"cannot copy {shown} into {root}: {e}", source=str(experiment.path),
                                key="data.root") from e
        if not _has_data(root):
            raise DataError(f"no COCO-WholeBody annotations under {root} after copying {shown}",
                            source=str(experiment.path), key="data.root")
        return
    if _has_data(root):
        return
    syn = experiment.data.synthetic
    if syn is None:
        raise DataError(
            f"no COCO-WholeBody annotations under {root} and no `data.synthetic` section to generate them",
            source=str(experiment.path),
            key="data.root",
        )
    with _node_lock(experiment, "generate the synthetic data set"):
        if _has_data(root):  # another process of this node generated it meanwhile
            return
        log.info("generating synthetic data (%d train / %d val images) into %s", syn.train, syn.val, root)
        config = SynthConfig(hand_length=syn.hand_length, face_width=syn.face_width)
        generate_dataset(root, syn.train, syn.val, seed=syn.seed, config=config)


def augment_params(recipe: TrainerRecipe) -> AugmentParams:
    """The top-down pipeline's augmentation for a recipe's `augmentation` section."""
    a = recipe.augmentation
    return AugmentParams(
        scale_factor=a.scale,
        rotation_deg=a.rotation,
        rotation_prob=a.rotation_prob,
        flip_prob=0.5 if a.flip else 0.0,
    )


def train_dataset(experiment: Experiment, *, augment: bool = True) -> TopDownDataset:
    """The training crops at the space's largest body resolution (augmented unless told not to:
    BN recalibration uses them plain)."""
    ann = load_split(experiment.data.root, "train")
    return TopDownDataset(
        train_instances(ann),
        ann,
        experiment.space.max_arch().body.input_size,
        sigma=experiment.trainer.heatmap_sigma,
        box_sigma=experiment.trainer.box_sigma,
        augment=augment_params(experiment.trainer) if augment else None,
        seed=experiment.seed,
    )


class ShardedEpochSampler(Sampler[list[int]]):
    """Batches of indices for one rank: a permutation of (seed, epoch), cut into global batches of
    `batch_size * world_size` (the last incomplete one dropped), rank r taking its slice of each.
    `skip` batches are left out at the start (resume inside an epoch)."""

    def __init__(self, n: int, batch_size: int, *, seed: int, epoch: int, rank: int, world_size: int,
                 skip: int = 0, max_batches: int | None = None) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world_size, self.skip = rank, world_size, skip
        self.max_batches = max_batches

    def num_batches(self) -> int:
        full = self.n // (self.batch_size * self.world_size)
        return min(full, self.max_batches) if self.max_batches else full

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch, 0xBA7C]).permutation(self.n)
        g = self.batch_size * self.world_size
        for b in range(self.skip, self.num_batches()):
            chunk = order[b * g : (b + 1) * g]
            yield chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.skip)


__all__ = ["ShardedEpochSampler", "augment_params", "ensure_data", "ensure_wholebody_data", "train_dataset"]
