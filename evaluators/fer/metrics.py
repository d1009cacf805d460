"""FER metrics as pure functions returning plain dicts (JSON-ready floats and ints).

The values are exactly scikit-learn's ``accuracy_score``, ``precision_recall_fscore_support(...,
zero_division=0)`` and ``confusion_matrix`` (the same float operations in the same order; tests compare
with ``==`` on random labels), computed with numpy alone: importing scikit-learn costs ~2 s, far more
than scoring every FERBench file. The protocols differ in which labels the macro average runs over:

- ``unifer``: macro P/R/F1 **without** ``labels=``, so every label seen in either list, ``"unknown"``
  included, is a class (UniFER's choice); matrix and per-class rows are restricted to ``labels``.
- ``strict``: macro P/R/F1 over ``labels`` (the candidates) only; ``"invalid"`` predictions are wrong
  answers for their true class but not a class of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

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
    import numpy as np  # here, not at module level: `unitune eval fer --help` stays light

    # Integer codes in sorted label order: sklearn's classes are the sorted union of the labels seen.
    names = sorted({*labels, *true_labels, *pred_labels})
    codes = {label: code for code, label in enumerate(names)}
    n = len(names)
    y_true = np.fromiter(map(codes.__getitem__, true_labels), dtype=np.int64, count=len(true_labels))
    y_pred = np.fromiter(map(codes.__getitem__, pred_labels), dtype=np.int64, count=len(pred_labels))
    full = np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)  # rows true, columns predicted
    tp_all, true_all, pred_all = np.diagonal(full), full.sum(axis=1), full.sum(axis=0)
    label_codes = np.array([codes[label] for label in labels], dtype=np.int64)
    seen = np.flatnonzero((true_all > 0) | (pred_all > 0))  # sklearn's unique_labels(y_true, y_pred)
    macro_codes = label_codes if macro_over_labels else seen
    precision, recall, f1 = (float(np.nanmean(v)) for v in _prf(tp_all, true_all, pred_all, macro_codes))
    per_p, per_r, per_f = _prf(tp_all, true_all, pred_all, label_codes)
    matrix = full[np.ix_(label_codes, label_codes)]
    return {
        "overall": {
            "accuracy": int(tp_all.sum()) / len(true_labels),
            "precision": precision,
            "recall": recall,
            "f1": f1,
        },
        "per_class": [
            {"emotion": label, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, per_p, per_r, per_f, true_all[label_codes], strict=True)
        ],
        "confusion_matrix": matrix.tolist(),
    }


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` in float64, 0 where the denominator is 0 (``zero_division=0``)."""
    import numpy as np

    denominator = denominator.astype(np.float64)
    zero = denominator == 0
    denominator[zero] = 1
    result = numerator.astype(np.float64) / denominator
    result[zero] = 0.0
    return result


def _prf(
    tp: np.ndarray, true: np.ndarray, pred: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 of ``codes`` (in that order), as sklearn computes them."""
    import numpy as np

    tp, true, pred = tp[codes], true[codes], pred[codes]
    f1 = _divide(2.0 * tp.astype(np.float64), 1.0 * true.astype(np.float64) + pred.astype(np.float64))
    return _divide(tp, pred), _divide(tp, true), f1
