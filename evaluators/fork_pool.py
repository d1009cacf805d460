"""Run independent jobs in a few forked worker processes and collect their (JSON) results in job order.

For commands that evaluate several files at once: each file is a job, the loaded inputs are inherited by
the workers through ``fork`` (nothing is copied or pickled), each worker writes its own outputs and sends
back a small JSON result. The results, and so every output, are the same whatever the number of workers;
only the wall time changes. Without ``os.fork``, with one worker or one job, or while other threads run
in this process (a fork copies only the calling thread, and any lock another one holds), the jobs simply
run here.

A job that raises stops the whole call: a :class:`~evaluators.errors.UserError` comes back as one (its
message kept), anything else as a ``RuntimeError`` carrying the worker's traceback; workers still running
are terminated first.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from evaluators.errors import UserError

__all__ = ["available_cpus", "run_jobs", "split_jobs"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one).

    Example:

    >>> available_cpus() >= 1
    True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def split_jobs(weights: Sequence[float], workers: int) -> list[list[int]]:
    """Deal job indices to ``workers`` groups, heaviest first to the lightest group (deterministic).

    Each group keeps its jobs in ascending order; empty groups are dropped.

    Example:

    >>> split_jobs([5, 1, 1, 3, 2], 2)
    [[0, 1], [2, 3, 4]]
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    loads = [0.0] * workers
    groups: list[list[int]] = [[] for _ in range(workers)]
    for job in sorted(range(len(weights)), key=lambda j: (-weights[j], j)):
        lightest = min(range(workers), key=lambda g: (loads[g], g))
        loads[lightest] += weights[job]
        groups[lightest].append(job)
    return [sorted(group) for group in groups if group]


def run_jobs(job: Callable[[int], Any], weights: Sequence[float], workers: int) -> list[Any]:
    """``[job(0), job(1), ...]``, spread over up to ``workers`` forked processes.

    Args:
        job (`Callable[[int], Any]`): does job ``i`` and returns a JSON-serialisable result.
        weights (`Sequence[float]`): one per job, the expected cost (e.g. samples), to balance the workers.
        workers (`int`): processes to use at most; 1 runs every job in this process.

    Example:

    >>> run_jobs(lambda i: {"square": i * i}, [1, 1, 1], workers=2)
    [{'square': 0}, {'square': 1}, {'square': 4}]
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    groups = split_jobs(weights, min(workers, len(weights))) if weights else []
    # Forking a process that runs other threads can copy a lock another thread holds: then run here.
    if len(groups) <= 1 or not hasattr(os, "fork") or threading.active_count() > 1:
        return [job(i) for i in range(len(weights))]
    children: list[tuple[int, int]] = []  # (pid, read end of its pipe)
    try:
        for group in groups:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the worker
                os.close(read_fd)
                _work(job, group, write_fd)
            os.close(write_fd)
            children.append((pid, read_fd))
        results: dict[int, Any] = {}
        failure: BaseException | None = None
        while children:
            pid, read_fd = children[0]
            with os.fdopen(read_fd, "rb") as pipe:
                payload = pipe.read()
            os.waitpid(pid, 0)
            children.pop(0)
            report = json.loads(payload) if payload else {"error": "the worker died without a report"}
            if "error" in report:
                if report.get("user"):
                    failure = UserError(report["error"])
                else:
                    failure = RuntimeError(f"a worker process failed:\n{report['error']}")
                break
            results.update((int(k), v) for k, v in report["results"].items())
        if failure is not None:
            raise failure
        return [results[i] for i in range(len(weights))]
    finally:
        for pid, read_fd in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            os.close(read_fd)


def _work(job: Callable[[int], Any], group: list[int], write_fd: int) -> None:  # pragma: no cover
    """Body of a worker: run its jobs, send ``{"results": {...}}`` or ``{"error": ...}``, exit at once."""
    status = 0
    try:
        report: dict[str, Any] = {"results": {str(i): job(i) for i in group}}
    except UserError as err:
        report, status = {"error": str(err), "user": True}, 1
    except BaseException:  # noqa: BLE001 - everything goes back to the parent, which raises it
        report, status = {"error": traceback.format_exc()}, 1
    try:
        data = json.dumps(report).encode()
        while data:
            data = data[os.write(write_fd, data) :]
    finally:
        os._exit(status)  # no atexit handlers, no flush of buffers inherited from the parent
