"""One progress bar for every long loop: a known total, a refresh at least every 2 s, rate and ETA.

tqdm redraws only when ``update`` is called, so a bar over slow steps (a CPU ``generate`` batch can take a
minute) would look frozen; :func:`progress_bar` also redraws from a small daemon thread, so elapsed time, rate
and ETA keep moving.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["REFRESH_SECONDS", "progress_bar"]

#: The longest time between two redraws of a bar.
REFRESH_SECONDS = 2.0

_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]"


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True) -> Iterator[Any]:
    """A tqdm bar over ``total`` items of ``unit``, redrawn at least every :data:`REFRESH_SECONDS`.

    Example:

    >>> with progress_bar(3, "demo", "sample", enabled=False) as bar:
    ...     bar.update(3)
    ...     bar.total
    3
    """
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5, maxinterval=REFRESH_SECONDS,
        bar_format=_FORMAT if total else None, disable=not enabled,
    )  # fmt: skip
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(REFRESH_SECONDS):
            bar.refresh()

    thread = threading.Thread(target=redraw, name=f"progress:{desc}", daemon=True) if enabled else None
    if thread is not None:
        thread.start()
    try:
        yield bar
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        bar.close()
