"""OFA's data utilities import this module as `F` and call it only when transforming images,
which the benchmark never does: any name raises."""

from __future__ import annotations

from typing import NoReturn


def __getattr__(name: str) -> NoReturn:
    raise AttributeError(f"torchvision.transforms.functional.{name} is a stand-in (benchmarks/_ofa_standin): "
                         "OFA's data pipeline does not run without the real torchvision")
