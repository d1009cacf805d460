"""Error analysis upstream lacks: ExpRate by length and structure, token confusions, CoT consistency, plots.

Everything reads the alignments of :class:`~evaluators.hmer.metrics.HmerResult`, so the confusions
are exactly the edits the ExpRate family counted. Substitution/insertion/deletion counts show the
visually confusable symbols (``x``/``\\times``, ``1``/``l``...) that Error-Driven Learning targets.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from evaluators.hmer.metrics import HmerResult
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

#: Structure name -> label tokens that mark it. A sample can have several; "plain" has none.
STRUCTURES: dict[str, frozenset[str]] = {
    "frac": frozenset({"\\frac", "\\dfrac", "\\tfrac"}),
    "script": frozenset({"^", "_"}),
    "sqrt": frozenset({"\\sqrt"}),
    "environment": frozenset({"\\begin"}),
    "big_operator": frozenset({"\\sum", "\\int", "\\prod", "\\lim", "\\oint"}),
}
_ALL_MARKERS = frozenset().union(*STRUCTURES.values())


def _group_stats(distances: Sequence[int]) -> dict[str, float | int | None]:
    n = len(distances)
    exact = sum(1 for d in distances if d == 0)
    return {
        "n": n,
        "exprate": (exact / n) * 100 if n else None,
        "error_le_1": (sum(1 for d in distances if d <= 1) / n) * 100 if n else None,
        "mean_distance": sum(distances) / n if n else None,
    }


def _bucket_name(low: int, high: int | None) -> str:
    if high is None:
        return f"{low}+"
    return str(low) if low == high else f"{low}-{high}"


def by_length(result: HmerResult) -> dict[str, dict]:
    """ExpRate, ≤1 and mean distance per label-length bucket (empty buckets are left out).

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> from evaluators.hmer.metrics import evaluate_samples
    >>> r = evaluate_samples([HmerSample("0", "a", "a"), HmerSample("1", "a b c d e f", "a b c d e g")])
    >>> {k: v["exprate"] for k, v in by_length(r).items()}
    {'1-5': 100.0, '6-10': 0.0}
    """
    groups: dict[str, list[int]] = {_bucket_name(lo, hi): [] for lo, hi in LENGTH_BUCKETS}
    for tokens, alignment in zip(result.gt_tokens, result.alignments, strict=True):
        length = len(tokens)
        for lo, hi in LENGTH_BUCKETS:
            if length >= lo and (hi is None or length <= hi):
                groups[_bucket_name(lo, hi)].append(alignment.distance)
                break
    return {name: _group_stats(d) for name, d in groups.items() if d}


def by_structure(result: HmerResult) -> dict[str, dict]:
    """ExpRate, ≤1 and mean distance for labels containing each of :data:`STRUCTURES`, and "plain".

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> from evaluators.hmer.metrics import evaluate_samples
    >>> r = evaluate_samples([HmerSample("0", "x ^ { 2 }", "x ^ { 3 }"), HmerSample("1", "a + b", "a + b")])
    >>> {k: v["exprate"] for k, v in by_structure(r).items()}
    {'script': 0.0, 'plain': 100.0}
    """
    groups: dict[str, list[int]] = {name: [] for name in (*STRUCTURES, "plain")}
    plain = groups["plain"]
    for tokens, alignment in zip(result.gt_tokens, result.alignments, strict=True):
        present = _ALL_MARKERS.intersection(tokens)  # scans the tokens in C, builds no set of them
        if not present:
            plain.append(alignment.distance)
            continue
        for name, markers in STRUCTURES.items():
            if not present.isdisjoint(markers):
                groups[name].append(alignment.distance)
    return {name: _group_stats(d) for name, d in groups.items() if d}


def token_confusions(result: HmerResult, top: int = 20) -> dict[str, list]:
    """Most frequent substitutions ``[gt, pred, count]``, insertions and deletions ``[token, count]``.

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> from evaluators.hmer.metrics import evaluate_samples
    >>> r = evaluate_samples([HmerSample("0", "x + 1", "\\\\times + l"), HmerSample("1", "x y", "x")])
    >>> token_confusions(r)
    {'substitutions': [['x', '\\\\times', 1], ['1', 'l', 1]], 'insertions': [], 'deletions': [['y', 1]]}
    """
    substitutions: Counter[tuple[str, str]] = Counter()
    insertions: Counter[str] = Counter()
    deletions: Counter[str] = Counter()
    for gt, pred, alignment in zip(result.gt_tokens, result.pred_tokens, result.alignments, strict=True):
        for tag, i1, i2, j1, j2 in alignment.ops:
            if tag == "replace":
                width = min(i2 - i1, j2 - j1)
                substitutions.update(zip(gt[i1 : i1 + width], pred[j1 : j1 + width], strict=True))
                deletions.update(gt[i1 + width : i2])
                insertions.update(pred[j1 + width : j2])
            elif tag == "delete":
                deletions.update(gt[i1:i2])
            elif tag == "insert":
                insertions.update(pred[j1:j2])
    return {
        "substitutions": [[g, p, n] for (g, p), n in substitutions.most_common(top)],
        "insertions": [[t, n] for t, n in insertions.most_common(top)],
        "deletions": [[t, n] for t, n in deletions.most_common(top)],
    }


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
    for text in raw_preds:
        if not isinstance(text, str) or "\n" not in text.strip():
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
    analysis: dict = {
        "by_length": by_length(result),
        "by_structure": by_structure(result),
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
