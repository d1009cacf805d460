"""Protocol ``strict`` (unitune's default): only the final answer counts, and only a candidate label.

The answer is read by :func:`evaluators.knowledge.answers.extract_answer`, the same function the GRPO
accuracy reward uses (the model is scored with the function it is trained on): the content of the *last*
well-formed ``<answer>…</answer>`` span (tags case-insensitive), trimmed and case-folded. It must then be one
of the dataset's candidates, allowing only the spelling pairs FERBench itself mixes
(``happy``/``happiness``, ``sad``/``sadness``, ``angry``/``anger``;
:data:`~evaluators.knowledge.fer_labels.STRICT_SYNONYMS`). Nothing is read from the ``<think>`` text.
Anything else is ``"invalid"``, which counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluators.knowledge.answers import extract_answer
from evaluators.knowledge.fer_labels import canonical_label

__all__ = ["INVALID", "RULES", "extract_label_strict"]

#: Predicted label of a response without a usable answer; never a candidate, always wrong.
INVALID = "invalid"

#: Rule names written to the per-sample output.
RULES: tuple[str, ...] = ("answer", "answer_synonym", "no_answer", "not_a_candidate")


def extract_label_strict(response: str | None, candidate_labels: Sequence[str]) -> tuple[str, str]:
    """Return ``(label, rule)`` under the strict protocol.

    Args:
        response (`str` or `None`): the model's response; non-strings yield ``("invalid", "no_answer")``.
        candidate_labels (`Sequence[str]`): the dataset's candidates; the returned label uses their spelling.

    Returns:
        `tuple[str, str]`: a candidate label or ``"invalid"``, and the rule name from :data:`RULES`.

    Example:

    >>> ferplus = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    >>> extract_label_strict("<think>not angry at all</think><answer>Happiness</answer>", ferplus)
    ('happy', 'answer_synonym')
    >>> extract_label_strict("<answer>unhappy</answer>", ferplus)
    ('invalid', 'not_a_candidate')
    >>> extract_label_strict("<think>angry</think>", ferplus)
    ('invalid', 'no_answer')
    >>> extract_label_strict("<answer>sad</answer><answer> FEAR </answer>", ferplus)
    ('fear', 'answer')
    """
    answer = extract_answer(response)
    if answer is None:
        return INVALID, "no_answer"
    label = canonical_label(answer, candidate_labels)
    if label is None:
        return INVALID, "not_a_candidate"
    return label, ("answer" if label.casefold() == answer else "answer_synonym")
