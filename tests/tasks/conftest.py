"""A tiny classification experiment: the quickstart space on a generated set of 4 classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

TINY_RECIPE = {
    "name": "tiny_classify",
    "batch_size": 16,
    "optimizer": {"name": "adam", "lr": 3.0e-3},
    "schedule": {"epochs": 2, "milestones": [2], "gamma": 0.5, "warmup_steps": 0},
    "sandwich": {"num_random": 1, "warmup_epochs": 0},
    "distillation": {"enabled": True, "gt_weight": 0.0, "distill_weight": 1.0},
    "bn_recalibration": {"images": 32, "batch_size": 16},
    "checkpoint": {"every_steps": 0, "keep": 1},
    "eval": {"flip_test": False, "every_epochs": 1, "max_images": 16, "batch_size": 16},
    "torch_threads": 1,
}


def write_classify_experiment(directory: Path, data_root: Path, **overrides: object) -> Path:
    """An experiment of the classification task in `directory` on the ImageFolder set `data_root`
    (generated there when absent). Returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trainer.yaml").write_text(yaml.safe_dump(TINY_RECIPE))
    doc = {
        "name": "tiny_classify",
        "task": "classification",
        "space": str(ROOT / "search_spaces" / "classification" / "quickstart.yaml"),
        "trainer": "trainer.yaml",
        "data": {"root": str(data_root), "synthetic": {"classes": 4, "train_per_class": 12, "val_per_class": 4,
                                                       "size": 32, "seed": 0},
                 "augment": {"flip": False}},
        "output_dir": "out",
        "seed": 0,
        **overrides,
    }
    path = directory / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def classify_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny experiments' data set is generated (once per session)."""
    return tmp_path_factory.mktemp("classify") / "data"
