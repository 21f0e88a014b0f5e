"""Top-k accuracy of a classifier: counts per batch, a streaming meter, and a whole evaluation.

Ties: a sample counts as top-k correct when its label is among the k classes `torch.topk` picks,
exactly k of them. Where several classes tie at the k-th largest logit, only as many of them as
fit in k are picked (which ones is torch.topk's choice), so a tie never makes more than k classes
count as predicted: a model that outputs constant logits is right at top-1 for one class in C,
not for every sample. (Counting every class whose logit reaches the k-th largest would score
such a model 100%.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from nasplat.errors import DataError


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """The number of samples whose label is among the top k logits, for each k in `ks`.

    logits [B, C], labels [B] (integers in [0, C)). A k larger than C counts as C (every sample
    is then correct). Ties follow `torch.topk` (see the module docstring). Raises ValueError for
    shapes that do not match, a k below 1 and a label outside [0, C).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, C], got shape {tuple(logits.shape)}")
    b, c = logits.shape
    if labels.shape != (b,):
        raise ValueError(f"labels must be [B] = [{b}], got shape {tuple(labels.shape)}")
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    if c < 1:
        raise ValueError("logits have no classes (C = 0)")
    labels = labels.to(device=logits.device, dtype=torch.int64)
    if b and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ValueError(f"labels must be in [0, {c}), got values in [{int(labels.min())}, {int(labels.max())}]")
    k_max = min(max(ks), c)
    top = logits.topk(k_max, dim=1, largest=True, sorted=True).indices  # [B, k_max], best first
    hit = top.eq(labels[:, None])  # [B, k_max]: at most one True per row
    hits_at = hit.cumsum(dim=1).sum(dim=0)  # [k_max]: samples correct within the top j + 1
    counts = hits_at.tolist()  # one device sync for every k
    return {k: int(counts[min(k, c) - 1]) for k in ks}


class AccuracyMeter:
    """Top-1 and top-5 accuracy over the batches given to `update` (top-5 with fewer than 5
    classes is top-C: every sample is correct)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.top1 = 0
        self.top5 = 0
        self.count = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: logits [B, C], labels [B]. Raises ValueError as `topk_correct`."""
        counts = topk_correct(logits.detach(), labels, ks=(1, 5))
        self.top1 += counts[1]
        self.top5 += counts[5]
        self.count += int(labels.shape[0])

    def result(self) -> dict[str, float | int]:
        """`{"top1": fraction, "top5": fraction, "count": samples}`, fractions in [0, 1].
        Raises ValueError when no sample was added (an accuracy of nothing is not 0)."""
        if self.count == 0:
            raise ValueError("no samples were added to the accuracy meter")
        return {"top1": self.top1 / self.count, "top5": self.top5 / self.count, "count": self.count}


def evaluate_classifier(model: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]],
                        device: str | torch.device = "cpu") -> dict[str, float | int]:
    """Top-1 and top-5 accuracy of `model` over `loader` (batches `{"image": [B, 3, R, R],
    "label": [B]}`, as `collate` makes them), as `AccuracyMeter.result`.

    The model runs in eval mode under `torch.no_grad` on `device` (where it must already be);
    its train/eval mode is restored afterwards. Raises DataError for a loader with no sample,
    ValueError for a model output that is not logits [B, C] matching the labels.
    """
    meter = AccuracyMeter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                images = batch["image"].to(device, non_blocking=True)  # [B, 3, R, R]
                labels = batch["label"].to(device, non_blocking=True)  # [B]
                logits = model(images)  # [B, C]
                if not isinstance(logits, torch.Tensor):
                    raise ValueError(f"the model returned {type(logits).__name__}, not a logits tensor [B, C]")
                meter.update(logits, labels)
    finally:
        model.train(was_training)
    if meter.count == 0:
        raise DataError("the evaluation loader yielded no images")
    return meter.result()


__all__ = ["AccuracyMeter", "evaluate_classifier", "topk_correct"]
