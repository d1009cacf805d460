r"""Compute per-label targets in forked worker processes while this process reads and writes, in input order.

The ``tree`` (and ``can``) targets are pure functions of the label string and cost more than reading and
writing a record, so a build can use a second CPU: :class:`LabelWorkers` forks helpers that answer chunks of
labels (sent through pipes), while this process keeps reading the input, answers what its memo already holds,
and also answers whole chunks itself whenever every helper is busy (so a helper slowed by other work on the
machine never holds the build up for long). Chunks come back in input order, each record with the answer its
label gets in one process, so the output does not depend on the number of workers, only the wall time does.

At most :attr:`LabelWorkers.MAX_PENDING` chunks of :attr:`LabelWorkers.CHUNK` records are held at once
(memory stays bounded on any input). Forking is refused (everything is answered here) without ``os.fork``,
with one worker, or while other threads run in this process (a fork copies only the calling thread, and any
lock another one holds), like :func:`evaluators.fork_pool.run_jobs`. A helper ends when its request pipe
closes (this process finished, failed or was killed), so none outlives the build.
"""

from __future__ import annotations

import marshal
import os
import queue
import select
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, Protocol

__all__ = ["LabelWorkers"]

_HEADER = 8  # bytes of a message's length prefix (little endian)


class _Memo(Protocol):
    table: dict[str, Any]
    hits: int

    def __call__(self, key: str) -> Any: ...

    def remember(self, key: str, value: Any) -> None: ...


def _widen(fd: int) -> None:
    """Let a pipe hold a whole chunk's answers (Linux; elsewhere, or over the system's limit, it stays as it
    is): the helper then writes them at once and goes on with the next chunk instead of waiting for reads."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


def _readable(fd: int) -> bool:
    """Whether reading ``fd`` would not block (poll: no FD_SETSIZE limit on the descriptor's number)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd`` (blocking), or ``None`` at end of file."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            return None
        got += n
    return bytes(buffer)


def _dumps(value: Any) -> bytes:
    """``value`` in :mod:`marshal`'s format, the messages between this process and its own forked helpers (through
    anonymous pipes, never a file): plain values only (strings, lone surrogates included, numbers, ``None``, lists,
    tuples); no code and no classes, unlike pickle. JSON messages made a whole 300k-label tree build take about
    12 % more CPU (the answers are JSON text already, escaped once more)."""
    return marshal.dumps(value)


def _send(fd: int, payload: bytes) -> None:
    data = memoryview(len(payload).to_bytes(_HEADER, "little") + payload)
    while data:
        data = data[os.write(fd, data) :]


def _receive(fd: int) -> bytes | None:
    head = _read_exact(fd, _HEADER)
    if head is None:
        return None
    return _read_exact(fd, int.from_bytes(head, "little"))


class _Chunk:
    """Records read together: their samples, the answers known so far, the labels a helper answers."""

    __slots__ = ("done", "known", "missing", "samples")

    def __init__(self, samples: list[Any], known: dict[str, Any], missing: list[str]) -> None:
        self.samples, self.known, self.missing = samples, known, missing
        self.done = not missing


class _Helper:
    """One forked helper: its pid, request pipe (write end), answer pipe (read end), chunks it works on."""

    __slots__ = ("answers", "pid", "requests", "waiting")

    def __init__(self, pid: int, requests: int, answers: int) -> None:
        self.pid, self.requests, self.answers = pid, requests, answers
        self.waiting: deque[_Chunk] = deque()  # sent, in order; answers not received yet


class LabelWorkers:
    """Answer the labels of a stream of records with ``fn``, in this process and ``workers - 1`` forked ones.

    Use as a context manager (the helpers are forked on entry and stopped on exit), then :meth:`answered`.

    Args:
        fn (`Callable[[str], Any]`): label -> answer made of plain values (see
            :mod:`marshal`), a pure function (same label, same answer).
        workers (`int`): processes answering labels, this one included; 1 (or no fork possible) answers here.

    Example:

    >>> from llamafactory_ext.hmer.build import _BoundedMemo
    >>> from llamafactory_ext.hmer.records import HmerSample
    >>> memo = _BoundedMemo(str.upper)
    >>> samples = [HmerSample(id=str(i), image="", latex="ab"[i % 2] * i) for i in range(5)]
    >>> with LabelWorkers(str.upper, workers=2) as pool:
    ...     [(s.latex, answer) for s, answer in pool.answered(samples, memo)]
    [('', ''), ('b', 'B'), ('aa', 'AA'), ('bbb', 'BBB'), ('aaaa', 'AAAA')]
    """

    #: Records per chunk (one request to a helper).
    CHUNK = 1024
    #: Chunks held at most (read, not yet handed back); bounds memory.
    MAX_PENDING = 8
    #: Chunks a helper may have unanswered; with every helper this far behind, this process answers the next
    #: chunk itself.
    MAX_PER_HELPER = 2

    def __init__(self, fn: Callable[[str], Any], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.fn, self.workers = fn, workers
        self.helpers: list[_Helper] = []

    @property
    def forked(self) -> int:
        """How many helper processes run (0: every label is answered here)."""
        return len(self.helpers)

    def __enter__(self) -> LabelWorkers:
        # Forking a process that runs other threads can copy a lock another thread holds: then answer here.
        if self.workers > 1 and hasattr(os, "fork") and threading.active_count() == 1:
            try:
                for _ in range(self.workers - 1):
                    self._fork()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fork(self) -> None:
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        _widen(answer_read)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the helper
            os.close(request_write)
            os.close(answer_read)
            for helper in self.helpers:  # the other helpers' pipes: their ends must close with this process
                os.close(helper.requests)
                os.close(helper.answers)
            _serve(self.fn, request_read, answer_write)
        os.close(request_read)
        os.close(answer_write)
        self.helpers.append(_Helper(pid, request_write, answer_read))

    def close(self) -> None:
        """Stop the helpers (closing their request pipes ends them) and reap them."""
        helpers, self.helpers = self.helpers, []
        for helper in helpers:
            os.close(helper.requests)
        for helper in helpers:
            if helper.waiting:  # still working on a chunk nobody will read (an error stopped the build)
                try:
                    os.kill(helper.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            os.waitpid(helper.pid, 0)
            os.close(helper.answers)

    def answered(self, samples: Iterable[Any], memo: _Memo) -> Iterator[tuple[Any, Any]]:
        """Yield ``(sample, memo(sample.latex))`` for every sample, in order; helpers answer missing labels.

        ``memo`` remembers answers (``table`` is read, ``remember`` adds the helpers' answers); labels it
        holds are not sent. The same answers come out whether a label was answered here, by a helper or by
        the memo, so only the wall time depends on the workers.
        """
        samples = iter(samples)
        pending: deque[_Chunk] = deque()  # read, not handed back yet, in input order
        table = memo.table
        while True:
            batch = list(islice(samples, self.CHUNK))
            if batch:
                self._receive_ready(memo)
                known: dict[str, Any] = {}
                missing: list[str] = []
                for label in dict.fromkeys([sample.latex for sample in batch]):
                    value = table.get(label)
                    if value is None:
                        missing.append(label)
                    else:
                        known[label] = value
                memo.hits += len(known)
                helper = min(self.helpers, key=lambda h: len(h.waiting)) if missing and self.helpers else None
                if helper is None or len(helper.waiting) >= self.MAX_PER_HELPER:
                    # every helper is behind: answer this chunk here (same answers, no waiting)
                    for label in missing:
                        known[label] = memo(label)
                    missing = []
                chunk = _Chunk(batch, known, missing)
                if not chunk.done:
                    _send(helper.requests, _dumps(missing))  # type: ignore[union-attr]
                    helper.waiting.append(chunk)  # type: ignore[union-attr]
                pending.append(chunk)
            # Hand back every chunk that is complete, waiting only when too many are held (or at the end).
            while pending:
                chunk = pending[0]
                if not chunk.done:
                    if batch and len(pending) < self.MAX_PENDING:
                        break
                    helper = next(h for h in self.helpers if h.waiting and h.waiting[0] is chunk)
                    self._receive(helper, memo)
                pending.popleft()
                known = chunk.known
                for sample in chunk.samples:
                    yield sample, known[sample.latex]
            if not batch:
                return

    def _receive_ready(self, memo: _Memo) -> None:
        """Receive the answers the helpers have finished (without waiting), so that they count as done."""
        while True:
            busy = [helper for helper in self.helpers if helper.waiting]
            ready = [helper for helper in busy if _readable(helper.answers)]
            if not ready:
                return
            for helper in ready:
                self._receive(helper, memo)

    def _receive(self, helper: _Helper, memo: _Memo) -> None:
        """Wait for the answers to ``helper``'s oldest chunk and complete it (and the memo)."""
        chunk = helper.waiting.popleft()
        payload = _receive(helper.answers)
        if payload is None:
            raise RuntimeError(f"label worker {helper.pid} died without an answer")
        status, values = marshal.loads(payload)
        if status != "ok":
            raise RuntimeError(f"a label worker process failed:\n{values}")
        known, remember = chunk.known, memo.remember
        for label, value in zip(chunk.missing, values, strict=True):
            remember(label, value)
            known[label] = value
        chunk.done = True


def _serve(fn: Callable[[str], Any], requests: int, answers: int) -> None:  # pragma: no cover - in the helper
    """Body of a helper: answer each chunk of labels in order until the request pipe closes, then exit at once.

    A thread reads requests as they come (into an in-memory queue that the parent's limits keep short), so
    this process's writes and the parent's never wait on each other.
    """
    status = 0
    try:
        inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

        def read_requests() -> None:
            try:
                while True:
                    payload = _receive(requests)
                    inbox.put(payload)
                    if payload is None:
                        return
            except OSError:
                inbox.put(None)

        threading.Thread(target=read_requests, daemon=True).start()
        while True:
            payload = inbox.get()
            if payload is None:
                break
            try:
                reply: tuple[str, Any] = ("ok", [fn(label) for label in marshal.loads(payload)])
            except BaseException:  # noqa: BLE001 - the parent raises it, with this traceback
                reply, status = ("error", traceback.format_exc()), 1
            _send(answers, _dumps(reply))
            if status:
                break
    except BaseException:  # noqa: BLE001 - a broken pipe or a signal: the parent notices the missing answer
        status = 1
    finally:
        os._exit(status)  # no atexit handlers, no flush of buffers inherited from the parent
