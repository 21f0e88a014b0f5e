import random

import numpy as np
import pytest
import torch

from nasplat.errors import TrainingError
from nasplat.train.checkpoint import (
    capture_rng_state,
    find_latest,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _draw(gen: np.random.Generator) -> tuple[float, float, float]:
    return float(gen.random()), float(torch.rand(1)), random.random()


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    gen = np.random.default_rng(123)
    gen.random(5)
    torch.manual_seed(7)
    random.seed(9)
    state = capture_rng_state({"augment": gen})
    expected = _draw(gen)
    save_checkpoint(tmp_path, {"rng": state}, step=1, keep=2, numbered=False)

    other = np.random.default_rng(0)
    torch.manual_seed(0)
    random.seed(0)
    restore_rng_state(load_checkpoint(tmp_path / "latest.pt")["rng"], {"augment": other})
    assert _draw(other) == expected


def test_restoring_an_unknown_generator_is_a_training_error(tmp_path):
    state = capture_rng_state({})
    with pytest.raises(TrainingError, match="augment"):
        restore_rng_state(state, {"augment": np.random.default_rng(0)})


def test_numbered_checkpoints_keep_only_the_newest(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, {"step": step}, step=step, keep=2, numbered=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["latest.pt", "step-00000004.pt", "step-00000005.pt"]
    assert load_checkpoint(find_latest(tmp_path))["step"] == 5


def test_a_corrupt_checkpoint_is_a_training_error_naming_the_file(tmp_path):
    path = tmp_path / "latest.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="latest.pt"):
        load_checkpoint(path)


def test_no_checkpoint_means_fresh_start(tmp_path):
    assert find_latest(tmp_path) is None
