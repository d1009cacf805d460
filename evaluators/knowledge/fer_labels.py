"""FERBench label vocabularies: candidate lists, synonyms and dataset detection.

FERBench (UniFER's benchmark) has four test sets whose label words differ (``happy`` vs ``happiness``);
the candidate order below is the order of ``candidate_labels`` in the QA files and is how a file's
dataset is recognised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import MappingProxyType

__all__ = [
    "CANDIDATE_LABELS",
    "DATASET_NAMES",
    "POOLED_LABEL_MAP",
    "STRICT_SYNONYMS",
    "UNIFER_ANSWER_RE",
    "UNIFER_SYNONYMS",
    "UNIFER_TOTAL_ANSWER_RE",
    "canonical_label",
    "detect_dataset",
]

#: Candidate labels per dataset, in the QA files' order.
CANDIDATE_LABELS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "rafdb": ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
        "ferplus": ("angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
        "affectnet": ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"),
        "sfew": ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
    }
)

#: Dataset names in UniFER's pooled ("total") order.
DATASET_NAMES: tuple[str, ...] = ("affectnet", "rafdb", "ferplus", "sfew")

#: UniFER's per-dataset synonym fall-back (rule 3 of its extractor), dict order matters.
UNIFER_SYNONYMS: MappingProxyType[str, dict[str, list[str]]] = MappingProxyType(
    {
        "rafdb": {
            "anger": ["angry"],
            "disgust": ["revulsion", "repulsion"],
            "fear": ["terror", "fright"],
            "happiness": ["joy", "happy"],
            "sadness": ["sad"],
            "neutral": ["normal", "calm", "blank"],
            "surprise": ["shock", "astonishment"],
        },
        "affectnet": {
            "anger": ["angry", "mad"],
            "contempt": ["scorn", "disdain"],
            "disgust": ["revulsion", "repulsion"],
            "fear": ["terror", "fright"],
            "happiness": ["joy", "happy"],
            "sadness": ["sad"],
            "neutral": ["normal", "calm", "blank"],
            "surprise": ["shock", "astonishment"],
        },
        "ferplus": {
            "angry": ["anger"],
            "contempt": ["scorn", "disdain"],
            "disgust": ["revulsion", "repulsion"],
            "fear": ["terror", "fright"],
            "happy": ["joy", "happiness"],
            "sad": ["sorrow", "unhappy"],
            "neutral": ["normal", "calm", "blank"],
            "surprise": ["shock", "astonishment"],
        },
        "sfew": {
            "angry": ["anger", "mad"],
            "disgust": ["revulsion", "repulsion"],
            "fear": ["terror", "fright"],
            "happy": ["joy", "happiness"],
            "sad": ["sorrow", "unhappy"],
            "neutral": ["normal", "calm", "blank"],
            "surprise": ["shock", "astonishment"],
        },
    }
)

#: UniFER's rule-1 answer regex of each per-dataset evaluator. Three use ``\s*`` padding and IGNORECASE
#: (no DOTALL: an answer spanning lines only matches when the line breaks sit next to the tags); the
#: SFEW 2.0 evaluator alone uses case-sensitive tags with DOTALL and no padding. ``re.search`` takes the
#: *first* span, not the last.
UNIFER_ANSWER_RE: MappingProxyType[str, re.Pattern[str]] = MappingProxyType(
    {
        "rafdb": re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE),
        "ferplus": re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE),
        "affectnet": re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE),
        "sfew": re.compile(r"<answer>(.*?)</answer>", re.DOTALL),
    }
)

#: UniFER's pooled ("total") evaluator uses this regex for all four datasets, SFEW 2.0 included.
UNIFER_TOTAL_ANSWER_RE: re.Pattern[str] = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE)

#: The only synonyms the strict protocol accepts: the label-word pairs that FERBench itself mixes.
STRICT_SYNONYMS: MappingProxyType[str, str] = MappingProxyType(
    {"happy": "happiness", "sad": "sadness", "angry": "anger"}
)

#: UniFER's pooled evaluation maps these on both sides before scoring.
POOLED_LABEL_MAP: MappingProxyType[str, str] = MappingProxyType(
    {"angry": "anger", "happy": "happiness", "sad": "sadness"}
)


def detect_dataset(candidate_labels: Sequence[str]) -> str:
    """Return the FERBench dataset whose candidate list (order included) equals ``candidate_labels``.

    Raises:
        ValueError: when the list matches no dataset; the message lists the known ones.

    Example:

    >>> detect_dataset(["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"])
    'sfew'
    """
    labels = tuple(str(label).strip().lower() for label in candidate_labels)
    for name, known in CANDIDATE_LABELS.items():
        if labels == known:
            return name
    known_lists = "; ".join(f"{n}: {list(v)}" for n, v in CANDIDATE_LABELS.items())
    raise ValueError(
        f"`candidate_labels` {list(candidate_labels)} match no FERBench dataset (order matters). "
        f"Known: {known_lists}. Pass --dataset to choose one."
    )


def canonical_label(answer: str | None, candidates: Sequence[str]) -> str | None:
    """Map a case-folded answer onto ``candidates`` exactly, allowing only :data:`STRICT_SYNONYMS`.

    Returns the candidate spelling, or ``None`` when the answer is not one of the candidates.

    Example:

    >>> canonical_label("happy", CANDIDATE_LABELS["rafdb"])
    'happiness'
    >>> canonical_label("happiness", CANDIDATE_LABELS["ferplus"])
    'happy'
    >>> canonical_label("joy", CANDIDATE_LABELS["ferplus"]) is None
    True
    """
    if not isinstance(answer, str):
        return None
    word = answer.strip().casefold()
    cands = [c.casefold() for c in candidates]
    if word in cands:
        return candidates[cands.index(word)]
    # Map both the answer and the candidates to one spelling, then compare.
    base = STRICT_SYNONYMS.get(word, word)
    for cand, folded in zip(candidates, cands, strict=True):
        if STRICT_SYNONYMS.get(folded, folded) == base:
            return cand
    return None
