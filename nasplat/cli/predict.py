"""`nasplat predict MODEL_DIR IMAGE_OR_DIR... --out DIR`: whole-body keypoints with an export.

Writes `results.json` (the official COCO-WholeBody results format, what `nasplat eval` reads) and
one PNG per image with the skeletons drawn. A bad image (missing, unreadable, no image id) is one
line on stderr and the others are still processed (exit 2 at the end); a bad model folder, box
file or annotation file stops before anything is written (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer


def predict(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="An export folder (exports/best)."),
    inputs: List[Path] = typer.Argument(..., metavar="IMAGE_OR_DIR", help="Image files or folders of images."),
    out: Path = typer.Option(..., "--out", help="Folder for results.json and the drawn PNGs."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Person boxes: COCO detection results "
                                         "[{image_id, category_id, bbox, score}]. Default: the whole image is one person."),
    ann: Optional[Path] = typer.Option(None, "--ann", help="COCO annotation file giving each file name its image id "
                                       "(default: the number the file name ends with)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="torch | onnx (default: onnx when the export has "
                                          "model.onnx and the device is cpu)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Person crops per network call."),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads of the backend."),
    device: str = typer.Option("cpu", "--device", help="torch device (torch backend)."),
    min_score: float = typer.Option(0.0, "--min-score", help="Skip boxes scored below this."),
    no_draw: bool = typer.Option(False, "--no-draw", help="Write results.json only."),
) -> None:
    """Predict whole-body keypoints of the people in images with an exported subnet.

    \b
    Example:
      nasplat predict outputs/quickstart/exports/best outputs/quickstart/data/val2017 --out predictions \\
        --ann outputs/quickstart/data/annotations/coco_wholebody_val_v1.0.json
      nasplat eval --gt outputs/quickstart/data/annotations/coco_wholebody_val_v1.0.json \\
        --pred predictions/results.json
    """
    import time

    from nasplat.subnet.onnx_export import torch_threads
    from nasplat.subnet.predict import Predictor

    start = time.perf_counter()
    predictor = Predictor(model_dir, backend, device=device, threads=threads, batch_size=batch_size)
    # with onnxruntime torch only decodes heatmaps: its own thread pool would just contend
    with torch_threads(threads if predictor.backend == "torch" else 1):
        _predict_all(predictor, inputs, out, ann, boxes, min_score, batch_size, no_draw, start)


def _predict_all(predictor: Any, inputs: List[Path], out: Path, ann: Optional[Path], boxes: Optional[Path],
                 min_score: float, batch_size: int, no_draw: bool, start: float) -> None:
    import time
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np

    from nasplat.data.draw import draw_wholebody
    from nasplat.metrics.wholebody import make_results, write_results
    from nasplat.subnet.predict import (
        Timing,
        clip_to_image,
        find_images,
        image_id_from_name,
        read_ann_ids,
        read_boxes,
        whole_image,
    )

    ids_by_name = read_ann_ids(ann) if ann is not None else None
    persons_by_id = read_boxes(boxes, min_score) if boxes is not None else None
    paths, errors = find_images(inputs)
    for line in errors:
        typer.echo(f"nasplat: error: {line}", err=True)
    out.mkdir(parents=True, exist_ok=True)

    timing = Timing()
    painter = ThreadPoolExecutor(max_workers=1)
    drawing: deque = deque()
    results: list[dict] = []
    used: dict[int, Path] = {}
    png_names: set[str] = set()
    n_images = n_persons = 0
    failed = len(errors)

    def bad(path: Path, what: str) -> None:
        nonlocal failed
        failed += 1
        typer.echo(f"nasplat: error: {path}: {what}", err=True)

    def flush(chunk: list) -> None:
        nonlocal n_images, n_persons
        if not chunk:
            return
        predictions = predictor.predict([(image, persons) for _, _, image, persons in chunk], timing)
        for (path, image_id, image, persons), (kp, sc) in zip(chunk, predictions):
            n_images += 1
            n_persons += len(persons)
            if len(persons):
                results.extend(make_results(np.full(len(persons), image_id), kp, sc))
            if not no_draw:
                name = f"{path.stem}.png" if f"{path.stem}.png" not in png_names else f"{path.stem}-{image_id}.png"
                png_names.add(name)
                drawing.append(painter.submit(draw, image, kp, out / name))
        while len(drawing) > 2 * batch_size:  # bounded: the network does not run far ahead
            drawing.popleft().result()

    def draw(image: np.ndarray, keypoints: np.ndarray, path: Path) -> None:
        # on a worker thread, overlapping the next network call (cv2 releases the GIL); fast PNG
        # compression (level 9 takes longer than the network per image); a picture to look at
        # needs no atomic write (results.json has one)
        ok, png = cv2.imencode(".png", draw_wholebody(image, keypoints), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if ok:
            path.write_bytes(png.tobytes())

    chunk: list = []
    queued = 0
    for path in paths:
        image_id = ids_by_name.get(path.name) if ids_by_name is not None else image_id_from_name(path)
        if image_id is None:
            bad(path, f"not in {ann}" if ann is not None else "no image id: the file name has no number; pass --ann")
            continue
        if image_id in used:
            bad(path, f"image id {image_id} is also {used[image_id]}")
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            bad(path, "cannot read the image (missing, not an image, or corrupt)")
            continue
        used[image_id] = path
        h, w = image.shape[:2]
        if persons_by_id is None:
            persons = whole_image(image)
        else:
            persons = [p for p in (clip_to_image(q, w, h) for q in persons_by_id.get(image_id, [])) if p is not None]
        chunk.append((path, image_id, image, persons))
        queued += len(persons)
        if queued >= batch_size:
            flush(chunk)
            chunk, queued = [], 0
    flush(chunk)
    for job in drawing:
        job.result()
    painter.shutdown()
    write_results(out / "results.json", results)
    total = time.perf_counter() - start
    rate = n_images / total if total > 0 else 0.0
    outside = 1.0 - timing.network / total if total > 0 else 0.0
    typer.echo(f"{n_images} images, {n_persons} persons -> {out / 'results.json'} (backend {predictor.backend}, "
               f"{rate:.1f} images/s, {outside:.0%} of the time outside the network)", err=True)
    if failed:
        typer.echo(f"nasplat: error: {failed} input(s) could not be processed (see above)", err=True)
        raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
