"""Protocol ``unifer``: UniFER's own label extraction, reproduced exactly, quirks included.

UniFER (zfkarl/UniFER, ``eval_*/code/eval_unifer.py``) maps a free-text response onto a label with a
lenient cascade. Each rule falls through to the next when it finds nothing:

1. ``re.search`` of the dataset's answer regex (:data:`~evaluators.knowledge.fer_labels.UNIFER_ANSWER_RE`;
   the *first* span, not the last). The span is stripped and lower-cased; the first candidate, in candidate
   order, that equals it **or is a substring of it** wins (``"unhappy"`` contains ``"happy"``).
2. Over the whole lower-cased response, ``<think>`` text included, the first candidate that occurs
   (upstream tests ``\\b{label}\\b`` *or* plain substring, which is the substring test alone).
3. The first synonym that occurs anywhere in the response (plain substring, dict order,
   :data:`~evaluators.knowledge.fer_labels.UNIFER_SYNONYMS`).
4. ``"unknown"``.

Known consequences (reproduced on purpose): ``<think>not angry at all</think><answer>happiness</answer>``
scores ``angry`` on FERPlus and SFEW 2.0 (``happiness`` contains neither ``happy`` nor any other candidate,
so rule 2 reads the think text); ``<answer>unhappy</answer>`` scores happy on every dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluators.knowledge.answers import search_answer
from evaluators.knowledge.fer_labels import UNIFER_ANSWER_RE, UNIFER_SYNONYMS, UNIFER_TOTAL_ANSWER_RE

__all__ = ["RULES", "UNKNOWN", "extract_label_unifer"]

#: UniFER's label for a response no rule could read; it counts as a class in the macro metrics.
UNKNOWN = "unknown"

#: Rule names written to the per-sample output, in cascade order.
RULES: tuple[str, ...] = ("answer_exact", "answer_substring", "response_label", "synonym", "unknown")


def extract_label_unifer(
    response: str, candidate_labels: Sequence[str], dataset: str, *, pooled: bool = False
) -> tuple[str, str]:
    """Return ``(label, rule)`` as UniFER's evaluator for ``dataset`` would extract it.

    Args:
        response (`str`): the model's response. Callers pass ``""`` for a non-string response (upstream
            would crash on it); that yields ``"unknown"``.
        candidate_labels (`Sequence[str]`): the candidates in the QA file's order (order decides ties).
        dataset (`str`): one of ``rafdb``, ``ferplus``, ``affectnet``, ``sfew``; picks the answer regex and
            the synonym table.
        pooled (`bool`, *optional*, defaults to `False`): use the pooled ("total") evaluator's regex, which
            differs for SFEW 2.0 only (IGNORECASE, ``\\s*`` padding, no DOTALL).

    Returns:
        `tuple[str, str]`: the label (a candidate, or ``"unknown"``) and the rule name from :data:`RULES`.

    Example:

    >>> ferplus = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    >>> extract_label_unifer("<think>not angry at all</think><answer>happiness</answer>", ferplus, "ferplus")
    ('angry', 'response_label')
    >>> extract_label_unifer("<answer>unhappy</answer>", ferplus, "ferplus")
    ('happy', 'answer_substring')
    >>> extract_label_unifer("<answer>Sad</answer>", ferplus, "ferplus")
    ('sad', 'answer_exact')
    >>> extract_label_unifer("I feel sorrow", ferplus, "ferplus")
    ('sad', 'synonym')
    >>> extract_label_unifer("no idea", ferplus, "ferplus")
    ('unknown', 'unknown')
    """
    pattern = UNIFER_TOTAL_ANSWER_RE if pooled else UNIFER_ANSWER_RE[dataset]
    # Rule 1: the first answer span; equality or substring, per candidate, in candidate order.
    found = search_answer(pattern, response)  # pattern.search(response).group(1), in linear time
    if found is not None:
        answer = found.strip().lower()
        for label in candidate_labels:
            lowered = label.lower()
            if lowered == answer:
                return label, "answer_exact"
            if lowered in answer:
                return label, "answer_substring"
    # Rule 2: upstream tests re.search(rf"\b{label}\b") or `label in text`; for plain-word labels the
    # word-boundary hit implies the substring hit, so the substring test alone is the same rule.
    text = response.lower()
    for label in candidate_labels:
        if label in text:
            return label, "response_label"
    # Rule 3: the first synonym found anywhere, in the dataset's dict order.
    for label, alternatives in UNIFER_SYNONYMS[dataset].items():
        if any(alt in text for alt in alternatives):
            return label, "synonym"
    return UNKNOWN, "unknown"
