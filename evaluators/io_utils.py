"""Small, safe file helpers: atomic writes, JSON/JSONL reading with clear errors, appendable JSONL."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from evaluators.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_RECORD_BYTES",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "current_umask",
    "ensure_output_dir",
    "iter_jsonl",
    "load_json",
    "read_records",
    "rejected_path",
    "remove_stale_temps",
    "save_png_replacing",
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


#: An orphan temp file younger than this is left alone (its writer may not have locked it yet).
STALE_TEMP_SECONDS = 60.0

#: The random part ``tempfile.mkstemp`` puts in a name (8 characters of this alphabet).
_MKSTEMP_RANDOM = "[a-z0-9_]{8}"


def temp_sibling(path: str | os.PathLike) -> tuple[int, str]:
    """Open a hidden temp file beside ``path`` for an atomic write: ``(fd, temp path)``.

    The file is ``.<name>.<8 random characters>.tmp`` and is locked (``flock``) for as long as ``fd`` is
    open, which tells :func:`remove_stale_temps` that its writer is alive: keep ``fd`` open until the
    temp file has been renamed into place. Unlike bare :func:`tempfile.mkstemp` (always ``0o600``), the
    file gets the mode a plain ``open()`` would give it: ``0o666`` less the umask, so colleagues on a
    shared cluster can read the results.

    Example:

    >>> import tempfile, pathlib, stat
    >>> old = os.umask(0o022)
    >>> fd, tmp = temp_sibling(pathlib.Path(tempfile.mkdtemp()) / "x.json"); os.close(fd)
    >>> oct(stat.S_IMODE(os.stat(tmp).st_mode)); _ = os.umask(old)
    '0o644'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # never blocks: the file is new and only ours
    except OSError as err:  # a file system without flock: the write works, its orphan is just never cleaned
        logger.debug("%s: cannot lock the temp file (%s)", tmp, err.strerror)
    os.fchmod(fd, 0o666 & ~current_umask())
    return fd, tmp


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temp files that killed atomic writes of ``name`` (any name when ``None``) left in ``folder``.

    Only files named as :func:`temp_sibling` names them are considered, and of those only the ones no
    live process holds (their writer's lock is gone) and older than :data:`STALE_TEMP_SECONDS`. On a file
    system without ``flock`` nothing is removed (a live writer could not be told from a dead one).

    Returns:
        `list[Path]`: the files removed.

    Example:

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> orphan = folder / ".a.json.k2x_9qzb.tmp"
    >>> _ = orphan.write_text("half")
    >>> os.utime(orphan, (0, 0))  # left by a writer killed long ago
    >>> [p.name for p in remove_stale_temps(folder, "a.json")]
    ['.a.json.k2x_9qzb.tmp']
    """
    folder = Path(folder)
    stem = re.escape(name) if name is not None else ".+"
    pattern = re.compile(rf"\.{stem}\.{_MKSTEMP_RANDOM}\.tmp")
    prefix = f".{name}." if name is not None else "."
    removed = []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix) and pattern.fullmatch(e.name)]
    except OSError:  # no such folder, or one we may not list: nothing of ours to clean
        return removed
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < STALE_TEMP_SECONDS:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone already, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: its writer is alive; others: no flock here, liveness unknown
            os.close(fd)
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:
            pass  # another cleaner was first
        finally:
            os.close(fd)
    if removed:
        logger.warning(
            "%s: removed %d temp file(s) left by interrupted writes: %s",
            folder,
            len(removed),
            ", ".join(p.name for p in removed[:5]),
        )
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    A crash leaves either the old file or the new one, never a half-written file; the temp file a crash
    leaves is removed by the next write of ``path`` (:func:`remove_stale_temps`). The file gets the mode a
    plain ``open()`` would give it (``0o666`` less the umask, see :func:`temp_sibling`).

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "b.bin"
    >>> atomic_write_bytes(p, b"hello").read_bytes()
    b'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp, path)  # while the temp file is still open, so still locked
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_png_replacing(image: Any, path: str | os.PathLike) -> Path:
    """Save a PIL ``image`` as PNG at ``path`` through a temp file renamed into place, without fsync.

    For caches of converted images that a rerun can rebuild: a crash may lose the newest files but never
    leaves a half-written one under ``path``. The temp file is renamed while still open, so its lock marks
    it as live to :func:`remove_stale_temps`, which the caller runs once per folder rather than per image.

    Example:

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.png"
    >>> save_png_replacing(Image.new("RGB", (2, 2)), p).read_bytes()[:4]
    b'\\x89PNG'
    """
    path = Path(path)
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG")
            os.replace(tmp, path)  # while open: the temp file's lock marks it as live
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


def ensure_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Check, before any expensive work, that ``path`` can be created and written; leave no trace.

    Folders that had to be created for the check are removed again (the real write creates them).

    Raises:
        UserError: ``path`` is a file, lies under a file, or cannot be created or written (one line, naming
            ``option`` and the path).

    Example:

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "file"
    >>> _ = f.write_text("x")
    >>> ensure_output_dir(f / "sub", "--out")
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: --out .../file/sub: cannot be created: .../file is a file, not a folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: exists and is a file, expected a folder.")
    missing = []
    probe_dir = path
    while not probe_dir.exists():
        missing.append(probe_dir)
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise UserError(f"{option} {path}: cannot be created: {probe_dir} is a file, not a folder.")
    created = []
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except OSError as err:
                raise UserError(f"{option} {path}: cannot be created ({err.strerror}).") from None
            created.append(folder)
        try:
            fd, probe = tempfile.mkstemp(prefix=".unitune-write-test.", dir=path)
        except OSError as err:
            raise UserError(f"{option} {path}: cannot write files there ({err.strerror}).") from None
        os.close(fd)
        os.unlink(probe)
    finally:
        for folder in reversed(created):
            folder.rmdir()
    return path


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
    remove_stale_temps(path.parent, path.name)
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as handle:
            write = handle.write
            for line in lines:
                write(line)
                write("\n")
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp, path)  # while the temp file is still open, so still locked
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: A JSONL line (or a whole JSON list file) larger than this is refused as absurd, before parsing.
MAX_RECORD_BYTES = 256 * 1024 * 1024


def _loads(text: str, path: Path, where: str) -> Any:
    """``json.loads`` whose failures (bad JSON, nesting too deep for Python) are one-line :class:`UserError`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        if where == "the file":
            raise UserError(
                f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}."
            ) from None
        raise UserError(f"{path}: {where} is not valid JSON ({err.msg}).") from None
    except RecursionError:
        raise UserError(
            f"{path}: {where} is nested too deeply to read (thousands of levels of lists/objects)."
        ) from None


def _decode(raw: bytes, path: Path, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: {where} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "convert the file to UTF-8."
        ) from None


def iter_jsonl(path: str | os.PathLike, allow_torn: bool = False) -> Iterator[dict]:
    """Yield the objects of a JSONL file, streamed; every problem is a :class:`UserError` naming file and line.

    A last line without a newline that does not parse is what a writer killed mid-line leaves: it is refused
    (the file is incomplete) unless ``allow_torn``, which skips it with a warning. Lines that are not UTF-8,
    not JSON, nested beyond Python's limit or over :data:`MAX_RECORD_BYTES` are refused.

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> _ = p.write_text('{"a": 1}\\n{"a": 2')
    >>> list(iter_jsonl(p, allow_torn=True))
    [{'a': 1}]
    >>> list(iter_jsonl(p))
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: ...a.jsonl: line 2 is cut off (no newline, not valid JSON): the file is incomplete, probably from an interrupted writer; repair it, or pass --allow-torn to drop that line.
    """
    path = Path(path)
    with path.open("rb") as handle:
        number = 0
        for raw in handle:
            number += 1
            where = f"line {number}"
            if len(raw) > MAX_RECORD_BYTES:
                raise UserError(
                    f"{path}: {where} is {len(raw) / 2**20:.0f} MiB, over the {MAX_RECORD_BYTES // 2**20} MiB "
                    "limit for one record."
                )
            text = _decode(raw, path, where)
            if not text.strip():
                continue
            if not text.endswith("\n"):
                try:
                    item = json.loads(text)
                except (json.JSONDecodeError, RecursionError):
                    if allow_torn:
                        logger.warning(
                            "%s: %s is cut off (no newline, not JSON); skipped (--allow-torn).", path, where
                        )
                        return
                    raise UserError(
                        f"{path}: {where} is cut off (no newline, not valid JSON): the file is incomplete, "
                        "probably from an interrupted writer; repair it, or pass --allow-torn to drop that line."
                    ) from None
                yield item
                continue
            yield _loads(text, path, where)


def load_json(path: str | os.PathLike) -> Any:
    """Parse a whole JSON file strictly: not UTF-8, malformed, nested too deeply or over 2 GiB is a :class:`UserError`.

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "deep.json"
    >>> _ = p.write_text("[" * 100_000 + "]" * 100_000)
    >>> load_json(p)
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: .../deep.json: the file is nested too deeply to read (thousands of levels of lists/objects).
    """
    path = Path(path)
    size = path.stat().st_size
    if size > 8 * MAX_RECORD_BYTES:
        raise UserError(
            f"{path}: a {size / 2**30:.1f} GiB JSON file is too large to load; write it as JSONL."
        )
    raw = path.read_bytes()
    records = _flat_records(raw)
    if records is not None:
        return records
    return _loads(_decode(raw, path, "the file"), path, "the file")


#: The value types for which orjson and json parse the same text to the same values (orjson reads an integer
#: beyond 64 bits as a float, json as an int; json reads ``NaN`` and lone surrogates, orjson refuses them).
_SAME_VALUE_TYPES = frozenset([str, int, bool, type(None)])


def _flat_records(raw: bytes) -> list[dict] | None:
    """``json.loads`` of a JSON list of flat objects (string, integer, boolean or null values: a prediction
    file), parsed by orjson (several times faster); ``None`` for anything else, which json then reads.

    Example:

    >>> _flat_records(b'[{"gt": "x", "n": 1}]'), _flat_records(b'[{"f": 0.5}]'), _flat_records(b"[[1]]")
    ([{'gt': 'x', 'n': 1}], None, None)
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not list or not set(map(type, data)) <= {dict}:
        return None
    if not set(map(type, chain.from_iterable(map(dict.values, data)))) <= _SAME_VALUE_TYPES:
        return None
    return data


def read_records(path: str | os.PathLike, allow_torn: bool = False) -> list[dict]:
    """Read a JSON list or a JSONL file of objects, with a clear one-line error for anything else.

    Args:
        path: the file.
        allow_torn: skip (with a warning) a cut-off last JSONL line instead of refusing the file.

    Raises:
        UserError: the file is missing, a folder, not UTF-8, not JSON/JSONL, nested too deeply, absurdly large,
            cut off (JSONL without ``allow_torn``), or not a list of objects.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a JSON or JSONL file.")
    if not path.is_file():
        raise UserError(f"{path}: no such file.")
    with path.open("rb") as handle:
        head = handle.read(4096)
    # Only the first non-space character matters here; the whole text is decoded strictly below.
    stripped = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not stripped:
        return []
    if stripped.startswith("["):
        data = load_json(path)
    else:
        data = list(iter_jsonl(path, allow_torn=allow_torn))
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, got {type(data).__name__}.")
    if set(map(type, data)) <= {dict}:  # checked in C; the loop below names the first item that is not
        return data
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise UserError(f"{path}: item {index} is a {type(item).__name__}, expected an object.")
    return data
