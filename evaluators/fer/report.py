"""UniFER-schema metrics JSON, per-sample records and the printed tables.

The metrics JSON keeps UniFER's keys unchanged (``overall``, ``per_class``, ``confusion_matrix``; every rate a
fraction in 0-1) and adds ``protocol``, ``dataset``, ``labels`` (row/column order of the matrix), ``counts``,
``source``, ``config``, ``higher_is_better`` and the provenance fields (unitune version, git revision, timestamp,
model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evaluators.fer.evaluate import LoadedResults, ProtocolScore
from evaluators.provenance import provenance

#: Direction of every metric in the FER metrics JSON.
HIGHER_IS_BETTER: dict[str, bool] = {"accuracy": True, "precision": True, "recall": True, "f1": True}

_MACRO = {
    "unifer": "macro over every label seen (true or predicted, unknown included), as UniFER",
    "strict": "macro over the candidate labels",
}

__all__ = [
    "DATASET_TITLES",
    "HIGHER_IS_BETTER",
    "build_metrics_json",
    "format_comparison",
    "format_report",
    "sample_records",
]

#: Display names of the FERBench sets.
DATASET_TITLES: dict[str, str] = {
    "rafdb": "RAF-DB",
    "ferplus": "FERPlus",
    "affectnet": "AffectNet",
    "sfew": "SFEW 2.0",
    "total": "FERBench total",
}


def build_metrics_json(
    score: ProtocolScore,
    source: str | Sequence[str],
    model: str | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the metrics document written to ``<stem>_metrics.json``.

    Example:

    >>> from evaluators.fer.evaluate import load_results_records, score_file
    >>> recs = [{"true_label": "sad", "model_response": "<answer>sad</answer>",
    ...          "candidate_labels": ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]}]
    >>> doc = build_metrics_json(score_file(load_results_records(recs, "m"), "strict"), "m")
    >>> list(doc)  # doctest: +NORMALIZE_WHITESPACE
    ['overall', 'per_class', 'confusion_matrix', 'protocol', 'dataset', 'labels', 'counts', 'source',
     'evaluator', 'unitune_version', 'git_revision', 'timestamp', 'model', 'scale', 'config', 'higher_is_better']
    """
    return {
        **score.metrics,
        "protocol": score.protocol,
        "dataset": score.dataset,
        "labels": list(score.labels),
        "counts": dict(score.counts),
        "source": source if isinstance(source, str) else list(source),
        "evaluator": "unitune eval fer",
        **provenance(model),
        "scale": "fractions in 0-1",
        "config": {"protocol": score.protocol, "macro_average": _MACRO.get(score.protocol), **(config or {})},
        "higher_is_better": HIGHER_IS_BETTER,
    }


def sample_records(loaded: LoadedResults, scores: Sequence[ProtocolScore]) -> list[dict[str, Any]]:
    """One record per item: identity, gold label, error flag, the response, ``<protocol>_pred``/``_rule``.

    Example:

    >>> from evaluators.fer.evaluate import load_results_records, score_file
    >>> recs = [{"true_label": "sad", "image_path": "/x.png", "model_response": "so sad",
    ...          "candidate_labels": ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]}]
    >>> loaded = load_results_records(recs, "m")
    >>> sample_records(loaded, [score_file(loaded, "unifer"), score_file(loaded, "strict")])[0]
    ... # doctest: +NORMALIZE_WHITESPACE
    {'index': 0, 'image_path': '/x.png', 'true_label': 'sad', 'error': False, 'model_response': 'so sad',
     'unifer_pred': 'sad', 'unifer_rule': 'response_label', 'strict_pred': 'invalid', 'strict_rule': 'no_answer'}
    """
    rows = []
    for index, record in enumerate(loaded.records):
        row: dict[str, Any] = {
            "index": index,
            "image_path": record.get("image_path"),
            "true_label": loaded.true_labels[index],
            "error": loaded.errors[index],
            "model_response": record.get("model_response"),
        }
        for score in scores:
            row[f"{score.protocol}_pred"] = score.predictions[index]
            row[f"{score.protocol}_rule"] = score.rules[index]
        rows.append(row)
    return rows


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:.4f}"


def format_report(score: ProtocolScore, title: str) -> str:
    """Counts, overall metrics, confusion matrix and per-class table as UniFER prints them.

    Example:

    >>> from evaluators.fer.evaluate import load_results_records, score_file
    >>> recs = [{"true_label": "sad", "model_response": "<answer>sad</answer>",
    ...          "candidate_labels": ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]}]
    >>> print(format_report(score_file(load_results_records(recs, "m"), "strict"), "demo").splitlines()[0])
    == demo · protocol strict · SFEW 2.0 ==
    """
    m, labels = score.metrics, score.labels
    lines = [
        f"== {title} · protocol {score.protocol} · {DATASET_TITLES.get(score.dataset, score.dataset)} =="
    ]
    lines.append("counts: " + ", ".join(f"{k} {v}" for k, v in score.counts.items()))
    o = m["overall"]
    lines.append(
        f"accuracy {_fmt(o['accuracy'])}  precision(macro) {_fmt(o['precision'])}  "
        f"recall(macro) {_fmt(o['recall'])}  f1(macro) {_fmt(o['f1'])}"
    )
    lines.append("confusion matrix (rows true, columns predicted):")
    lines.append(f"{'':>10}" + "".join(f"{label[:5]:>8}" for label in labels))
    for label, row in zip(labels, m["confusion_matrix"], strict=True):
        lines.append(f"{label[:10]:>10}" + "".join(f"{v:>8}" for v in row))
    lines.append(f"{'class':<12} {'precision':<10} {'recall':<10} {'f1':<10} {'support':<8}")
    for row in m["per_class"]:
        lines.append(
            f"{row['emotion']:<12} {row['precision']:<10.4f} {row['recall']:<10.4f} {row['f1']:<10.4f} "
            f"{row['support']:<8}"
        )
    return "\n".join(lines)


def format_comparison(rows: Sequence[tuple[str, ProtocolScore]]) -> str:
    """A one-line-per-(file, protocol) summary table, protocols side by side.

    Under ``strict`` the macro averages run over every candidate, so a candidate without items or
    predictions counts as 0 (below, 6 of SFEW's 7 classes are absent).

    Example:

    >>> from evaluators.fer.evaluate import load_results_records, score_file
    >>> recs = [{"true_label": "sad", "model_response": "<answer>sad</answer>",
    ...          "candidate_labels": ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]}]
    >>> s = score_file(load_results_records(recs, "m"), "strict")
    >>> print(format_comparison([("m", s)]).splitlines()[2])
    | m | SFEW 2.0 | strict | 1 | 0 | 0 | 1 | 1.0000 | 0.1429 | 0.1429 | 0.1429 |
    """
    head = (
        "| file | dataset | protocol | items | errors | unknown/invalid | scored | accuracy | "
        "precision | recall | f1 |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, score in rows:
        c, o = score.counts, score.metrics["overall"]
        unread = c.get("unknown", c.get("invalid", 0))
        scored = c.get("valid", c.get("scored", 0))
        lines.append(
            f"| {name} | {DATASET_TITLES.get(score.dataset, score.dataset)} | {score.protocol} | {c['total']} | "
            f"{c['errors']} | {unread} | {scored} | {_fmt(o['accuracy'])} | {_fmt(o['precision'])} | "
            f"{_fmt(o['recall'])} | {_fmt(o['f1'])} |"
        )
    return "\n".join(lines)
