from __future__ import annotations

import dataclasses

import torch

from nasplat.config import DistillationConfig
from nasplat.train.sandwich import SandwichMember, SandwichSampler


def _batch(experiment, n: int = 4):
    from nasplat.data.topdown import collate
    from nasplat.train.data import train_dataset

    ds = train_dataset(experiment)
    return collate([ds[i] for i in range(n)])


def _grads(net) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_sampler_is_teacher_first_and_a_function_of_the_step(trained_tiny):
    space = trained_tiny.space
    a = SandwichSampler(space, seed=3, num_random=2)
    b = SandwichSampler(space, seed=3, num_random=2)
    members = a.members(17)
    assert [m.role for m in members] == ["max", "min", "random0", "random1"]
    assert members[0].arch == space.max_arch() and members[1].arch == space.min_arch()
    assert [m.arch for m in members] == [m.arch for m in b.members(17)]
    assert any(a.members(s)[2].arch != members[2].arch for s in range(18, 40))


def test_during_the_warmup_only_the_max_subnet_trains(trained_tiny):
    space = trained_tiny.space
    sampler = SandwichSampler(space, seed=3, num_random=2, warmup_epochs=2)
    for epoch in (0, 1):
        members = sampler.members(5, epoch)
        assert [(m.role, m.arch) for m in members] == [("max", space.max_arch())]
    after = sampler.members(5, 2)
    assert [m.role for m in after] == ["max", "min", "random0", "random1"]
    # the warmup does not shift the random draws: step 5 samples the same archs with or without it
    assert [m.arch for m in after] == [m.arch for m in SandwichSampler(space, seed=3, num_random=2).members(5)]
    assert sampler.members(5) == after  # no epoch given: past the warmup


def test_a_sandwich_step_accumulates_the_gradients_of_every_member(trained_tiny):
    from nasplat.models import build_supernet
    from nasplat.train.step import sandwich_step

    recipe = dataclasses.replace(trained_tiny.trainer, distillation=DistillationConfig(enabled=False))
    net = build_supernet(trained_tiny.space, seed=0)
    batch = _batch(trained_tiny)
    members = SandwichSampler(trained_tiny.space, 0, 1).members(0)
    expected: dict[str, torch.Tensor] = {}
    for m in members:
        net.zero_grad(set_to_none=True)
        sandwich_step(net, batch, [m], recipe, epoch=5)
        for k, g in _grads(net).items():
            expected[k] = expected.get(k, 0) + g
    net.zero_grad(set_to_none=True)
    logs = sandwich_step(net, batch, members, recipe, epoch=5)
    got = _grads(net)
    assert got.keys() == expected.keys()
    for k in got:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-7)
    assert {"max/body", "min/face", "random0/hand"} <= logs.keys()


def test_students_learn_from_the_teacher_only_by_default(trained_tiny):
    from nasplat.models import build_supernet
    from nasplat.train.step import sandwich_step

    recipe = trained_tiny.trainer
    assert recipe.distillation.enabled and recipe.distillation.gt_weight == 0
    net = build_supernet(trained_tiny.space, seed=0)
    space = trained_tiny.space
    members = [SandwichMember("max", space.max_arch()), SandwichMember("min", space.min_arch())]
    logs = sandwich_step(net, _batch(trained_tiny), members, recipe, epoch=5)
    assert {"max/body", "max/face", "max/hand"} <= logs.keys()
    assert "min/body" not in logs
    assert {"min/distill_body", "min/distill_face", "min/distill_hand"} <= logs.keys()

    with_gt = dataclasses.replace(recipe, distillation=DistillationConfig(enabled=True, gt_weight=0.5))
    logs = sandwich_step(net, _batch(trained_tiny), members, with_gt, epoch=5)
    assert {"min/body", "min/distill_body"} <= logs.keys()
