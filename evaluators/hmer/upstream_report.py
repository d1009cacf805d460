"""Upstream Uni-MuMER's results-text layout, byte for byte.

Users compare ``<stem>_results.txt`` with the files upstream's ``scripts/eval_metrics_calculator.py``
wrote, so the layout keeps every space, ``%`` and ``≤``, upstream's rounding (``round(x, 4)``, then
``.2f`` of that for the distribution rows) and its label "Character Error Rate" for
``token_edits_per_gt_char``.
"""

from __future__ import annotations

from evaluators.hmer.metrics import THRESHOLDS, HmerResult

__all__ = ["format_upstream_results", "upstream_rounded"]

_RULE = "=" * 60


def upstream_rounded(result: HmerResult) -> dict[str, float]:
    """The values upstream stores (rounded to 4 decimals), under upstream's own key names.

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> from evaluators.hmer.metrics import evaluate_samples
    >>> upstream_rounded(evaluate_samples([HmerSample("0", "a b c", "a b d")]))["mean_edit_score"]
    66.6667
    """
    m = result.metrics
    return {
        "total_samples": result.n,
        "mean_edit_score": round(m["mean_edit_score"], 4),
        "bleu4_score": round(m["bleu4"], 4),
        "character_error_rate": round(m["token_edits_per_gt_char"], 4),
        "exact_match_rate": round(m["exprate"], 4),
        "error_le_1_rate": round(m["error_le_1"], 4),
        "error_le_2_rate": round(m["error_le_2"], 4),
        "error_le_3_rate": round(m["error_le_3"], 4),
    }


def format_upstream_results(result: HmerResult) -> str:
    """Render ``result`` exactly as upstream's results ``.txt`` (leading newline, trailing newline).

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> from evaluators.hmer.metrics import evaluate_samples
    >>> text = format_upstream_results(evaluate_samples([HmerSample("0", "a b", "a b")] * 1000))
    >>> print(text.splitlines()[6])
      Total Samples: 1,000
    >>> print(text.splitlines()[-3])
      Errors ≤ 3:  1,000 samples (100.00%)
    """
    r = upstream_rounded(result)
    lines = [
        "",
        _RULE,
        " " * 20 + "EVALUATION RESULTS",
        _RULE,
        "",
        "Dataset Statistics:",
        f"  Total Samples: {r['total_samples']:,}",
        "",
        "Core Metrics:",
        f"  Mean Edit Score:       {r['mean_edit_score']:>8.4f}%",
        f"  BLEU-4 Score:          {r['bleu4_score']:>8.4f}%",
        f"  Character Error Rate:  {r['character_error_rate']:>8.4f}",
        "",
        "Error Threshold Analysis:",
        f"  Exact Match Rate:      {r['exact_match_rate']:>8.4f}% (0 errors)",
        *(f"  Error ≤ {k}:             {r[f'error_le_{k}_rate']:>8.4f}%" for k in (1, 2, 3)),
        "",
        "Detailed Error Distribution:",
    ]
    for k in THRESHOLDS:
        count = result.counts[k]
        percentage = round((count / result.n) * 100, 4)
        lines.append(f"  Errors ≤ {k}: {count:>6,} samples ({percentage:>6.2f}%)")
    lines += ["", _RULE, ""]
    return "\n".join(lines)
