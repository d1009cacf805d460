"""``<think>…</think><answer>…</answer>`` handling shared by the FER evaluator and the GRPO rewards."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ANSWER_TAG_RE",
    "THINK_ANSWER_FORMAT_RE",
    "completion_text",
    "extract_answer",
    "is_think_answer_format",
    "search_answer",
]

#: A well-formed answer span; tags are matched case-insensitively, content may span lines.
ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)

#: UniFER's format: a think block, optional whitespace, an answer block, nothing else.
THINK_ANSWER_FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)


# Linear-time equivalents of the tag regexes above. The regexes themselves are quadratic on hostile input
# (every "<answer>" start scans to the end of the text: 128 KB of repeated tags took 33 s), so they document
# the rule and these functions apply it; tests/test_hostile_inputs.py checks the equivalence on random input.
_OPEN = re.compile(re.escape("<answer>"))
_OPEN_I = re.compile(re.escape("<answer>"), re.IGNORECASE)
_CLOSE = re.compile(re.escape("</answer>"))
_CLOSE_I = re.compile(re.escape("</answer>"), re.IGNORECASE)
_NON_SPACE = re.compile(r"\S")
_THINK_THEN_ANSWER = re.compile(r"</think>\s*<answer>")


_UP_TO_LAST_CLOSE = re.compile(r".*</answer>", re.DOTALL)
_UP_TO_LAST_CLOSE_I = re.compile(r".*</answer>", re.DOTALL | re.IGNORECASE)
_SPAN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_SPAN_I = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def _spans(text: str, ignore_case: bool):
    """``finditer`` of the span regex, stopped at the last ``</answer>``.

    Past the last close a span regex would scan to the end from every ``<answer>`` (the quadratic case);
    before it, every attempt ends at the next close and matches never overlap, so the scan is linear.
    """
    last = (_UP_TO_LAST_CLOSE_I if ignore_case else _UP_TO_LAST_CLOSE).match(text)
    if last is None:
        return iter(())
    return (_SPAN_I if ignore_case else _SPAN).finditer(text, 0, last.end())


def _answer_spans(text: str, ignore_case: bool):
    """Yield ``(start, end)`` of the content of each ``<answer>(.*?)</answer>`` match (DOTALL), left to right."""
    for match in _spans(text, ignore_case):
        yield match.span(1)


def _last_solid(text: str, lo: int, hi: int) -> int:
    """Index of the last non-space in ``text[lo:hi]``, or ``lo - 1``; looks back in growing windows."""
    width = 64
    while True:
        start = max(lo, hi - width)
        kept = len(text[start:hi].rstrip())
        if kept or start == lo:
            return start + kept - 1
        width *= 4


def _padded_first(text: str, ignore_case: bool) -> str | None:
    """``re.search(r"<answer>\\s*(.*?)\\s*</answer>")`` (no DOTALL) group 1, in linear time.

    From an ``<answer>`` the match can only end at the first ``</answer>`` after it, and only if the content
    between them, stripped, holds no newline (``.`` stops at ``\\n``). The ``<answer>`` tags before one
    ``</answer>`` form a group (:func:`_answer_spans` yields one per group, left to right, in linear time);
    the first tag of a group wins unless its stripped content holds a newline; then the first later tag
    of the group whose content starts after that newline's line wins, if any.
    """
    opener = _OPEN_I if ignore_case else _OPEN
    for match in _spans(text, ignore_case):
        start, close_at = match.span(1)
        content = match.group(1).strip()
        if "\n" not in content:
            return content
        if opener.search(text, start, close_at) is None:
            continue  # the only tag before this close fails
        first = _NON_SPACE.search(text, start).start()
        end = _last_solid(text, first, close_at)
        solid = _last_solid(text, first, text.rfind("\n", first, end))
        candidate = opener.search(
            text, max(start - len("<answer>") + 1, solid - len("<answer>") + 1), close_at
        )
        if candidate is not None:
            return text[candidate.end() : close_at].strip()
    return None


def search_answer(pattern: re.Pattern[str], text: str) -> str | None:
    """Group 1 of ``pattern.search(text)`` for the answer-tag patterns, in linear time.

    ``<answer>(.*?)</answer>`` (with DOTALL) and ``<answer>\\s*(.*?)\\s*</answer>`` (without), each with or
    without IGNORECASE, are evaluated by a linear scan; any other pattern falls back to ``pattern.search``.

    Example:

    >>> search_answer(re.compile(r"<answer>\\s*(.*?)\\s*</answer>", re.I), "<ANSWER> sad </answer><answer>x</answer>")
    'sad'
    >>> search_answer(re.compile(r"<answer>(.*?)</answer>", re.DOTALL), "<answer>" * 100_000) is None
    True
    """
    ignore_case = bool(pattern.flags & re.IGNORECASE)
    dotall = bool(pattern.flags & re.DOTALL)
    if pattern.pattern == r"<answer>(.*?)</answer>" and dotall:
        span = next(_answer_spans(text, ignore_case), None)
        return None if span is None else text[span[0] : span[1]]
    if pattern.pattern == r"<answer>\s*(.*?)\s*</answer>" and not dotall:
        return _padded_first(text, ignore_case)
    match = pattern.search(text)
    return match.group(1) if match else None


def is_think_answer_format(text: str) -> bool:
    r"""``THINK_ANSWER_FORMAT_RE.fullmatch(text)`` in linear time: a think block, spaces, an answer block.

    Example:

    >>> is_think_answer_format("<think>a</think>\n<answer>sad</answer>"), is_think_answer_format("<answer>sad</answer>")
    (True, False)
    """
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    joint = _THINK_THEN_ANSWER.search(text, len("<think>"))
    return joint is not None and joint.end() <= len(text) - len("</answer>")


def extract_answer(text: str | None) -> str | None:
    """Return the content of the last well-formed ``<answer>…</answer>`` span, trimmed and case-folded.

    This is unitune's *strict* answer extractor: nothing is read from the ``<think>`` text and a response
    without a complete answer span yields ``None``.

    Args:
        text (`str` or `None`): a model response. ``None`` and non-strings yield ``None``.

    Returns:
        `str` or `None`: the case-folded answer, or ``None`` when no well-formed span exists.

    Example:

    >>> extract_answer("<think>not angry at all</think><answer> Happiness </answer>")
    'happiness'
    >>> extract_answer("<ANSWER>sad</ANSWER> then <answer>Fear</answer>")
    'fear'
    >>> extract_answer("<think>angry</think>") is None
    True
    """
    if not isinstance(text, str):
        return None
    last = deque(_spans(text, ignore_case=True), maxlen=1)
    if not last:
        return None
    return last[0].group(1).strip().casefold()


def completion_text(completion: Any) -> str:
    """Return the text of one completion as TRL passes it, plain or conversational.

    TRL gives plain completions as ``str`` and conversational ones as a list of messages
    (``[{"role": "assistant", "content": ...}]``), where ``content`` may itself be a list of typed
    parts (``{"type": "text", "text": ...}``). Anything else becomes ``""`` so callers never raise.

    Example:

    >>> completion_text("<answer>sad</answer>")
    '<answer>sad</answer>'
    >>> completion_text([{"role": "assistant", "content": "<answer>sad</answer>"}])
    '<answer>sad</answer>'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
    >>> completion_text(None)
    ''
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence) and not isinstance(completion, (bytes, bytearray)):
        # Conversational: the assistant's text is the last message's content.
        for message in reversed(completion):
            if isinstance(message, Mapping):
                return _content_text(message.get("content"))
            if isinstance(message, str):
                return message
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return ""
