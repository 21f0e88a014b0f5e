"""`nasplat predict MODEL_DIR IMAGE_OR_DIR... --out DIR`: whole-body keypoints with an export.

Writes `results.json` (the official COCO-WholeBody results format, what `nasplat eval` reads) and
one drawing per image (PNG, or JPEG with `--format jpg`) with each person's box and skeleton. A
bad image (missing, unreadable, no image id) is one line on stderr and the others are still
processed (exit 2 at the end); a bad option, model folder, box file or annotation file stops before
anything is written (exit 2), and so does an input with nothing left to predict (no images, or no
usable person box). Detections that are dropped (not a person, below `--min-score`, empty,
outside their image, of an image that is not an input) are counted in one warning line.
Everything written gets the mode a new file gets under the umask (0644 under the usual 022).

A pipeline: `--workers` threads read, decode and crop the images ahead of the network (the model
loads meanwhile), the network runs in this thread, and as many threads draw the pictures and write them
behind it. Results and files are the same as with `--workers 0` (all in this thread, one after the
other), in input order.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

if TYPE_CHECKING:
    from nasplat.subnet.predict import Timing

MAX_THREADS = 4 * (os.cpu_count() or 1)  # more only waits on each other (and 100000 hung)
# nasplat.data.draw's FORMATS, PNG_COMPRESSION and JPEG_QUALITY (this module imports only typer at
# its top; a test holds them equal)
FORMATS = ("png", "jpg")
PNG_COMPRESSION = 1
JPEG_QUALITY = 90


def predict(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="An export folder (exports/best)."),
    inputs: List[Path] = typer.Argument(..., metavar="IMAGE_OR_DIR", help="Image files or folders of images."),
    out: Path = typer.Option(..., "--out", help="Folder for results.json and the drawings."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Person boxes: COCO detection results "
                                         "[{image_id, category_id, bbox, score}]. Default: the whole image is one person."),
    ann: Optional[Path] = typer.Option(None, "--ann", help="COCO annotation file giving each file name its image id "
                                       "(default: the number the file name ends with)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="torch | onnx (default: onnx when the export has "
                                          "model.onnx and the device is cpu)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Person crops per network call."),
    threads: int = typer.Option(2, "--threads", min=1, max=MAX_THREADS, help="CPU threads of the backend "
                                "(at most 4 per core of this machine)."),
    workers: int = typer.Option(2, "--workers", min=0, max=MAX_THREADS, help="Threads reading and cropping images ahead of the "
                                "network, and as many drawing behind it (0: everything in one thread)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps: one this machine has (the torch "
                               "backend runs there; not cpu makes torch the default backend)."),
    min_score: float = typer.Option(0.0, "--min-score", help="Skip --boxes scored below this (0 to 1)."),
    no_draw: bool = typer.Option(False, "--no-draw", help="Write results.json only."),
    fmt: str = typer.Option("png", "--format", metavar="png|jpg", help="Drawings as png (lossless) or jpg "
                            f"(quality {JPEG_QUALITY}: several times smaller, slightly blurred)."),
    png_compression: int = typer.Option(PNG_COMPRESSION, "--png-compression", metavar="0-9", help="zlib level of the "
                                        "PNG drawings: 1 (fast Huffman coding) is about 40% of the size of 0; 2 to 9 "
                                        "are a little smaller and many times slower; 0 stores them uncompressed, "
                                        "the fastest."),
    top_k: int = typer.Option(5, "--top-k", help="Classification exports: classes listed per image (1 to the "
                              "export's classes)."),
) -> None:
    """Predict whole-body keypoints of the people in images with an exported subnet.

    Each drawing shows every person's box in its own colour, labelled with its number and score,
    and the keypoints scored at least 0.3 (right side warm, left side cool colours).

    An image whose header claims more than 200 megapixels is refused (one line) before it is
    decoded.

    \b
    Example:
      nasplat predict outputs/quickstart/exports/best outputs/quickstart/data/val2017 --out predictions \\
        --ann outputs/quickstart/data/annotations/coco_wholebody_val_v1.0.json
      nasplat eval --gt outputs/quickstart/data/annotations/coco_wholebody_val_v1.0.json \\
        --pred predictions/results.json

    With an image-classification export it prints each image's --top-k classes and writes
    predictions.json instead (--backend applies; the options of keypoints do not).
    """
    from nasplat.tasks.classification.export import is_classifier_export

    if is_classifier_export(model_dir):
        from nasplat.cli.predict_classes import predict_classes

        predict_classes(model_dir, inputs, out, top_k, backend)
        return
    report = predict_images(model_dir, inputs, out, boxes=boxes, ann=ann, backend=backend, batch_size=batch_size,
                            threads=threads, workers=workers, device=device, min_score=min_score, draw=not no_draw,
                            fmt=fmt, png_compression=png_compression, echo=lambda line: typer.echo(line, err=True))
    typer.echo(report.summary(), err=True)
    if report.failed:
        typer.echo(f"nasplat: error: {report.failed} input(s) could not be processed (see above)", err=True)
        raise typer.Exit(code=2)


@dataclass
class PredictReport:
    """What `predict_images` did and where its time went."""

    out: Path
    backend: str
    timing: Timing
    model_file: str = ""  # the file the model was loaded from
    images: int = 0
    persons: int = 0
    failed: int = 0  # inputs that could not be processed (each reported)
    total: float = 0.0  # seconds, from reading the export to the last PNG written

    @property
    def images_per_s(self) -> float:
        return self.images / self.total if self.total > 0 else 0.0

    @property
    def outside_steady(self) -> float:
        """Share of the steady state (first to last network call) not spent in the network."""
        steady = self.timing.steady
        return 1.0 - self.timing.network / steady if steady > 0 else 0.0

    @property
    def outside_total(self) -> float:
        """Share of the whole run (model load and the last drawings included) outside the network."""
        return 1.0 - self.timing.network / self.total if self.total > 0 else 0.0

    def summary(self) -> str:
        """One line for people: what was predicted, how long it took and how much of it the network
        took, then where the model came from and where the results went."""
        t = self.timing
        calls = len(t.calls)
        network = f"network {1.0 - self.outside_total:.0%} of the time, {_count(calls, 'batched call')}" if calls else \
            "no network call"
        return (f"predicted {_count(self.persons, 'person')} in {_count(self.images, 'image')} in "
                f"{_seconds(self.total)} ({network}; model load {_seconds(t.load)}, {self.model_file}, backend "
                f"{self.backend}) -> {self.out / 'results.json'}")


def _count(n: int, noun: str) -> str:
    """`1 person`, `3 persons`, `0 batched calls`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _seconds(t: float) -> str:
    """Seconds with the digits that matter: 0.13 s, 1.4 s, 17 s."""
    return f"{t:.2f} s" if t < 1 else f"{t:.1f} s" if t < 10 else f"{t:.0f} s"


class _Inline:
    """An executor that runs each job at once in the calling thread (`--workers 0`)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        job: Future = Future()
        try:
            job.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to whoever asks for the result, as a pool would
            job.set_exception(e)
        return job

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def _in_order(pool: Any, fn: Callable[..., Any], jobs: Iterable[tuple], ahead: int) -> Iterator[Any]:
    """`fn(*job)` of each job, in the order of `jobs`, with up to `ahead` jobs submitted to
    `pool` before their results are asked for. The first `ahead` are submitted at once (before
    the first `next`)."""
    todo = iter(jobs)
    window: deque[Future] = deque(pool.submit(fn, *job) for _, job in zip(range(max(1, ahead)), todo))

    def results() -> Iterator[Any]:
        while window:
            job = window.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                window.append(pool.submit(fn, *nxt))
            yield job.result()

    return results()


def predict_images(model_dir: Path, inputs: List[Path], out: Path, *, boxes: Optional[Path] = None,
                   ann: Optional[Path] = None, backend: Optional[str] = None, batch_size: int = 8, threads: int = 2,
                   workers: int = 2, device: str = "cpu", min_score: float = 0.0, draw: bool = True,
                   fmt: str = "png", png_compression: int = PNG_COMPRESSION,
                   echo: Callable[[str], None] = print) -> PredictReport:
    """Predict the images of `inputs` with the export `model_dir` into `out` (what `nasplat
    predict` does): `results.json` and, with `draw`, one drawing per image (`fmt` png or jpg). A
    bad input is one line to `echo` and counted in `failed`; the others are still processed; the
    detections of `boxes` that are dropped are one warning line to `echo`. Raises NasplatError
    before anything is written: a bad option, export, box file or annotation file, or nothing
    left to predict (no image, no image with an id, no usable person box)."""
    from concurrent.futures import ThreadPoolExecutor

    from nasplat.errors import DataError
    from nasplat.subnet.onnx_export import torch_threads
    from nasplat.subnet.predict import (IMAGE_SUFFIXES, Predictor, find_images, image_id_from_name, image_size,
                                        keep_boxes, read_ann_ids, read_boxes)

    start = time.perf_counter()
    _check_options(min_score, fmt, png_compression)
    predictor = Predictor(model_dir, backend, device=device, threads=threads, batch_size=batch_size, load=False)
    ids_by_name = read_ann_ids(ann) if ann is not None else None
    detections = read_boxes(boxes, min_score) if boxes is not None else None
    paths, errors = find_images(inputs)
    jobs = []
    for path in paths:
        image_id = ids_by_name.get(path.name) if ids_by_name is not None else image_id_from_name(path)
        jobs.append((path, image_id))
    ids = {image_id: path for path, image_id in reversed(jobs) if image_id is not None}  # the first path of each
    persons_by_id = None
    if detections is not None:
        # sizes from the headers (no decoding): boxes outside their image are known before any work
        detections = keep_boxes(detections, {image_id: image_size(path) for image_id, path in ids.items()})
        if detections.dropped:
            echo(f"nasplat: warning: {_dropped_line(detections)}")
        persons_by_id = detections.persons
    nothing = None
    if not paths:
        nothing = f"no images in {', '.join(str(p) for p in inputs)} (files ending {', '.join(IMAGE_SUFFIXES)})"
    elif not ids:
        nothing = "no input image has an image id (see above)"
    elif detections is not None and not any(detections.persons.get(i) for i in ids):
        nothing = f"none of the {_count(detections.count, 'detection')} of {boxes} is a person box in an input image"
    if nothing is not None:
        for line in errors + [f"{path}: {_no_id(ann)}" for path, image_id in jobs if image_id is None]:
            echo(f"nasplat: error: {line}")
        raise DataError(f"nothing left to predict: {nothing}")
    _never_over_inputs(paths, out, draw, fmt)
    readers = ThreadPoolExecutor(workers, thread_name_prefix="predict-read") if workers else _Inline()
    painters = ThreadPoolExecutor(workers, thread_name_prefix="predict-draw") if workers else _Inline()
    picture = _Picture(fmt, png_compression) if draw else None
    # with onnxruntime torch only decodes heatmaps: its own thread pool would just contend
    try:
        with torch_threads(threads if predictor.backend == "torch" else 1):
            return _pipeline(predictor, jobs, errors, out, persons_by_id, ann, picture, readers, painters, echo,
                             start)
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        painters.shutdown(wait=True, cancel_futures=True)


def _check_options(min_score: float, fmt: str, png_compression: int) -> None:
    """Raise ConfigError naming the option whose value is not allowed."""
    from nasplat.errors import ConfigError

    if not (isinstance(min_score, (int, float)) and math.isfinite(min_score) and 0.0 <= min_score <= 1.0):
        raise ConfigError(f"{min_score!r} is not a score; give a number from 0 to 1", key="--min-score")
    if fmt not in FORMATS:
        raise ConfigError(f"{fmt!r} is not a drawing format; allowed: {', '.join(FORMATS)}", key="--format")
    if isinstance(png_compression, bool) or not isinstance(png_compression, int) or not 0 <= png_compression <= 9:
        raise ConfigError(f"{png_compression!r} is not a zlib level; allowed: 0 (stored, fastest) to 9 (smallest)",
                          key="--png-compression")


def _no_id(ann: Optional[Path]) -> str:
    """Why an image has no image id."""
    return f"not in {ann}" if ann is not None else "no image id: the file name has no number; pass --ann"


def _dropped_line(detections: Any) -> str:
    """`dets.json: dropped 3 of 5 detections: 2 outside their image, 1 ...` (`Detections`)."""
    why = ", ".join(f"{n} {reason}" for reason, n in detections.dropped.most_common())
    return (f"{detections.source}: dropped {sum(detections.dropped.values())} of "
            f"{_count(detections.count, 'detection')}: {why}")


@dataclass(frozen=True)
class _Picture:
    """How drawings are written: format and PNG zlib level."""

    fmt: str
    png_compression: int

    @property
    def suffix(self) -> str:
        return f".{self.fmt}"


def _never_over_inputs(paths: List[Path], out: Path, draw: bool, fmt: str = "png") -> None:
    """Raise ConfigError (`--out`) before anything is written when a file this command would write
    (`results.json`, a drawing `<name>.png` or `.jpg`) is one of its input images: the drawings
    replaced the images they were drawn from."""
    from nasplat.errors import ConfigError

    given = {p.resolve() for p in paths}
    planned = [out / "results.json"] + ([out / f"{p.stem}.{fmt}" for p in paths] if draw else [])
    hit = next((p for p in planned if p.resolve() in given), None)
    if hit is not None:
        raise ConfigError(f"{hit} is an input image and would be written over; choose another --out folder "
                          "(or --no-draw)", key="--out")


MAX_IMAGE_PIXELS = 200_000_000  # 200 megapixels: above the largest cameras' photos (decoded: 600 MB)


def oversized(path: Path) -> Optional[str]:
    """Why the image at `path` is not decoded: its header claims more than `MAX_IMAGE_PIXELS`
    (read without decoding); None when it does not, or the header is not one Pillow reads (then
    OpenCV decides)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # only headers are read here: this limit is the one that holds
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception:  # noqa: BLE001 - not an image Pillow reads: OpenCV's error says so
        return None
    if width * height > MAX_IMAGE_PIXELS:
        return (f"the image header says {width} x {height} pixels ({width * height / 1e6:.0f} megapixels), over "
                f"the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixel limit; not decoded")
    return None


def _pipeline(predictor: Any, jobs: list, errors: list[str], out: Path, persons_by_id: Optional[dict],
              ann: Optional[Path], picture: Optional[_Picture], readers: Any, painters: Any,
              echo: Callable[[str], None], start: float) -> PredictReport:
    import cv2
    import numpy as np

    from nasplat.data.draw import draw_wholebody, encode_picture
    from nasplat.metrics.wholebody import make_results, write_results
    from nasplat.subnet.predict import Timing, clip_to_image, predict_stream, whole_image

    def read(path: Path, image_id: Optional[int]) -> tuple:
        # on a reader thread (cv2 releases the GIL while it decodes and warps)
        if image_id is None:
            return path, image_id, None, None, None
        too_large = oversized(path)
        if too_large is not None:  # before decoding: a 623-byte file may claim 20000 x 20000 pixels
            return path, image_id, None, None, too_large
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            return path, image_id, None, None, None
        h, w = image.shape[:2]
        if persons_by_id is None:
            persons, boxes = whole_image(image), None  # drawn: the box around the keypoints
        else:
            persons = [p for p in (clip_to_image(q, w, h) for q in persons_by_id.get(image_id, [])) if p is not None]
            boxes = np.array([p.bbox for p in persons], dtype=np.float64).reshape(-1, 4)  # [P, 4] xywh
        return path, image_id, image, boxes, predictor.prepare(image, persons)

    def paint(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, boxes: Optional[np.ndarray],
              path: Path) -> Optional[str]:
        # on a painter thread; a picture to look at needs no atomic write (results.json has one)
        assert picture is not None  # painted only when drawing
        drawn = draw_wholebody(image, keypoints, scores=scores, boxes=boxes)
        try:
            path.write_bytes(encode_picture(drawn, picture.fmt, png_compression=picture.png_compression))
        except OSError as e:
            return f"{path}: cannot write the drawing ({e})"
        return None

    timing = Timing()
    report = PredictReport(out=out, backend=predictor.backend, timing=timing)
    prepared = _in_order(readers, read, jobs, ahead=2 * predictor.batch_size)  # decoding starts now
    predictor.load()  # meanwhile; a bad export stops here, before anything is written
    timing.load = predictor.load_seconds
    report.model_file = predictor.model_file.name
    for line in errors:
        echo(f"nasplat: error: {line}")
    report.failed = len(errors)
    out.mkdir(parents=True, exist_ok=True)
    used: dict[int, Path] = {}

    def good() -> Iterator[tuple]:
        for path, image_id, image, boxes, crops in prepared:
            if image_id is None:
                what = _no_id(ann)
            elif image_id in used:
                what = f"image id {image_id} is also {used[image_id]}"
            elif image is None:
                what = crops if isinstance(crops, str) else "cannot read the image (missing, not an image, or corrupt)"
            else:
                used[image_id] = path
                yield (path, image_id, image, boxes), crops
                continue
            report.failed += 1
            echo(f"nasplat: error: {path}: {what}")

    results: list[dict] = []
    names: set[str] = set()
    drawing: deque[Future] = deque()

    def drawn(job: Future) -> None:
        problem = job.result()
        if problem is not None:
            report.failed += 1
            echo(f"nasplat: error: {problem}")

    for (path, image_id, image, boxes), kp, sc in predict_stream(predictor, good(), timing):
        report.images += 1
        report.persons += len(sc)
        if len(sc):
            results.extend(make_results(np.full(len(sc), image_id), kp, sc))
        if picture is not None:
            name = f"{path.stem}{picture.suffix}"
            name = name if name not in names else f"{path.stem}-{image_id}{picture.suffix}"
            names.add(name)
            drawing.append(painters.submit(paint, image, kp, sc, boxes, out / name))
            while len(drawing) > 2 * predictor.batch_size:  # bounded: decoded images wait in memory
                drawn(drawing.popleft())
    while drawing:
        drawn(drawing.popleft())
    write_results(out / "results.json", results)  # atomic_write: the mode open() gives the drawings
    report.total = time.perf_counter() - start
    return report


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
