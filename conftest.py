"""Repository-wide pytest set-up, for the tests and the doctests alike."""

from __future__ import annotations

import contextlib
import importlib.util
import io


def pytest_configure(config) -> None:
    """Import DeepSpeed once, quietly, when it is installed (``make install`` adds it).

    accelerate imports DeepSpeed whenever it is present, and DeepSpeed's first import prints
    "Setting accelerator to CPU ..." to stdout on a machine without a GPU; inside a doctest or a test
    reading stdout that line would depend on test order.
    """
    if importlib.util.find_spec("deepspeed") is not None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from deepspeed.accelerator import get_accelerator

            get_accelerator()
