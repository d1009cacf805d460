"""Output sets published together, and a lock against two writers on one output.

A command that writes several files that belong together (``eval hmer``: ``<stem>_results.txt``,
``_metrics.json``, ``_samples.jsonl``; ``data hmer``: the dataset and its ``.rejected.jsonl``) stages them
in a hidden folder beside their destination, then commits: it writes a manifest (one atomic rename) and
moves the files into place. A kill before the manifest leaves the old set untouched; a kill after it is
rolled forward by :func:`recover_output_sets`, which every writer runs first. So once the next command
has started (or :func:`recover_output_sets` has run) a folder holds either the whole old set or the whole
new one, and no staging leftovers.

Example:

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with OutputSet(folder, "demo") as out:
...     _ = out.path("a.txt").write_text("new a")
...     _ = out.path("sub/b.txt").write_text("new b")
>>> sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
['a.txt', 'sub', 'sub/b.txt']
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import IO

from evaluators.errors import UserError

__all__ = ["STAGING_PREFIX", "OutputSet", "output_lock", "recover_output_sets"]

logger = logging.getLogger(__name__)

#: Prefix of the hidden staging folders (``.unitune-staging-XXXX``) that :class:`OutputSet` creates.
STAGING_PREFIX = ".unitune-staging-"
_MANIFEST = "MANIFEST.json"
_OWNER = ".owner.lock"


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Threads that flush a set's files together (see :func:`_fsync_files`).
_FSYNC_THREADS = 8


def _fsync_files(paths: list[Path]) -> None:
    """fsync every file, a few at a time from threads; return once all are on disk (the first error raised).

    Sequential fsyncs each wait for their own journal commit; concurrent ones share commits, so a set of
    dozens of files (``eval hmer`` of 24 inputs stages 72) is flushed in a few commit rounds instead of 72.
    The manifest is written only after this returns, so the crash-safety argument is unchanged.
    """
    if len(paths) <= 1:
        for path in paths:
            _fsync(path)
        return
    errors: list[BaseException] = []

    def flush(share: list[Path]) -> None:
        try:
            for path in share:
                _fsync(path)
        except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread below
            errors.append(err)

    count = min(_FSYNC_THREADS, len(paths))
    threads = [threading.Thread(target=flush, args=(paths[i::count],)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _try_lock(path: Path) -> IO[str] | None:
    """Open ``path`` and take an exclusive non-blocking lock; ``None`` when another process holds it."""
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextmanager
def output_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a hidden lock file) while the block runs.

    Raises:
        UserError: another process holds it (its pid is named); ``what`` says what is being written.

    Example:

    >>> import tempfile, pathlib
    >>> lock = pathlib.Path(tempfile.mkdtemp()) / ".x.lock"
    >>> with output_lock(lock, "--out x"):
    ...     with output_lock(lock, "--out x"):
    ...         pass
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: --out x: another unitune process (pid ...) is writing there now; wait for it to finish or choose another output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = _try_lock(path)
        if handle is None:
            break
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # the holder removed the file between our open and our lock: take the new one
    if handle is None:
        try:
            pid = path.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            pid = "?"
        raise UserError(
            f"{what}: another unitune process (pid {pid}) is writing there now; wait for it to finish or "
            "choose another output."
        )
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held, so no process can lock the removed file
        handle.close()


def _roll_forward(staging: Path) -> None:
    manifest = json.loads((staging / _MANIFEST).read_text(encoding="utf-8"))
    folder = staging.parent
    touched = {folder}
    for name in manifest["files"]:
        source, target = staging / name, folder / name
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            touched.add(target.parent)
    for name in manifest["remove"]:
        (folder / name).unlink(missing_ok=True)
        touched.add((folder / name).parent)
    for changed in sorted(touched):
        if changed.is_dir():
            _fsync(changed)
    shutil.rmtree(staging, ignore_errors=True)


def recover_output_sets(folder: str | os.PathLike) -> None:
    """Finish or discard what killed writers left in ``folder``: committed sets are published, others removed.

    Staging folders still owned by a live process are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for staging in folder.glob(f"{STAGING_PREFIX}*"):
        if not staging.is_dir():
            continue
        owner = _try_lock(staging / _OWNER) if (staging / _OWNER).exists() else None
        if (staging / _OWNER).exists() and owner is None:
            continue  # a live writer
        try:
            manifest_ok = False
            if (staging / _MANIFEST).is_file():
                try:
                    json.loads((staging / _MANIFEST).read_text(encoding="utf-8"))
                    manifest_ok = True
                except (json.JSONDecodeError, UnicodeDecodeError):
                    manifest_ok = False
            if manifest_ok:
                logger.warning("%s: finishing the publication of a run that was interrupted.", folder)
                _roll_forward(staging)
            else:
                logger.warning(
                    "%s: removing the unfinished outputs of an interrupted run (%s).", folder, staging.name
                )
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            if owner is not None:
                owner.close()


class OutputSet:
    """Stage files in ``folder`` and publish them together (see the module docstring).

    Use as a context manager: on a normal exit the set is committed, on an exception it is discarded.
    ``lock_name`` names the hidden lock file (``folder/.<lock_name>.lock``) that keeps a second writer of
    the same output out.

    Args:
        folder (`str` or `os.PathLike`): where the files end up (created if needed).
        lock_name (`str`): what this set is, e.g. ``"eval-hmer"`` or the output file's name.
    """

    def __init__(self, folder: str | os.PathLike, lock_name: str) -> None:
        self.folder = Path(folder)
        self.lock_name = lock_name
        self.remove: list[str] = []
        self.staging: Path | None = None
        self._owner: IO[str] | None = None
        self._lock = None

    def __enter__(self) -> OutputSet:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = output_lock(self.folder / f".{self.lock_name}.lock", str(self.folder / self.lock_name))
        self._lock.__enter__()
        try:
            recover_output_sets(self.folder)
            self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.folder))
            self._owner = _try_lock(self.staging / _OWNER)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def path(self, name: str) -> Path:
        """Where to write the file that will be published as ``folder/name``.

        ``name`` is a file name, or a relative path below ``folder`` (``"recipes/a.yaml"``) whose parts are
        plain names.
        """
        if self.staging is None:
            raise RuntimeError("OutputSet.path() outside the `with` block")
        parts = name.split("/")
        if name in (_MANIFEST,) or any(not part or part.startswith(".") for part in parts):
            raise ValueError(f"OutputSet: {name!r} must be a file name or a relative path of plain names")
        path = self.staging.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, name: str, text: str) -> Path:
        """Stage ``text`` (UTF-8, newlines kept) as ``name``; published with the set.

        No temporary file and no fsync of its own: the staging folder is discarded unless the set commits,
        and the commit fsyncs every staged file before it writes the manifest, so a file that gets
        published is complete and durable without paying a second fsync (and a rename) per file.

        Example:

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> with OutputSet(folder, "demo") as out:
        ...     _ = out.write_text("a.txt", "ü")
        >>> (folder / "a.txt").read_text(encoding="utf-8")
        'ü'
        """
        path = self.path(name)
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        return path

    def write_lines(self, name: str, lines: Iterable[str]) -> Path:
        """Stage ``lines`` (each without its newline) as ``name``, one per line, streamed (see :meth:`write_text`).

        Example:

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> with OutputSet(folder, "demo") as out:
        ...     _ = out.write_lines("a.jsonl", iter(["{}", "[]"]))
        >>> (folder / "a.jsonl").read_text()
        '{}\\n[]\\n'
        """
        path = self.path(name)
        lines = iter(lines)
        with path.open("w", encoding="utf-8", newline="\n", buffering=1 << 20) as handle:
            while batch := list(islice(lines, 4096)):  # one write per 4096 lines: fewer calls, same bytes
                handle.write("\n".join(batch))
                handle.write("\n")
        return path

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.staging is not None and self._lock is not None
        try:
            if exc_type is None:
                self._commit()
            else:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            if self._owner is not None:
                self._owner.close()
            self._lock.__exit__(None, None, None)

    def _commit(self) -> None:
        assert self.staging is not None
        names = sorted(
            p.relative_to(self.staging).as_posix()
            for p in self.staging.rglob("*")
            if p.is_file() and p.name not in (_OWNER, _MANIFEST)
        )
        _fsync_files([self.staging / name for name in names])
        for folder in sorted({(self.staging / name).parent for name in names} - {self.staging}):
            _fsync(folder)  # entries of staged subfolders (the staging folder itself is synced below)
        remove = sorted(set(self.remove) - set(names))
        tmp = self.staging / ".manifest.tmp"
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump({"files": names, "remove": remove}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.staging / _MANIFEST)
        _fsync(self.staging)
        _roll_forward(self.staging)
