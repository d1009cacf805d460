"""LaTeX as Uni-MuMER sees it: whitespace tokens, answer extraction from CoT outputs, symbol counts.

Uni-MuMER labels are space-tokenised LaTeX (``\\frac { a } { b }``); upstream scores by ``str.split()``
with no normalisation, and the Tree-CoT / Symbol-Counting targets put the LaTeX on the last line.
"""

from __future__ import annotations

from collections import Counter

__all__ = [
    "EXTRACT_MODES",
    "count_symbols",
    "extract_latex",
    "format_counts",
    "tokenize",
]

#: Accepted values of ``extract_latex(mode=...)`` (and of ``unitune eval hmer --extract``).
EXTRACT_MODES = ("raw", "last-line", "auto")


def tokenize(latex: str | None) -> list[str]:
    """Split LaTeX into upstream's tokens: whitespace-separated, nothing normalised.

    Example:

    >>> tokenize("\\\\frac { a } { b }")
    ['\\\\frac', '{', 'a', '}', '{', 'b', '}']
    >>> tokenize(None)
    []
    """
    if not isinstance(latex, str):
        return []
    return latex.split()


def extract_latex(text: str | None, mode: str = "raw") -> str:
    """Return the LaTeX answer of a model output.

    Args:
        text (`str` or `None`): the model output; ``None`` and non-strings count as ``""``.
        mode (`str`, defaults to ``"raw"``):
            - ``"raw"``: the whole text, stripped (upstream's behaviour, used for parity).
            - ``"last-line"``: the last non-empty line, stripped (Tree-CoT and Symbol-Counting outputs).
            - ``"auto"``: ``"last-line"`` when the text has more than one non-empty line, else ``"raw"``.
              Uni-MuMER's plain answers are single-line, its CoT answers end with the LaTeX line.

    Example:

    >>> extract_latex("  x ^ { 2 } ")
    'x ^ { 2 }'
    >>> extract_latex("\\\\frac\\n\\ta (above)\\n\\tb (below)\\n\\\\frac { a } { b }\\n", mode="auto")
    '\\\\frac { a } { b }'
    >>> extract_latex("a: 1, b: 1\\na + b", mode="raw")
    'a: 1, b: 1\\na + b'
    """
    if mode not in EXTRACT_MODES:
        raise ValueError(f"`mode` must be one of {EXTRACT_MODES}, got {mode!r}")
    if not isinstance(text, str):
        return ""
    if mode == "raw":
        return text.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    if mode == "auto" and len(lines) == 1:
        return lines[0]
    return lines[-1]


def count_symbols(latex: str) -> list[tuple[str, int]]:
    """Count whitespace tokens in first-seen order, dropping only ``{`` and ``}`` (upstream's SC rule).

    Example:

    >>> count_symbols("x ^ { 2 } + x")
    [('x', 2), ('^', 1), ('2', 1), ('+', 1)]
    """
    counts = Counter(tok for tok in tokenize(latex) if tok not in ("{", "}"))
    # Counter keeps insertion order, which is first-seen order.
    return list(counts.items())


def format_counts(latex: str) -> str:
    """Format :func:`count_symbols` as upstream's SC line: ``"tok: n, tok: n"``.

    Example:

    >>> format_counts("x ^ { 2 } + x")
    'x: 2, ^: 1, 2: 1, +: 1'
    """
    return ", ".join(f"{tok}: {n}" for tok, n in count_symbols(latex))
