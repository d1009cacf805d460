"""FER metrics as pure functions returning plain dicts (JSON-ready floats and ints).

Both protocols use scikit-learn's ``accuracy_score``, ``precision_recall_fscore_support`` and
``confusion_matrix``; they differ in which labels the macro average runs over:

- ``unifer``: macro P/R/F1 **without** ``labels=``, so every label seen in either list, ``"unknown"``
  included, is a class (UniFER's choice); matrix and per-class rows are restricted to ``labels``.
- ``strict``: macro P/R/F1 over ``labels`` (the candidates) only; ``"invalid"`` predictions are wrong
  answers for their true class but not a class of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

__all__ = ["compute_metrics", "empty_metrics"]


def empty_metrics(labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of an evaluation with nothing to score: overall values are ``None`` (JSON ``null``).

    Example:

    >>> empty_metrics(["a"])["overall"]
    {'accuracy': None, 'precision': None, 'recall': None, 'f1': None}
    """
    return {
        "overall": {"accuracy": None, "precision": None, "recall": None, "f1": None},
        "per_class": [
            {"emotion": label, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for label in labels
        ],
        "confusion_matrix": [[0] * len(labels) for _ in labels],
    }


def compute_metrics(
    true_labels: Sequence[str], pred_labels: Sequence[str], labels: Sequence[str], *, macro_over_labels: bool
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class rows and the confusion matrix.

    Args:
        true_labels (`Sequence[str]`): gold labels, one per scored item.
        pred_labels (`Sequence[str]`): predictions, same length (may hold ``"unknown"``/``"invalid"``).
        labels (`Sequence[str]`): row/column order of the matrix and of ``per_class``.
        macro_over_labels (`bool`): ``False`` reproduces UniFER (macro over every label seen, no
            ``labels=``); ``True`` is the strict protocol (macro over ``labels`` only).

    Returns:
        `dict`: ``{"overall": {accuracy, precision, recall, f1}, "per_class": [{emotion, precision, recall,
        f1, support}], "confusion_matrix": [[int]]}`` (UniFER's schema); see :func:`empty_metrics` for no items.

    Example:

    >>> true, pred = ["a", "a", "b", "b"], ["a", "unknown", "b", "a"]
    >>> compute_metrics(true, pred, ["a", "b"], macro_over_labels=False)["overall"]["recall"]  # a, b, unknown
    0.3333333333333333
    >>> compute_metrics(true, pred, ["a", "b"], macro_over_labels=True)["overall"]["recall"]
    0.5
    >>> compute_metrics(true, pred, ["a", "b"], macro_over_labels=True)["overall"]["precision"]
    0.75
    >>> compute_metrics(true, pred, ["a", "b"], macro_over_labels=False)["confusion_matrix"]
    [[1, 0], [1, 1]]
    """
    if len(true_labels) != len(pred_labels):
        raise ValueError(f"{len(true_labels)} true labels but {len(pred_labels)} predictions.")
    labels = list(labels)
    if not true_labels:
        return empty_metrics(labels)
    # sklearn sorts and compares string labels slowly; integer codes in the same sorted order give the same
    # classes, the same class order (so the same floating-point sums) and a much faster run.
    codes = {label: code for code, label in enumerate(sorted({*labels, *true_labels, *pred_labels}))}
    y_true = np.fromiter((codes[x] for x in true_labels), dtype=np.int64, count=len(true_labels))
    y_pred = np.fromiter((codes[x] for x in pred_labels), dtype=np.int64, count=len(pred_labels))
    label_codes = [codes[label] for label in labels]
    accuracy = accuracy_score(y_true, y_pred)
    macro_kwargs: dict[str, Any] = {"labels": label_codes} if macro_over_labels else {}
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0, **macro_kwargs
    )
    per_p, per_r, per_f, per_s = precision_recall_fscore_support(
        y_true, y_pred, labels=label_codes, average=None, zero_division=0
    )
    if set(labels) & set(true_labels):
        matrix = confusion_matrix(y_true, y_pred, labels=label_codes).tolist()
    else:  # sklearn refuses a matrix whose labels never occur in y_true
        matrix = [[0] * len(labels) for _ in labels]
    return {
        "overall": {
            "accuracy": float(accuracy),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
        },
        "per_class": [
            {"emotion": label, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, per_p, per_r, per_f, per_s, strict=True)
        ],
        "confusion_matrix": [[int(v) for v in row] for row in matrix],
    }
