"""`storage_path` in an object store: what a node that shares no disk with the driver gets (the
experiment by value, the supernet from the store, its own copy of the synthetic data), and the
one-line errors of a storage root that cannot be used, before anything is written."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import BUCKET, write_tiny_experiment


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _on_another_node(experiment, tmp_path: Path, storage_uri: str):  # noqa: ANN001, ANN202
    """The experiment as a node without the driver's files sees it: the file gone, an empty
    output directory and data root, the storage root in the object store."""
    from nasplat.config import DataConfig
    from nasplat.storage import Storage

    return dataclasses.replace(
        experiment, path=tmp_path / "gone" / "experiment.yaml", output_dir=tmp_path / "node-out",
        storage_root=Storage.parse(storage_uri, tmp_path),
        data=DataConfig(root=tmp_path / "node-data", synthetic=experiment.data.synthetic))


def test_an_evaluator_on_a_node_without_the_drivers_files_reads_the_supernet_from_the_store(
        trained_tiny, aws_env, tmp_path):
    from nasplat.orchestration.run import objective_factory
    from nasplat.train.checkpoint import SUPERNET_KEY, find_latest, publish_supernet

    uri = f"s3://{BUCKET}/byvalue-{uuid.uuid4().hex[:8]}"
    node = _on_another_node(trained_tiny, tmp_path, uri)
    trained = find_latest(trained_tiny.checkpoint_dir)
    assert publish_supernet(node, trained) == f"{uri}/{SUPERNET_KEY}"

    # what the driver hands an evaluator actor: pickled, the experiment inside it by value
    factory = pickle.loads(pickle.dumps(objective_factory(node)))
    assert not node.path.exists() and not node.output_dir.exists()
    evaluation = factory().evaluate(node.space.min_arch())
    assert 0.0 <= evaluation.ap <= 1.0 and evaluation.total_gflops > 0

    # the supernet came from the store into this node's cache, byte for byte
    cached = list((Path(os.environ["NASPLAT_CACHE_DIR"]) / "storage").rglob("latest.pt"))
    assert len(cached) == 1 and _digest(cached[0]) == _digest(trained)
    # the node generated its own synthetic set: the same bytes the driver's evaluations scored
    ann = Path("annotations") / "coco_wholebody_val_v1.0.json"
    assert _digest(node.data.root / ann) == _digest(trained_tiny.data.root / ann)


def test_no_published_supernet_is_one_line_naming_storage_path(trained_tiny, aws_env, tmp_path):
    from nasplat.errors import TrainingError
    from nasplat.subnet import latest_checkpoint

    node = _on_another_node(trained_tiny, tmp_path, f"s3://{BUCKET}/empty-{uuid.uuid4().hex[:8]}")
    with pytest.raises(TrainingError) as err:
        latest_checkpoint(node)
    assert err.value.key == "storage_path" and "checkpoints/latest.pt" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_experiment_pickles_whole(trained_tiny):
    again = pickle.loads(pickle.dumps(trained_tiny))
    assert dataclasses.replace(again, space=trained_tiny.space) == trained_tiny  # a space compares by identity
    assert again.space.fingerprint() == trained_tiny.space.fingerprint()
    assert again.space.max_arch() == trained_tiny.space.max_arch()


def _nasplat(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nasplat", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("storage, expect", [
    ("ftp://host/x", "unknown scheme 'ftp://'"),
    ("s3://", "names no bucket"),
    ("s3://no-such-bucket-nasplat/prefix", "bucket 'no-such-bucket-nasplat' does not exist"),
])
def test_a_storage_root_that_cannot_be_used_is_one_line_and_nothing_is_written(
        storage, expect, aws_env, tiny_data, tmp_path):
    path = write_tiny_experiment(tmp_path / "exp", tiny_data)
    path.write_text(path.read_text().replace("output_dir: out", f"output_dir: out\nstorage_path: '{storage}'"))
    res = _nasplat(["run", str(path), "--no-mlflow"], tmp_path)
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"nasplat: error: {path}: storage_path: ") and expect in line, line
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in line
    assert not (tmp_path / "exp" / "out").exists()


def test_an_endpoint_that_is_down_is_one_line_within_the_probe_timeout(aws_env, tiny_data, tmp_path):
    from tests.conftest import free_port

    path = write_tiny_experiment(tmp_path / "exp", tiny_data)
    path.write_text(path.read_text().replace("output_dir: out", f"output_dir: out\nstorage_path: s3://{BUCKET}/x"))
    res = _nasplat(["train", str(path), "--no-mlflow"], tmp_path,
                   {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "storage_path: " in line and "cannot connect to http://127.0.0.1:" in line, line
    assert not (tmp_path / "exp" / "out").exists()
