"""Files at the edge: reading YAML into a validated schema, and writes that never leave half a file.

A leaf module (it imports only `nasplat.errors`, PyYAML and pydantic), so every layer can use it:

- `read_text(path)` reads a UTF-8 file; `read_yaml(path)` parses one YAML file safely; every failure is one `ConfigError` naming the file.
  Only a regular file of bounded size is read: a directory, a FIFO, a device (`/dev/zero`) or a loop
  of symbolic links is that one error, not a hang, an exhausted memory or a traceback;
  `resolve_path(path)` resolves a path with the same error for a loop.
- `validate(schema, data, source)` checks parsed data against a pydantic dataclass or model;
  `config_error(err, source, schema)` turns a pydantic `ValidationError` into the one-line
  `ConfigError` (file, key path, value, what was allowed) that the CLI prints.
- `atomic_write(path, write)` and its text / bytes / JSON forms write to a temporary file in the
  target's directory, fsync it and move it into place with `os.replace`, so a reader (or a resumed
  run after a kill) sees the previous complete file or the new complete one, never a torn one.
  Checkpoints use it with `torch.save` as the writer. The file gets the mode a plain `open()` gives
  a new file (0666 less the umask: 0644 under the usual umask 022) unless the caller asks for a
  private one. `check_writable(path)` tries the same write (a probe file, removed) before a long
  computation whose result goes to `path`.
- `shell_command(*args)` is a command line to print for a user to copy, each argument quoted
  where it needs it (a path with a space or non-ASCII characters stays one argument).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shlex
import stat
import typing
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from nasplat.errors import ConfigError, NasplatError

# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


# The largest text file `read_text` reads: a configuration file has kilobytes; a larger file is
# refused before it is read, so memory stays bounded whatever is given.
MAX_TEXT_BYTES = 64 << 20

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


class _NotRegular(Exception):
    """A path that is not a regular file (`kind`: "a directory", "a FIFO", ...) or is one of
    `size` bytes, over the limit (`kind` None)."""

    def __init__(self, kind: str | None, size: int = 0) -> None:
        super().__init__(kind or f"{size} bytes")
        self.kind = kind
        self.size = size


def _check_regular(st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _NotRegular(next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file"))
    if st.st_size > limit:
        raise _NotRegular(None, st.st_size)


def _open_regular(path: Path, limit: int) -> IO[bytes]:
    """`path` opened for binary reading when it is a regular file of at most `limit` bytes.

    Raises OSError as `open` does (missing, unreadable, a loop of symbolic links) and _NotRegular
    for anything else. A FIFO or device is never read, nor waited on: it is told by `stat` before
    it is opened, and opened without blocking (in case it replaced the file in between)."""
    _check_regular(os.stat(path), limit)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        _check_regular(os.fstat(fd), limit)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _os_problem(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return f"is a loop of symbolic links ({e.strerror})"
    return f"cannot read ({e.strerror})"


def read_text(path: str | Path, *, what: str = "file", error: type[NasplatError] = ConfigError,
              limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of `path`. Raises `error` (ConfigError by default) naming the file for a
    missing or unreadable file, a loop of symbolic links, anything but a regular file (a directory,
    a FIFO, a device), a file of more than `limit` bytes (checked before reading) and a file that
    is not UTF-8."""
    p = Path(path)
    try:
        with _open_regular(p, limit) as f:
            data = f.read(limit + 1)
    except FileNotFoundError as e:
        raise error("file not found", source=str(path)) from e
    except _NotRegular as e:
        if e.kind is None:
            raise error(f"is {_size(e.size)}, over the {_size(limit)} limit of a {what}", source=str(path)) from e
        raise error(f"is {e.kind}, not a {what}", source=str(path)) from e
    except OSError as e:
        raise error(_os_problem(e), source=str(path)) from e
    if len(data) > limit:  # it grew while it was read
        raise error(f"is over the {_size(limit)} limit of a {what}", source=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"not a UTF-8 text file (byte {e.start})", source=str(path)) from e


def resolve_path(path: str | Path, *, source: str | None = None, key: str | None = None,
                 error: type[NasplatError] = ConfigError) -> Path:
    """`Path(path).resolve()`. Raises `error` for a loop of symbolic links (a RuntimeError before
    Python 3.13) or a folder on the way that cannot be read, naming `source` and `key` when given
    (the file and key that named `path`), else the path itself."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ELOOP:
            problem = f"cannot be resolved ({e.strerror})"
        else:
            problem = "is a loop of symbolic links"
        if source is None:
            raise error(problem, source=str(path), key=key) from e
        raise error(f"{str(path)!r} {problem}", source=source, key=key) from e


# A real configuration file has hundreds of nodes; aliases may not make it more than this once
# expanded (nine levels of nine-fold aliases are 387 million): refused while parsing, before
# anything is expanded.
MAX_YAML_NODES = 100_000


def _expanded_size(root: yaml.Node, source: str | Path) -> int:
    """The number of nodes `root` stands for with every alias expanded, computed on the composed
    graph (an alias is the anchored node itself) without expanding it. Raises ConfigError for an
    alias inside its own anchor (`a: &a [*a]`) or more than `MAX_YAML_NODES`."""
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if done:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if size[id(node)] > MAX_YAML_NODES:
                raise ConfigError(f"YAML aliases expand to more than {MAX_YAML_NODES:,} values; a configuration "
                                  f"file has hundreds (an alias bomb?)", source=str(source))
            continue
        if id(node) in size:
            continue
        if id(node) in open_:
            mark = node.start_mark
            raise ConfigError(f"a YAML alias refers to its own anchor at line {mark.line + 1}, column "
                              f"{mark.column + 1} (a recursive alias)", source=str(source))
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
    return size[id(root)]


def _safe_load_bounded(text: str, source: str | Path) -> Any:
    """`yaml.safe_load`, with the composed document's expanded size checked before it is built."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path, *, mapping: bool = True) -> Any:
    """Parse one YAML file with `yaml.safe_load`.

    Raises ConfigError naming the file for a missing or unreadable file, a file that is not UTF-8,
    invalid YAML (with line and column), aliases that expand past `MAX_YAML_NODES` or refer to
    their own anchor and, when `mapping` is True, a top level that is not a mapping.
    """
    text = read_text(path, what="YAML file")
    try:
        data = _safe_load_bounded(text, path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"not valid YAML: {problem}{where}", source=str(path)) from e
    if mapping and not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping, got {type(data).__name__}", source=str(path))
    return data


# The largest JSON file nasplat reads (annotations, results, detections): COCO-WholeBody's train
# annotations are about 1.4 GB; a file that is not a regular file (/dev/zero, a pipe) is refused.
MAX_JSON_BYTES = 4 << 30


def read_json(path: str | Path, *, what: str, error: type[NasplatError] = ConfigError,
              limit: int = MAX_JSON_BYTES) -> Any:
    """Parse one JSON file of at most `limit` bytes. Raises `error` naming the file for a missing
    or unreadable file, one that is not a regular file or is larger than `limit` (checked before
    reading: memory stays bounded whatever is given), and invalid JSON or UTF-8."""
    p = Path(path)
    try:
        f = _open_regular(p, limit)
    except _NotRegular as e:
        if e.kind is None:
            raise error(f"cannot read {what}: it is {_size(e.size)}, over the {_size(limit)} limit",
                        source=str(path)) from e
        raise error(f"cannot read {what}: not a regular file", source=str(path)) from e
    except OSError as e:
        raise error(f"cannot read {what} ({e.strerror})", source=str(path)) from e
    try:
        with f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"cannot read {what} ({e})", source=str(path)) from e


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------

# Every configuration schema rejects unknown keys: a typo must be an error, not a silent default.
# (`validate` also rejects values of the wrong type.)
STRICT = ConfigDict(extra="forbid")

# ------------------------------------------------------------------------------------------------
# Validation errors
# ------------------------------------------------------------------------------------------------

# pydantic puts validator and union-member names into an error's location
# ("function-after[...]", "union[...]", "int", "list[int]"); a user wrote none of them.
_INTERNAL_LOC = re.compile(r"^(function-|union\[|tagged-union\[)|^(float|int|str|bool|list\[.*\]|dict\[.*\]|tuple\[.*\])$")


def _user_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(p for p in loc if not _INTERNAL_LOC.search(str(p)))


def _fields_of(schema: Any) -> dict[str, Any]:
    """Key (a field's alias, else its name) -> type hint of a pydantic dataclass or model (empty
    for anything else)."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return {f.alias or name: f.annotation for name, f in schema.model_fields.items()}
    if dataclasses.is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        infos = getattr(schema, "__pydantic_fields__", {})
        return {(infos[f.name].alias if f.name in infos else None) or f.name: hints.get(f.name)
                for f in dataclasses.fields(schema)}
    return {}


def _section_keys(schema: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the section at `loc` of `schema` (empty if it cannot be told)."""
    current = schema
    for part in loc:
        hint = _fields_of(current).get(str(part))
        if hint is None:
            return []
        nested = [a for a in (hint, *typing.get_args(hint)) if _fields_of(a)]
        if not nested:
            return []
        current = nested[0]
    return list(_fields_of(current))


def config_error(err: ValidationError, source: str | Path, schema: Any = None) -> ConfigError:
    """The first error of `err` as one ConfigError: key path, value, what was allowed (for an
    unknown key: the keys of its section, when `schema` is given), and how many more errors."""
    first = err.errors()[0]
    loc = _user_loc(tuple(first["loc"]))
    key = ".".join(str(p) for p in loc) or None
    value = first.get("input")
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _section_keys(schema, loc[:-1]) if schema is not None else []
        msg = f"unknown key (value {value!r})"
        if allowed:
            msg += f"; allowed: {', '.join(allowed)}"
    elif first["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = f"value {value!r} not allowed: {first['msg']}"
    more = len(err.errors()) - 1
    if more:
        msg += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(msg, source=str(source), key=key)


def validate(schema: Any, data: Any, source: str | Path) -> Any:
    """`data` (parsed YAML or JSON) validated as `schema` (a pydantic dataclass, model or type).

    Validation is strict, as for JSON text: a value of the wrong type is an error, not coerced
    (`n_trials: "10"` is a string, not 10; `true` is not 1), while an int is a float, a string a
    path and a list a tuple, as a file can only write them. A key is a field's alias where it has
    one (`search.budget_gflops`), never the field's name. Raises ConfigError."""
    try:
        text = json.dumps(data, default=str)  # YAML's dates and the like arrive as strings
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return schema.model_validate_json(text, strict=True, by_name=False)
        return TypeAdapter(schema).validate_json(text, strict=True, by_name=False)
    except ValidationError as e:
        raise config_error(e, source, schema) from e


# ------------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------------


# What `open(path, "w")` gives a new file before the umask; `PRIVATE` keeps one from other users.
DEFAULT_MODE = 0o666
PRIVATE = 0o600


def _create_temp(directory: Path, name: str, mode: int) -> tuple[int, str]:
    """A new empty file `.<name>.<random>.tmp` in `directory`, opened for writing, with `mode`
    less the umask (as `open()` does; `tempfile.mkstemp` would make every file 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{os.urandom(4).hex()}.tmp")  # unique, not reproducible: no seed
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", os.path.join(directory, f".{name}.*.tmp"))


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], *, fsync: bool = True,
                 mode: int = DEFAULT_MODE) -> Path:
    """Call `write(f)` on a temporary binary file beside `path` (`.<name>.*.tmp`), fsync it (unless
    not `fsync`: a cache's copies, which a crash may lose) and move it into place.

    The file gets `mode` less the umask, from its creation: by default what a plain `open()` gives
    a new file (0644 under umask 022); `mode=PRIVATE` (0600) for one only its owner may read. A
    file that is replaced does not keep its old mode. The parent directory is created. On any
    failure (including KeyboardInterrupt) the temporary file is removed and `path` is left as it
    was. Returns `path`.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(p.parent, p.name, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def check_writable(path: str | Path, *, key: str | None = None, error: type[NasplatError] = ConfigError) -> Path:
    """Make sure `atomic_write(path, ...)` can write `path`, before a long computation whose result
    goes there: its folder is created and a probe file written in it and removed.

    Raises `error` naming `path` (and `key`, e.g. the option that gave it) for a folder at `path`,
    a file where a folder must be, and a folder that cannot be created or written. Returns `path`.
    """
    p = Path(path)
    try:
        if p.is_dir():
            raise error("is a folder; give a file name in it", source=str(path), key=key)
        blocking = next((a for a in p.parents if a.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise error(f"cannot write there: {blocking} is a file, not a folder", source=str(path), key=key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(p.parent, p.name, PRIVATE)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise error(f"cannot write there ({e.strerror})", source=str(path), key=key) from e
    return p


def shell_command(*args: str | os.PathLike[str]) -> str:
    """`args` as one POSIX shell command line to print for a user to copy: each argument quoted
    where it needs it (`shlex.join`), so a path with a space, a quote or non-ASCII characters
    stays one argument. `shell_command("nasplat", "ui", "my runs/exp.yaml")` is
    `nasplat ui 'my runs/exp.yaml'`."""
    return shlex.join(os.fspath(a) for a in args)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(data: bytes, path: str | Path, *, mode: int = DEFAULT_MODE) -> Path:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data), mode=mode)


def atomic_write_text(text: str, path: str | Path, *, mode: int = DEFAULT_MODE) -> Path:
    """Write UTF-8 `text` to `path` atomically (see `atomic_write`)."""
    return atomic_write_bytes(text.encode("utf-8"), path, mode=mode)


def atomic_write_json(obj: Any, path: str | Path, *, indent: int | None = 2, mode: int = DEFAULT_MODE) -> Path:
    """Write `obj` as JSON to `path` atomically (see `atomic_write`)."""
    return atomic_write_text(json.dumps(obj, indent=indent), path, mode=mode)


__all__ = [
    "DEFAULT_MODE",
    "MAX_JSON_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_YAML_NODES",
    "PRIVATE",
    "STRICT",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "config_error",
    "file_sha256",
    "read_json",
    "read_text",
    "read_yaml",
    "resolve_path",
    "shell_command",
    "validate",
]
