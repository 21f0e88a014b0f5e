"""A static ZoomNet subnet as one ONNX graph, checked against PyTorch, and the latency of both.

The graph holds the whole forward: BodyNet, the part boxes decoded from its box-keypoint heatmaps,
the RoIAlign zoom (`grid_sample`, ONNX GridSample) and FaceHead / HandHead. It takes `images`
[B, 3, H, W] (normalised like the training crops, B free) and returns the four `ZoomNetOutput`
fields under their names. It is written with the TorchScript exporter: the dynamo exporter fails
on the data-dependent box decoding.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from nasplat.data.decode import decode_heatmaps
from nasplat.errors import TrainingError
from nasplat.models import ZoomNet, ZoomNetOutput

__all__ = [
    "INPUT",
    "OPSET",
    "OUTPUTS",
    "export_onnx",
    "latency_ms",
    "onnx_session",
    "run_onnx",
    "save_optimized",
    "torch_threads",
    "verify_onnx",
]

OPSET = 17
INPUT = "images"
OUTPUTS = ZoomNetOutput._fields  # body_heatmaps, boxes, face_heatmaps, hand_heatmaps


class _Graph(nn.Module):
    """ZoomNet with a plain tuple output (what the exporter names)."""

    def __init__(self, net: ZoomNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(self.net(images))  # type: ignore[return-value]


def export_onnx(net: ZoomNet, path: Path, *, opset: int = OPSET) -> None:
    """Write `net` (eval mode) as one ONNX graph with a dynamic batch to `path` (atomically) and
    check it with `onnx.checker` (full check, shapes inferred). Raises TrainingError when the
    exporter or the checker fails."""
    h, w = net.arch.body.input_size
    example = torch.zeros(2, 3, h, w)
    tmp = path.with_name(f".{path.name}.tmp")
    batch = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # the shape checks of forward are Python ifs, constant for one arch: tracing warns on them
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                _Graph(net.eval()), (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=[INPUT], output_names=list(OUTPUTS),
                dynamic_axes={name: batch for name in (INPUT, *OUTPUTS)},
            )
        onnx.checker.check_model(str(tmp), full_check=True)
    except Exception as e:  # noqa: BLE001 - any exporter/checker failure is one TrainingError
        tmp.unlink(missing_ok=True)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrainingError(f"ONNX export failed ({type(e).__name__}: {first})", source=str(path)) from e
    os.replace(tmp, path)


def _options(threads: int, spin: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: shape-inference notes are not for users
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def onnx_session(path: str | Path, threads: int = 2, *, spin: bool = True) -> ort.InferenceSession:
    """An onnxruntime session on the CPU execution provider with `threads` intra-op threads
    (all graph optimisations; a model that `save_optimized` wrote has them applied already and
    loads faster). `spin=False` lets idle intra-op threads sleep instead of spinning between
    calls, which frees the cores for other threads of the process (predict's readers and
    painters). Raises TrainingError when the file is missing or not a valid model."""
    try:
        return ort.InferenceSession(str(path), _options(threads, spin), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise TrainingError(f"cannot load the ONNX model ({_first_line(e)})", source=str(path)) from e


def save_optimized(path: str | Path, out: str | Path) -> dict[str, str]:
    """Write the model at `path` as onnxruntime optimises it for the CPU execution provider to
    `out` (atomically), so that a later session skips most of that work. Only the optimisations
    that do not depend on the CPU are saved (the extended level: fusions, constant folding; the
    layout changes stay to the session that loads it), and the file is onnxruntime's own (contrib
    ops): it is valid for this onnxruntime version. Returns {"onnxruntime": version, "level"}.
    Raises TrainingError when onnxruntime cannot load `path`."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    options = _options(1)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp)
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        tmp.unlink(missing_ok=True)
        raise TrainingError(f"cannot optimise the ONNX model ({_first_line(e)})", source=str(path)) from e
    os.replace(tmp, out)
    return {"onnxruntime": ort.__version__, "level": "extended"}


def run_onnx(session: ort.InferenceSession, images: np.ndarray | Tensor) -> ZoomNetOutput:
    """Run the exported graph on images [B, 3, H, W]; the outputs as torch tensors."""
    x = images.detach().cpu().numpy() if isinstance(images, Tensor) else images
    outs = session.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(x, dtype=np.float32)})
    return ZoomNetOutput(*(torch.from_numpy(o) for o in outs))


def _peaks(out: ZoomNetOutput) -> Tensor:
    """The argmax pixel of every keypoint heatmap (23 body/foot, 68 face, 42 hand) -> [B, 133]."""
    b = out.body_heatmaps.shape[0]
    body = out.body_heatmaps[:, :23].flatten(2).argmax(-1)  # [B, 23]
    face = out.face_heatmaps.flatten(2).argmax(-1)  # [B, 68]
    hand = out.hand_heatmaps.flatten(3).argmax(-1).reshape(b, 42)  # [B, 42]
    return torch.cat((body, face, hand), dim=1)


@torch.no_grad()
def verify_onnx(net: ZoomNet, session: ort.InferenceSession, crops: Tensor, batch_size: int = 8) -> dict[str, Any]:
    """Compare onnxruntime with PyTorch on crops [N, 3, H, W] in batches of `batch_size` (the
    last one shorter when N is not a multiple: the batch dimension is exercised).

    Returns {"crops", "batch_size", "max_abs_diff": {output: float}, "max_heatmap_abs_diff",
    "argmax_agreement" (fraction of the N x 133 keypoint heatmaps whose argmax pixel is the same),
    "max_keypoint_diff_heatmap_px" (decoded, in heatmap pixels)}. Raises TrainingError when N is 0.
    """
    if crops.shape[0] == 0:
        raise TrainingError("no validation crops to verify the ONNX model on")
    net.eval()
    diff = dict.fromkeys(OUTPUTS, 0.0)
    same = total = 0
    max_px = 0.0
    for start in range(0, crops.shape[0], batch_size):
        x = crops[start : start + batch_size].float().cpu()
        want = net(x)
        got = run_onnx(session, x)
        for name, a, b in zip(OUTPUTS, want, got):
            diff[name] = max(diff[name], float((a - b).abs().max()))
        pw, pg = _peaks(want), _peaks(got)
        same += int((pw == pg).sum())
        total += pw.numel()
        pairs = ((want.body_heatmaps[:, :23], got.body_heatmaps[:, :23]), (want.face_heatmaps, got.face_heatmaps),
                 (want.hand_heatmaps.flatten(0, 1), got.hand_heatmaps.flatten(0, 1)))
        for a, b in pairs:  # heatmap pixels; the scale to body-input pixels is at most 4
            max_px = max(max_px, float((decode_heatmaps(a)[0] - decode_heatmaps(b)[0]).abs().max()))
    heatmaps = [diff[n] for n in OUTPUTS if n.endswith("heatmaps")]
    return {
        "crops": int(crops.shape[0]),
        "batch_size": int(batch_size),
        "max_abs_diff": diff,
        "max_heatmap_abs_diff": max(heatmaps),
        "argmax_agreement": same / total,
        "max_keypoint_diff_heatmap_px": max_px,
    }


class torch_threads:  # noqa: N801 - used like a function: `with torch_threads(2):`
    """Context manager: torch intra-op threads set to `n`, restored afterwards."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.saved = torch.get_num_threads()

    def __enter__(self) -> None:
        self.saved = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.saved)


def latency_ms(fn: Callable[[], Any], runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of `fn()` in milliseconds over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)
