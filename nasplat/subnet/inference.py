"""The net the evaluator predicts with: a static copy of one subnet with BN folded into its convs.

The elastic supernet pays for its elasticity in every forward: weight slices (and, for grouped
convs, gathered block diagonals) rebuilt per call, and a BatchNorm after every conv. After BN
recalibration a subnet's statistics are fixed, so for prediction `inference_copy(supernet, arch)`
extracts the static subnet (`ZoomNetSupernet.extract`) folding each BN into the conv before it as
that conv is copied (`nn.elastic.folding_batchnorm`: no BatchNorm layer is built to be dropped):

    w' = w * gamma / sqrt(var + eps)        b' = beta + (b - mean) * gamma / sqrt(var + eps)

(per output channel), so conv -> BN becomes one conv with a bias. Its heatmaps equal the
supernet's in eval mode up to float rounding (tests/subnet/test_inference.py states the tolerance).
With `dense_small_groups` a grouped conv with fewer than `DENSE_GROUPED_BELOW` input channels per
group becomes the dense conv with its block-diagonal weight, as the elastic conv runs it on CPU:
the same result, more MACs, less time there. The copy is for prediction only: folded BN has no
statistics left to train or recalibrate.

`resolve_device` checks the `--device` of the commands that predict with it (`nasplat subnet
eval`, `nasplat predict`) before any work: one line naming what was given and what this machine has.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nasplat.errors import ConfigError
from nasplat.nn.elastic import DENSE_GROUPED_BELOW, ConvBN, ElasticBatchNorm2d, ElasticConv2d, folding_batchnorm
from nasplat.space.arch import Arch


def available_devices() -> list[str]:
    """The torch devices this machine can run nasplat on: `cpu`, each CUDA device (`cuda:0`,
    ...) and `mps` when present."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def resolve_device(text: str) -> torch.device:
    """The torch device `text` names (`cpu`, `cuda`, `cuda:1`, `mps`) when this machine has it.
    Raises ConfigError (key `--device`) naming the value and the devices this machine has: a
    string that is not a device, a device type nasplat does not run on, or one not present."""
    available = available_devices()
    where = f"available here: {', '.join(available)}"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{text!r} is not a device; {where}", key="--device") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{text!r}: nasplat runs on cpu, cuda or mps; {where}", key="--device")
    if device.type == "cpu":
        return device
    if device.index is None:  # `cuda` alone: the current CUDA device, present when there is any
        present = any(d.split(":")[0] == device.type for d in available)
    else:
        present = str(device) in available
    if not present:
        raise ConfigError(f"{text!r} is not on this machine; {where}", key="--device")
    return device


@torch.no_grad()
def _fold(conv: nn.Conv2d, gamma: torch.Tensor, beta: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
          eps: float) -> nn.Conv2d:
    """`conv` (changed in place) with the BN map (gamma, beta, running mean and var, each [out])
    folded into weight and bias."""
    # in float64: 1/sqrt(var + eps) of a tiny variance loses digits in float32
    scale = gamma.double() / torch.sqrt(var.double() + eps)  # [out]
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    new_bias = beta.double() + (bias - mean.double()) * scale  # [out]
    conv.weight.mul_(scale.to(conv.weight.dtype)[:, None, None, None])  # [out, in/g, k, k]
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)
    return conv


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """`conv` (changed in place) with `bn`'s eval-mode affine map folded into weight and bias."""
    assert bn.running_mean is not None and bn.running_var is not None  # a static copy tracks statistics
    return _fold(conv, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)


def _folded_elastic(conv: ElasticConv2d, bn: ElasticBatchNorm2d, *, dense_small_groups: bool) -> nn.Conv2d:
    """The static conv of `conv`'s active slice with the active slice of `bn` folded in (and made
    dense as in `fold_batchnorm`): what `fold_batchnorm` makes of their static copies."""
    assert bn.running_mean is not None and bn.running_var is not None  # a supernet tracks statistics
    c = bn.channels
    static = _fold(conv.to_static(), bn.weight[:c], bn.bias[:c], bn.running_mean[:c], bn.running_var[:c], bn.eps)
    if dense_small_groups and static.groups > 1 and static.in_channels // static.groups < DENSE_GROUPED_BELOW:
        return _dense(static)
    return static


@torch.no_grad()
def _dense(conv: nn.Conv2d) -> nn.Conv2d:
    """The dense conv equal to grouped `conv`: its weight on the block diagonal, zeros elsewhere."""
    g, out, cin = conv.groups, conv.out_channels, conv.in_channels
    co, ci = out // g, cin // g
    dense = nn.Conv2d(cin, out, conv.kernel_size, stride=conv.stride, padding=conv.padding,  # type: ignore[arg-type]
                      bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    dense.weight.zero_()
    for k in range(g):  # group k: rows [k*co, (k+1)*co), columns [k*ci, (k+1)*ci)
        dense.weight[k * co : (k + 1) * co, k * ci : (k + 1) * ci] = conv.weight[k * co : (k + 1) * co]
    if conv.bias is not None and dense.bias is not None:
        dense.bias.copy_(conv.bias)
    return dense


def fold_batchnorm(net: nn.Module, *, dense_small_groups: bool = False) -> nn.Module:
    """Fold every static `ConvBN`'s BatchNorm into its conv, in place (the BN becomes an
    identity), and with `dense_small_groups` make its small-group convs dense. Uses the running
    statistics: the result computes what `net.eval()` does. Returns `net` in eval mode."""
    for module in net.modules():
        if not isinstance(module, ConvBN):
            continue
        conv, bn = module.conv, module.bn
        if type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d:
            continue  # elastic layers (a supernet) keep their BN: its slice changes with the arch
        conv = _folded(conv, bn)
        if dense_small_groups and conv.groups > 1 and conv.in_channels // conv.groups < DENSE_GROUPED_BELOW:
            conv = _dense(conv)
        module.conv, module.bn = conv, nn.Identity()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def inference_copy(supernet: Any, arch: Arch, *, dense_small_groups: bool | None = None) -> nn.Module:
    """A static, BN-folded copy of subnet `arch` of `supernet` (a `ZoomNetSupernet`, its BN
    statistics already recalibrated for `arch`) for prediction, in eval mode. The supernet's
    active arch ends as `arch`. `dense_small_groups` (default: on CPU) as in `fold_batchnorm`.
    Raises ArchError when `arch` does not fit the supernet."""
    supernet.set_arch(arch)
    if dense_small_groups is None:
        dense_small_groups = next(supernet.parameters()).device.type == "cpu"
    # BN folded as each conv is copied (no BatchNorm layer built to be dropped), then whatever
    # static ConvBN the supernet held already
    with folding_batchnorm(partial(_folded_elastic, dense_small_groups=dense_small_groups)):
        static = supernet.extract()
    return fold_batchnorm(static, dense_small_groups=dense_small_groups)


__all__ = ["available_devices", "fold_batchnorm", "inference_copy", "resolve_device"]
