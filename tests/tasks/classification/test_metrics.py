"""Top-k accuracy: hand-computed counts, ties, k above the class count, the streaming meter and a
whole evaluation over a data loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from nasplat.errors import DataError
from nasplat.tasks.classification.data import AugmentConfig, ClassificationDataset, collate, synthesize_image_folder
from nasplat.tasks.classification.metrics import AccuracyMeter, evaluate_classifier, topk_correct

# Six classes; the ranking of each row, best first, is written beside it.
LOGITS = torch.tensor([
    [0.1, 0.5, 0.2, 0.9, 0.0, 0.3],  # 3 1 5 2 0 4
    [2.0, -1.0, 0.0, 1.0, 0.5, -2.0],  # 0 3 4 2 1 5
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # 5 4 3 2 1 0
    [-0.3, 0.6, 0.1, -0.1, 0.2, 0.4],  # 1 5 4 2 3 0
])
LABELS = torch.tensor([3, 4, 0, 0])  # ranks 1, 3, 6, 6


def test_topk_counts_hand_computed() -> None:
    assert topk_correct(LOGITS, LABELS, ks=(1, 2, 3, 5, 6)) == {1: 1, 2: 1, 3: 2, 5: 2, 6: 4}
    assert topk_correct(LOGITS, LABELS) == {1: 1, 5: 2}


def test_k_above_the_class_count_is_the_class_count() -> None:
    logits = LOGITS[:, :3]  # rankings: 1 2 0 | 0 2 1 | 2 1 0 | 1 2 0
    labels = torch.tensor([2, 0, 0, 1])
    assert topk_correct(logits, labels, ks=(1, 2, 5, 100)) == {1: 2, 2: 3, 5: 4, 100: 4}


def test_ties_never_count_more_than_k_classes() -> None:
    tied = torch.tensor([[1.0, 1.0, 0.0]])
    top1 = [topk_correct(tied, torch.tensor([label]), ks=(1,))[1] for label in range(3)]
    assert sum(top1) == 1 and top1[2] == 0  # one of the two tied classes, never both
    assert [topk_correct(tied, torch.tensor([label]), ks=(2,))[2] for label in range(3)] == [1, 1, 0]
    constant = torch.zeros(1, 10)
    assert sum(topk_correct(constant, torch.tensor([label]), ks=(1, 5))[1] for label in range(10)) == 1
    assert sum(topk_correct(constant, torch.tensor([label]), ks=(1, 5))[5] for label in range(10)) == 5


def test_an_empty_batch_counts_nothing() -> None:
    assert topk_correct(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)) == {1: 0, 5: 0}


@pytest.mark.parametrize("logits, labels, ks, words", [
    (torch.zeros(4), torch.zeros(4, dtype=torch.int64), (1,), "logits must be"),
    (torch.zeros(4, 3), torch.zeros(3, dtype=torch.int64), (1,), "labels must be \\[B\\]"),
    (torch.zeros(2, 3), torch.tensor([0, 3]), (1,), "labels must be in \\[0, 3\\)"),
    (torch.zeros(2, 3), torch.tensor([0, -1]), (1,), "labels must be in"),
    (torch.zeros(2, 3), torch.tensor([0, 1]), (0,), "ks must be positive"),
])
def test_topk_refuses_mismatched_input(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        topk_correct(logits, labels, ks)


def test_the_meter_streams_batches_as_one() -> None:
    meter = AccuracyMeter()
    meter.update(LOGITS[:1], LABELS[:1])
    meter.update(LOGITS[1:], LABELS[1:])
    assert meter.result() == {"top1": 0.25, "top5": 0.5, "count": 4}
    meter.reset()
    with pytest.raises(ValueError, match="no samples"):
        meter.result()
    meter.update(LOGITS[:, :3], torch.tensor([2, 0, 0, 1]))  # 3 classes: top-5 is top-3
    assert meter.result() == {"top1": 0.5, "top5": 1.0, "count": 4}


class _FirstPixel(nn.Module):
    """Logits = the first pixel's channels (3 classes); records how it was called."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.9)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.dropout(x[:, :, 0, 0])  # [B, 3]


def test_evaluate_runs_in_eval_mode_without_grad_and_restores_the_mode() -> None:
    images = torch.zeros(5, 3, 2, 2)
    images[torch.arange(5), torch.tensor([0, 1, 2, 2, 0]), 0, 0] = 1.0
    labels = torch.tensor([0, 1, 2, 1, 1])
    loader = [{"image": images[:3], "label": labels[:3]}, {"image": images[3:], "label": labels[3:]}]
    model = _FirstPixel().train()
    result = evaluate_classifier(model, loader)
    assert result == {"top1": 0.6, "top5": 1.0, "count": 5}
    assert model.calls == [(False, False), (False, False)] and model.training
    with pytest.raises(DataError, match="no images"):
        evaluate_classifier(model, [])


def test_evaluate_over_a_data_loader_of_an_image_folder(tmp_path: Path) -> None:
    root = synthesize_image_folder(tmp_path / "s", classes=3, train_per_class=1, val_per_class=2, size=8)
    ds = ClassificationDataset(root, "val", train=False, resolution=8, augment=AugmentConfig(flip=False))
    loader = DataLoader(ds, batch_size=4, collate_fn=collate)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    result = evaluate_classifier(model, loader)
    assert result["count"] == 6 and result["top5"] == 1.0 and 0.0 <= result["top1"] <= 1.0
