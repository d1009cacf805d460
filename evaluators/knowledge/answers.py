"""``<think>…</think><answer>…</answer>`` handling shared by the FER evaluator and the GRPO rewards."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ANSWER_TAG_RE", "THINK_ANSWER_FORMAT_RE", "completion_text", "extract_answer"]

#: A well-formed answer span; tags are matched case-insensitively, content may span lines.
ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)

#: UniFER's format: a think block, optional whitespace, an answer block, nothing else.
THINK_ANSWER_FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)


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
    matches = ANSWER_TAG_RE.findall(text)
    if not matches:
        return None
    return matches[-1].strip().casefold()


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
