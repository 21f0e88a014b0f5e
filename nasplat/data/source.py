"""A data set in an object store (`data.root: s3://bucket/prefix`), copied into a local folder.

Nodes of a cluster share no disk; each copies the data set once into its node-local cache and
reads it from there (`nasplat.train.data.ensure_data` calls `sync_data` under a node-local lock).
What is copied is what the COCO-WholeBody layout reads (`nasplat.data.coco`): the two annotation
files and every file below `train2017/` and `val2017/`; anything else under the prefix (other
annotation files, `test2017/`) is left in the store. A manifest in the local folder records the
size and modification time each copied file had in the store: a later sync fetches only files
that are new or changed there and deletes the copies of files that are gone.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasplat.data.coco import annotation_path, image_dir
from nasplat.errors import DataError, NasplatError
from nasplat.files import atomic_write_json
from nasplat.storage import Storage

log = logging.getLogger(__name__)

MANIFEST = ".nasplat-source.json"  # in the local folder, written after the files it lists
DOWNLOAD_THREADS = 16  # one object at a time would take hours for COCO's 118k images
CHECKPOINT_S = 30.0  # a long sync saves what it has fetched this often (an interrupted one resumes)

ANNOTATIONS = tuple(annotation_path("", split).as_posix() for split in ("train", "val"))
IMAGE_DIRS = tuple(image_dir("", split).as_posix() for split in ("train", "val"))

Entry = tuple[int, int]  # (size in bytes, modification time in ns) as the store reports it


@dataclass(frozen=True)
class SyncReport:
    """What one sync did."""

    fetched: int  # files downloaded
    bytes: int  # their size
    deleted: int  # local copies of files gone from the store
    files: int  # files in the data set
    seconds: float


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def list_source(store: Storage) -> dict[str, Entry]:
    """{relative name: (size, mtime_ns)} of the data set's files under `store` (the annotation
    files and the image folders; empty when there are none). Raises DataError when the store
    cannot be listed (no such bucket, wrong credentials, endpoint down)."""
    import pyarrow.fs as pafs

    def entry(info: Any) -> Entry:
        return int(info.size or 0), int(info.mtime_ns or 0)

    try:
        fs, root = store.filesystem()
        files: dict[str, Entry] = {}
        for rel, info in zip(ANNOTATIONS, fs.get_file_info([f"{root}/{rel}" for rel in ANNOTATIONS])):
            if info.type == pafs.FileType.File:
                files[rel] = entry(info)
        for folder in IMAGE_DIRS:
            files.update({f"{folder}/{name}": info for name, info in store.list_files(folder).items()})
    except NasplatError as e:
        raise DataError(e.detail) from e
    except Exception as e:  # noqa: BLE001 - pyarrow's OSError / ArrowException: one line
        raise DataError(f"cannot list {store.redacted()}: {_first_line(e)}") from e
    return files


def check_source(source: str) -> None:
    """Check, without listing the images, that the store at the URI `source` answers and holds
    both annotation files (a preflight). Raises DataError saying what is wrong."""
    import pyarrow.fs as pafs

    store, shown = Storage.parse(source, Path("/")), Storage(source).redacted()
    try:
        fs, root = store.filesystem()
        infos = fs.get_file_info([f"{root}/{rel}" for rel in ANNOTATIONS])
    except NasplatError as e:
        raise DataError(e.detail) from e
    except Exception as e:  # noqa: BLE001 - pyarrow's OSError / ArrowException: one line
        raise DataError(f"cannot read {shown}: {_first_line(e)}") from e
    missing = [rel for rel, info in zip(ANNOTATIONS, infos) if info.type != pafs.FileType.File]
    if missing:
        raise DataError(f"no COCO-WholeBody annotations under {shown} (expected {' and '.join(missing)})")


def _read_manifest(path: Path, shown: str) -> dict[str, Entry]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("source") != shown or not isinstance(data.get("files"), dict):
        return {}
    return {rel: (int(e[0]), int(e[1])) for rel, e in data["files"].items()}


def _write_manifest(path: Path, shown: str, files: dict[str, Entry]) -> None:
    atomic_write_json({"source": shown, "files": {rel: list(files[rel]) for rel in sorted(files)}}, path, indent=None)


def _local_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _local_files(root: Path) -> list[str]:
    """The relative names of the local files in the synced part of `root` (the annotation files,
    the image folders, partial downloads left there by a killed process)."""
    names = [rel for rel in ANNOTATIONS if (root / rel).is_file()]
    for folder in IMAGE_DIRS:
        names += [p.relative_to(root).as_posix() for p in (root / folder).rglob("*") if p.is_file()]
    names += [p.relative_to(root).as_posix() for p in (root / "annotations").glob(".*.tmp")]
    return names


def sync_data(source: str, root: Path, *, threads: int = DOWNLOAD_THREADS) -> SyncReport:
    """Make the local folder `root` a copy of the COCO-WholeBody data set at the URI `source`.

    Lists the store, fetches the files that are missing locally or whose size or modification
    time in the store differs from the manifest (each written whole: a partial file never has
    its final name), deletes local files the store no longer has, and writes the manifest last.
    Not safe against a concurrent sync into the same `root`: the caller holds a lock.
    Raises DataError: the store cannot be listed or read, or it has no annotation files.
    """
    start = time.monotonic()
    store = Storage.parse(source, Path("/"))
    shown = Storage(source).redacted()
    listing = list_source(store)
    missing = [rel for rel in ANNOTATIONS if rel not in listing]
    if missing:
        raise DataError(f"no COCO-WholeBody annotations under {shown} (expected {' and '.join(missing)})")

    manifest_path = root / MANIFEST
    old = _read_manifest(manifest_path, shown)
    have = {rel: e for rel, e in old.items()
            if listing.get(rel) == e and _local_size(root / rel) == e[0]}
    fetch = sorted(rel for rel in listing if rel not in have)
    stale = [rel for rel in _local_files(root) if rel not in listing]
    for rel in stale:
        (root / rel).unlink(missing_ok=True)
    if stale or set(old) - set(have):  # the manifest must not list what is gone
        _write_manifest(manifest_path, shown, have)

    fetched_bytes = 0
    if fetch:
        root.mkdir(parents=True, exist_ok=True)
        saved = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="nasplat-data") as pool:
            pending: dict[Future[Path], str] = {pool.submit(store.download, rel, root / rel): rel for rel in fetch}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        rel = pending.pop(future)
                        future.result()
                        have[rel] = listing[rel]
                        fetched_bytes += listing[rel][0]
                    if time.monotonic() - saved > CHECKPOINT_S:
                        _write_manifest(manifest_path, shown, have)
                        saved = time.monotonic()
            except BaseException as e:
                for future in pending:
                    future.cancel()
                pool.shutdown(wait=True)
                for future, rel in pending.items():  # those running when the first failed
                    if not future.cancelled() and future.exception() is None:
                        have[rel] = listing[rel]
                _write_manifest(manifest_path, shown, have)  # what is complete need not come again
                if isinstance(e, NasplatError):
                    raise DataError(f"cannot copy the data set from {shown}: {e.detail}") from e
                raise
    _write_manifest(manifest_path, shown, have)
    report = SyncReport(fetched=len(fetch), bytes=fetched_bytes, deleted=len(stale), files=len(listing),
                        seconds=time.monotonic() - start)
    log.info("data %s -> %s: fetched %d of %d files (%.1f MB), deleted %d, in %.1f s", shown, root,
             report.fetched, report.files, report.bytes / 1e6, report.deleted, report.seconds)
    return report


__all__ = ["ANNOTATIONS", "IMAGE_DIRS", "MANIFEST", "SyncReport", "check_source", "list_source", "sync_data"]
