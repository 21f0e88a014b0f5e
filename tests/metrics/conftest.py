"""Fixtures for the metrics tests: a synthetic GT file and the xtcocotools reference."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from nasplat.data.synth import generate_split


@pytest.fixture(scope="session")
def synth_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wb")
    return generate_split(root, "val", 24, seed=3)


@pytest.fixture(scope="session")
def xtcocotools_eval():
    """xtcocotools' COCO and COCOeval classes. The installed wheel's compiled `_mask` module is
    built against numpy 1.x and fails to import under numpy 2; keypoint evaluation never calls
    it, so a placeholder module stands in for it when the real one cannot load."""
    try:
        import xtcocotools._mask  # noqa: F401
    except (ImportError, ValueError):
        stub = types.ModuleType("xtcocotools._mask")

        def _unavailable(*args, **kwargs):
            raise RuntimeError("xtcocotools._mask is unavailable (numpy ABI); only keypoint eval is supported")

        for name in ("iou", "merge", "frPyObjects", "encode", "decode", "area", "toBbox"):
            setattr(stub, name, _unavailable)
        sys.modules["xtcocotools._mask"] = stub
        for mod in ("xtcocotools.mask", "xtcocotools.coco", "xtcocotools.cocoeval"):
            sys.modules.pop(mod, None)
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    return COCO, COCOeval
