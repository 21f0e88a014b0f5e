"""Numeric precision and memory layout of every forward pass over a supernet or a subnet.

One switch for supernet training, BN recalibration, subnet evaluation and retraining: the
recipe's `precision` (`auto`: bf16 autocast on CUDA, fp32 elsewhere; `fp16` adds a gradient
scaler) and `channels_last`. Callers resolve it once for their device (`Precision.for_device`) and
then wrap their forwards in `precision.autocast()`, lay out modules and inputs with
`precision.module(net)` / `precision.input(x)`, and scale losses with `precision.grad_scaler()`.

Weights, optimizer state, BN running statistics and losses stay fp32: autocast only runs the
convolutions (and the other ops on its lower-precision list) in bf16 / fp16.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nasplat.config import TrainerRecipe

PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]

_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved precision on one device type."""

    name: Literal["fp32", "bf16", "fp16"]
    device_type: str  # "cuda", "cpu", ...
    channels_last: bool = False

    @classmethod
    def for_device(
        cls, precision: PrecisionName, device: str | torch.device, *, channels_last: bool = False
    ) -> Precision:
        """Resolve a recipe's `precision` for `device` (`auto`: bf16 on CUDA, fp32 elsewhere)."""
        device_type = torch.device(device).type
        if precision == "auto":
            precision = "bf16" if device_type == "cuda" else "fp32"
        return cls(precision, device_type, channels_last)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: plain fp32)."""
        return _DTYPES[self.name]

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to this precision's dtype for the forwards inside (no-op for fp32)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for fp16 (its small exponent range underflows gradients); None else."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device_type)

    def module(self, net: nn.Module) -> nn.Module:
        """`net` in this precision's memory layout (in place, like `nn.Module.to`)."""
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """A 4-D input batch in this precision's memory layout."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


FP32 = Precision("fp32", "cpu")


def recipe_precision(recipe: TrainerRecipe, device: str | torch.device) -> Precision:
    """The precision a trainer recipe (`precision`, `channels_last`) asks for on `device`.
    Supernet training, BN recalibration, evaluation and retraining all resolve it here."""
    return Precision.for_device(recipe.precision, device, channels_last=recipe.channels_last)


__all__ = ["FP32", "Precision", "PrecisionName", "recipe_precision"]
