"""Token-level Levenshtein distance and alignment: one C-backed implementation for every caller.

The HMER evaluator (ExpRate family), the Error-Driven-Learning builder and the HMER rewards all use
these two functions, so "one edit" means the same thing when building data, training and scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

__all__ = ["edit_distance", "edit_opcodes", "edit_similarity"]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (unit costs for insert, delete, replace).

    Example:

    >>> edit_distance(["x", "^", "{", "2", "}"], ["x", "^", "{", "3", "}"])
    1
    >>> edit_distance([], ["a", "b"])
    2
    """
    return Levenshtein.distance(list(reference), list(hypothesis))


def edit_opcodes(reference: Sequence[str], hypothesis: Sequence[str]) -> list[tuple[str, int, int, int, int]]:
    """Minimal alignment as ``(tag, i1, i2, j1, j2)`` blocks, ``tag`` in equal/replace/insert/delete.

    ``reference[i1:i2]`` becomes ``hypothesis[j1:j2]``; the non-equal blocks cost exactly
    :func:`edit_distance` edits in total (a replace block of unequal sides counts max of the two).

    Example:

    >>> edit_opcodes(["a", "+", "b"], ["a", "-", "b", "c"])
    [('equal', 0, 1, 0, 1), ('replace', 1, 2, 1, 2), ('equal', 2, 3, 2, 3), ('insert', 3, 3, 3, 4)]
    """
    if not isinstance(reference, list):
        reference = list(reference)
    if not isinstance(hypothesis, list):
        hypothesis = list(hypothesis)
    return Levenshtein.opcodes(reference, hypothesis).as_list()  # the tuples, made in C


def edit_similarity(distance: int, reference_len: int, hypothesis_len: int) -> float:
    """Uni-MuMER's per-sample edit score as a fraction: ``1 - d / max(len(gt), len(pred))``.

    1.0 when both sequences are empty, 0.0 when exactly one is. The HMER evaluator reports it x 100
    ("EditScore") and ``hmer_edit_score_reward`` returns it as is.

    Example:

    >>> edit_similarity(1, 4, 5)
    0.8
    >>> edit_similarity(0, 0, 0), edit_similarity(3, 0, 3), edit_similarity(2, 2, 0)
    (1.0, 0.0, 0.0)
    """
    if not reference_len and not hypothesis_len:
        return 1.0
    if not reference_len or not hypothesis_len:
        return 0.0
    return 1 - distance / max(reference_len, hypothesis_len)
