"""The supernet contract: a static subnet reproduces the supernet for its arch, holds exactly the
active weights, and training a subnet only touches its slices."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasplat.errors import ArchError
from nasplat.flops import analytic_params
from nasplat.models import (
    ZoomNetSupernet,
    build_static,
    create_model,
    decode_part_boxes,
    expand_boxes,
    list_models,
)
from nasplat.nn import ElasticBatchNorm2d, ElasticConv2d
from nasplat.space import load_space
from nasplat.space.arch import Arch

ROOT = Path(__file__).resolve().parents[2]
SPACE = load_space(ROOT / "search_spaces" / "cpu_small.yaml")
BPM = SPACE.all_blocks_per_module()


def _randomize_bn(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.fixture(scope="module", params=list_models())
def supernet(request: pytest.FixtureRequest) -> ZoomNetSupernet:
    net = create_model(request.param, SPACE, seed=0)
    _randomize_bn(net, 0)
    return net.eval()


def _odd(arch: Arch) -> Arch:
    """The arch at an odd body resolution (100 x 75 -> 25 x 19 heatmaps) and odd head sizes."""
    return dataclasses.replace(
        arch,
        body=dataclasses.replace(arch.body, resolution=100),
        face=dataclasses.replace(arch.face, resolution=19),
        hand=dataclasses.replace(arch.hand, resolution=13),
    )


def _archs() -> list[tuple[str, Arch]]:
    rng = np.random.default_rng(7)
    archs = [("max", SPACE.max_arch()), ("min", SPACE.min_arch())]
    archs += [(f"random{i}", SPACE.sample(rng)) for i in range(3)]
    archs.append(("odd-min", _odd(SPACE.min_arch())))
    archs.append(("odd-random", _odd(SPACE.sample(rng))))
    return archs


@pytest.mark.parametrize(("label", "arch"), _archs(), ids=[label for label, _ in _archs()])
def test_static_subnet_equals_supernet(supernet: ZoomNetSupernet, label: str, arch: Arch) -> None:
    supernet.set_arch(arch)
    h, w = arch.body.input_size
    images = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[20.0, 10.0, 50.0, 40.0], [0.0, 30.0, 20.0, 60.0], [40.0, 60.0, 70.0, 90.0]]).expand(2, 3, 4)
    static = supernet.extract(arch).eval()
    assert not any(isinstance(m, (ElasticConv2d, ElasticBatchNorm2d)) for m in static.modules())
    with torch.no_grad():
        for kwargs in ({}, {"part_boxes": boxes}):
            out = supernet(images, **kwargs)
            ref = static(images, **kwargs)
            for got, want in zip(out, ref):
                assert got.shape == want.shape
                assert (got - want).abs().max().item() <= 1e-5
    hh, ww = -(-h // 4), -(-w // 4)
    assert out.body_heatmaps.shape == (2, 38, hh, ww)
    assert out.boxes.shape == (2, 3, 4)
    assert out.face_heatmaps.shape == (2, 68, arch.face.resolution, arch.face.resolution)
    assert out.hand_heatmaps.shape == (2, 2, 21, arch.hand.resolution, arch.hand.resolution)
    # the static subnet holds exactly the active slices
    assert sum(p.numel() for p in static.parameters()) == analytic_params(arch, BPM)
    if label.endswith("min"):  # the grouped path is exercised
        assert max(arch.body.net.branch_groups) > 1 and arch.face.net.stage1_groups > 1


def test_heads_crop_the_expanded_decoded_boxes(supernet: ZoomNetSupernet) -> None:
    arch = SPACE.sample(np.random.default_rng(11))
    supernet.set_arch(arch)
    h, w = arch.body.input_size
    with torch.no_grad():
        out = supernet(torch.randn(2, 3, h, w))
    decoded = decode_part_boxes(out.body_heatmaps)
    torch.testing.assert_close(out.boxes[:, :1], expand_boxes(decoded[:, :1], arch.face.roi_expansion))
    torch.testing.assert_close(out.boxes[:, 1:], expand_boxes(decoded[:, 1:], arch.hand.roi_expansion))


@contextlib.contextmanager
def _trained_on_random_input(supernet: ZoomNetSupernet, arch: Arch):  # noqa: ANN202
    """Set `arch`, forward a random batch in train mode with fresh gradients, yield the output;
    afterwards back to eval mode without gradients (the module-scoped supernet is shared)."""
    supernet.set_arch(arch)
    supernet.train()
    supernet.zero_grad(set_to_none=True)
    try:
        h, w = arch.body.input_size
        yield supernet(torch.randn(2, 3, h, w))
    finally:
        supernet.eval()
        supernet.zero_grad(set_to_none=True)


def test_training_touches_only_the_active_slices(supernet: ZoomNetSupernet) -> None:
    arch = SPACE.min_arch()  # grouped and narrow everywhere
    with _trained_on_random_input(supernet, arch) as out:
        loss = sum(t.square().mean() for t in (out.body_heatmaps, out.face_heatmaps, out.hand_heatmaps))
        loss.backward()
        touched = sum(int((p.grad != 0).sum()) for p in supernet.parameters() if p.grad is not None)
        assert 0.5 * analytic_params(arch, BPM) < touched <= analytic_params(arch, BPM)
        for m in supernet.modules():
            if isinstance(m, ElasticConv2d) and m.weight.grad is not None:
                assert torch.all(m.weight.grad[m.out_channels :] == 0)
                if m.in_segments is None:
                    assert torch.all(m.weight.grad[:, m.in_channels :] == 0)


def test_set_arch_rejects_an_arch_too_big_and_keeps_the_previous(supernet: ZoomNetSupernet) -> None:
    good = SPACE.min_arch()
    supernet.set_arch(good)
    too_wide = dataclasses.replace(good, body=dataclasses.replace(good.body, stem_channels=48))
    with pytest.raises(ArchError, match="body"):
        supernet.set_arch(too_wide)
    assert supernet.arch == good
    bad_groups = dataclasses.replace(
        good, hand=dataclasses.replace(good.hand, net=dataclasses.replace(good.hand.net, stage1_groups=3))
    )
    with pytest.raises(ArchError, match="hand"):
        supernet.set_arch(bad_groups)
    with pytest.raises(ArchError, match="body.resolution"):
        supernet(torch.randn(1, 3, 64, 48))


def test_extract_keeps_the_active_arch(supernet: ZoomNetSupernet) -> None:
    supernet.set_arch(SPACE.max_arch())
    static = supernet.extract(SPACE.min_arch())
    assert static.arch == SPACE.min_arch()
    assert supernet.arch == SPACE.max_arch()


def test_build_static_loads_an_extracted_state_dict(supernet: ZoomNetSupernet) -> None:
    arch = SPACE.sample(np.random.default_rng(3))
    static = supernet.extract(arch).eval()
    rebuilt = build_static(arch, BPM).eval()
    rebuilt.load_state_dict(static.state_dict(), strict=True)
    h, w = arch.body.input_size
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        for got, want in zip(rebuilt(x), static(x)):
            torch.testing.assert_close(got, want)


def test_seeded_build_is_reproducible() -> None:
    a = create_model("zoomnet", SPACE, seed=5)
    b = create_model("zoomnet", SPACE, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name", list_models())
def test_to_moves_every_tensor_and_the_moved_supernet_still_runs(name: str) -> None:
    net = create_model(name, SPACE, seed=0).eval()
    assert net.to("cpu", torch.float64) is net
    tensors = [*net.parameters(), *net.buffers()]
    assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
    assert all(t.dtype == torch.long for t in tensors if not t.is_floating_point())  # BN batch counters
    arch = SPACE.sample(np.random.default_rng(11))
    net.set_arch(arch)
    x = torch.randn(1, 3, *arch.body.input_size, dtype=torch.float64)
    with torch.no_grad():
        out = net(x)
        static_out = net.extract().eval()(x)
    assert all(t.dtype == torch.float64 for t in out)
    for got, want in zip(static_out, out):
        torch.testing.assert_close(got, want)


def test_config_round_trips_through_json_and_rebuilds_the_same_net(supernet: ZoomNetSupernet) -> None:
    import json

    from nasplat.models import SupernetConfig

    config = SupernetConfig.from_dict(json.loads(json.dumps(supernet.config.to_dict())))
    assert config == supernet.config
    rebuilt = ZoomNetSupernet(config)
    rebuilt.load_state_dict(supernet.state_dict(), strict=True)
    arch = SPACE.sample(np.random.default_rng(5))
    rebuilt.set_arch(arch)
    supernet.set_arch(arch)
    x = torch.randn(1, 3, *arch.body.input_size)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x).hand_heatmaps, supernet(x).hand_heatmaps)


@pytest.mark.parametrize("stage", [0, 1, 2, 4])
def test_each_feature_stage_reads_its_own_block_of_head_input_weights(supernet: ZoomNetSupernet, stage: int) -> None:
    base = SPACE.max_arch()
    arch = dataclasses.replace(base, face=dataclasses.replace(base.face, feature_stage=stage))
    with _trained_on_random_input(supernet, arch) as out:
        out.face_heatmaps.square().mean().backward()
        first = supernet.face.trunk.stage1.layers[0]
        blocks = supernet.config.face_in_channels
        offset = sum(blocks[:stage])
        channels = arch.body.feature_channels(stage)
        for conv in (first.conv1.conv, first.downsample.conv):
            grad = conv.weight.grad.abs().sum(dim=(0, 2, 3))  # per input column
            assert conv.weight.shape[1] == sum(blocks)
            assert torch.all(grad[offset : offset + channels] > 0)
            assert torch.all(grad[:offset] == 0) and torch.all(grad[offset + channels :] == 0)


def test_a_feature_stage_the_supernet_holds_no_weights_for_is_an_arch_error() -> None:
    from nasplat.models import build_supernet

    net = build_supernet(SPACE, seed=0)
    narrow = dataclasses.replace(net.config, face_in_channels=(0, 64, 0, 0, 0))
    arch = SPACE.max_arch()
    with pytest.raises(ArchError, match="face.feature_stage"):
        ZoomNetSupernet(narrow).set_arch(dataclasses.replace(arch, face=dataclasses.replace(arch.face, feature_stage=0)))
