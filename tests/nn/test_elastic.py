"""Elastic ops: slicing semantics, static copies, BN statistics and gradients stay in the active slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasplat.errors import ArchError
from nasplat.nn import BLOCKS, ElasticBatchNorm2d, ElasticConv2d


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


# (16, 16, 2) has 8 input channels per group: a true grouped conv; the others run on CPU as a
# dense conv with a block-diagonal weight (DENSE_GROUPED_BELOW). Both must give the same result.
@pytest.mark.parametrize(("cin", "cout", "groups"), [(8, 12, 1), (8, 12, 4), (12, 12, 12), (6, 10, 2), (16, 16, 2)])
def test_grouped_conv_uses_block_diagonal_slices_of_the_dense_weight(cin: int, cout: int, groups: int) -> None:
    torch.manual_seed(0)
    conv = ElasticConv2d(16, 16, 3, stride=2)
    conv.set_active(cin, cout, groups)
    x = torch.randn(2, cin, 9, 7)
    co, ci = cout // groups, cin // groups
    expected = torch.cat(
        [
            F.conv2d(x[:, g * ci : (g + 1) * ci], conv.weight[g * co : (g + 1) * co, g * ci : (g + 1) * ci], stride=2, padding=1)
            for g in range(groups)
        ],
        dim=1,
    )
    out = conv(x)
    assert out.shape == (2, cout, 5, 4)
    torch.testing.assert_close(out, expected)
    static = conv.to_static()
    assert isinstance(static, nn.Conv2d) and static.groups == groups
    assert static.weight.numel() == cout * ci * 9
    torch.testing.assert_close(static(x), out)


def test_conv_on_concatenated_segments_reads_each_segment_columns() -> None:
    conv = ElasticConv2d(10, 6, 1, bias=True)
    conv.set_active(0, 4, in_segments=((0, 2), (5, 3)))
    x = torch.randn(1, 5, 3, 3)
    w = torch.cat([conv.weight[:4, 0:2], conv.weight[:4, 5:8]], dim=1)
    torch.testing.assert_close(conv(x), F.conv2d(x, w, conv.bias[:4]))
    torch.testing.assert_close(conv.to_static()(x), conv(x))


def test_invalid_sizes_raise_arch_error() -> None:
    conv = ElasticConv2d(8, 8, 3)
    with pytest.raises(ArchError):
        conv.set_active(8, 9)
    with pytest.raises(ArchError):
        conv.set_active(8, 6, groups=4)
    with pytest.raises(ArchError):
        ElasticBatchNorm2d(4).set_active(5)


def test_grouped_conv_gradient_reaches_only_the_active_blocks() -> None:
    conv = ElasticConv2d(8, 8, 3)
    conv.set_active(6, 4, groups=2)
    conv(torch.randn(2, 6, 5, 5)).square().sum().backward()
    grad = conv.weight.grad
    assert grad is not None
    mask = torch.zeros_like(grad, dtype=torch.bool)
    mask[0:2, 0:3] = True
    mask[2:4, 3:6] = True
    assert torch.all(grad[~mask] == 0)
    assert torch.all(grad[mask].abs().sum() > 0)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_bn_training_updates_only_the_active_slice(momentum: float | None) -> None:
    bn = ElasticBatchNorm2d(8, momentum=momentum)
    _randomize_bn(bn, 1)
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    bn.set_active(5)
    bn.train()
    x = torch.randn(4, 5, 6, 6) * 3 + 1
    bn(x)
    assert torch.equal(bn.running_mean[5:], before_mean[5:])
    assert torch.equal(bn.running_var[5:], before_var[5:])
    assert not torch.allclose(bn.running_mean[:5], before_mean[:5])
    if momentum is None:  # cumulative average after one batch: exactly the batch statistics
        torch.testing.assert_close(bn.running_mean[:5], x.mean(dim=(0, 2, 3)))
        torch.testing.assert_close(bn.running_var[:5], x.var(dim=(0, 2, 3), unbiased=True))


def test_bn_static_copy_matches_in_eval() -> None:
    bn = ElasticBatchNorm2d(8)
    _randomize_bn(bn, 2)
    bn.set_active(3)
    bn.eval()
    static = bn.to_static().eval()
    x = torch.randn(2, 3, 4, 4)
    assert static.num_features == 3
    torch.testing.assert_close(static(x), bn(x))


def _block_configs(name: str, rng: np.random.Generator) -> tuple[int, int, int, int, int]:
    """(max_in, max_width, in_channels, width, groups) valid for block type `name`."""
    max_width = 8
    width = int(rng.choice([4, 8]))
    groups = int(rng.choice([1, 2, 4]))
    if name == "basic":
        return max_width, max_width, width, width, groups
    return 12, max_width, int(rng.choice([4, 12])), width, groups


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_block_type_static_copy_equals_the_elastic_block(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    max_in, max_width, cin, width, groups = _block_configs(name, rng)
    torch.manual_seed(seed)
    block = BLOCKS[name].elastic(max_in, max_width, name == "bottleneck")
    _randomize_bn(block, seed)
    block.set_active(cin, width, groups)
    block.eval()
    static = block.to_static().eval()
    x = torch.randn(2, cin, 7, 5)
    out = block(x)
    assert out.shape == (2, BLOCKS[name].out_channels(width), 7, 5)
    assert (static(x) - out).abs().max().item() <= 1e-5
    assert not any(isinstance(m, (ElasticConv2d, ElasticBatchNorm2d)) for m in static.modules())
    # the static block's parameters are exactly the active slices
    active = sum(m.active_weight().numel() for m in block.modules() if isinstance(m, ElasticConv2d))
    active += sum(2 * m.channels for m in block.modules() if isinstance(m, ElasticBatchNorm2d))
    assert sum(p.numel() for p in static.parameters()) == active
