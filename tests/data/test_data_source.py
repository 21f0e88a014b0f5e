"""A data set named by a URI (`data.root: s3://...`): each node copies it once into its cache.

A folder reached as `file:///...` stands in for the object store (pyarrow reaches it the way it
reaches S3); one test runs the same sync against an S3 endpoint (moto)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import pickle
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import nasplat.storage
from nasplat.config import load_experiment
from nasplat.config.experiment import data_cache_dir
from nasplat.data.source import MANIFEST, check_source, list_source
from nasplat.data.synth import generate_dataset
from nasplat.errors import ConfigError, DataError, StorageError
from nasplat.storage import Storage
from nasplat.train.data import ensure_data, train_dataset
from tests.conftest import write_tiny_experiment


def _write_experiment(directory: Path, data: str) -> Path:
    """The tiny experiment with its `data` line replaced by `data: {data}`."""
    path = write_tiny_experiment(directory, directory / "unused")
    text = re.sub(r"^data: .*$", f"data: {data}", path.read_text(), flags=re.M)
    path.write_text(text)
    return path


def _files(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` but the manifest, by relative name."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A folder holding a tiny data set and some files the layout does not read."""
    root = tmp_path / "bucket" / "coco_wholebody"
    generate_dataset(root, 6, 3, seed=0)
    (root / "annotations" / "person_keypoints_train2017.json").write_text("{}")
    (root / "test2017").mkdir()
    (root / "test2017" / "1.jpg").write_bytes(b"not read")
    return root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("NASPLAT_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The relative names `Storage.download` is asked for, in this process."""
    calls: list[str] = []
    real = Storage.download

    def counting(self: Storage, rel: str, dst: Path) -> Path:
        calls.append(rel)
        return real(self, rel, dst)

    monkeypatch.setattr(Storage, "download", counting)
    return calls


def _layout(store: Path) -> dict[str, str]:
    return {rel: digest for rel, digest in _files(store).items()
            if rel.startswith(("train2017/", "val2017/", "annotations/coco_wholebody_"))}


# --- loading -----------------------------------------------------------------------------------


def test_a_uri_root_reads_from_a_cache_folder_resolved_at_load_time(tmp_path, store, cache):
    uri = store.as_uri()
    exp = load_experiment(_write_experiment(tmp_path / "exp", f"{{root: '{uri}'}}"))
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    assert exp.data.source == uri and exp.data.synthetic is None
    assert exp.data.root == cache.resolve() / "data" / key == data_cache_dir(uri)
    # the Experiment travels by value: a worker whose cache variable differs uses the same folder
    assert pickle.loads(pickle.dumps(exp)).data == exp.data
    s3 = load_experiment(_write_experiment(tmp_path / "s3", "{root: 's3://bucket/prefix/coco/'}"))
    assert s3.data.source == "s3://bucket/prefix/coco" and s3.data.root.parent == cache.resolve() / "data"
    local = load_experiment(_write_experiment(tmp_path / "local", "{root: data}"))
    assert local.data.root == tmp_path / "local" / "data" and local.data.source is None


@pytest.mark.parametrize("data, key, words", [
    ("{root: 'ftp://host/coco'}", "data.root", "unknown scheme 'ftp://'"),
    ("{root: 's3:///coco'}", "data.root", "names no bucket"),
    ("{root: 's3://bucket/coco', synthetic: {train: 6, val: 3}}", "data.synthetic", "local folder"),
])
def test_a_bad_uri_root_is_a_config_error_naming_its_key(tmp_path, cache, data, key, words):
    path = _write_experiment(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert e.value.key == key and str(path) in str(e.value) and words in str(e.value)
    assert "\n" not in str(e.value)


# --- syncing -----------------------------------------------------------------------------------


def test_the_first_sync_fetches_the_layout_and_a_second_nothing(tmp_path, store, cache, downloads, caplog):
    exp = load_experiment(_write_experiment(tmp_path, f"{{root: '{store.as_uri()}'}}"))
    caplog.set_level("INFO", logger="nasplat.data.source")
    ensure_data(exp)
    want = _layout(store)
    assert sorted(downloads) == sorted(want)  # nothing outside the layout (test2017, other annotations)
    assert _files(exp.data.root) == want
    manifest = json.loads((exp.data.root / MANIFEST).read_text())
    assert manifest["source"] == store.as_uri() and sorted(manifest["files"]) == sorted(want)
    assert f"fetched {len(want)} of {len(want)} files" in caplog.text

    downloads.clear()
    caplog.clear()
    ensure_data(exp)
    assert downloads == [] and _files(exp.data.root) == want
    assert f"fetched 0 of {len(want)} files" in caplog.text and len(caplog.records) == 1


def test_a_changed_file_is_fetched_again_and_a_deleted_one_removed(tmp_path, store, cache, downloads):
    exp = load_experiment(_write_experiment(tmp_path, f"{{root: '{store.as_uri()}'}}"))
    ensure_data(exp)
    downloads.clear()
    image = sorted((store / "train2017").iterdir())[0]
    image.write_bytes(image.read_bytes() + b"changed")
    gone = sorted((store / "val2017").iterdir())[-1]
    gone.unlink()
    ensure_data(exp)
    changed = image.relative_to(store).as_posix()
    assert downloads == [changed]
    assert _files(exp.data.root) == _layout(store)
    assert not (exp.data.root / gone.relative_to(store)).exists()
    assert gone.relative_to(store).as_posix() not in json.loads((exp.data.root / MANIFEST).read_text())["files"]

    # a local copy lost or cut short (a disk cleaned by hand) is fetched again too
    downloads.clear()
    (exp.data.root / changed).write_bytes(b"")
    ensure_data(exp)
    assert downloads == [changed] and _files(exp.data.root) == _layout(store)


def test_an_interrupted_sync_keeps_what_it_fetched(tmp_path, store, cache, monkeypatch):
    exp = load_experiment(_write_experiment(tmp_path, f"{{root: '{store.as_uri()}'}}"))
    real = Storage.download
    broken = "val2017/" + sorted(p.name for p in (store / "val2017").iterdir())[0]

    def failing(self: Storage, rel: str, dst: Path) -> Path:
        if rel == broken:
            raise StorageError(f"cannot read {rel}: connection reset")
        return real(self, rel, dst)

    monkeypatch.setattr(Storage, "download", failing)
    with pytest.raises(DataError) as e:
        ensure_data(exp)
    assert e.value.key == "data.root" and "connection reset" in str(e.value) and "\n" not in str(e.value)
    kept = json.loads((exp.data.root / MANIFEST).read_text())["files"]
    assert broken not in kept and kept  # the files fetched before the failure are recorded
    assert all((exp.data.root / rel).is_file() for rel in kept)

    calls: list[str] = []
    monkeypatch.setattr(Storage, "download", lambda self, rel, dst: (calls.append(rel), real(self, rel, dst))[1])
    ensure_data(exp)
    assert broken in calls and sorted(calls) == sorted(set(_layout(store)) - set(kept))
    assert _files(exp.data.root) == _layout(store)


def test_the_training_set_loads_from_the_cache(tmp_path, store, cache):
    exp = load_experiment(_write_experiment(tmp_path, f"{{root: '{store.as_uri()}'}}"))
    ensure_data(exp)
    shutil.rmtree(store)  # nothing is read from the store any more
    dataset = train_dataset(exp)
    assert len(dataset) > 0 and dataset[0]["image"].shape[0] == 3


@pytest.mark.parametrize("make", ["missing", "empty", "no annotations"])
def test_a_source_without_annotations_is_one_data_error_naming_data_root(tmp_path, store, cache, make):
    source = tmp_path / "elsewhere"
    if make == "empty":
        source.mkdir()
    elif make == "no annotations":
        shutil.copytree(store / "train2017", source / "train2017")
    path = _write_experiment(tmp_path / "exp", f"{{root: '{source.as_uri()}'}}")
    with pytest.raises(DataError) as e:
        ensure_data(load_experiment(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}: data.root: no COCO-WholeBody annotations under {source.as_uri()}")
    assert "\n" not in msg
    with pytest.raises(DataError, match="no COCO-WholeBody annotations under"):
        check_source(source.as_uri())
    check_source(store.as_uri())  # the preflight's check passes for a complete source


def _sync_in_child(experiment, barrier, out: str) -> None:
    """A spawned process: wait for the other, sync, record the files this process fetched."""
    fetched: list[str] = []
    real = Storage.download

    def counting(self: Storage, rel: str, dst: Path) -> Path:
        fetched.append(rel)
        time.sleep(0.01)  # give the other process time to arrive while this one holds the lock
        return real(self, rel, dst)

    Storage.download = counting
    barrier.wait()
    ensure_data(experiment)
    Path(out).write_text(json.dumps(fetched))


def test_two_processes_of_a_node_fetch_each_file_once(tmp_path, store, cache):
    exp = load_experiment(_write_experiment(tmp_path, f"{{root: '{store.as_uri()}'}}"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [tmp_path / f"fetched{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_sync_in_child, args=(exp, barrier, str(out))) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    fetched = [json.loads(out.read_text()) for out in outs]
    assert sorted(fetched[0] + fetched[1]) == sorted(_layout(store))  # one download of each file
    assert [] in fetched  # the second found the copy up to date
    assert _files(exp.data.root) == _layout(store)


# --- an S3 endpoint ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint():
    if shutil.which("moto_server") is None:
        pytest.skip("moto_server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.skip("moto_server did not start")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_data_set_in_s3_is_synced_the_same_way(tmp_path, store, cache, moto_endpoint, monkeypatch, downloads):
    boto3 = pytest.importorskip("boto3")
    for name, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(nasplat.storage, "_filesystems", {})
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="nasplat-data")
    for p in sorted(store.rglob("*")):
        if p.is_file():
            s3.upload_file(str(p), "nasplat-data", f"sets/coco_wholebody/{p.relative_to(store).as_posix()}")

    exp = load_experiment(_write_experiment(tmp_path, "{root: 's3://nasplat-data/sets/coco_wholebody'}"))
    assert sorted(list_source(Storage(exp.data.source))) == sorted(_layout(store))
    ensure_data(exp)
    assert sorted(downloads) == sorted(_layout(store)) and _files(exp.data.root) == _layout(store)
    downloads.clear()
    ensure_data(exp)
    assert downloads == []

    rel = sorted(_layout(store))[-1]
    s3.put_object(Bucket="nasplat-data", Key=f"sets/coco_wholebody/{rel}", Body=b"new bytes")
    ensure_data(exp)
    assert downloads == [rel] and (exp.data.root / rel).read_bytes() == b"new bytes"

    missing = load_experiment(_write_experiment(tmp_path / "missing", "{root: 's3://nasplat-data/nothing'}"))
    with pytest.raises(DataError, match=r"data.root: no COCO-WholeBody annotations under s3://nasplat-data/nothing"):
        ensure_data(missing)


# --- the synthetic set -------------------------------------------------------------------------


def test_synthetic_generation_writes_the_same_bytes_every_time(tmp_path):
    """Every node generates its own copy: the val set each evaluator scores must be the same."""
    generate_dataset(tmp_path / "a", 6, 3, seed=0)
    generate_dataset(tmp_path / "b", 6, 3, seed=0)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b and len(a) == 2 + 6 + 3  # two annotation files, one image per train / val image
    generate_dataset(tmp_path / "c", 6, 3, seed=1)
    assert _files(tmp_path / "c") != a
