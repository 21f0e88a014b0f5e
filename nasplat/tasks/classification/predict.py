"""The top-k classes of images with an exported classifier (what `nasplat predict` runs for one).

`ClassifierPredictor(model_dir, backend)` runs the export's `model.onnx` in onnxruntime or its
`model.pt` in PyTorch. Each image goes through the validation pipeline of `data.py`
(`eval_tensor`: shorter side resized, centre crop at the arch's resolution, normalised with the
export's mean and std), so a prediction sees an image as the export's validation score did.
Images are Pillow images or RGB numpy arrays; at most `MAX_BATCH` of them go through the network
at once, whatever the number given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from nasplat.errors import ConfigError, DataError
from nasplat.subnet.export import ONNX
from nasplat.tasks.classification.data import eval_tensor
from nasplat.tasks.classification.export import (
    ONNX_INPUT,
    ONNX_OUTPUT,
    load_exported_classifier,
    read_classifier_export,
)

__all__ = ["BACKENDS", "MAX_BATCH", "ClassifierPredictor", "default_backend"]

BACKENDS = ("torch", "onnx")
MAX_BATCH = 32  # images per network call: memory stays bounded whatever the number of images


def _onnxruntime_imports() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_backend(model_dir: str | Path) -> str:
    """"onnx" when the export has `model.onnx` and onnxruntime imports, else "torch"."""
    return "onnx" if (Path(model_dir) / ONNX).is_file() and _onnxruntime_imports() else "torch"


class ClassifierPredictor:
    """Predicts with a classification export folder.

    model_dir: the folder `export_classifier` wrote. backend: "torch", "onnx" or None (onnx when
    `default_backend` says so). threads: onnxruntime's intra-op threads (the torch backend uses
    torch's setting).

    `classes` are the class names in label order, `resolution` the network's input side.
    Raises ConfigError: an unknown backend (key `backend`), "onnx" without `model.onnx` (naming
    it), and a missing or malformed export (naming the file and key).
    """

    def __init__(self, model_dir: str | Path, backend: Literal["torch", "onnx"] | None = None, *,
                 threads: int = 2) -> None:
        self.directory = Path(model_dir)
        if backend is not None and backend not in BACKENDS:
            raise ConfigError(f"{backend!r} is not a backend; allowed: {', '.join(BACKENDS)}", key="backend")
        arch, meta, _ = read_classifier_export(self.directory)
        self.arch = arch
        self.classes: tuple[str, ...] = meta.classes
        self.resolution = meta.resolution
        self._preprocess = meta.augment()
        self.backend = backend or default_backend(self.directory)
        self._session: Any = None
        self._model: torch.nn.Module | None = None
        if self.backend == "onnx":
            path = self.directory / ONNX
            if not path.is_file():
                raise ConfigError("the export has no ONNX model (exported with onnx off); use the torch backend",
                                  source=str(path))
            from nasplat.subnet.onnx_export import onnx_session

            self._session = onnx_session(path, threads=threads)
        else:
            self._model = load_exported_classifier(self.directory)

    def preprocess(self, image: Image.Image | np.ndarray) -> Tensor:
        """One image as the network takes it: float32 [3, R, R]. A numpy array is uint8 RGB
        [H, W, 3] (or greyscale [H, W]; not OpenCV's BGR order). Raises DataError for an array of
        another dtype or shape, or something that is no image."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
                raise DataError(f"expected a uint8 RGB array [H, W, 3] (or greyscale [H, W]), got {image.dtype} "
                                f"{list(image.shape)}")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise DataError(f"expected a Pillow image or a numpy array, got {type(image).__name__}")
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return eval_tensor(rgb, self.resolution, self._preprocess)

    @torch.no_grad()
    def logits(self, batch: Tensor) -> Tensor:
        """The network's logits [B, classes] for preprocessed images [B, 3, R, R] (one call: give
        at most MAX_BATCH)."""
        if self._session is not None:
            x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
            return torch.from_numpy(self._session.run([ONNX_OUTPUT], {ONNX_INPUT: x})[0])
        assert self._model is not None  # the torch backend
        return self._model(batch.float()).cpu()

    def topk(self, images: Sequence[Image.Image | np.ndarray], k: int) -> list[list[tuple[str, float]]]:
        """For each image, its `k` most probable classes as (class name, softmax probability),
        most probable first. Raises ValueError for k outside 1..len(classes), DataError as
        `preprocess`."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.classes):
            raise ValueError(f"k={k!r} is not a number of classes; allowed: 1 to {len(self.classes)}")
        results: list[list[tuple[str, float]]] = []
        for start in range(0, len(images), MAX_BATCH):
            batch = torch.stack([self.preprocess(im) for im in images[start : start + MAX_BATCH]])  # [b, 3, R, R]
            probs = torch.softmax(self.logits(batch).double(), dim=1)  # [b, C]
            top = probs.topk(k, dim=1)  # values, indices: [b, k], best first
            for values, indices in zip(top.values.tolist(), top.indices.tolist()):
                results.append([(self.classes[i], float(p)) for p, i in zip(values, indices)])
        return results
