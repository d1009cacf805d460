r"""Error-Driven Learning targets: mark a wrong prediction's errors and write the correction log.

Both tasks come from a (ground truth, wrong prediction) pair aligned at token level with
:func:`evaluators.knowledge.alignment.edit_opcodes` (the same Levenshtein used for scoring).
Adjacent non-equal alignment blocks are merged into one *region*, so regions are always separated
by at least one correct token:

- a region with predicted tokens becomes ``<error_start> tokens <error_end>`` in the marked formula
  and ``REPLACE:old -> new`` (gt has tokens there) or ``DELETE:old`` (gt has none) in the log;
- a region with only missing tokens becomes ``<deleted>`` and ``INSERT:new after anchor``, where
  ``anchor`` is the correct token just before it (``<start>`` at the beginning).

Log lines are in the left-to-right order of the marks, one per line; the ``error_fix`` answer ends with
the corrected LaTeX on its last line. :func:`apply_corrections` is the inverse: marked formula + log → gt.
This format is ours; upstream's exact EDL strings are not public.
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluators.knowledge.alignment import edit_opcodes

from .prompts import DELETED, ERROR_END, ERROR_START, MARKERS

__all__ = [
    "START_ANCHOR",
    "apply_corrections",
    "correction_log",
    "error_find_answer",
    "error_fix_answer",
    "error_regions",
    "mark_errors",
    "parse_fix_answer",
]

#: ``INSERT:… after <start>`` when the missing tokens come first.
START_ANCHOR = "<start>"


def _tokens(text: str | Sequence[str], what: str) -> list[str]:
    tokens = text.split() if isinstance(text, str) else list(text)
    reserved = MARKERS.intersection(tokens)
    if reserved:
        raise ValueError(f"{what} contains the reserved marker token {sorted(reserved)[0]}")
    return tokens


def error_regions(gt: Sequence[str], pred: Sequence[str]) -> list[tuple[int, int, int, int]]:
    """Maximal non-equal regions ``(p1, p2, g1, g2)``: ``pred[p1:p2]`` should become ``gt[g1:g2]``.

    Example:

    >>> error_regions("a + b".split(), "a - b c".split())
    [(1, 2, 1, 2), (3, 4, 3, 3)]
    """
    regions: list[tuple[int, int, int, int]] = []
    for tag, p1, p2, g1, g2 in edit_opcodes(pred, gt):
        if tag == "equal":
            continue
        if regions and regions[-1][1] == p1 and regions[-1][3] == g1:
            regions[-1] = (regions[-1][0], p2, regions[-1][2], g2)
        else:
            regions.append((p1, p2, g1, g2))
    return regions


def mark_errors(gt: str | Sequence[str], pred: str | Sequence[str]) -> str:
    """The ``error_find`` answer: ``pred`` with wrong tokens wrapped and missing ones marked ``<deleted>``.

    Example:

    >>> mark_errors("x ^ { 2 } + 1", "x ^ { 3 } 1")
    'x ^ { <error_start> 3 <error_end> } <deleted> 1'
    """
    gt_toks, pred_toks = _tokens(gt, "gt"), _tokens(pred, "prediction")
    out: list[str] = []
    last = 0
    for p1, p2, _g1, _g2 in error_regions(gt_toks, pred_toks):
        out.extend(pred_toks[last:p1])
        if p2 > p1:
            out.append(ERROR_START)
            out.extend(pred_toks[p1:p2])
            out.append(ERROR_END)
        else:
            out.append(DELETED)
        last = p2
    out.extend(pred_toks[last:])
    return " ".join(out)


def correction_log(gt: str | Sequence[str], pred: str | Sequence[str]) -> list[str]:
    """One log line per mark of :func:`mark_errors`, in order.

    Example:

    >>> correction_log("x ^ { 2 } + 1", "x ^ { 3 } 1")
    ['REPLACE:3 -> 2', 'INSERT:+ after }']
    >>> correction_log("a b", "c a b d")
    ['DELETE:c', 'DELETE:d']
    """
    gt_toks, pred_toks = _tokens(gt, "gt"), _tokens(pred, "prediction")
    log: list[str] = []
    for p1, p2, g1, g2 in error_regions(gt_toks, pred_toks):
        old, new = " ".join(pred_toks[p1:p2]), " ".join(gt_toks[g1:g2])
        if p2 == p1:
            anchor = pred_toks[p1 - 1] if p1 else START_ANCHOR
            log.append(f"INSERT:{new} after {anchor}")
        elif g2 == g1:
            log.append(f"DELETE:{old}")
        else:
            log.append(f"REPLACE:{old} -> {new}")
    return log


def error_find_answer(gt: str, pred: str) -> str:
    """The ``error_find`` target (alias of :func:`mark_errors`)."""
    return mark_errors(gt, pred)


def error_fix_answer(gt: str, pred: str) -> str:
    r"""The ``error_fix`` target: the correction log, one entry a line, then the corrected LaTeX.

    Example:

    >>> print(error_fix_answer("\\frac { a } { b }", "\\frac { a } { 6 }"))
    REPLACE:6 -> b
    \frac { a } { b }
    """
    return "\n".join([*correction_log(gt, pred), " ".join(gt.split())])


def parse_fix_answer(answer: str) -> tuple[list[str], str]:
    r"""Split an ``error_fix`` answer into ``(log lines, corrected LaTeX)``.

    Example:

    >>> parse_fix_answer("REPLACE:3 -> 2\nx ^ { 2 }")
    (['REPLACE:3 -> 2'], 'x ^ { 2 }')
    """
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    if not lines:
        return [], ""
    return lines[:-1], lines[-1]


def apply_corrections(marked: str, log: Sequence[str] | str) -> str:
    r"""Apply a correction log to a marked formula; the inverse of :func:`mark_errors` + :func:`correction_log`.

    Args:
        marked (`str`): a formula with ``<error_start> … <error_end>`` spans and ``<deleted>`` marks.
        log (`list[str]` or `str`): the log lines (a string is split into lines), one per mark, in order.

    Returns:
        `str`: the corrected formula, tokens joined by single spaces.

    Raises:
        ValueError: the log does not fit the marks (wrong count, kind or old text).

    Example:

    >>> apply_corrections("x ^ { <error_start> 3 <error_end> } <deleted> 1", ["REPLACE:3 -> 2", "INSERT:+ after }"])
    'x ^ { 2 } + 1'
    """
    lines = [line for line in (log.splitlines() if isinstance(log, str) else log) if line.strip()]
    tokens = marked.split()
    out: list[str] = []
    entry = 0
    index = 0
    while index < len(tokens):
        tok = tokens[index]
        if tok not in (ERROR_START, DELETED):
            if tok == ERROR_END:
                raise ValueError(f"{ERROR_END} at token {index} without {ERROR_START}")
            out.append(tok)
            index += 1
            continue
        if entry >= len(lines):
            raise ValueError(f"the log has {len(lines)} entries but the formula has more marks")
        line = lines[entry].strip()
        entry += 1
        if tok == DELETED:
            if not line.startswith("INSERT:") or " after " not in line:
                raise ValueError(
                    f"mark {entry} is {DELETED}, expected `INSERT:content after position`, got {line!r}"
                )
            out.extend(line[len("INSERT:") :].rsplit(" after ", 1)[0].split())
            index += 1
            continue
        try:
            close = tokens.index(ERROR_END, index + 1)
        except ValueError:
            raise ValueError(f"{ERROR_START} at token {index} is never closed") from None
        old = " ".join(tokens[index + 1 : close])
        if line == f"DELETE:{old}":
            pass
        elif line.startswith(f"REPLACE:{old} -> "):
            out.extend(line[len(f"REPLACE:{old} -> ") :].split())
        else:
            raise ValueError(
                f"mark {entry} wraps {old!r}, expected `REPLACE:{old} -> new` or `DELETE:{old}`, got {line!r}"
            )
        index = close + 1
    if entry != len(lines):
        raise ValueError(f"the log has {len(lines)} entries but the formula has {entry} marks")
    return " ".join(out)
