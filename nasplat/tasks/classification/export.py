"""Export a subnet of a trained classification supernet as a static model that loads without it.

An export folder holds (the file names are those of the pose task's export, `nasplat.subnet.export`):
- `model.pt`: the static `MobileNetV3`'s state_dict, after BN recalibration;
- `arch.json`: the arch's flat choices (`MobileNetArch.to_json`);
- `model.onnx`: the same network as one ONNX graph, input `images` [N, 3, R, R] float32 (N free),
  output `logits` [N, classes], checked against PyTorch on validation images;
- `MODEL_CARD.md`: the facts of `meta.json` for a reader;
- `meta.json`: what the model is (task, classes in label order, input resolution and
  normalisation, the supernet arguments that rebuild its layers), its cost and accuracy, the ONNX
  check and where it came from. Written last: a folder with `meta.json` is whole.

The subnet's BN statistics are recomputed exactly as `ClassificationEvaluator` does before it
scores a subnet (same training images, batches and precision), so the export is the network the
search scored. Its accuracy is then measured as a prediction sees images: every validation image
through the validation transform at the arch's own resolution (`data.eval_tensor`), in fp32 on the
CPU. For the largest resolution that is the evaluator's input too; for a smaller one the evaluator
resizes crops taken at the largest, so its numbers may differ slightly from the export's.

`load_exported_classifier(dir)` rebuilds the static network from `arch.json` and `meta.json` and
loads `model.pt`; `ClassifierPredictor` (`nasplat.tasks.classification.predict`) predicts with it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from nasplat import __version__
from nasplat.config import Experiment
from nasplat.errors import ArchError, ConfigError, DataError, TrainingError
from nasplat.files import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, shell_command
from nasplat.files import validate as validate_schema
from nasplat.subnet.bn import kept_bn_statistics
from nasplat.subnet.evaluator import latest_checkpoint, load_supernet
from nasplat.subnet.export import ARCH, CARD, META, ONNX, WEIGHTS
from nasplat.tasks import get_task
from nasplat.tasks.classification.data import (
    AugmentConfig,
    ClassificationDataset,
    collate,
    scan_image_folder,
)
from nasplat.tasks.classification.evaluate import calibration_images, load_images, recalibrate_subnet
from nasplat.tasks.classification.metrics import evaluate_classifier
from nasplat.tasks.classification.model import MobileNetV3, MobileNetV3Config, MobileNetV3Supernet
from nasplat.tasks.classification.space import MobileNetArch
from nasplat.train.checkpoint import atomic_torch_save
from nasplat.train.precision import recipe_precision

__all__ = [
    "FORMAT",
    "ONNX_INPUT",
    "ONNX_OUTPUT",
    "ClassifierMeta",
    "export_classifier",
    "is_classifier_export",
    "load_exported_classifier",
    "model_card",
    "read_classifier_export",
]

TASK = "classification"
FORMAT = 1  # of meta.json; a reader refuses another
ONNX_INPUT = "images"
ONNX_OUTPUT = "logits"
OPSET = 17
VERIFY_IMAGES = 64  # validation images the ONNX graph is checked on
VERIFY_BATCH = 8  # in batches of this many (the last one shorter when the count is not a multiple)
# ONNX vs PyTorch: the export fails when the largest |logit difference| exceeds MAX_LOGIT_DIFF times
# the logits' scale (their largest magnitude, at least 1), or the top-1 classes agree on fewer than
# MIN_TOP1_AGREEMENT of the images. Relative to the scale, because fp32 rounding is: a net whose
# BN recalibration found near-constant channels (1 / sqrt(eps) = 316x gain) has logits of 40 that
# PyTorch itself computes only to about 3e-4 of fp64's, while a broken graph is off by the scale.
MAX_LOGIT_DIFF = 1e-3
MIN_TOP1_AGREEMENT = 0.99


# --- meta.json as a reader needs it --------------------------------------------------------------
class Normalize(BaseModel):
    """`normalize`: per-channel (R, G, B) mean and std of pixels in [0, 1]."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mean: tuple[float, float, float]
    std: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]


class ClassifierMeta(BaseModel):
    """The keys of a classification export's `meta.json` that loading and predicting read (the
    other recorded facts, cost, accuracy and origin, are free-form for this purpose)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    task: Literal["classification"]
    format: Literal[1]
    model_name: str
    arch: dict[str, int]
    resolution: Annotated[int, Field(gt=0)]
    num_classes: Annotated[int, Field(ge=2)]
    classes: Annotated[tuple[str, ...], Field(min_length=2)]
    normalize: Normalize
    crop_fraction: Annotated[float, Field(gt=0, le=1)]
    supernet_config: dict[str, Any]  # MobileNetV3Config.to_dict() of the supernet it was cut from

    def augment(self) -> AugmentConfig:
        """The evaluation transform's settings (`data.eval_tensor`) this model expects."""
        return AugmentConfig(crop_fraction=self.crop_fraction, mean=self.normalize.mean, std=self.normalize.std)


def _read_meta(directory: Path) -> ClassifierMeta:
    path = directory / META
    data = read_json(path, what="the export metadata", error=ConfigError, limit=64 << 20)
    if not isinstance(data, dict):
        raise ConfigError("not export metadata (expected a JSON object)", source=str(path))
    meta = validate_schema(ClassifierMeta, data, path)
    if len(meta.classes) != meta.num_classes:
        raise ConfigError(f"{len(meta.classes)} class names for num_classes {meta.num_classes}", source=str(path),
                          key="classes")
    return meta


def read_classifier_export(directory: str | Path) -> tuple[MobileNetArch, ClassifierMeta, MobileNetV3Config]:
    """The arch, the metadata and the supernet arguments of a classification export folder, each
    checked against the others. Raises ConfigError naming the file (`arch.json`, `meta.json`) and
    the key: a missing or unreadable file, a value of the wrong type or out of range, another
    task or format, an arch that `meta.json` does not describe."""
    d = Path(directory)
    meta = _read_meta(d)
    arch_path = d / ARCH
    flat = read_json(arch_path, what="the arch", error=ConfigError, limit=1 << 20)
    if not isinstance(flat, dict):
        raise ConfigError("not an arch (expected a JSON object of named choices)", source=str(arch_path))
    try:
        arch = MobileNetArch.from_flat(flat)
    except ArchError as e:
        raise ConfigError(e.detail, source=str(arch_path), key=e.key) from e
    if arch.to_flat() != meta.arch:
        raise ConfigError(f"is not the arch {ARCH} holds", source=str(d / META), key="arch")
    if arch.resolution != meta.resolution:
        raise ConfigError(f"{meta.resolution} is not the arch's resolution {arch.resolution}", source=str(d / META),
                          key="resolution")
    try:
        config = MobileNetV3Config.from_dict(meta.supernet_config)
    except ConfigError as e:
        raise ConfigError(e.detail, source=str(d / META), key=f"supernet_config.{e.key}" if e.key else
                          "supernet_config") from e
    if config.num_classes != meta.num_classes:
        raise ConfigError(f"{config.num_classes} classes, meta.json's num_classes is {meta.num_classes}",
                          source=str(d / META), key="supernet_config.num_classes")
    return arch, meta, config


def is_classifier_export(directory: str | Path) -> bool:
    """True when `directory` holds a `meta.json` whose `task` is "classification"; also when its
    `meta.json` is there but is not JSON (truncated, say) while `arch.json` holds a classification
    arch, so that `read_classifier_export`, not another task's reader, says what is wrong with
    it. Whether the rest of the folder is sound is for `read_classifier_export` to say. Never
    raises."""
    d = Path(directory)
    if not (d / META).is_file():
        return False
    try:
        data = read_json(d / META, what="the export metadata", error=ConfigError, limit=64 << 20)
    except ConfigError:
        try:
            MobileNetArch.from_flat(read_json(d / ARCH, what="the arch", error=ConfigError, limit=1 << 20))
        except (ConfigError, ArchError, AttributeError, TypeError):
            return False
        return True
    return isinstance(data, dict) and data.get("task") == TASK


def load_exported_classifier(directory: str | Path, device: str | torch.device = "cpu") -> MobileNetV3:
    """The static MobileNetV3 of a classification export folder, in eval mode on `device`. No
    supernet, space or data is needed: `meta.json`'s supernet arguments and `arch.json` give the
    layers, `model.pt` (read with `weights_only=True`) their weights.

    Raises ConfigError naming the file and key (as `read_classifier_export`), or naming
    `model.pt` when it is missing, unreadable or does not fit the arch."""
    d = Path(directory)
    arch, _, config = read_classifier_export(d)
    weights = d / WEIGHTS
    # The layers are laid out on the meta device (no memory, no initialisation) and take the
    # loaded tensors as they are: a subnet of a large supernet costs only its own weights.
    with torch.device("meta"):
        net = MobileNetV3Supernet(config).extract(arch)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise ConfigError("the weights file is missing", source=str(weights)) from e
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: torch raises many types
        raise ConfigError(f"cannot read the weights ({type(e).__name__}: {_first_line(e)})", source=str(weights)) from e
    if not isinstance(state, dict):
        raise ConfigError("not a state_dict (expected a mapping of tensor names)", source=str(weights))
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, TypeError, KeyError) as e:
        raise ConfigError(f"the weights do not fit the arch ({_first_line(e)})", source=str(weights)) from e
    if any(t.is_meta for t in chain(net.parameters(), net.buffers())):  # a layer the state_dict did not fill
        raise ConfigError("the weights do not fill every layer of the arch", source=str(weights))
    return net.to(device).eval()


def _first_line(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for a paragraph)."""
    text = str(e).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(e).__name__


# --- export --------------------------------------------------------------------------------------
def export_classifier(experiment: Experiment, arch: MobileNetArch, out: Path, *, checkpoint: Path | None = None,
                      net: nn.Module | None = None, origin: Mapping[str, Any] | None = None,
                      onnx: bool = True) -> dict[str, Any]:
    """Write the static subnet `arch` of the experiment's trained supernet to the folder `out`
    (created) with its ONNX graph, `meta.json` and model card. Returns the meta dict (what
    `meta.json` holds).

    The supernet is `net` when given (e.g. the one training holds; its BN statistics, active arch
    and train/eval mode are left as they were), else loaded from `checkpoint` (default: the
    experiment's latest). `origin` says where the arch came from (e.g. {"study": ..., "trial":
    ...}; recorded as given). `onnx=False` skips `model.onnx` (and removes one an earlier export
    left). An earlier `meta.json` in `out` is removed first, so an export that fails part way
    never leaves a folder that looks whole.

    Raises ConfigError (an experiment of another task), ArchError (`arch` is not in the space or
    not a subnet of the supernet), TrainingError (no checkpoint, a checkpoint of another task,
    not a MobileNetV3 supernet, the ONNX export fails or disagrees with PyTorch: max |logit
    difference| over 1e-3 x max(1, max |logit|), or top-1 agreement under 0.99), DataError (the
    data cannot be read, or has another number of classes than the supernet).
    """
    task = get_task(TASK)
    if experiment.task != TASK:
        raise ConfigError(f"the experiment's task is {experiment.task!r}; this exports {TASK!r} subnets",
                          source=str(experiment.path), key="task")
    experiment.space.validate(arch)
    source: Path | None = None
    if net is None:
        source = Path(checkpoint) if checkpoint is not None else latest_checkpoint(experiment)
        net, payload = load_supernet(source)
        if payload.get("task") != TASK:
            raise TrainingError(f"the checkpoint holds a supernet of task {payload.get('task')!r}, not {TASK!r}",
                                source=str(source), key="task")
    if not isinstance(net, MobileNetV3Supernet):
        raise TrainingError(f"expected a MobileNetV3 supernet, got {type(net).__name__}", key="net")
    task.ensure_data(experiment)
    data = experiment.data
    train_index = scan_image_folder(data.root, "train")
    if len(train_index.classes) != net.config.num_classes:
        raise DataError(f"{len(train_index.classes)} classes, the supernet was trained for {net.config.num_classes}",
                        source=str(train_index.directory))

    static = _recalibrated_subnet(experiment, net, arch).cpu().eval()
    val = ClassificationDataset(data.root, "val", train=False, resolution=arch.resolution, augment=data.augment)
    scores = evaluate_classifier(static, _batches(val, experiment.trainer.eval.batch_size))

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # until the new one is written, this folder is not an export
    atomic_torch_save({k: v.detach().cpu() for k, v in static.state_dict().items()}, out / WEIGHTS)
    atomic_write_text(arch.to_json(), out / ARCH)
    verification = None
    if onnx:
        verification = _write_onnx(static, out / ONNX, val)
    else:
        (out / ONNX).unlink(missing_ok=True)  # never a graph of an earlier export beside these weights
    augment = data.augment
    meta: dict[str, Any] = {
        "name": out.name,
        "task": TASK,
        "model_name": task.model,
        "format": FORMAT,
        "arch": arch.to_flat(),
        "resolution": arch.resolution,
        "num_classes": len(train_index.classes),
        "classes": list(train_index.classes),
        "normalize": {"mean": list(augment.mean), "std": list(augment.std)},
        "crop_fraction": augment.crop_fraction,
        "supernet_config": net.config.to_dict(),
        "gflops": {k: float(v) for k, v in task.gflops(experiment)(arch).items()},
        "params": int(task.params(experiment)(arch)),
        "metrics": {"top1": float(scores["top1"]), "top5": float(scores["top5"])},
        "val_images": int(scores["count"]),
        "data_root": str(data.root),
        "experiment": experiment.name,
        "experiment_file": str(experiment.path),
        "space": experiment.space.name,
        "checkpoint": None if source is None else str(source),
        "origin": dict(origin or {}),
        "onnx": verification,
        "nasplat_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(model_card(meta, out), out / CARD)
    atomic_write_json(meta, out / META)  # last: a folder with meta.json is whole
    return meta


def _recalibrated_subnet(experiment: Experiment, supernet: MobileNetV3Supernet, arch: MobileNetArch) -> MobileNetV3:
    """A static copy of `arch` with BN statistics recomputed as `ClassificationEvaluator` does;
    `supernet` is left as it was (statistics, mode, active arch)."""
    recipe = experiment.trainer
    precision = recipe_precision(recipe, next(supernet.parameters()).device)
    previous = supernet.arch
    with kept_bn_statistics(supernet):
        recalibrate_subnet(supernet, arch, calibration_images(experiment),
                           batch_size=recipe.bn_recalibration.batch_size, precision=precision)
        static = supernet.extract(arch)
    if previous is not None:
        supernet.set_arch(previous)
    return static.eval()


def _batches(dataset: ClassificationDataset, batch_size: int) -> Iterator[dict[str, Tensor]]:
    """`dataset` in order, in batches of `batch_size` (`collate`d)."""
    for start in range(0, len(dataset), batch_size):
        yield collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


def _onnx_bytes(static: MobileNetV3, resolution: int) -> bytes:
    """The ONNX graph of `static` (eval mode), dynamic batch, checked by `onnx.checker`. Raises
    TrainingError when the exporter or the checker fails."""
    import onnx

    buffer = io.BytesIO()
    example = torch.zeros(2, 3, resolution, resolution)
    batch = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter warns of its future
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # the net itself, in eval mode: the exporter restores the mode of the module it is given,
            # and a wrapper made in training mode would leave the net training (its BN then updating)
            torch.onnx.export(static.eval(), (example,), buffer, dynamo=False, opset_version=OPSET,
                              input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                              dynamic_axes={ONNX_INPUT: batch, ONNX_OUTPUT: batch})
        onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()), full_check=True)
    except Exception as e:  # noqa: BLE001 - any exporter or checker failure is one TrainingError
        raise TrainingError(f"ONNX export failed ({type(e).__name__}: {_first_line(e)})") from e
    return buffer.getvalue()


def _verification_indices(n: int) -> list[int]:
    """Up to VERIFY_IMAGES indices spread evenly over n validation images (sorted by class, so
    every class is met)."""
    k = min(VERIFY_IMAGES, n)
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()}) if k else []


@torch.no_grad()
def _write_onnx(static: MobileNetV3, path: Path, val: ClassificationDataset) -> dict[str, Any]:
    """Write the ONNX graph of `static` to `path` and check onnxruntime against PyTorch on
    validation images. Returns the numbers for `meta["onnx"]`. Raises TrainingError (and removes
    `path`) when the graph fails, or disagrees beyond MAX_LOGIT_DIFF (relative to the logits'
    scale) or MIN_TOP1_AGREEMENT."""
    import onnxruntime as ort

    from nasplat.subnet.onnx_export import onnx_session

    atomic_write_bytes(_onnx_bytes(static, static.arch.resolution), path)
    images, _ = load_images(val, _verification_indices(len(val)))
    if images.shape[0] == 0:
        path.unlink(missing_ok=True)
        raise TrainingError("no validation images to check the ONNX model on", source=str(val.index.directory))
    session = onnx_session(path, threads=2)
    static.eval()
    diff, scale, same = 0.0, 0.0, 0
    for start in range(0, images.shape[0], VERIFY_BATCH):
        x = images[start : start + VERIFY_BATCH]  # [b, 3, R, R]
        want = static(x)  # [b, C]
        got = torch.from_numpy(session.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})[0])  # [b, C]
        diff = max(diff, float((want - got).abs().max()))
        scale = max(scale, float(want.abs().max()))
        same += int((want.argmax(1) == got.argmax(1)).sum())
    agreement = same / images.shape[0]
    allowed = MAX_LOGIT_DIFF * max(1.0, scale)
    result = {"file": ONNX, "opset": OPSET, "input": ONNX_INPUT, "output": ONNX_OUTPUT,
              "onnxruntime": ort.__version__, "images": int(images.shape[0]), "max_abs_logit_diff": diff,
              "max_abs_logit": scale, "allowed_logit_diff": allowed, "top1_agreement": agreement}
    if diff > allowed or agreement < MIN_TOP1_AGREEMENT:
        path.unlink(missing_ok=True)
        raise TrainingError(f"the ONNX model disagrees with PyTorch on {images.shape[0]} validation images: max "
                            f"|logit difference| {diff:.3g} (allowed {allowed:.3g}: {MAX_LOGIT_DIFF:g} x max(1, "
                            f"max |logit| {scale:.3g})), top-1 agreement {agreement:.1%} (needed "
                            f"{MIN_TOP1_AGREEMENT:.0%})", source=str(path))
    return result


# --- the model card ------------------------------------------------------------------------------
def _stage_rows(arch: MobileNetArch) -> list[str]:
    rows = ["| stage | depth | kernel sizes | expand ratios |", "|---|---|---|---|"]
    for s, stage in enumerate(arch.stages, start=1):
        rows.append(f"| {s} | {len(stage)} | {' '.join(str(b.kernel) for b in stage)} | "
                    f"{' '.join(str(b.expand) for b in stage)} |")
    return rows


def model_card(meta: Mapping[str, Any], directory: Path) -> str:
    """MODEL_CARD.md of an export: the facts of its `meta` for a reader, and how to predict."""
    arch = MobileNetArch.from_flat(meta["arch"])
    r = meta["resolution"]
    norm = meta["normalize"]
    m = meta["metrics"]
    classes = meta["classes"]
    shown = ", ".join(f"`{c}`" for c in classes[:20]) + (f" and {len(classes) - 20} more (all in meta.json)"
                                                         if len(classes) > 20 else "")
    onnx = meta["onnx"]
    onnx_line = ("no ONNX graph (exported with onnx off)" if onnx is None else
                 f"`{onnx['file']}` (opset {onnx['opset']}, input `{onnx['input']}` [N, 3, {r}, {r}] float32, output "
                 f"`{onnx['output']}` [N, {meta['num_classes']}]): against PyTorch on {onnx['images']} validation "
                 f"images, largest logit difference {onnx['max_abs_logit_diff']:.2g} (largest logit magnitude "
                 f"{onnx['max_abs_logit']:.3g}), top-1 agreement "
                 f"{onnx['top1_agreement']:.0%} (onnxruntime {onnx['onnxruntime']})")
    origin = ", ".join(f"{k} `{v}`" for k, v in meta["origin"].items()) or "none recorded"
    k = min(5, meta["num_classes"])
    lines = [
        f"# Image classifier `{directory.name}`",
        "",
        f"A MobileNetV3 subnet of the Once-for-All space `{meta['space']}` for {meta['num_classes']} classes, "
        f"found by one-shot NAS in experiment `{meta['experiment']}` (`{meta['experiment_file']}`). "
        f"Exported {meta['created']} by nasplat {meta['nasplat_version']} (torch {meta['torch_version']}).",
        "",
        "| | |",
        "|---|---|",
        f"| top-1 / top-5 | {m['top1']:.4f} / {m['top5']:.4f} on {meta['val_images']} validation images of "
        f"`{meta['data_root']}` |",
        f"| GFLOPs | {meta['gflops']['total']:.4f} |",
        f"| parameters | {meta['params']:,} |",
        f"| input | RGB; shorter side resized to {round(r / meta['crop_fraction'])} px (bilinear), centre "
        f"{r} x {r} crop, (pixel / 255 - mean) / std with mean {tuple(norm['mean'])}, std {tuple(norm['std'])} |",
        f"| ONNX | {onnx_line} |",
        f"| supernet checkpoint | `{meta['checkpoint']}` |",
        f"| origin | {origin} |",
        "",
        f"Classes, in label order: {shown}.",
        "",
        f"## Architecture (resolution {r})",
        "",
        *_stage_rows(arch),
        "",
        "## Predict",
        "",
        "```",
        shell_command("nasplat", "predict", str(directory), "IMAGE_OR_DIR", "--out", "predictions", "--top-k", str(k)),
        "```",
        "",
        "prints each image's top classes and writes `predictions/predictions.json`. In Python:",
        "",
        "```python",
        "from nasplat.tasks.classification.predict import ClassifierPredictor",
        f"predictor = ClassifierPredictor({str(directory)!r})",
        f"predictor.topk([PIL.Image.open('photo.jpg')], k={k})  # [[(class name, probability), ...]], best first",
        "```",
        "",
    ]
    return "\n".join(lines)
