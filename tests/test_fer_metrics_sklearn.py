"""The numpy FER metrics equal scikit-learn's, float for float, on random label sets (sklearn is the reference)."""

from __future__ import annotations

import random

import pytest

from evaluators.fer.metrics import compute_metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the reference (dev extra)")


def sklearn_reference(true: list[str], pred: list[str], labels: list[str], macro_over_labels: bool) -> dict:
    """UniFER's own calls on the string labels (what the evaluator used before it dropped scikit-learn)."""
    accuracy = sklearn_metrics.accuracy_score(true, pred)
    kwargs = {"labels": labels} if macro_over_labels else {}
    p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(
        true, pred, average="macro", zero_division=0, **kwargs
    )
    per = sklearn_metrics.precision_recall_fscore_support(
        true, pred, labels=labels, average=None, zero_division=0
    )
    if set(labels) & set(true):
        matrix = sklearn_metrics.confusion_matrix(true, pred, labels=labels).tolist()
    else:
        matrix = [[0] * len(labels) for _ in labels]
    return {
        "overall": {"accuracy": float(accuracy), "precision": float(p), "recall": float(r), "f1": float(f)},
        "per_class": [
            {"emotion": label, "precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)}
            for label, a, b, c, d in zip(labels, *per, strict=True)
        ],
        "confusion_matrix": matrix,
    }


@pytest.mark.parametrize("seed", range(60))
def test_equal_to_sklearn_on_random_labels(seed: int) -> None:
    rng = random.Random(seed)
    pool = [
        "anger",
        "contempt",
        "disgust",
        "fear",
        "happy",
        "neutral",
        "sad",
        "surprise",
        "unknown",
        "invalid",
    ]
    labels = rng.sample(pool[:8], rng.randint(1, 8))
    extra = rng.sample(pool, rng.randint(0, 4))  # labels outside the candidates (unknown, invalid, others)
    n = rng.choice([1, 2, 7, 50, 500, 3000])
    true = [rng.choice(labels + extra[:1]) for _ in range(n)]
    pred = [rng.choice(labels + extra) if rng.random() < 0.6 else t for t in true]
    for macro_over_labels in (False, True):
        ours = compute_metrics(true, pred, labels, macro_over_labels=macro_over_labels)
        assert ours == sklearn_reference(true, pred, labels, macro_over_labels), (seed, macro_over_labels)
