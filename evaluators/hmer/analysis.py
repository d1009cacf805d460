"""Error analysis upstream lacks: ExpRate by length and structure, token confusions, CoT consistency, plots.

Everything reads the alignments of :class:`~evaluators.hmer.metrics.HmerResult`, so the confusions
are exactly the edits the ExpRate family counted. Substitution/insertion/deletion counts show the
visually confusable symbols (``x``/``\\times``, ``1``/``l``...) that Error-Driven Learning targets.
"""

from __future__ import annotations

import io
import operator
import os
from collections import Counter
from collections.abc import Sequence
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter
from pathlib import Path

from evaluators.hmer.metrics import STRUCTURES, HmerResult
from evaluators.io_utils import atomic_write_bytes
from evaluators.knowledge.latex import count_symbols

__all__ = [
    "LENGTH_BUCKETS",
    "STRUCTURES",
    "analyze",
    "by_length",
    "by_structure",
    "parse_counts_line",
    "plot_analysis",
    "sc_consistency",
    "token_confusions",
]

#: Label-length buckets (in tokens, inclusive); ``None`` means no upper bound.
LENGTH_BUCKETS: tuple[tuple[int, int | None], ...] = (
    (0, 0),
    (1, 5),
    (6, 10),
    (11, 15),
    (16, 20),
    (21, 30),
    (31, 50),
    (51, None),
)


def _stats_from_sums(n: int, exact: int, within_1: int, total: int) -> dict[str, float | int]:
    """ExpRate, ≤1 and mean distance of a non-empty group, from its sums."""
    return {
        "n": n,
        "exprate": (exact / n) * 100,
        "error_le_1": (within_1 / n) * 100,
        "mean_distance": total / n,
    }


def _bucket_name(low: int, high: int | None) -> str:
    if high is None:
        return f"{low}+"
    return str(low) if low == high else f"{low}-{high}"


_BUCKET_NAMES = tuple(_bucket_name(lo, hi) for lo, hi in LENGTH_BUCKETS)
#: Bucket index of every label length up to the open bucket's start (longer labels: the last bucket).
_BUCKET_OF_LENGTH = tuple(
    next(i for i, (lo, hi) in enumerate(LENGTH_BUCKETS) if length >= lo and (hi is None or length <= hi))
    for length in range(LENGTH_BUCKETS[-1][0] + 1)
)
_STRUCTURE_NAMES = (*STRUCTURES, "plain")


def _group_stats_from_histogram(
    histogram: Counter[tuple[int, int]], names: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """ExpRate, ≤1 and mean distance per group from ``(group, distance) -> samples`` (empty groups left out)."""
    n = [0] * len(names)
    exact = [0] * len(names)
    within_1 = [0] * len(names)
    total = [0] * len(names)
    for (group, distance), count in histogram.items():
        n[group] += count
        total[group] += distance * count
        if distance <= 1:
            within_1[group] += count
            if distance == 0:
                exact[group] += count
    return {
        name: _stats_from_sums(n[i], exact[i], within_1[i], total[i]) for i, name in enumerate(names) if n[i]
    }


def _length_and_structure(result: HmerResult) -> tuple[dict[str, dict], dict[str, dict]]:
    """:func:`by_length` and :func:`by_structure` from one histogram counted in C, no Python loop per sample.

    Samples are counted per distinct (label length, structure markers, distance), the markers found while
    scoring (``result.label_markers``); the length buckets and structure groups are then summed per key.
    """
    last = len(_BUCKET_OF_LENGTH) - 1
    by_key = Counter(zip(result.gt_lens, result.label_markers, result.distances, strict=True))
    plain = len(STRUCTURES)
    groups_of: dict[frozenset[str], list[int]] = {}
    lengths: Counter[tuple[int, int]] = Counter()
    structures: Counter[tuple[int, int]] = Counter()
    for (length, present, distance), count in by_key.items():
        lengths[_BUCKET_OF_LENGTH[min(length, last)], distance] += count
        groups = groups_of.get(present)
        if groups is None:
            groups = [i for i, markers in enumerate(STRUCTURES.values()) if not present.isdisjoint(markers)]
            groups = groups_of[present] = groups or [plain]
        for group in groups:
            structures[group, distance] += count
    return (
        _group_stats_from_histogram(lengths, _BUCKET_NAMES),
        _group_stats_from_histogram(structures, _STRUCTURE_NAMES),
    )


def by_length(result: HmerResult) -> dict[str, dict]:
    """ExpRate, ≤1 and mean distance per label-length bucket (empty buckets are left out).

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> from evaluators.hmer.metrics import evaluate_samples
    >>> r = evaluate_samples([HmerSample("0", "a", "a"), HmerSample("1", "a b c d e f", "a b c d e g")])
    >>> {k: v["exprate"] for k, v in by_length(r).items()}
    {'1-5': 100.0, '6-10': 0.0}
    """
    return _length_and_structure(result)[0]


def by_structure(result: HmerResult) -> dict[str, dict]:
    """ExpRate, ≤1 and mean distance for labels containing each of :data:`STRUCTURES`, and "plain".

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> from evaluators.hmer.metrics import evaluate_samples
    >>> r = evaluate_samples([HmerSample("0", "x ^ { 2 }", "x ^ { 3 }"), HmerSample("1", "a + b", "a + b")])
    >>> {k: v["exprate"] for k, v in by_structure(r).items()}
    {'script': 0.0, 'plain': 100.0}
    """
    return _length_and_structure(result)[1]


def token_confusions(result: HmerResult, top: int = 20) -> dict[str, list]:
    """Most frequent substitutions ``[gt, pred, count]``, insertions and deletions ``[token, count]``.

    Ties keep the order in which the confusions first occur. The edited tokens of every op
    (``Alignment.op_tokens``) are gathered by C iterators and counted once per kind, with no Python code per
    op when every replace block has as many tokens on both sides (as the alignment makes them).

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> from evaluators.hmer.metrics import evaluate_samples
    >>> r = evaluate_samples([HmerSample("0", "x + 1", "\\\\times + l"), HmerSample("1", "x y", "x")])
    >>> token_confusions(r)
    {'substitutions': [['x', '\\\\times', 1], ['1', 'l', 1]], 'insertions': [], 'deletions': [['y', 1]]}
    """
    with_edits = list(compress(result.alignments, map(attrgetter("ops"), result.alignments)))
    tags = list(map(itemgetter(0), chain.from_iterable(map(attrgetter("ops"), with_edits))))
    spans = list(chain.from_iterable(map(attrgetter("op_tokens"), with_edits)))
    gt_spans = list(map(itemgetter(0), spans))
    pred_spans = list(map(itemgetter(1), spans))
    replaced = list(map(operator.eq, tags, repeat("replace")))
    others = list(map(operator.not_, replaced))
    replaced_gt, replaced_pred = list(compress(gt_spans, replaced)), list(compress(pred_spans, replaced))
    if all(map(operator.eq, map(len, replaced_gt), map(len, replaced_pred))):
        # Replace blocks pair all their tokens; deletes/inserts leave the other side empty: every list is
        # gathered by C iterators, in op order.
        substituted = Counter(chain.from_iterable(map(zip, replaced_gt, replaced_pred)))
        deleted = Counter(chain.from_iterable(compress(gt_spans, others)))
        inserted = Counter(chain.from_iterable(compress(pred_spans, others)))
    else:
        substituted, inserted, deleted = _confusions_by_op(tags, gt_spans, pred_spans)
    return {
        "substitutions": [[g, p, n] for (g, p), n in substituted.most_common(top)],
        "insertions": [[t, n] for t, n in inserted.most_common(top)],
        "deletions": [[t, n] for t, n in deleted.most_common(top)],
    }


def _confusions_by_op(
    tags: list[str], gt_spans: list[list[str]], pred_spans: list[list[str]]
) -> tuple[Counter[tuple[str, str]], Counter[str], Counter[str]]:
    """Substitution, insertion and deletion counts, op by op (replace blocks of unequal sides included).

    Example:

    >>> _confusions_by_op(["replace", "delete"], [["a", "b"], ["c"]], [["x"], []])
    (Counter({('a', 'x'): 1}), Counter(), Counter({'b': 1, 'c': 1}))
    """
    substituted: list[tuple[str, str]] = []
    inserted: list[str] = []
    deleted: list[str] = []
    for tag, gt, pred in zip(tags, gt_spans, pred_spans, strict=True):
        if tag == "replace":
            substituted.extend(zip(gt, pred, strict=False))  # the first min(len) tokens pair up
            width = min(len(gt), len(pred))
            deleted.extend(gt[width:])
            inserted.extend(pred[width:])
        elif tag == "delete":
            deleted.extend(gt)
        elif tag == "insert":
            inserted.extend(pred)
    return Counter(substituted), Counter(inserted), Counter(deleted)


def parse_counts_line(line: str) -> dict[str, int] | None:
    """Parse a Symbol-Counting line ``"tok: n, tok: n"``; ``None`` when the line is not one.

    Example:

    >>> parse_counts_line("x: 2, ^: 1, ,: 1")
    {'x': 2, '^': 1, ',': 1}
    >>> parse_counts_line("x ^ { 2 }") is None
    True
    """
    counts: dict[str, int] = {}
    for item in line.strip().split(", "):
        token, sep, number = item.rpartition(": ")
        if not sep or not token or " " in token or not number.isdigit():
            return None
        counts[token] = counts.get(token, 0) + int(number)
    return counts or None


def sc_consistency(raw_preds: Sequence[str]) -> dict[str, float | int | None]:
    """How often a Symbol-Counting output's counts agree with its own final LaTeX line.

    Only outputs whose second-to-last non-empty line parses as a counts line are considered; a
    disagreement means the model's "reasoning" and its answer diverge. Cheap: one pass, no alignment.

    Example:

    >>> sc_consistency(["x: 2, +: 1\\nx + x", "x: 1\\nx + y", "a + b"])
    {'n_with_counts': 2, 'consistent': 1, 'rate': 50.0}
    """
    with_counts = consistent = 0
    if set(map(type, raw_preds)) <= {str}:  # those without a line break skipped in C
        raw_preds = list(compress(raw_preds, map(operator.contains, raw_preds, repeat("\n"))))
    for text in raw_preds:
        # a counts line and an answer line need a line break (most outputs have none: no strip needed)
        if not isinstance(text, str) or "\n" not in text or "\n" not in text.strip():
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        stated = parse_counts_line(lines[-2])
        if stated is None:
            continue
        with_counts += 1
        consistent += stated == dict(count_symbols(lines[-1]))
    return {
        "n_with_counts": with_counts,
        "consistent": consistent,
        "rate": (consistent / with_counts) * 100 if with_counts else None,
    }


def analyze(result: HmerResult, raw_preds: Sequence[str] | None = None, top: int = 20) -> dict:
    """All of the above as one JSON-ready dict (``sc_consistency`` only when some output has counts)."""
    lengths, structures = _length_and_structure(result)
    analysis: dict = {
        "by_length": lengths,
        "by_structure": structures,
        "confusions": token_confusions(result, top=top),
    }
    if raw_preds is not None:
        consistency = sc_consistency(raw_preds)
        if consistency["n_with_counts"]:
            analysis["sc_consistency"] = consistency
    return analysis


def _label(text: str) -> str:
    """Matplotlib reads ``$...$`` as mathtext; LaTeX tokens must show literally."""
    return text.replace("$", r"\$")


def plot_analysis(analysis: dict, path: str | os.PathLike, title: str = "") -> Path:
    """Draw ExpRate by length and structure and the top token confusions into one PNG (matplotlib Agg).

    The PNG is written next to a temporary name and renamed, so a crash leaves no partial file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, key, label in (
        (axes[0][0], "by_length", "label length (tokens)"),
        (axes[0][1], "by_structure", "label contains"),
    ):
        groups = analysis[key]
        names = list(groups)
        bars = ax.bar(names, [groups[n]["exprate"] for n in names], color="#4C72B0")
        for bar, name in zip(bars, names, strict=True):
            ax.annotate(
                f"n={groups[name]['n']}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_ylim(0, 110)
        ax.set_ylabel("ExpRate (%)")
        ax.set_xlabel(label)
        ax.tick_params(axis="x", rotation=30)
    confusions = analysis["confusions"]
    subs = confusions["substitutions"][:15][::-1]
    axes[1][0].barh([_label(f"{g} → {p}") for g, p, _ in subs], [n for *_, n in subs], color="#DD8452")
    axes[1][0].set_title("top substitutions (label → prediction)")
    ins_del = [(f"+ {t}", n) for t, n in confusions["insertions"][:8]]
    ins_del += [(f"- {t}", n) for t, n in confusions["deletions"][:8]]
    ins_del.sort(key=lambda item: item[1])
    axes[1][1].barh([_label(t) for t, _ in ins_del], [n for _, n in ins_del], color="#55A868")
    axes[1][1].set_title("top insertions (+) and deletions (-)")
    for ax in (axes[1][0], axes[1][1]):
        ax.set_xlabel("count")
        ax.tick_params(axis="y", labelsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    image = io.BytesIO()
    try:
        fig.savefig(image, format="png", dpi=110)
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, image.getvalue())
