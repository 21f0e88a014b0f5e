"""The storage root (`nasplat.storage`): one contract run over a folder and an S3 store (moto's
server, reached through the standard AWS_* variables as a MinIO or Ceph endpoint would be), and
the errors a user meets at preflight, each one line naming `storage_path` and what to fix."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nasplat import storage as storage_module
from nasplat.errors import ConfigError, StorageError
from nasplat.storage import PROBE_TIMEOUT_S, SCHEMES, Storage

from tests.conftest import BUCKET, free_port as _free_port

MISSING_BUCKET = "no-such-bucket-xyz"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_filesystems() -> Iterator[None]:
    """pyarrow filesystems are made once per process and URI, with the environment of that
    moment: a test that changes the environment must not meet another test's."""
    storage_module._filesystems.clear()
    yield
    storage_module._filesystems.clear()


@pytest.fixture(params=["folder", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """A fresh storage root: a folder, or a prefix of its own in moto's bucket."""
    if request.param == "folder":
        monkeypatch.setenv("NASPLAT_CACHE_DIR", str(tmp_path / "cache"))
        return Storage.parse(tmp_path / "root", tmp_path)
    request.getfixturevalue("aws_env")
    return Storage.parse(f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}", tmp_path)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a hung proxy or server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)  # so that the accepting thread sees `done` (a close does not wake accept)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    done.set()
    thread.join(5)
    server.close()
    for conn in held:
        conn.close()


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text, text
    assert "Traceback" not in text
    return text


# --- what a URI names --------------------------------------------------------------------------------
def test_parse_resolves_a_relative_path_against_base(tmp_path: Path) -> None:
    s = Storage.parse("out/run", tmp_path)
    assert s.uri == str((tmp_path / "out" / "run").resolve())
    assert s.local == (tmp_path / "out" / "run").resolve()
    assert not s.is_remote


def test_parse_keeps_an_absolute_path_and_reads_a_file_uri(tmp_path: Path) -> None:
    assert Storage.parse(str(tmp_path / "a"), Path("/elsewhere")).local == tmp_path / "a"
    assert Storage.parse(f"file://{tmp_path}/b", Path("/elsewhere")).local == tmp_path / "b"


@pytest.mark.parametrize(("text", "uri"), [
    ("s3://bucket/some/prefix/", "s3://bucket/some/prefix"),
    ("s3://bucket", "s3://bucket"),
    ("gs://bucket/prefix", "gs://bucket/prefix"),
])
def test_parse_an_object_store_uri(tmp_path: Path, text: str, uri: str) -> None:
    s = Storage.parse(text, tmp_path)
    assert s.uri == uri
    assert s.is_remote and s.local is None


def test_parse_rejects_an_unknown_scheme_naming_the_key_and_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Storage.parse("ftp://x", tmp_path, source="exp.yaml")
    message = _one_line(info.value)
    assert info.value.key == "storage_path"
    assert message.startswith("exp.yaml: storage_path: ")
    assert "'ftp://'" in message
    assert all(f"{scheme}://" in message for scheme in SCHEMES)


@pytest.mark.parametrize("text", ["s3://", "s3:///prefix", "gs://"])
def test_parse_rejects_a_uri_without_a_bucket(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="names no bucket") as info:
        Storage.parse(text, tmp_path)
    assert info.value.key == "storage_path"


def test_parse_rejects_an_empty_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        Storage.parse("  ", tmp_path)


def test_redacted_hides_secrets_in_the_uri(tmp_path: Path) -> None:
    s = Storage.parse("s3://AKIAKEY:VerySecret1@bucket/prefix", tmp_path)
    assert s.redacted() == "s3://AKIAKEY:***@bucket/prefix"
    assert str(s) == s.redacted()
    assert "VerySecret1" not in s.show("checkpoints", "last.pt")
    assert Storage("s3://TOKENONLY@bucket").redacted() == "s3://***@bucket"
    with pytest.raises(ConfigError) as info:
        Storage.parse("ftp://user:VerySecret1@host/x", tmp_path)
    assert "VerySecret1" not in str(info.value)


def test_join(tmp_path: Path) -> None:
    folder = Storage.parse(tmp_path, tmp_path)
    assert folder.join("a", "b/") == str(tmp_path / "a" / "b")
    assert folder.join() == folder.uri
    s3 = Storage("s3://bucket/prefix")
    assert s3.join("checkpoints", "/last.pt") == "s3://bucket/prefix/checkpoints/last.pt"
    assert s3.join("", "x") == "s3://bucket/prefix/x"
    assert Storage("s3://bucket").join("x") == "s3://bucket/x"
    # pyarrow reads options from a URI's query: a path goes before it
    assert Storage("s3://bucket/p?region=eu-west-1").join("x") == "s3://bucket/p/x?region=eu-west-1"


# --- the same contract on a folder and an object store ---------------------------------------------------
def test_write_read_stat_exists(root: Storage) -> None:
    uri = root.write_bytes("a/b.bin", b"hello")
    assert uri == root.join("a/b.bin")
    assert root.read_bytes("a/b.bin") == b"hello"
    size, mtime_ns = root.stat("a/b.bin")
    assert size == 5 and mtime_ns > 0
    assert root.exists("a/b.bin") and root.exists("a")
    assert root.stat("a") is None  # a folder is no file
    assert root.stat("missing.bin") is None and not root.exists("missing.bin")
    root.write_bytes("a/b.bin", b"replaced")
    assert root.read_bytes("a/b.bin") == b"replaced"


def test_read_of_a_missing_file_is_one_line_storage_error(root: Storage) -> None:
    with pytest.raises(StorageError) as info:
        root.read_bytes("missing.bin")
    assert info.value.key == "storage_path"
    assert root.show("missing.bin") in _one_line(info.value)


def test_upload_a_file_and_a_tree_then_download(root: Storage, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "top.txt").write_bytes(b"top")
    (src / "sub" / "mid.txt").write_bytes(b"mid")
    (src / "sub" / "deeper" / "low.bin").write_bytes(bytes(range(256)) * 10)

    assert root.upload(src / "top.txt", "one/file.txt") == root.join("one/file.txt")
    assert root.read_bytes("one/file.txt") == b"top"
    assert root.upload(src, "tree") == root.join("tree")
    assert root.read_bytes("tree/sub/deeper/low.bin") == bytes(range(256)) * 10

    got = root.download("one/file.txt", tmp_path / "got" / "file.txt")
    assert got.read_bytes() == b"top"
    assert not [p for p in got.parent.iterdir() if p.name.endswith(".part")]

    out = root.download_dir("tree", tmp_path / "out")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "sub/deeper/low.bin", "sub/mid.txt", "top.txt"]
    assert (out / "sub" / "mid.txt").read_bytes() == b"mid"


def test_delete_a_file_a_folder_and_nothing(root: Storage, tmp_path: Path) -> None:
    root.write_bytes("keep.txt", b"k")
    root.write_bytes("f.txt", b"f")
    root.write_bytes("dir/x.txt", b"x")
    root.write_bytes("dir/sub/y.txt", b"y")
    root.delete("f.txt")
    assert not root.exists("f.txt")
    root.delete("dir")
    assert not root.exists("dir/x.txt") and not root.exists("dir/sub/y.txt") and not root.exists("dir")
    root.delete("never-was")  # no error
    assert root.read_bytes("keep.txt") == b"k"


def test_cached_fetches_once_and_again_when_the_object_changes(root: Storage) -> None:
    assert root.cached("model.pt") is None
    root.write_bytes("model.pt", b"version-1")
    first = root.cached("model.pt")
    assert first is not None and first.read_bytes() == b"version-1"
    if root.is_remote:
        assert first.is_relative_to(storage_module.cache_root())
    seen = first.stat()
    second = root.cached("model.pt")
    assert second == first
    assert (second.stat().st_ino, second.stat().st_mtime_ns) == (seen.st_ino, seen.st_mtime_ns)  # not fetched again
    # Same size, most likely the same second (an object store's mtime has whole seconds).
    root.write_bytes("model.pt", b"version-2")
    third = root.cached("model.pt")
    assert third is not None and third.read_bytes() == b"version-2"


def test_probe_succeeds_and_leaves_nothing_behind(root: Storage, tmp_path: Path) -> None:
    root.write_bytes("kept.txt", b"k")
    assert root.probe() >= 0.0
    assert root.probe(write=False) >= 0.0
    left = root.download_dir("", tmp_path / "left")
    assert sorted(p.relative_to(left).as_posix() for p in left.rglob("*")) == ["kept.txt"]


def test_a_pickled_storage_works_in_a_fresh_process(root: Storage, tmp_path: Path) -> None:
    root.write_bytes("shared.txt", b"from the driver")
    root.filesystem()  # made in this process; must not travel
    blob = pickle.dumps(root)
    assert b"pyarrow" not in blob and b"FileSystem" not in blob
    assert pickle.loads(blob) == root
    (tmp_path / "storage.pkl").write_bytes(blob)
    code = ("import pickle, sys; s = pickle.load(open(sys.argv[1], 'rb')); "
            "sys.stdout.write(s.read_bytes('shared.txt').decode()); s.write_bytes('back.txt', b'from a worker')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "storage.pkl")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from the driver"
    assert root.read_bytes("back.txt") == b"from a worker"


# --- what a user gets wrong ------------------------------------------------------------------------------------
def test_probe_a_missing_bucket(aws_env: str, tmp_path: Path) -> None:
    s = Storage.parse(f"s3://{MISSING_BUCKET}/p", tmp_path)
    for write in (True, False):
        with pytest.raises(StorageError) as info:
            s.probe(write=write)
        assert info.value.key == "storage_path"
        assert f"bucket '{MISSING_BUCKET}' does not exist" in _one_line(info.value)


def test_probe_an_endpoint_that_is_down(aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    down = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", down)
    s = Storage.parse(f"s3://{BUCKET}/p", tmp_path)
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        s.probe(timeout_s=PROBE_TIMEOUT_S)
    assert time.monotonic() - start < PROBE_TIMEOUT_S + 5
    assert info.value.key == "storage_path"
    assert f"cannot connect to {down} (AWS_ENDPOINT_URL)" in _one_line(info.value)


def test_probe_an_endpoint_that_never_answers(aws_env: str, silent_endpoint: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent_endpoint)
    s = Storage.parse(f"s3://{BUCKET}/p", tmp_path)
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        s.probe(timeout_s=2)
    assert time.monotonic() - start < 3.0
    assert info.value.key == "storage_path"
    message = _one_line(info.value)
    assert "no answer within 2 s" in message and silent_endpoint in message
    # The abandoned request gives up by itself (a bounded number of attempts), so it does not hold
    # up the interpreter's exit: pyarrow's default would retry for about 100 s.
    probes = [t for t in threading.enumerate() if t.name == "nasplat-storage-probe"]
    deadline = time.monotonic() + 30
    for t in probes:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in probes)


def test_probe_a_folder_that_cannot_be_created() -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    with pytest.raises(StorageError) as info:
        Storage("/proc/nasplat-test/root").probe()
    assert info.value.key == "storage_path"
    assert "cannot create the folder /proc/nasplat-test/root" in _one_line(info.value)
    with pytest.raises(StorageError, match="does not exist"):
        Storage("/proc/nasplat-test/root").probe(write=False)


def test_no_error_shows_the_secret_key(aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    errors: list[StorageError] = []
    for action in (
        lambda: Storage.parse(f"s3://{MISSING_BUCKET}/p", tmp_path).probe(),
        lambda: Storage.parse(f"s3://{BUCKET}/p", tmp_path).read_bytes("missing"),
        # pyarrow quotes a URI it cannot parse whole, user part included
        lambda: Storage(f"s3://AKIAKEY:{secret}@{BUCKET}/p?region=%zz").probe(),
        lambda: Storage(f"s3://AKIAKEY:{secret}@{BUCKET}/p?bogus=1").read_bytes("x"),
    ):
        with pytest.raises(StorageError) as info:
            action()
        errors.append(info.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    storage_module._filesystems.clear()
    with pytest.raises(StorageError) as info:
        Storage.parse(f"s3://{BUCKET}/p", tmp_path).probe()
    errors.append(info.value)
    for e in errors:
        assert secret not in _one_line(e)
        assert secret not in repr(e.args)


def test_pyarrow_options_from_the_uri_survive_the_bounded_retries(aws_env: str) -> None:
    """`filesystem()` rebuilds pyarrow's S3 filesystem from its pickling state: this fails when
    pyarrow changes that state underneath it."""
    import pyarrow.fs as pafs

    fs, path = Storage("s3://bucket/p?region=eu-west-1&endpoint_override=127.0.0.1:9&scheme=http").filesystem()
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/p"
    assert fs.region == "eu-west-1"
    options = fs.__reduce__()[1][0]
    assert (options["endpoint_override"], options["scheme"]) == ("127.0.0.1:9", "http")


# --- pyarrow's messages, shortened to what to fix ------------------------------------------------------------
# Samples as pyarrow 25 words them (moto's server with IAM checks on, a closed port, a silent one).
DENIED = ("When getting information for key 'p/x' in bucket 'bkt': AWS Error ACCESS_DENIED during HeadObject "
          "operation: No response body.")
BAD_KEY = ("When initiating multiple part upload for key 'p/x' in bucket 'bkt': AWS Error INVALID_ACCESS_KEY_ID during "
           "CreateMultipartUpload operation: The AWS Access Key Id you provided does not exist in our records. "
           "(Request ID: yRO5y56Uo1iWBzyzPyo5GEaB7tWmDJqCC91WckB1tjHwyEr20hEW)")
BAD_SIGNATURE = ("When listing objects under key 'p/' in bucket 'bkt': AWS Error SIGNATURE_DOES_NOT_MATCH during "
                 "ListObjectsV2 operation: The request signature we calculated does not match the signature you "
                 "provided. (Request ID: 4442587FB7D0A2F9)")
NO_BUCKET = ("When initiating multiple part upload for key 'p/x' in bucket 'no-such-bucket-xyz': AWS Error "
             "NO_SUCH_BUCKET during CreateMultipartUpload operation: The specified bucket does not exist "
             "(Request ID: 2JoMgxGbyGajFXSDPZII0ZoQ510UD6phsKBorpbVHzrjv0BPipJT)")
REFUSED = ("When getting information for key 'p' in bucket 'bkt': AWS Error NETWORK_CONNECTION during HeadObject "
           "operation: curlCode: 7, Could not connect to server; Details: Failed to connect to 127.0.0.1 port 1 "
           "after 0 ms: Could not connect to server")
TIMED_OUT = ("When getting information for key 'p' in bucket 'bkt': AWS Error NETWORK_CONNECTION during HeadObject "
             "operation: curlCode: 28, Timeout was reached; Details: Operation too slow. Less than 1 bytes/sec "
             "transferred the last 3 seconds")
CREDENTIALS = "the store refused the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"


@pytest.mark.parametrize("message", [DENIED, BAD_KEY, BAD_SIGNATURE])
def test_refused_credentials_name_the_variables(message: str) -> None:
    assert storage_module._cause(message) == CREDENTIALS


def test_a_missing_bucket_is_named() -> None:
    assert storage_module._cause(NO_BUCKET) == "bucket 'no-such-bucket-xyz' does not exist"


def test_a_connection_error_names_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.internal:9000")
    assert storage_module._cause(REFUSED) == (
        "cannot connect to http://minio.internal:9000 (AWS_ENDPOINT_URL): could not connect to server")
    assert storage_module._cause(TIMED_OUT) == (
        "cannot connect to http://minio.internal:9000 (AWS_ENDPOINT_URL): timeout was reached")
    assert storage_module._cause(REFUSED, "s3://b/p?endpoint_override=ceph:7480").startswith(
        "cannot connect to ceph:7480 (endpoint_override in storage_path)")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert storage_module._cause(REFUSED).startswith("cannot connect to the default endpoint (AWS_ENDPOINT_URL)")


def test_other_errors_keep_their_cause_without_the_transport_detail() -> None:
    slow = ("When uploading part for key 'p/x' in bucket 'bkt': AWS Error SLOW_DOWN during UploadPart operation: "
            "Please reduce your request rate. (Request ID: ABC)")
    assert storage_module._cause(slow) == (
        "AWS Error SLOW_DOWN during UploadPart operation: Please reduce your request rate.")
    missing = "[Errno 2] Path does not exist 'bkt/p/x'. Detail: [errno 2] No such file or directory"
    assert storage_module._cause(missing) == "[Errno 2] Path does not exist 'bkt/p/x'"
