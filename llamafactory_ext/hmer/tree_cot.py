r"""Tree-CoT targets: Uni-MuMER's LaTeX → syntax-tree serialiser, reimplemented iteratively.

The answer of the ``tree`` task is ``latex_to_tree(latex) + "\n" + latex``: one line per symbol,
``"\t" * level + f"{symbol} ({relation})"``, the root without a relation, depth-first. Relations:

- ``\frac``-like (``\frac \cfrac \dfrac \tfrac \binom \dbinom \tbinom``): first ``{…}`` → ``above``,
  second ``{…}`` → ``below``.
- accents (``\hat \bar \vec \overline …``, see :data:`SINGLE_ARG_CMDS`): ``{…}`` → ``above``.
- ``\sqrt \xrightarrow \xleftarrow``: optional ``[…]`` → ``below``, then ``{…}`` → ``above``.
- big operators (``\sum \lim \iint \int \coprod \prod \oint``): ``_ {…}`` → ``below``, ``^ {…}`` → ``above``.
- ``\begin {env} … \end {env}``: body → ``begin_<env>``, then a literal ``\end`` child → ``end_<env>``.
- any other symbol: ``_ {…}`` → ``sub`` then ``^ {…}`` → ``sup`` (in that order only).
- then the rest of the sequence: ``nextline`` (one level deeper) after a ``\\`` token, else ``right``
  (same level).

Upstream quirks kept on purpose, so the output is byte-identical to upstream's
``preprocess/unimumer_tree/latex2tree.py`` (checked against 5,632 real labels): an empty group ``{ }``
adds no line; a ``{`` whose ``}`` is missing makes the group everything up to the last token of the
enclosing sequence and leaves the ``{`` in place, so it is read again as a literal symbol. A required ``{``
that is missing (bare ``x ^ 2``, ``\frac a b``, ``\sqrt 2``) raises :class:`TreeParseError` with
upstream's message.
"""

from __future__ import annotations

from evaluators.knowledge.latex import format_counts

__all__ = [
    "BIG_OPERATOR_CMDS",
    "DOUBLE_ARG_CMDS",
    "MAX_TREE_LINES",
    "OPTIONAL_BRACKET_CMDS",
    "SINGLE_ARG_CMDS",
    "TreeParseError",
    "can_answer",
    "latex_to_tree",
    "tree_answer",
]

DOUBLE_ARG_CMDS = frozenset(["\\frac", "\\cfrac", "\\dfrac", "\\tfrac", "\\binom", "\\dbinom", "\\tbinom"])
SINGLE_ARG_CMDS = frozenset(
    "\\dot \\ddot \\hat \\check \\grave \\acute \\tilde \\breve \\bar \\vec \\widehat \\overbrace "
    "\\widetilde \\overleftarrow \\overrightarrow \\overline \\underline \\underbrace \\choose".split()
)
OPTIONAL_BRACKET_CMDS = frozenset(["\\sqrt", "\\xrightarrow", "\\xleftarrow"])
BIG_OPERATOR_CMDS = frozenset(["\\sum", "\\lim", "\\iint", "\\int", "\\coprod", "\\prod", "\\oint"])

#: Refuse to serialise trees longer than this many lines. Only reachable through upstream's
#: unclosed-brace quirk (each unclosed ``{`` re-reads the rest of the formula), which can grow
#: exponentially on garbage input; real labels stay far below (the longest CROHME test tree has 719 lines).
MAX_TREE_LINES = 20_000

_NEWLINE = "\\\\"
_KIND = {
    **dict.fromkeys(DOUBLE_ARG_CMDS, 1),
    **dict.fromkeys(SINGLE_ARG_CMDS, 2),
    **dict.fromkeys(OPTIONAL_BRACKET_CMDS, 3),
    **dict.fromkeys(BIG_OPERATOR_CMDS, 4),
    "\\begin": 5,
}


class TreeParseError(ValueError):
    """The LaTeX cannot be turned into a Tree-CoT target (a required ``{`` is missing, an env is unclosed).

    The message is upstream's assertion text, e.g. ``"^ not with {"``.
    """


def _match_table(tokens: list[str], open_tok: str, close_tok: str) -> dict[int, int]:
    """``{index of open: index of its close}`` for every closed bracket (unclosed ones are absent)."""
    table: dict[int, int] = {}
    stack: list[int] = []
    for index, tok in enumerate(tokens):
        if tok == open_tok:
            stack.append(index)
        elif tok == close_tok and stack:
            table[stack.pop()] = index
    return table


class _Serialiser:
    """One formula: token list, bracket tables, output lines."""

    __slots__ = ("brackets", "braces", "lines", "tokens")

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.braces = _match_table(tokens, "{", "}") if "{" in tokens else {}
        self.brackets = _match_table(tokens, "[", "]") if "[" in tokens else {}
        self.lines: list[str] = []

    def group(self, pos: int, end: int, level: int, relation: str, message: str) -> int:
        """Parse the ``{…}`` at ``pos`` as a child; return the position after it."""
        tokens = self.tokens
        if pos >= end or tokens[pos] != "{":
            raise TreeParseError(message)
        close = self.braces.get(pos, end)
        if close >= end:
            # upstream's findnextbracket() == -1: the group is the rest minus its last token, nothing consumed
            self.chain(pos + 1, end - 1, level, relation)
            return pos
        self.chain(pos + 1, close, level, relation)
        return close + 1

    def chain(self, pos: int, end: int, level: int, relation: str | None) -> None:
        """Parse ``tokens[pos:end]`` as a symbol followed by its arguments and the rest of the sequence."""
        tokens = self.tokens
        lines = self.lines
        # a line is indent + symbol + suffix; both change only after a \\ (one level deeper, "nextline")
        indent = "\t" * level
        suffix = f" ({relation})" if relation else ""
        while pos < end:
            symbol = tokens[pos]
            pos += 1
            lines.append(f"{indent}{symbol}{suffix}")
            if len(lines) > MAX_TREE_LINES:
                raise TreeParseError(f"tree longer than {MAX_TREE_LINES} lines (unbalanced braces?)")
            kind = _KIND.get(symbol, 0)
            child = level + 1
            if kind == 0 or kind == 4:  # ordinary symbol / big operator: optional _ {…} then ^ {…}
                if pos < end and tokens[pos] == "_":
                    pos = self.group(pos + 1, end, child, "sub" if kind == 0 else "below", "_ not with {")
                if pos < end and tokens[pos] == "^":
                    pos = self.group(pos + 1, end, child, "sup" if kind == 0 else "above", "^ not with {")
            elif kind == 1:
                pos = self.group(pos, end, child, "above", f"{symbol} above not with {{")
                pos = self.group(pos, end, child, "below", f"{symbol} below not with {{")
            elif kind == 2:
                pos = self.group(pos, end, child, "above", f"{symbol} not with {{")
            elif kind == 3:
                if pos < end and tokens[pos] == "[":
                    close = self.brackets.get(pos, end)
                    if close >= end:
                        self.chain(pos + 1, end - 1, child, "below")
                    else:
                        self.chain(pos + 1, close, child, "below")
                        pos = close + 1
                pos = self.group(pos, end, child, "above", f"{symbol} main param not with {{")
            else:  # \begin {env} … \end {env}
                pos = self.environment(pos, end, child)
            if pos < end and tokens[pos] == _NEWLINE:
                pos += 1
                level += 1
                indent += "\t"
                suffix = " (nextline)"
            else:
                suffix = " (right)"

    def environment(self, pos: int, end: int, level: int) -> int:
        tokens = self.tokens
        if pos >= end:
            raise TreeParseError("\\begin missing environment name")
        name = tokens[pos].strip("{}")
        pos += 1
        env = "{" + name + "}"
        depth = 1
        index = pos
        while index < end:
            tok = tokens[index]
            if index + 1 < end and tokens[index + 1] == env and tok in ("\\begin", "\\end"):
                depth += 1 if tok == "\\begin" else -1
                if depth == 0:
                    break
                index += 2
                continue
            index += 1
        else:
            raise TreeParseError(f"missing matching \\end{{{name}}}")
        self.chain(pos, index, level, f"begin_{name}")
        self.lines.append("\t" * level + f"\\end (end_{name})")
        return index + 2


def latex_to_tree(latex: str) -> str:
    r"""Serialise space-tokenised LaTeX as Uni-MuMER's syntax tree (without the trailing LaTeX line).

    Args:
        latex (`str`): the label, tokens separated by whitespace.

    Returns:
        `str`: the tree lines joined by ``"\n"`` (``""`` for an empty formula).

    Raises:
        TreeParseError: a required ``{`` is missing or an environment is not closed.

    Example:

    >>> print(latex_to_tree("\\frac { a ^ { 2 } + 1 } { b }").expandtabs(2))
    \frac
      a (above)
        2 (sup)
      + (right)
      1 (right)
      b (below)
    >>> print(latex_to_tree("\\sqrt [ 3 ] { x } \\\\ y").expandtabs(2))
    \sqrt
      3 (below)
      x (above)
      y (nextline)
    >>> latex_to_tree("x ^ 2")
    Traceback (most recent call last):
    ...
    llamafactory_ext.hmer.tree_cot.TreeParseError: ^ not with {
    """
    serialiser = _Serialiser(latex.split())
    try:
        serialiser.chain(0, len(serialiser.tokens), 0, None)
    except RecursionError:
        raise TreeParseError("formula nested too deeply") from None
    return "\n".join(serialiser.lines)


def tree_answer(latex: str) -> str:
    r"""The Tree-CoT target: tree lines, ``"\n"``, then the LaTeX unchanged.

    Example:

    >>> tree_answer("x _ { i }")
    'x\n\ti (sub)\nx _ { i }'
    """
    return f"{latex_to_tree(latex)}\n{latex}"


def can_answer(latex: str) -> str:
    r"""The Symbol-Counting target: ``"tok: n, …"`` (first-seen order, braces dropped), ``"\n"``, the LaTeX.

    Example:

    >>> can_answer("x ^ { 2 } + x")
    'x: 2, ^: 1, 2: 1, +: 1\nx ^ { 2 } + x'
    """
    return f"{format_counts(latex)}\n{latex}"
