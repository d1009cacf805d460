"""LaTeX as Uni-MuMER sees it: whitespace tokens, answer extraction from CoT outputs, symbol counts.

Uni-MuMER labels are space-tokenised LaTeX (``\\frac { a } { b }``); upstream scores by ``str.split()``
with no normalisation, and the Tree-CoT / Symbol-Counting targets put the LaTeX on the last line.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable

__all__ = [
    "EXTRACT_MODES",
    "LATEX_ALIASES",
    "count_symbols",
    "extract_latex",
    "extract_latex_all",
    "format_counts",
    "normalize_latex",
    "tokenize",
    "tokenize_all",
]

#: Accepted values of ``extract_latex(mode=...)`` (and of ``unitune eval hmer --extract``).
EXTRACT_MODES = ("raw", "last-line", "auto")


def tokenize(latex: str | None, intern: bool = False) -> list[str]:
    """Split LaTeX into upstream's tokens: whitespace-separated, nothing normalised.

    ``intern=True`` returns :func:`sys.intern`'ed tokens: equal tokens share one string, which keeps a
    million tokenised samples in a fraction of the memory (``\\frac`` is stored once, not per use).

    Example:

    >>> tokenize("\\\\frac { a } { b }")
    ['\\\\frac', '{', 'a', '}', '{', 'b', '}']
    >>> tokenize(None)
    []
    >>> a, b = tokenize("\\\\alpha", intern=True), tokenize("x \\\\alpha", intern=True)
    >>> a[0] is b[1]
    True
    """
    if not isinstance(latex, str):
        return []
    if intern:
        return list(map(sys.intern, latex.split()))
    return latex.split()


def tokenize_all(texts: Iterable[str], intern: bool = False) -> list[list[str]]:
    """:func:`tokenize` of every text (all strings), in one pass without a call per text.

    Example:

    >>> tokenize_all(["x ^ { 2 }", ""])
    [['x', '^', '{', '2', '}'], []]
    """
    if intern:
        return [list(map(sys.intern, text.split())) for text in texts]
    return [text.split() for text in texts]


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


def extract_latex_all(texts: Iterable[str | None], mode: str = "raw") -> list[str]:
    """:func:`extract_latex` of every text; ``"raw"`` on strings only is one C-level pass.

    Example:

    >>> extract_latex_all([" a ", None, "x\\ny"], mode="last-line")
    ['a', '', 'y']
    """
    texts = list(texts)
    if mode == "raw" and set(map(type, texts)) <= {str}:
        return list(map(str.strip, texts))
    return [extract_latex(text, mode) for text in texts]


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


#: Spellings rewritten by :func:`normalize_latex` to the one the ``*_normalized`` test sets use.
LATEX_ALIASES: dict[str, str] = {"\\le": "\\leq", "\\ge": "\\geq", "\\dots": "\\ldots"}

# Commands whose bare (unbraced) arguments get explicit braces, with their number of arguments.
_BRACED_ARGS = {"^": 1, "_": 1, "\\frac": 2, "\\sqrt": 1}
_NOT_AN_ARGUMENT = frozenset({"}", "\\begin", "\\end"})

_LATEX_TOKEN = re.compile(
    r"(?P<env>\\(?:begin|end))\s*\{\s*(?P<name>[A-Za-z]+\*?)\s*\}"  # \begin{matrix} -> \begin {matrix}
    r"|\\[A-Za-z]+"  # control word: \frac, \alpha
    r"|\\[^A-Za-z\s]"  # control symbol: \{, \\, \,
    r"|\\"  # lone backslash before whitespace or at the end
    r"|\S"  # any other single character
)


def _lex_latex(latex: str) -> list[str]:
    tokens: list[str] = []
    for match in _LATEX_TOKEN.finditer(latex):
        if match.group("env"):
            tokens.append(match.group("env"))
            tokens.append("{" + match.group("name") + "}")
        else:
            tokens.append(match.group(0))
    return tokens


def _group_end(tokens: list[str], start: int) -> tuple[int, bool]:
    """For the ``{`` at ``tokens[start]``: index one past its matching ``}``, and whether it is closed.

    An unbalanced group runs to the end of the tokens (``closed`` is then ``False``).
    """
    depth = 0
    for index in range(start, len(tokens)):
        if tokens[index] == "{":
            depth += 1
        elif tokens[index] == "}":
            depth -= 1
            if depth == 0:
                return index + 1, True
    return len(tokens), False


def _add_braces(tokens: list[str]) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        out.append(token)
        index += 1
        for _ in range(_BRACED_ARGS.get(token, 0)):
            if token == "\\sqrt" and index < len(tokens) and tokens[index] == "[":
                # optional root index: ``[ ... ]`` is kept, its content normalised
                close = tokens.index("]", index) if "]" in tokens[index:] else len(tokens)
                out.append("[")
                out.extend(_add_braces(tokens[index + 1 : close]))
                if close < len(tokens):
                    out.append("]")
                index = close + 1
            if index >= len(tokens) or tokens[index] in _NOT_AN_ARGUMENT:
                break  # nothing to brace: end of input/group, or an environment (kept with its name)
            if tokens[index] == "{":
                end, closed = _group_end(tokens, index)
                out.append("{")
                out.extend(_add_braces(tokens[index + 1 : end - 1 if closed else end]))
                if closed:
                    out.append("}")
                index = end
            else:
                out.extend(["{", tokens[index], "}"])
                index += 1
    return out


def normalize_latex(latex: str | None) -> str:
    """Rewrite LaTeX to the conventions of Uni-MuMER's ``*_normalized`` test sets (``--normalize``).

    Off by default in the evaluator (upstream does not normalise); when on, it is applied to both the
    label and the prediction. The rules:

    - re-tokenise: control words (``\\frac``), control symbols (``\\{``) and single characters, one
      space between tokens, so ``x^2`` and ``x ^ 2`` or ``12`` and ``1 2`` compare equal;
    - aliases: ``\\le`` -> ``\\leq``, ``\\ge`` -> ``\\geq``, ``\\dots`` -> ``\\ldots``;
    - explicit braces around bare arguments of ``^``, ``_``, ``\\frac`` and ``\\sqrt``:
      ``a_i`` -> ``a _ { i }``, ``\\frac12`` -> ``\\frac { 1 } { 2 }``;
    - environments: ``\\begin{matrix}`` -> ``\\begin {matrix}`` (the name stays one token).

    The result is a fixed point: normalising it again changes nothing. ``None`` gives ``""``.

    Example:

    >>> normalize_latex("a_i \\\\le b^2")
    'a _ { i } \\\\leq b ^ { 2 }'
    >>> normalize_latex("\\\\begin{matrix} 1 & x_{12} \\\\end{matrix}")
    '\\\\begin {matrix} 1 & x _ { 1 2 } \\\\end {matrix}'
    >>> normalize_latex("\\\\sqrt[3]x + \\\\frac12 \\\\dots")
    '\\\\sqrt [ 3 ] { x } + \\\\frac { 1 } { 2 } \\\\ldots'
    >>> normalize_latex("\\\\frac { a } { b }")
    '\\\\frac { a } { b }'
    """
    if not isinstance(latex, str):
        return ""
    tokens = [LATEX_ALIASES.get(token, token) for token in _lex_latex(latex)]
    if _nesting_depth(tokens) > MAX_NORMALIZE_DEPTH:
        # Degenerate output (a model looping on "^ {"): bracing would recurse past Python's stack. Such a
        # text is only re-tokenised; no real formula nests this deep, so it still never equals a label.
        return " ".join(tokens)
    return " ".join(_add_braces(tokens))


#: Deeper ``{``/``[`` nesting than this is only re-tokenised by :func:`normalize_latex`, not braced.
MAX_NORMALIZE_DEPTH = 200


def _nesting_depth(tokens: list[str]) -> int:
    """The deepest ``{``/``[`` nesting of ``tokens`` (unbalanced closers are ignored).

    Example:

    >>> _nesting_depth(["a", "{", "[", "b", "]", "}", "{"])
    2
    """
    depth = deepest = 0
    for token in tokens:
        if token in ("{", "["):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("}", "]") and depth:
            depth -= 1
    return deepest
