"""Small, safe file helpers: atomic writes, JSON/JSONL reading with clear errors, appendable JSONL."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from evaluators.errors import UserError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "current_umask",
    "iter_jsonl",
    "read_records",
    "rejected_path",
    "temp_sibling",
    "write_jsonl_atomic",
    "write_lines_atomic",
]


def current_umask() -> int:
    """The process umask (read without changing it for more than an instant).

    Example:

    >>> old = os.umask(0o027); current_umask() == 0o027; _ = os.umask(old)
    True
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_sibling(path: str | os.PathLike) -> tuple[int, str]:
    """Open a hidden temp file beside ``path`` for an atomic write: ``(fd, temp path)``.

    Unlike bare :func:`tempfile.mkstemp` (always ``0o600``), the file gets the mode a plain ``open()``
    would give it: ``0o666`` less the umask, so colleagues on a shared cluster can read the results.

    Example:

    >>> import tempfile, pathlib, stat
    >>> old = os.umask(0o022)
    >>> fd, tmp = temp_sibling(pathlib.Path(tempfile.mkdtemp()) / "x.json"); os.close(fd)
    >>> oct(stat.S_IMODE(os.stat(tmp).st_mode)); _ = os.umask(old)
    '0o644'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    A crash leaves either the old file or the new one, never a half-written file. The file gets the mode a
    plain ``open()`` would give it (``0o666`` less the umask, see :func:`temp_sibling`).

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "b.bin"
    >>> atomic_write_bytes(p, b"hello").read_bytes()
    b'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`); newlines are kept as given.

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "b.txt"
    >>> atomic_write_text(p, "hello").read_text()
    'hello'
    """
    return atomic_write_bytes(path, text.encode(encoding))


def rejected_path(output: str | os.PathLike) -> Path:
    """Where a builder lists the records it rejected: ``out.json`` → ``out.rejected.jsonl``.

    Example:

    >>> rejected_path("data/crohme_train_tree.json").as_posix()
    'data/crohme_train_tree.rejected.jsonl'
    """
    output = Path(output)
    return output.with_name(output.stem + ".rejected.jsonl")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as UTF-8 JSON (non-ASCII kept) and write it atomically."""
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """Write one JSON object per line, atomically, streaming: ``records`` may be a generator of any length.

    Lines go to a temporary file in the same folder (buffered, fsync) that replaces ``path`` at the end,
    so memory stays flat and a crash leaves the old file or none (see :func:`write_lines_atomic`).

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> write_jsonl_atomic(p, ({"i": i} for i in range(2))).read_text()
    '{"i": 0}\\n{"i": 1}\\n'
    """
    encoder = json.JSONEncoder(ensure_ascii=False).encode
    return write_lines_atomic(path, (encoder(record) for record in records))


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write ``lines`` (each without its newline) atomically and streaming, one per line, UTF-8.

    For writers that format their JSONL lines themselves (faster than encoding a dict per line).

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> write_lines_atomic(p, iter(['{"a": 1}', "{}"])).read_text()
    '{"a": 1}\\n{}\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as handle:
            write = handle.write
            for line in lines:
                write(line)
                write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the objects of a JSONL file; a bad line raises :class:`UserError` naming file and line.

    A final line without a newline that does not parse (a crash mid-write) is skipped, not fatal.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not line.endswith("\n"):
                return  # torn last line from an interrupted writer
            raise UserError(f"{path}: line {number} is not valid JSON ({err.msg}).") from None


def read_records(path: str | os.PathLike) -> list[dict]:
    """Read a JSON list or a JSONL file of objects, with a clear error for anything else.

    Raises:
        UserError: the file is missing, is not JSON/JSONL, or is not a list of objects.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file.")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(
                f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}."
            ) from None
    else:
        data = list(iter_jsonl(path))
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, got {type(data).__name__}.")
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise UserError(f"{path}: item {index} is a {type(item).__name__}, expected an object.")
    return data
