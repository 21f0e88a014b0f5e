"""The same experiment trains through Ray Train with 2 CPU workers, and a re-run resumes."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_ray_workers_train_and_a_rerun_resumes_from_rays_checkpoint(tmp_path, tiny_experiment):
    from nasplat.train.config import load_experiment
    from nasplat.train.distributed import train_with_ray

    path = tiny_experiment(tmp_path / "ray", num_workers=2)
    experiment = load_experiment(path)
    ckpt = train_with_ray(experiment, mlflow=False)
    payload = torch.load(ckpt, weights_only=True)
    assert payload["world_size"] == 2
    # 6 train images hold > 8 persons: at least one global batch of 2 x 4 per epoch, 3 epochs
    assert payload["epoch"] == 3 and payload["step"] >= 3
    assert any((experiment.output_dir / "ray" / experiment.name).glob("checkpoint_*"))

    train_with_ray(experiment, mlflow=False)  # nothing left: resumes at the end and stops
    final = json.loads((experiment.checkpoint_dir / "final.json").read_text())
    assert final["resumed_from_step"] == payload["step"]
    again = torch.load(experiment.checkpoint_dir / "latest.pt", weights_only=True)
    assert all(torch.equal(again["model"][k], payload["model"][k]) for k in payload["model"])
