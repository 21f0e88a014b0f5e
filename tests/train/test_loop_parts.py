from __future__ import annotations

import dataclasses

import pytest

from nasplat.config import ScheduleConfig, TrainerRecipe
from nasplat.train.data import ShardedEpochSampler
from nasplat.train.schedule import lr_at


def test_ranks_get_disjoint_shards_of_the_same_global_batches():
    r0 = list(ShardedEpochSampler(50, 4, seed=1, epoch=3, rank=0, world_size=2))
    r1 = list(ShardedEpochSampler(50, 4, seed=1, epoch=3, rank=1, world_size=2))
    assert len(r0) == len(r1) == 6  # 50 // 8 full global batches
    for a, b in zip(r0, r1):
        assert len(a) == len(b) == 4 and not set(a) & set(b)
    single = list(ShardedEpochSampler(50, 8, seed=1, epoch=3, rank=0, world_size=1))
    assert [sorted(a + b) for a, b in zip(r0, r1)] == [sorted(s) for s in single]


def test_skipping_resumes_the_same_order_and_epochs_differ():
    full = list(ShardedEpochSampler(40, 4, seed=0, epoch=2, rank=0, world_size=1))
    assert list(ShardedEpochSampler(40, 4, seed=0, epoch=2, rank=0, world_size=1, skip=3)) == full[3:]
    assert list(ShardedEpochSampler(40, 4, seed=0, epoch=3, rank=0, world_size=1)) != full


def test_lr_warms_up_then_drops_at_milestone_epochs():
    recipe = dataclasses.replace(
        TrainerRecipe(name="t"),
        schedule=ScheduleConfig(epochs=10, milestones=(4, 8), gamma=0.1, warmup_steps=10, warmup_ratio=0.01),
    )
    lr = recipe.optimizer.lr
    assert lr_at(recipe, 0, 20) == pytest.approx(lr * 0.01)
    assert lr_at(recipe, 5, 20) == pytest.approx(lr * (0.01 + 0.99 * 0.5))
    assert lr_at(recipe, 79, 20) == pytest.approx(lr)
    assert lr_at(recipe, 80, 20) == pytest.approx(lr * 0.1)
    assert lr_at(recipe, 160, 20) == pytest.approx(lr * 0.01)


def test_students_weight_is_zero_in_the_warmup_then_ramps_to_one():
    from nasplat.config import SandwichConfig
    from nasplat.train.schedule import student_weight

    recipe = TrainerRecipe(name="t", sandwich=SandwichConfig(warmup_epochs=2, ramp_epochs=1.5))
    assert student_weight(recipe, 0, 10) == 0.0
    assert student_weight(recipe, 19, 10) == 0.0
    assert student_weight(recipe, 20, 10) == pytest.approx(1 / 15)
    assert student_weight(recipe, 27, 10) == pytest.approx(8 / 15)
    assert student_weight(recipe, 34, 10) == 1.0
    assert student_weight(recipe, 500, 10) == 1.0
    plain = TrainerRecipe(name="t")
    assert student_weight(plain, 0, 10) == 1.0  # BigNAS: the whole sandwich from the first step
