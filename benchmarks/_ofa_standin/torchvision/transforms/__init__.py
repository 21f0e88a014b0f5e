"""The two transform classes OFA's data utilities subclass or name at import time
(`ofa/utils/my_dataloader/my_random_resize_crop.py`); making either raises, as the benchmark
builds networks only."""

from __future__ import annotations

from typing import Any, NoReturn


class _Unavailable:
    def __new__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(f"torchvision.transforms.{cls.__name__} is a stand-in (benchmarks/_ofa_standin): "
                           "OFA's data pipeline does not run without the real torchvision")


class RandomResizedCrop(_Unavailable):
    pass


class RandomCrop(_Unavailable):
    pass
