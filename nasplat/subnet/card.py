"""MODEL_CARD.md of an export directory, written from its `meta.json` alone (so the card never
says anything the metadata does not hold)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nasplat.files import shell_command

__all__ = ["model_card"]


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _origin(meta: Mapping[str, Any]) -> str:
    origin = meta.get("origin") or {}
    parts = [f"experiment `{meta['experiment']}` (`{meta.get('experiment_file', '?')}`)"]
    if origin.get("study"):
        parts.append(f"study `{origin['study']}`")
    if origin.get("trial") is not None:
        parts.append(f"trial {origin['trial']}")
    extra = {k: v for k, v in origin.items() if k not in ("study", "trial")}
    parts += [f"{k} `{v}`" for k, v in sorted(extra.items())]
    return ", ".join(parts)


def model_card(meta: Mapping[str, Any]) -> str:
    """The model card (Markdown) of an export's metadata, as `export_subnet` writes it."""
    g = meta["gflops"]
    lines = [
        f"# {meta['experiment']}: exported ZoomNet subnet `{meta['name']}`",
        "",
        f"A whole-body pose network (133 COCO-WholeBody keypoints) found by one-shot NAS: from {_origin(meta)}, "
        f"search space `{meta['space']}`, supernet checkpoint `{meta.get('checkpoint')}`. "
        f"Exported {meta['exported_at']} by nasplat {meta['nasplat_version']}.",
        "",
        "## Architecture",
        "",
        f"Body input {meta['input_size'][0]} x {meta['input_size'][1]} (H x W); HRNet modules of "
        f"{'/'.join(str(b) for b in meta['blocks_per_module'])} blocks (body/face/hand); RoIAlign sampling ratio "
        f"{meta['sampling_ratio']}.",
        "",
        *_table(("choice", "value"), [(f"`{k}`", v) for k, v in meta["arch"].items()]),
        "",
        "## Cost",
        "",
        *_table(("part", "GFLOPs"), [("body", f"{g['body']:.4f}"), ("face", f"{g['face']:.4f}"),
                                     ("hand (each of two)", f"{g['hand']:.4f}"), ("total", f"{g['total']:.4f}")]),
        "",
        f"Parameters: {meta['params']:,}.",
        "",
    ]
    metrics = meta.get("metrics")
    val = meta.get("val") or {}
    lines += ["## Accuracy", ""]
    if metrics:
        lines += [
            f"Official COCO-WholeBody AP/AR on {val.get('description', 'the validation set')}.",
            "",
            *_table(("part", "AP", "AR"), [(p, f"{m['AP']:.3f}", f"{m['AR']:.3f}") for p, m in metrics.items()]),
            "",
        ]
    else:
        lines += ["Not evaluated at export.", ""]
    recipe = meta.get("recipe") or {}
    lines += ["## Training recipe", ""]
    lines += ["The supernet's (the subnet's weights are its slice, BN recalibrated):" if meta.get("checkpoint") else
              "The experiment's trainer recipe (the network was exported as given; the origin above says how it was "
              "trained):", ""]
    lines += [f"- {k}: {v}" for k, v in recipe.items()]
    data = meta.get("data") or {}
    lines += ["", "## Data", ""]
    lines += [f"- {k}: {v}" for k, v in data.items()]
    lines += ["", "## Latency on the exporting machine", ""]
    lat = meta.get("latency")
    if lat:
        rows = [(f"batch {b}", f"{v['torch_ms']:.1f}", f"{v['onnx_ms']:.1f}", f"{v['onnx_ms'] / v['torch_ms']:.2f}x")
                for b, v in lat["batches"].items()]
        lines += [
            f"Median of {lat['runs']} runs, {lat['threads']} CPU threads per backend, on {lat['machine']}.",
            "",
            *_table(("input", "PyTorch eager ms", "onnxruntime ms", "onnx / eager"), rows),
            "",
        ]
    else:
        lines += ["Not measured.", ""]
    onnx = meta.get("onnx")
    lines += ["## Files", "", "- `model.pt`: the static subnet's state_dict (`nasplat.subnet.load_exported`)",
              "- `arch.json`: its flat architecture choices; `meta.json`: everything on this card"]
    if onnx:
        v = onnx["verification"]
        lines += [
            f"- `model.onnx`: the whole network (BodyNet, box decoding, RoIAlign zoom, FaceHead, HandHead) in one "
            f"graph, opset {onnx['opset']}, dynamic batch; input `images` [B, 3, H, W] (RGB, ImageNet-normalised), "
            "outputs `body_heatmaps`, `boxes`, `face_heatmaps`, `hand_heatmaps`. Checked against PyTorch on "
            f"{v['crops']} validation crops: max heatmap difference {v['max_heatmap_abs_diff']:.2e}, "
            f"argmax agreement {v['argmax_agreement']:.4f}.",
        ]
        o = onnx.get("optimized")
        if o:
            lines.append(f"- `{o['file']}`: the same graph as onnxruntime {o['onnxruntime']} optimises it ({o['level']} "
                         "level), which loads faster; `nasplat predict` uses it with that onnxruntime version, else "
                         f"`model.onnx`. Against PyTorch: max heatmap difference {o['max_heatmap_abs_diff']:.2e}, "
                         f"argmax agreement {o['argmax_agreement']:.4f}.")
    lines += ["", "## Use", "", "```", shell_command("nasplat", "predict", f"path/to/{meta['name']}", "image.jpg", "--out", "predictions"), "```", ""]
    return "\n".join(lines)
