"""Shared fixtures: a tiny space, recipe and synthetic data set that train in seconds on one CPU
thread (training, subnet evaluation and the CLI use them), and an S3-compatible store on
127.0.0.1 (moto's server) reached through the standard AWS_* variables (the storage root)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BUCKET = "nasplat-test"  # the bucket of the S3 endpoint `moto_endpoint`
START_TIMEOUT_S = 30.0  # moto's server answers within a few seconds on 2 busy cores

TINY_SPACE = """
name: tiny
body:
  resolution: [64, 96]
  blocks_per_module: 1
  stem: {channels: [8]}
  stage1: {depth: [1], channels: [4, 8], groups: {halvings: 1}}
  stage2: {depth: [1]}
  stage3: {depth: [1]}
  stage4: {depth: [1]}
  branch1: {channels: [4, 8], groups: [1]}
  branch2: {channels: [8], groups: [1]}
  branch3: {channels: [8], groups: [1]}
  branch4: {channels: [8], groups: [1]}
face: &head
  resolution: [8, 16]
  feature_stage: [0, 1, 2]
  roi_expansion: [1.0, 1.2]
  blocks_per_module: 1
  stage1: {depth: [1], channels: [4], groups: [1]}
  stage2: {depth: [1]}
  stage3: {depth: [1]}
  stage4: {depth: [1]}
  branch1: {channels: [4], groups: [1]}
  branch2: {channels: [4], groups: [1]}
  branch3: {channels: [4], groups: [1]}
  branch4: {channels: [4], groups: [1]}
hand: *head
"""

TINY_RECIPE = """
name: tiny
batch_size: 4
optimizer: {name: adam, lr: 1.0e-3}
schedule: {epochs: 3, milestones: [2], gamma: 0.1, warmup_steps: 2}
heatmap_sigma: 2
head_sigma: 1.5
augmentation: {scale: 0.25, rotation: 20, flip: true}
sandwich: {num_random: 1}
distillation: {enabled: true, gt_weight: 0.0, distill_weight: 1.0}
head_boxes: {gt_box_epochs: 1, box_iou_threshold: 0.5}
bn_recalibration: {images: 8, batch_size: 4}
checkpoint: {every_steps: 1, keep: 2}
eval: {flip_test: false, every_epochs: 0, batch_size: 8}
torch_threads: 1
max_steps_per_epoch: 3
"""


def write_tiny_experiment(directory: Path, data_root: Path, *, num_workers: int = 1, name: str = "tiny",
                          recipe: str = TINY_RECIPE) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "space.yaml").write_text(TINY_SPACE)
    (directory / "trainer.yaml").write_text(recipe)
    path = directory / "experiment.yaml"
    path.write_text(
        f"name: {name}\nspace: space.yaml\ntrainer: trainer.yaml\n"
        f"data: {{root: {data_root}, synthetic: {{train: 6, val: 3, seed: 0}}}}\n"
        f"output_dir: out\nseed: 0\n"
        f"cluster: {{num_workers: {num_workers}, cpus_per_worker: 1}}\n"
    )
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nasplat.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("tiny_data")
    generate_dataset(root, 6, 3, seed=0)
    return root


@pytest.fixture
def tiny_experiment(tiny_data: Path):  # noqa: ANN201 - a factory
    """write(directory, **kw) -> path of a tiny experiment YAML using the shared tiny data."""

    def write(directory: Path, **kw: object) -> Path:
        return write_tiny_experiment(directory, tiny_data, **kw)  # type: ignore[arg-type]

    return write


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path):  # noqa: ANN201
    """A tiny experiment whose supernet has been trained (3 epochs x 3 steps)."""
    import torch

    from nasplat.config import load_experiment
    from nasplat.orchestration.training import train_supernet

    threads = torch.get_num_threads()
    path = write_tiny_experiment(tmp_path_factory.mktemp("trained"), tiny_data)
    experiment = load_experiment(path)
    train_supernet(experiment, mlflow=False, evaluate=False)
    torch.set_num_threads(threads)
    return experiment


def one_torch_thread():  # noqa: ANN201 - a generator for pytest.fixture
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spinning threads slow them down by an order of magnitude. The training and subnet tests use
    it as an autouse fixture (their conftest.py)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- an S3-compatible store on 127.0.0.1 (moto's server), reached through the AWS_* variables ---


def load_benchmark(name: str) -> ModuleType:
    """The script `benchmarks/<name>.py` as a module, to test its helpers."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stop_process(proc: subprocess.Popen) -> None:
    """TERM a server a test started, KILL it after 10 s, and reap it."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3 endpoint (moto's server in a child process) holding the bucket `BUCKET`."""
    exe = shutil.which("moto_server")
    if exe is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]>=5.2.6')")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer within {START_TIMEOUT_S:g} s")
                time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        stop_process(proc)


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The standard variables pointing at moto's endpoint; returns the endpoint."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("NASPLAT_CACHE_DIR", str(tmp_path / "cache"))
    from nasplat import storage

    storage._filesystems.clear()  # pyarrow filesystems keep the environment they were made in
    request.addfinalizer(storage._filesystems.clear)
    return moto_endpoint


def fit_torch_trainer(loop, config: dict, storage: Path, num_workers: int = 1):  # noqa: ANN001, ANN201
    """`loop(config)` on `num_workers` Ray Train workers (gloo, 1 CPU each) with nasplat's process
    group setup, on an embedded Ray that is shut down afterwards if this started it; returns
    Ray's result (a failure raises as Ray raised it)."""
    import sys

    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from nasplat.orchestration.cluster import init_ray, shutdown_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[loop.__module__])  # test modules do not import in workers
    from nasplat.train.process_group import BoundTorchConfig

    started = init_ray(None, num_cpus=num_workers)
    try:
        return TorchTrainer(loop, train_loop_config=config, torch_config=BoundTorchConfig(backend="gloo"),
                            scaling_config=ScalingConfig(num_workers=num_workers, resources_per_worker={"CPU": 1}),
                            run_config=RunConfig(name="fit", storage_path=str(storage))).fit()
    finally:
        if started:
            shutdown_ray()
