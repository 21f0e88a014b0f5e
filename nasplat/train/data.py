"""The supernet's training data: the synthetic set when asked for, the augmented training crops,
and the deterministic sharded order in which each worker sees them.

Crops are cut once at the space's largest body resolution; each sandwich member resizes them to
its own input size (`nasplat.data.scaling`). The order of an epoch is a function of (seed, epoch)
alone, so a resumed run sees exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from nasplat.config import Experiment, TrainerRecipe
from nasplat.data.coco import annotation_path, load_split, train_instances
from nasplat.data.synth import SynthConfig, generate_dataset
from nasplat.data.topdown import TopDownDataset
from nasplat.data.transforms import AugmentParams
from nasplat.errors import DataError

log = logging.getLogger(__name__)


def ensure_data(experiment: Experiment) -> None:
    """Generate the synthetic data set if the experiment asks for one and it is absent.

    Raises DataError naming `data.root` when there is no data and nothing to generate.
    """
    root = experiment.data.root
    if annotation_path(root, "train").is_file() and annotation_path(root, "val").is_file():
        return
    syn = experiment.data.synthetic
    if syn is None:
        raise DataError(
            f"no COCO-WholeBody annotations under {root} and no `data.synthetic` section to generate them",
            source=str(experiment.path),
            key="data.root",
        )
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


__all__ = ["ShardedEpochSampler", "augment_params", "ensure_data", "train_dataset"]
