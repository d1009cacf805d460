"""Confusion-matrix PNGs (matplotlib, headless ``Agg`` backend), written atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from evaluators.io_utils import atomic_write_bytes

__all__ = ["confusion_with_other", "plot_confusion_matrix"]


def confusion_with_other(
    pairs: Sequence[tuple[str, str]], labels: Sequence[str], other: str
) -> tuple[list[list[int]], list[str]]:
    """Counts with one extra column ``other`` for predictions outside ``labels`` (invalid / unknown answers).

    Every scored item lands in its row, so each row sums to the class's support.

    Example:

    >>> confusion_with_other([("a", "a"), ("a", "invalid"), ("b", "a")], ["a", "b"], "invalid")
    ([[1, 0, 1], [1, 0, 0]], ['a', 'b', 'invalid'])
    """
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * (len(labels) + 1) for _ in labels]
    for true, pred in pairs:
        if true in index:
            matrix[index[true]][index.get(pred, len(labels))] += 1
    return matrix, [*labels, other]


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]],
    labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    columns: Sequence[str] | None = None,
) -> Path:
    """Draw ``matrix`` (rows true, columns predicted) as a row-normalised heat map annotated with counts.

    Args:
        matrix (`Sequence[Sequence[int]]`): count matrix, rows in ``labels`` order, columns in ``columns``.
        labels (`Sequence[str]`): row names (and column names when ``columns`` is not given).
        columns (`Sequence[str]`, *optional*): column names, e.g. ``labels`` plus ``"invalid"``.
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

    columns = list(labels if columns is None else columns)
    counts = np.asarray(matrix, dtype=float).reshape(len(labels), len(columns))
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(4.0, 0.75 * len(columns) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(columns)), labels=columns, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels=list(labels))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if title:
            ax.set_title(title)
        for i in range(len(labels)):
            for j in range(len(columns)):
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
