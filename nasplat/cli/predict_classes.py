"""`nasplat predict MODEL_DIR IMAGE_OR_DIR... --out DIR` with a classification export: the top-k
classes of each image.

`nasplat predict` hands a model folder whose `meta.json` says task classification to
`predict_classes`. It prints one line per image on stdout, `path: class1 0.912, class2 0.051, ...`
(softmax probabilities, best first), and writes `DIR/predictions.json` (atomically):

    {"model": MODEL_DIR, "top_k": k, "images": [{"file": path, "top": [{"class": name, "prob": p}, ...]}]}

An image that cannot be read (missing, not an image, corrupt, over 200 megapixels) is one warning
line on stderr and the others are still predicted. A bad option or export folder, no image at all,
or none that could be read stops with one error line (exit 2) before anything is written. Images
are decoded 32 at a time (one network call each), so memory does not grow with their number.

Like the other command modules, this one imports only typer at its top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

__all__ = ["PREDICTIONS", "predict_classes"]

PREDICTIONS = "predictions.json"


def predict_classes(model_dir: Path, inputs: List[Path], out: Path, top_k: int,
                    backend: Optional[str]) -> dict[str, Any]:
    """Predict the `top_k` classes of the images of `inputs` (image files, and folders whose image
    files are taken) with the classification export `model_dir` (`backend` "torch", "onnx" or None
    for the default); print one line per image, warn on stderr of each image that cannot be read,
    and write `out/predictions.json`. Returns what it holds.

    Raises NasplatError before anything is written: an unknown backend (`--backend`), a bad
    export (naming the file and key), `top_k` outside 1..classes (`--top-k`), an `--out` that
    cannot be written or whose predictions.json would replace an input, no image in `inputs`,
    and (then after the warnings) no image that could be read."""
    from nasplat.cli.predict import oversized
    from nasplat.errors import ConfigError, DataError
    from nasplat.files import atomic_write_json, check_writable
    from nasplat.subnet.predict import IMAGE_SUFFIXES, find_images
    from nasplat.tasks.classification.data import load_rgb
    from nasplat.tasks.classification.predict import BACKENDS, MAX_BATCH, ClassifierPredictor

    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"{backend!r} is not a backend; allowed: {', '.join(BACKENDS)}", key="--backend")
    predictor = ClassifierPredictor(model_dir, backend)  # type: ignore[arg-type]  # checked above
    classes = len(predictor.classes)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= classes:
        raise ConfigError(f"{top_k!r} classes per image not allowed: give 1 to {classes} (the export's classes)",
                          key="--top-k")
    paths, missing = find_images(inputs)
    if not paths:
        raise DataError(f"nothing to predict: no images in {', '.join(str(p) for p in inputs)} "
                        f"(files ending {', '.join(IMAGE_SUFFIXES)})")
    target = out / PREDICTIONS
    if target.resolve() in {p.resolve() for p in paths}:
        raise ConfigError(f"{target} is an input image and would be written over; choose another --out folder",
                          key="--out")
    check_writable(target, key="--out")

    def warn(line: str) -> None:
        typer.echo(f"nasplat: warning: {line.splitlines()[0] if line else line}", err=True)

    for line in missing:
        warn(line)
    records: list[dict[str, Any]] = []
    unreadable = len(missing)
    for start in range(0, len(paths), MAX_BATCH):
        readable, images = [], []
        for path in paths[start : start + MAX_BATCH]:
            too_large = oversized(path)  # from the header, before a small file decodes into gigabytes
            if too_large is not None:
                warn(f"{path}: {too_large}")
                unreadable += 1
                continue
            try:
                images.append(load_rgb(path))
            except DataError as e:
                warn(str(e))
                unreadable += 1
                continue
            readable.append(path)
        if not images:
            continue
        for path, top in zip(readable, predictor.topk(images, top_k)):
            typer.echo(f"{path}: " + ", ".join(f"{name} {prob:.3f}" for name, prob in top))
            records.append({"file": str(path), "top": [{"class": name, "prob": prob} for name, prob in top]})
    if not records:
        raise DataError(f"nothing predicted: none of the {len(paths)} image(s) could be read (see above)")
    document = {"model": str(model_dir), "top_k": top_k, "images": records}
    atomic_write_json(document, target)
    skipped = f" ({unreadable} input(s) not readable, see above)" if unreadable else ""
    typer.echo(f"predicted the top {top_k} classes of {len(records)} image(s) with the {predictor.backend} backend"
               f"{skipped} -> {target}", err=True)
    return document
