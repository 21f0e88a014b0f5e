"""Elastic convolution and batch norm: one full-size weight, sliced to the active size.

The Once-for-All pattern: an elastic op owns the largest weight any subnet needs. `set_active`
picks the active sizes; `forward` runs on a view (or, for grouped convs, a block-diagonal copy) of
that weight, so gradients only reach the active entries; `to_static` copies the active slice into
a plain `nn.Conv2d` / `nn.BatchNorm2d` whose output is identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasplat.errors import ArchError

__all__ = ["DENSE_GROUPED_BELOW", "ElasticBatchNorm2d", "ElasticConv2d", "ConvBN", "folding_batchnorm"]

DENSE_GROUPED_BELOW = 8
"""On CPU, a grouped conv with fewer input channels per group than this runs as the equivalent
dense conv with a block-diagonal weight (see ElasticConv2d.forward); static subnets keep true
grouped convs."""


def _check_size(what: str, value: int, maximum: int) -> None:
    if not 1 <= value <= maximum:
        raise ArchError(f"{what} {value} is outside the supernet's range 1..{maximum}")


class ElasticConv2d(nn.Module):
    """A square-kernel conv whose input channels, output channels and groups are elastic.

    Active output channels are the first `out_channels` rows of the full weight. Active input
    channels are the first `in_channels` columns, or, with `in_segments`, the concatenation of the
    given (offset, length) column ranges (used where the input is a concatenation of elastic
    branches). With `groups` G the subnet uses the block-diagonal slices of the dense weight:
    group g takes rows [g*co, (g+1)*co) and columns [g*ci, (g+1)*ci), co = out/G, ci = in/G.
    Padding is kernel_size // 2, as in HRNet.
    """

    def __init__(
        self,
        max_in_channels: int,
        max_out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.max_in_channels = max_in_channels
        self.max_out_channels = max_out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(max_out_channels, max_in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(max_out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default
        self.in_channels = max_in_channels
        self.out_channels = max_out_channels
        self.groups = 1
        self.in_segments: tuple[tuple[int, int], ...] | None = None
        self._full = True
        self._mask_cache: dict[tuple, Tensor] = {}

    def set_active(
        self,
        in_channels: int,
        out_channels: int,
        groups: int = 1,
        in_segments: tuple[tuple[int, int], ...] | None = None,
    ) -> None:
        """Select the active sizes. Raises ArchError when a size exceeds the full weight or the
        channels are not divisible by `groups`."""
        if in_segments is not None:
            in_channels = sum(length for _, length in in_segments)
            if any(off < 0 or off + length > self.max_in_channels for off, length in in_segments):
                raise ArchError(f"input segments {in_segments} exceed {self.max_in_channels} channels")
            if groups != 1:
                raise ArchError("a conv on concatenated segments must be dense (groups 1)")
        _check_size("input channels", in_channels, self.max_in_channels)
        _check_size("output channels", out_channels, self.max_out_channels)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ArchError(f"groups {groups} do not divide channels {in_channels} -> {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.in_segments = in_segments
        self._full = (
            in_segments is None
            and groups == 1
            and in_channels == self.max_in_channels
            and out_channels == self.max_out_channels
        )

    def active_weight(self) -> Tensor:
        """The weight the active subnet uses: [out, in / groups, k, k]."""
        if self._full:
            return self.weight
        out, cin, g = self.out_channels, self.in_channels, self.groups
        if self.in_segments is not None:
            rows = self.weight[:out]
            if len(self.in_segments) == 1:
                off, n = self.in_segments[0]
                return rows[:, off : off + n]  # a view
            return torch.cat([rows[:, off : off + n] for off, n in self.in_segments], dim=1)
        w = self.weight[:out, :cin]  # [out, in, k, k], a view
        if g == 1:
            return w
        k = self.kernel_size
        co, ci = out // g, cin // g
        # [g, co, g, ci, k, k] -> diagonal over the two group axes: [co, ci, k, k, g]
        diag = w.view(g, co, g, ci, k, k).diagonal(dim1=0, dim2=2)
        return diag.permute(4, 0, 1, 2, 3).reshape(out, ci, k, k)

    def active_bias(self) -> Tensor | None:
        if self.bias is None:
            return None
        return self.bias if self.out_channels == self.max_out_channels else self.bias[: self.out_channels]

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, in, H, W] -> [B, out, ceil(H / stride), ceil(W / stride)]
        g = self.groups
        if g > 1 and x.device.type == "cpu" and self.in_channels // g < DENSE_GROUPED_BELOW:
            # Same result, run as a dense conv whose weight is zero off the block diagonal: on CPU
            # a grouped conv of a few channels per group is slower than the dense one it is part of.
            weight = self.weight[: self.out_channels, : self.in_channels] * self._block_mask(x)
            return F.conv2d(x, weight, self.active_bias(), self.stride, self.padding, 1, 1)
        return F.conv2d(x, self.active_weight(), self.active_bias(), self.stride, self.padding, 1, g)

    def _block_mask(self, x: Tensor) -> Tensor:
        """[out, in, 1, 1] ones on the active groups' diagonal blocks, zeros elsewhere (cached)."""
        out, cin, g = self.out_channels, self.in_channels, self.groups
        key = (out, cin, g, x.device, self.weight.dtype)
        cached = self._mask_cache.get(key)
        if cached is None:
            rows = torch.arange(out, device=x.device) // (out // g)
            cols = torch.arange(cin, device=x.device) // (cin // g)
            cached = (rows[:, None] == cols[None, :]).to(self.weight.dtype)[:, :, None, None]
            self._mask_cache[key] = cached
        return cached

    def to_static(self) -> nn.Conv2d:
        """A plain nn.Conv2d holding a copy of the active weight (and bias)."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            groups=self.groups,
            bias=self.bias is not None,
        ).to(self.weight.device, self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.active_weight())
            bias = self.active_bias()
            if bias is not None and conv.bias is not None:
                conv.bias.copy_(bias)
        return conv

    def extra_repr(self) -> str:
        return (
            f"max {self.max_in_channels}->{self.max_out_channels}, k={self.kernel_size}, s={self.stride}, "
            f"active {self.in_channels}->{self.out_channels} g={self.groups}"
        )


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first `channels` features of a full-size BN.

    Affine parameters and running statistics are sliced as views, so training (or BN
    recalibration) of one subnet updates only its slice. It is an `nn.BatchNorm2d`, so generic code
    that resets running statistics or changes momentum treats it like any other BN.
    """

    def __init__(self, max_channels: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(max_channels, eps=eps, momentum=momentum)
        self.channels = max_channels

    def set_active(self, channels: int) -> None:
        """Select the first `channels` features. Raises ArchError beyond the full size."""
        _check_size("BN channels", channels, self.num_features)
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        c = self.channels
        if c == self.num_features:
            return super().forward(x)
        # x: [B, c, H, W]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        running_mean = self.running_mean[:c] if self.running_mean is not None else None
        running_var = self.running_var[:c] if self.running_var is not None else None
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            running_mean if track else None,
            running_var if track else None,
            self.weight[:c] if self.weight is not None else None,
            self.bias[:c] if self.bias is not None else None,
            use_batch_stats,
            factor,
            self.eps,
        )

    def to_static(self) -> nn.BatchNorm2d:
        """A plain nn.BatchNorm2d with copies of the active parameters and running statistics."""
        c = self.channels
        bn = nn.BatchNorm2d(c, eps=self.eps, momentum=self.momentum).to(self.weight.device, self.weight.dtype)
        with torch.no_grad():
            bn.weight.copy_(self.weight[:c])
            bn.bias.copy_(self.bias[:c])
            assert self.running_mean is not None and self.running_var is not None  # track_running_stats
            bn.running_mean.copy_(self.running_mean[:c])
            bn.running_var.copy_(self.running_var[:c])
            if self.num_batches_tracked is not None and bn.num_batches_tracked is not None:
                bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn

    def extra_repr(self) -> str:
        return f"max {self.num_features}, active {self.channels}"


Folder = Callable[["ElasticConv2d", "ElasticBatchNorm2d"], nn.Module]
_FOLDER: ContextVar[Folder | None] = ContextVar("nasplat_batchnorm_folder", default=None)


@contextmanager
def folding_batchnorm(folder: Folder) -> Iterator[None]:
    """Within the block, `ConvBN.to_static` of an elastic conv -> BN returns `folder(conv, bn)`
    (a conv with the BN's eval-mode map folded in, `nasplat.subnet.inference`) and no BN: a
    static copy made for prediction never builds the BatchNorm layers it would drop."""
    token = _FOLDER.set(folder)
    try:
        yield
    finally:
        _FOLDER.reset(token)


class ConvBN(nn.Module):
    """conv -> BN -> optional ReLU, shared by elastic and static nets (the children decide which).

    Build an elastic one with `ConvBN.elastic(...)`; `to_static()` returns a ConvBN of plain
    layers with the same forward.
    """

    def __init__(self, conv: nn.Module, bn: nn.Module, relu: bool) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.relu = relu

    @classmethod
    def elastic(cls, max_in: int, max_out: int, kernel_size: int, stride: int = 1, relu: bool = True) -> ConvBN:
        return cls(ElasticConv2d(max_in, max_out, kernel_size, stride), ElasticBatchNorm2d(max_out), relu)

    def set_active(
        self,
        in_channels: int,
        out_channels: int,
        groups: int = 1,
        in_segments: tuple[tuple[int, int], ...] | None = None,
    ) -> None:
        """Elastic nets only (`in_segments` as for ElasticConv2d). Raises ArchError for sizes the
        full weight cannot serve."""
        self.conv.set_active(in_channels, out_channels, groups, in_segments)
        self.bn.set_active(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x, inplace=True) if self.relu else x

    def to_static(self) -> ConvBN:
        folder = _FOLDER.get()
        if folder is not None and isinstance(self.conv, ElasticConv2d) and isinstance(self.bn, ElasticBatchNorm2d):
            return ConvBN(folder(self.conv, self.bn), nn.Identity(), self.relu)
        return ConvBN(self.conv.to_static(), self.bn.to_static(), self.relu)

    def extra_repr(self) -> str:
        return f"relu={self.relu}"
