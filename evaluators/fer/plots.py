"""Confusion-matrix PNGs (matplotlib, headless ``Agg`` backend), written atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from evaluators.io_utils import atomic_write_bytes

__all__ = ["plot_confusion_matrix"]


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Draw ``matrix`` (rows true, columns predicted) as a row-normalised heat map annotated with counts.

    Args:
        matrix (`Sequence[Sequence[int]]`): square count matrix in ``labels`` order.
        labels (`Sequence[str]`): row/column names.
        path (`str` or `os.PathLike`): the PNG to write (folders are created).
        title (`str`, *optional*): figure title.

    Returns:
        `Path`: ``path``.

    Example:

    >>> import tempfile, pathlib
    >>> out = plot_confusion_matrix([[3, 1], [0, 2]], ["a", "b"], pathlib.Path(tempfile.mkdtemp()) / "cm.png")
    >>> out.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=float).reshape(len(labels), len(labels))
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(4.0, 0.75 * len(labels) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(labels)), labels=list(labels), rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels=list(labels))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if title:
            ax.set_title(title)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(
                    j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black",
                )  # fmt: skip
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(fig)
    return atomic_write_bytes(Path(path), buffer.getvalue())
