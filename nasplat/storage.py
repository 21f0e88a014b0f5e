"""Where an experiment's durable files live: one storage root named by one URI (`storage_path`).

A cluster's nodes share no disk; they share an object store (S3, GCS, or an S3-compatible store
such as MinIO or Ceph) or an NFS folder. `Storage` is that place as one URI: a local or NFS folder
(the default is the experiment's `output_dir`), `s3://bucket/prefix` or `gs://bucket/prefix`. It
reaches it through pyarrow's filesystem layer, the one Ray Train and Tune use for their own
`storage_path`, so one URI means the same thing to nasplat, Ray and MLflow. Object stores are
reached with their standard variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`; Google's application credentials): nasplat has no
credential settings of its own, and a URI is shown only through `redacted()`.

What goes under it (paths relative to the root): `checkpoints/` (the supernet), `ray/` (Ray Train's
run), `retrain/` (Tune's sweeps), `exports/`, `latency_lut.json`, `mlartifacts/` (the artifact
location of a local MLflow store). A node that needs a file copies it once into its node-local
cache (`cached`), fetched again when the stored object changes.

A leaf module: it imports only `nasplat.errors`, `nasplat.files`, `nasplat.interrupt` and, lazily,
pyarrow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from nasplat.errors import ConfigError, StorageError
from nasplat.files import atomic_write, atomic_write_bytes, atomic_write_json
from nasplat.interrupt import run_in_thread

# Object stores pyarrow reaches from a URI alone; `file://` and plain paths are folders.
REMOTE_SCHEMES = ("s3", "gs")
SCHEMES = ("file", *REMOTE_SCHEMES)
PROBE_TIMEOUT_S = 10.0  # a storage root that does not answer within this is an error
CACHE_ENV = "NASPLAT_CACHE_DIR"  # node-local cache; default ~/.cache/nasplat
# Attempts per S3 request (AWS's "standard" retry mode). pyarrow's from_uri default retries an
# endpoint that accepts and never answers for about 100 s, and the interpreter waits for that
# request before it exits, so a timed-out probe would still hold a command up for minutes.
S3_ATTEMPTS = 3

T = TypeVar("T")

_filesystems: dict[str, tuple[Any, str]] = {}
_fs_lock = threading.Lock()


_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#@\s'\"]*)@")


def _redact(text: str) -> str:
    """`text` (a URI, or a message quoting one) without a password or secret key in any URI's user
    part: `s3://KEY:SECRET@bucket` becomes `s3://KEY:***@bucket`, `s3://TOKEN@bucket` `s3://***@bucket`."""

    def hide(m: re.Match[str]) -> str:
        user = m["user"]
        return f"{m['scheme']}{user.split(':', 1)[0]}:***@" if ":" in user else f"{m['scheme']}***@"

    return _USER_INFO.sub(hide, text)


def cache_root() -> Path:
    """This node's cache folder for copies of stored files (`$NASPLAT_CACHE_DIR`, else
    `~/.cache/nasplat`)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nasplat")


def call_with_timeout(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """`fn()` waited for at most `timeout_s` (`interrupt.run_in_thread`). Raises StorageError when
    it did not finish (an endpoint that never answers must not hang a command)."""
    try:
        return run_in_thread(fn, "storage-probe", timeout_s=timeout_s)
    except TimeoutError:
        raise StorageError(f"{what}: no answer within {timeout_s:g} s") from None


@dataclass(frozen=True)
class Storage:
    """An experiment's storage root. `uri` is an absolute local path or `scheme://bucket/prefix`
    (no trailing slash). Picklable: the filesystem object is made per process, on first use."""

    uri: str

    # --- what it is ------------------------------------------------------------------------------
    @classmethod
    def parse(cls, value: str | Path, base: Path, *, source: str | None = None, key: str = "storage_path") -> "Storage":
        """The storage root named by `value`: an object-store URI, a `file://` URI, or a path (a
        relative one is resolved against `base`). Raises ConfigError (naming `source` and `key`)
        for an unknown scheme or a URI without a bucket."""
        text = str(value).strip()
        if not text:
            raise ConfigError("is empty; give a folder, s3://bucket/prefix or gs://bucket/prefix", source=source, key=key)
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if "://" not in text or len(scheme) == 1:  # a path (a Windows drive letter is not a scheme)
            p = Path(text).expanduser()
            return cls(str(p if p.is_absolute() else (base / p).resolve()))
        if scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {scheme + '://'!r} in {_redact(text)!r}; allowed: a folder, "
                              + ", ".join(f"{s}://" for s in SCHEMES), source=source, key=key)
        if scheme == "file":
            return cls(str(Path(parts.path).resolve()))
        if not parts.netloc:
            raise ConfigError(f"{_redact(text)!r} names no bucket; write {scheme}://bucket/prefix", source=source, key=key)
        return cls(text.rstrip("/"))

    @property
    def local(self) -> Path | None:
        """The folder, when the root is a local or NFS folder; None for an object store."""
        return None if "://" in self.uri else Path(self.uri)

    @property
    def is_remote(self) -> bool:
        return self.local is None

    def redacted(self) -> str:
        return _redact(self.uri)

    def join(self, *parts: str) -> str:
        """The URI (or path) of `parts` under the root. A URI's query (pyarrow's `?region=...`,
        `?endpoint_override=...`) stays at the end."""
        rel = "/".join(p.strip("/") for p in parts if p)
        if not rel:
            return self.uri
        if self.local is not None:
            return str(self.local / rel)
        base, sep, query = self.uri.partition("?")
        return f"{base.rstrip('/')}/{rel}{sep}{query}"

    def show(self, *parts: str) -> str:
        """`join(*parts)` as it may be shown (redacted)."""
        return _redact(self.join(*parts))

    def __str__(self) -> str:
        return self.redacted()

    # --- the filesystem --------------------------------------------------------------------------
    def filesystem(self) -> tuple[Any, str]:
        """(pyarrow FileSystem, the root's path in it), made once per process and URI; an S3
        filesystem makes at most `S3_ATTEMPTS` attempts per request. Raises StorageError when
        pyarrow cannot make one (bad URI, missing credentials helper, an S3 region it cannot
        look up)."""
        with _fs_lock:
            if self.uri not in _filesystems:
                import pyarrow.fs as pafs

                try:
                    if self.local is not None:
                        _filesystems[self.uri] = (pafs.LocalFileSystem(), str(self.local))
                    else:
                        fs, path = pafs.FileSystem.from_uri(self.uri)
                        if isinstance(fs, pafs.S3FileSystem):
                            fs = _bounded_retries(fs)
                        _filesystems[self.uri] = (fs, path.rstrip("/"))
                except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
                    raise StorageError(f"cannot open {self.redacted()}: {_first_line(e, self.uri)}",
                                       key="storage_path") from e
            return _filesystems[self.uri]

    def _path(self, rel: str) -> tuple[Any, str]:
        fs, root = self.filesystem()
        rel = rel.strip("/")
        return fs, f"{root}/{rel}" if rel else root

    def _wrap(self, what: str, rel: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - pyarrow's OSError / ArrowException: one line
            raise StorageError(f"cannot {what} {self.show(rel)}: {_first_line(e, self.uri)}", key="storage_path") from e

    # --- files and folders -------------------------------------------------------------------------
    def stat(self, rel: str) -> tuple[int, int] | None:
        """(size, mtime in ns) of the file `rel`, or None when there is none (a folder is None)."""
        import pyarrow.fs as pafs

        def go() -> tuple[int, int] | None:
            fs, path = self._path(rel)
            info = fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                return None
            mtime = info.mtime_ns if info.mtime_ns is not None else 0
            return int(info.size or 0), int(mtime)

        return self._wrap("read", rel, go)

    def exists(self, rel: str) -> bool:
        import pyarrow.fs as pafs

        def go() -> bool:
            fs, path = self._path(rel)
            return fs.get_file_info(path).type != pafs.FileType.NotFound

        return self._wrap("read", rel, go)

    def read_bytes(self, rel: str) -> bytes:
        def go() -> bytes:
            fs, path = self._path(rel)
            with fs.open_input_stream(path) as f:
                return f.read()

        return self._wrap("read", rel, go)

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write one file whole: a folder's file goes to a temporary name first and is renamed
        (an object store's put is atomic by itself). Returns its URI."""
        if self.local is not None:
            target = self.local / rel
            self._wrap("write", rel, lambda: atomic_write_bytes(data, target))
            return str(target)

        def go() -> None:
            fs, path = self._path(rel)
            with fs.open_output_stream(path) as f:
                f.write(data)

        self._wrap("write", rel, go)
        return self.join(rel)

    def upload(self, src: Path, rel: str) -> str:
        """Copy a local file or folder to `rel` under the root (a folder's files replace those of
        the same name). Nothing is copied when `src` already is that place. Returns its URI."""
        target = self.join(rel)
        if self.local is not None and Path(target).resolve() == src.resolve():
            return target
        if src.is_dir():
            files = [p for p in sorted(src.rglob("*")) if p.is_file()]
            for p in files:
                self.upload(p, f"{rel.strip('/')}/{p.relative_to(src).as_posix()}")
            return target
        if self.local is not None:
            with src.open("rb") as f:
                self._wrap("write", rel, lambda: atomic_write(target, lambda out: shutil.copyfileobj(f, out)))
            return target

        def go() -> None:
            import pyarrow.fs as pafs

            fs, path = self._path(rel)
            pafs.copy_files(str(src), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

        self._wrap("write", rel, go)
        return target

    def download(self, rel: str, dst: Path) -> Path:
        """Copy the file `rel` to the local `dst` (whole: a temporary name, then renamed)."""

        def go() -> None:
            fs, path = self._path(rel)
            with fs.open_input_stream(path) as src:
                _save(src, dst)

        self._wrap("read", rel, go)
        return dst

    def list_files(self, rel: str = "") -> dict[str, tuple[int, int]]:
        """{name relative to `rel`: (size, mtime in ns)} of every file below the folder `rel`
        (empty when there is no such folder)."""
        import pyarrow.fs as pafs

        def listing() -> dict[str, tuple[int, int]]:
            fs, path = self._path(rel)
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
            return {i.path[len(path):].lstrip("/"): (int(i.size or 0), int(i.mtime_ns or 0))
                    for i in infos if i.type == pafs.FileType.File}

        return self._wrap("list", rel, listing)

    def download_dir(self, rel: str, dst: Path) -> Path:
        """Copy the folder `rel` (every file below it) to the local folder `dst`."""
        for name in self.list_files(rel):
            self.download(f"{rel.strip('/')}/{name}", dst / name)
        return dst

    def delete(self, rel: str) -> None:
        """Delete the file or folder `rel` (nothing when absent)."""
        import pyarrow.fs as pafs

        def go() -> None:
            fs, path = self._path(rel)
            kind = fs.get_file_info(path).type
            if kind == pafs.FileType.Directory:
                fs.delete_dir(path)
            elif kind == pafs.FileType.File:
                fs.delete_file(path)

        self._wrap("delete", rel, go)

    def cached(self, rel: str) -> Path | None:
        """A local path of the file `rel` on this node: the file itself for a folder root; for an
        object store a copy in this node's cache (`cache_root()`), fetched again when the stored
        object changed (its ETag, size or modification time). None when there is no such file.
        Raises StorageError when the store cannot be read."""
        if self.local is not None:
            p = self.local / rel
            return p if p.is_file() else None
        import pyarrow.fs as pafs

        key = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        local = cache_root() / "storage" / key / rel.strip("/")
        source = local.with_name(local.name + ".source.json")

        def go() -> Path | None:
            fs, path = self._path(rel)
            try:
                src = fs.open_input_stream(path)  # S3: one HEAD; the bytes are read only when fetched
            except FileNotFoundError:
                return None
            with src:
                # The version is read from the stream that is copied, so the copy is of the version
                # recorded. S3's modification time has whole seconds: an object rewritten within
                # one second with the same size differs only in its ETag.
                meta = src.metadata()
                want: dict[str, Any] = {"uri": self.redacted(), "etag": _text(meta.get("ETag"))}
                if not want["etag"]:  # a store that sends no ETag: size and modification time
                    info = fs.get_file_info(path)
                    if info.type != pafs.FileType.File:
                        return None
                    want |= {"size": int(info.size or 0), "mtime_ns": int(info.mtime_ns or 0)}
                else:
                    want |= {"size": _text(meta.get("Content-Length")),
                             "modified": _text(meta.get("Last-Modified"))}
                try:
                    if local.is_file() and json.loads(source.read_text()) == want:
                        return local
                except (OSError, ValueError):
                    pass
                _save(src, local)
                atomic_write_json(want, source)
            return local

        return self._wrap("read", rel, go)

    # --- preflight ---------------------------------------------------------------------------------
    def probe(self, *, timeout_s: float = PROBE_TIMEOUT_S, write: bool = True) -> float:
        """Check that the root can be written, read back and deleted (a small probe object under
        `.nasplat-probe-*` at the root), or only listed when not `write`. Returns the seconds it took. Raises
        StorageError naming `storage_path` and the (redacted) URI: no such bucket, wrong
        credentials, an endpoint that is down or does not answer within `timeout_s`."""
        start = time.monotonic()
        # one file at the root, no folder: deleting it leaves nothing behind (an object store keeps
        # a folder's marker), and nodes probing at once never touch each other's object
        name = f".nasplat-probe-{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        payload = uuid.uuid4().hex.encode()

        def go() -> None:
            if self.local is not None:
                if not write:
                    if not self.local.is_dir():
                        raise StorageError(f"folder {self.local} does not exist", key="storage_path")
                    return
                try:
                    self.local.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise StorageError(f"cannot create the folder {self.local}: {e.strerror or e}",
                                       key="storage_path") from e
            if not write:
                # A listing, not a lookup: a lookup of a path in a missing bucket answers "no such
                # file", a listing "no such bucket". An empty prefix is no error.
                self._wrap("list", "", self._list_top)
                return
            self.write_bytes(name, payload)
            if self.read_bytes(name) != payload:
                raise StorageError(f"{self.redacted()}: a probe object read back different bytes", key="storage_path")
            self.delete(name)

        where = f"storage {self.redacted()}"
        if self.uri.startswith("s3://"):
            where += f" at {_endpoint(self.uri)}"
        try:
            call_with_timeout(go, timeout_s, where)
        except StorageError as e:
            if e.key is None:
                raise StorageError(e.detail, key="storage_path") from e
            raise
        except Exception as e:  # noqa: BLE001 - anything else the probe met is still one line
            raise StorageError(f"{where}: {_first_line(e, self.uri)}", key="storage_path") from e
        return time.monotonic() - start

    def _list_top(self) -> None:
        import pyarrow.fs as pafs

        fs, root = self.filesystem()
        try:
            fs.get_file_info(pafs.FileSelector(root, recursive=False, allow_not_found=False))
        except FileNotFoundError:
            pass


def _bounded_retries(fs: Any) -> Any:
    """`fs` (an S3FileSystem from `from_uri`) made again with `S3_ATTEMPTS` attempts per request.
    `from_uri` takes no retry option; the options it read from the URI and the environment are
    read back through pickling's `__reduce__`, the one public view of them (a test checks that a
    URI's region and endpoint survive)."""
    import pyarrow.fs as pafs

    _, (options,) = fs.__reduce__()
    return pafs.S3FileSystem(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS))


def _save(src: Any, dst: Path) -> None:
    """Copy the open input stream `src` to `dst` whole (`files.atomic_write`; a node's copy of a
    stored file, so not fsynced: a crash only costs fetching it again)."""

    def copy(out: Any) -> None:
        while chunk := src.read(8 << 20):
            out.write(chunk)

    atomic_write(dst, copy, fsync=False)


def _text(value: bytes | str | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _endpoint(uri: str = "") -> str:
    """The S3 endpoint requests for `uri` go to, named by the setting that chose it."""
    override = parse_qs(urlsplit(uri).query).get("endpoint_override")
    if override:
        return f"{_redact(override[0])} (endpoint_override in storage_path)"
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):  # pyarrow's order: the S3 one first
        if os.environ.get(var):
            return f"{_redact(os.environ[var])} ({var})"
    return "the default endpoint (AWS_ENDPOINT_URL)"


_AWS_ERROR = re.compile(r"AWS Error (?P<code>[A-Z_]+)")
_BUCKET = re.compile(r"in bucket '(?P<bucket>[^']*)'")
_CURL = re.compile(r"curlCode: \d+, (?P<reason>[^;(]+)")
# The store did not accept who we are (or how we signed): fixed by the credential variables.
_CREDENTIAL_ERRORS = frozenset({
    "ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "INVALID_SIGNATURE",
    "INCOMPLETE_SIGNATURE", "INVALID_CLIENT_TOKEN_ID", "MISSING_AUTHENTICATION_TOKEN",
    "UNRECOGNIZED_CLIENT",
})
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _cause(message: str, uri: str = "") -> str:
    """A pyarrow error message as one short line that names what to fix: a missing bucket, refused
    credentials, an S3 endpoint that cannot be reached; else the message's first line without its
    request id and transport detail. URI secrets and the secret-key variables' values are hidden."""
    aws = _AWS_ERROR.search(message)
    code = aws["code"] if aws else ""
    if code == "NO_SUCH_BUCKET":
        bucket = _BUCKET.search(message)
        line = f"bucket {bucket['bucket']!r} does not exist" if bucket else "the bucket does not exist"
    elif code in _CREDENTIAL_ERRORS or "HTTP status 403" in message or (aws and "credential" in message.lower()):
        line = "the store refused the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    elif code == "NETWORK_CONNECTION" or "curlCode:" in message:
        curl = _CURL.search(message)
        line = f"cannot connect to {_endpoint(uri)}" + (f": {curl['reason'].strip().lower()}" if curl else "")
    else:
        text = message.strip()
        line = text.splitlines()[0] if text else ""
        if "AWS Error" in line:  # "When <doing> for key 'k' in bucket 'b': ...": the caller names the place
            line = line[line.index("AWS Error"):]
        # pyarrow's errors carry a request id and a long transport detail: the cause is enough
        for cut in (" (Request ID:", "; Details:", ". Detail:"):
            line = line.split(cut)[0]
    for var in _SECRET_ENV:
        secret = os.environ.get(var, "")
        if len(secret) >= 8:  # a short value would hide ordinary words
            line = line.replace(secret, "***")
    return _redact(line)


def _first_line(error: BaseException, uri: str = "") -> str:
    """`error` as one short line (see `_cause`)."""
    return _cause(str(error), uri) or type(error).__name__


__all__ = ["CACHE_ENV", "PROBE_TIMEOUT_S", "S3_ATTEMPTS", "SCHEMES", "Storage", "cache_root", "call_with_timeout"]
