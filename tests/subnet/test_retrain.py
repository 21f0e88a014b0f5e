"""Retraining one subnet as a static model: the supernet's step on one member, a checkpoint that
resumes exactly, and weights written back where `extract` reads them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nasplat.errors import ArchError
from nasplat.models import build_static
from nasplat.subnet import load_supernet
from nasplat.subnet.retrain import FixedArch, SubnetRetrainer, into_supernet, retrain_recipe


def _arch(experiment):  # noqa: ANN001, ANN202
    return experiment.space.sample(np.random.default_rng(1))


def test_into_supernet_puts_every_weight_where_extract_reads_it(trained_tiny):
    supernet, _ = load_supernet(trained_tiny.checkpoint_dir / "latest.pt")
    arch = _arch(trained_tiny)
    fresh = build_static(arch, supernet.config.blocks_per_module, seed=7).state_dict()
    other = supernet.extract(trained_tiny.space.max_arch()).state_dict()
    into_supernet(supernet, arch, fresh)
    back = supernet.extract(arch).state_dict()
    assert back.keys() == fresh.keys()
    assert all(torch.equal(back[k], fresh[k]) for k in fresh if fresh[k].is_floating_point())
    # the weights of other subnets outside this one's slices are untouched
    changed = supernet.extract(trained_tiny.space.max_arch()).state_dict()
    assert any(torch.equal(changed[k], other[k]) for k in other) and not all(torch.equal(changed[k], other[k]) for k in other)


def test_retrain_recipe_is_the_trainers_with_the_retrain_schedule(trained_tiny):
    exp = dataclasses.replace(trained_tiny, retrain=_retrain_config(epochs=2, milestones=(1,)))
    recipe = retrain_recipe(exp, lr=5e-4)
    assert (recipe.schedule.epochs, recipe.schedule.milestones, recipe.optimizer.lr) == (2, (1,), 5e-4)
    assert recipe.loss == trained_tiny.trainer.loss and recipe.head_boxes == trained_tiny.trainer.head_boxes


def _retrain_config(**kw):  # noqa: ANN003, ANN202
    from nasplat.config import RetrainConfig

    return RetrainConfig(**kw)


def test_a_retrain_epoch_resumes_exactly_from_its_state(trained_tiny):
    exp = dataclasses.replace(trained_tiny, retrain=_retrain_config(epochs=2))
    arch = _arch(exp)
    recipe = retrain_recipe(exp)
    a = SubnetRetrainer(exp, arch, recipe)
    inherited = {k: v.clone() for k, v in a.net.static.state_dict().items()}
    row = a.run_epoch()
    assert row["epoch"] == 1.0 and set(row) >= {"wholebody_ap", "face_ap", "initial_wholebody_ap", "loss"}
    state = a.state_dict()
    a.run_epoch()
    b = SubnetRetrainer(exp, arch, recipe)
    b.load_state_dict(state)
    assert b.initial == a.initial and b.epoch == 1
    b.run_epoch()
    wa, wb = a.net.static.state_dict(), b.net.static.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], inherited[k]) for k in wa)  # it did train
    assert [r["epoch"] for r in b.history] == [1.0, 2.0]


def test_a_static_subnet_runs_only_its_own_arch(trained_tiny):
    supernet, _ = load_supernet(trained_tiny.checkpoint_dir / "latest.pt")
    arch = trained_tiny.space.min_arch()
    fixed = FixedArch(supernet.extract(arch))
    fixed.set_arch(arch)
    with pytest.raises(ArchError):
        fixed.set_arch(trained_tiny.space.max_arch())
