"""The sandwich rule's arch sampler: which subnets a training step trains.

Every step trains the max subnet (teacher), the min subnet and N random subnets, accumulating their
gradients before one optimizer step, after an optional warmup in which the max subnet trains alone. The random members are a pure function of (seed, step), so
every distributed rank trains the same subnets without communicating, and a resumed run draws
exactly the archs an uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nasplat.errors import TrainingError
from nasplat.space import Arch, SearchSpace


@dataclass(frozen=True)
class SandwichMember:
    """One subnet of a sandwich step. `role` is "max", "min" or "random<i>"."""

    role: str
    arch: Arch

    @property
    def is_teacher(self) -> bool:
        return self.role == "max"


class SandwichSampler:
    """Draws the subnets of each step: max, min, then `num_random` random subnets.

    The max subnet comes first so its detached predictions can supervise the others (in-place
    distillation). State is (seed, num_random); `members(step)` is deterministic.
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        num_random: int = 2,
        *,
        train_max: bool = True,
        train_min: bool = True,
        warmup_epochs: int = 0,
    ) -> None:
        self.space = space
        self.seed = int(seed)
        self.num_random = int(num_random)
        self.train_max = train_max
        self.train_min = train_min
        self.warmup_epochs = int(warmup_epochs)
        self._max = space.max_arch()
        self._min = space.min_arch()

    def members(self, step: int, epoch: int | None = None) -> list[SandwichMember]:
        """The subnets trained at global step `step` of epoch `epoch`, teacher first.

        During the first `warmup_epochs` epochs only the max subnet trains (when `train_max`), so
        the shared weights and the distillation teacher are useful before the small subnets pull
        on them; `epoch=None` means after the warmup.
        """
        rng = np.random.default_rng([self.seed, int(step), 0x5A4D])
        out: list[SandwichMember] = []
        if self.train_max:
            out.append(SandwichMember("max", self._max))
            if epoch is not None and epoch < self.warmup_epochs:
                return out
        if self.train_min:
            out.append(SandwichMember("min", self._min))
        out.extend(SandwichMember(f"random{i}", self.space.sample(rng)) for i in range(self.num_random))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "num_random": self.num_random, "space": self.space.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint. Raises TrainingError if it was saved for another space."""
        if state.get("space") != self.space.fingerprint():
            raise TrainingError(
                f"checkpoint was trained on space fingerprint {state.get('space')!r}, this experiment's space is"
                f" {self.space.fingerprint()!r}",
                key="sampler.space",
            )
        self.seed = int(state["seed"])
        self.num_random = int(state["num_random"])


__all__ = ["SandwichMember", "SandwichSampler"]
