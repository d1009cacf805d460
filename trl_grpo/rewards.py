"""GRPO reward functions for FER and HMER in TRL's reward-function layout (like ``trl/rewards/``).

Every reward has TRL's signature ``f(completions, solution, **kwargs) -> list[float | None]``:

- ``completions`` are plain strings or conversational messages (``[{"role": "assistant", "content": ...}]``);
  both are read through :func:`evaluators.knowledge.answers.completion_text`.
- ``solution`` is the gold column of the dataset, one value per completion (TRL repeats every dataset column
  ``num_generations`` times).
- Every other keyword (``prompts``, ``completion_ids``, ``trainer_state``, trl >= 1.0's ``log_extra`` and
  ``log_metric``, the image column, ...) is accepted and ignored, except two optional dataset columns:

  - ``task``: ``"fer"`` or ``"hmer"`` per row. In a mixed batch a reward returns ``None`` ("does not apply",
    TRL turns it into NaN and leaves it out of the weighted sum) for rows of the other task. Rows without a
    task (no column, or ``None``) are scored by every reward.
  - ``candidate_labels``: the row's FER candidate list, used by :func:`fer_accuracy_reward` exactly as the FER
    evaluator uses the QA file's ``candidate_labels``.

Correctness is defined once, in :mod:`evaluators.knowledge`: the rewards call the same extractors, label
canonicalisation and edit distance as the evaluators, so the reward a model is trained on is the function it is
scored with. Rewards never raise on any string content; they raise :class:`ValueError` only for a broken call
(a missing ``solution`` column, or columns whose lengths differ from ``completions``).

Parameterised variants come from the ``make_*`` factories; they return picklable callables whose ``__name__``
(the name TRL logs the reward under, ``rewards/<name>/mean``) is fixed at construction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from evaluators.knowledge.alignment import edit_distance, edit_similarity
from evaluators.knowledge.answers import (
    completion_text,
    extract_answer,
    is_think_answer_format,
    search_answer,
)
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS, canonical_label
from evaluators.knowledge.latex import EXTRACT_MODES, extract_latex, tokenize

__all__ = [
    "TASK_FER",
    "TASK_HMER",
    "fer_accuracy_reward",
    "hmer_edit_score_reward",
    "hmer_exact_match_reward",
    "make_fer_accuracy_reward",
    "make_hmer_edit_score_reward",
    "make_hmer_exact_match_reward",
    "make_hmer_within_edits_reward",
    "think_answer_format_reward",
    "unifer_accuracy_reward",
]

#: Value of the optional ``task`` column for facial-expression rows.
TASK_FER = "fer"
#: Value of the optional ``task`` column for handwritten-math rows.
TASK_HMER = "hmer"

# UniFER's own accuracy reward reads the *first* answer span with case-sensitive tags.
_UNIFER_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

# Every FERBench label word, case-folded: a gold outside this set is not a FER row.
_KNOWN_FER_LABELS = frozenset(label.casefold() for labels in CANDIDATE_LABELS.values() for label in labels)

Reward = list[float | None]


# --------------------------------------------------------------------------------------------------------------
# Call checking shared by every reward
# --------------------------------------------------------------------------------------------------------------


def _check_columns(reward_name: str, completions: Any, **columns: Any) -> int:
    """Return ``len(completions)`` after checking that every given per-row column has that length."""
    if isinstance(completions, (str, bytes)) or not isinstance(completions, Sequence):
        raise ValueError(
            f"{reward_name}: `completions` must be a list (one item per completion), got {type(completions).__name__}."
        )
    n = len(completions)
    for name, column in columns.items():
        if column is None:
            continue
        if isinstance(column, (str, bytes)) or not isinstance(column, Sequence):
            raise ValueError(
                f"{reward_name}: `{name}` must be a list with one value per completion, got {type(column).__name__}."
            )
        if len(column) != n:
            raise ValueError(
                f"{reward_name}: `completions` has {n} items but `{name}` has {len(column)}; TRL passes one "
                f"`{name}` value per completion (each dataset column repeated num_generations times)."
            )
    return n


def _require_solution(reward_name: str, solution: Any) -> None:
    if solution is None:
        raise ValueError(
            f"{reward_name} needs the gold answers: give the dataset a `solution` column "
            f"(TRL passes every dataset column to the reward by name)."
        )


def _applies(task: Sequence[Any] | None, index: int, wanted: str) -> bool:
    """Whether row ``index`` belongs to ``wanted`` (rows without a task belong to every task)."""
    if task is None:
        return True
    value = task[index]
    if value is None:
        return True
    return isinstance(value, str) and value.strip().lower() == wanted


def _text(value: Any) -> str:
    return value if isinstance(value, str) else completion_text(value)


# --------------------------------------------------------------------------------------------------------------
# FER
# --------------------------------------------------------------------------------------------------------------


def unifer_accuracy_reward(
    completions: Sequence[Any],
    solution: Sequence[Any] | None = None,
    task: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Reward:
    r"""UniFER's accuracy reward, exactly: first ``<answer>…</answer>`` span, else the whole text, compared as-is.

    The *first* ``<answer>(.*?)</answer>`` match (DOTALL, case-sensitive tags) of the completion is taken, or the
    whole completion when there is none, and stripped; the gold is read from ``solution`` the same way. The reward
    is 1.0 iff the two strings are equal (case-sensitive), else 0.0. Use :func:`fer_accuracy_reward` to train on
    unitune's evaluation protocol instead.

    Args:
        completions (`list[str]` or `list[list[dict]]`): plain or conversational completions.
        solution (`list[str]`): the gold answers, e.g. ``"<answer>happiness</answer>"``.
        task (`list[str]`, *optional*): per-row task; rows whose task is not ``"fer"`` get ``None``.
        **kwargs: every other column or trainer keyword; ignored.

    Returns:
        `list[float | None]`: one reward per completion.

    Example:

    >>> unifer_accuracy_reward(
    ...     ["<think>smile</think><answer>happiness</answer>", "<answer>Happiness</answer>", "happiness", "x"],
    ...     solution=["<answer> happiness </answer>"] * 4,
    ... )
    [1.0, 0.0, 1.0, 0.0]
    """
    name = "unifer_accuracy_reward"
    _require_solution(name, solution)
    n = _check_columns(name, completions, solution=solution, task=task)
    rewards: Reward = []
    for i in range(n):
        if not _applies(task, i, TASK_FER):
            rewards.append(None)
            continue
        gold = _unifer_answer(_text(solution[i]))
        if not gold:
            rewards.append(None)  # an empty gold would pay an empty completion 1.0
            continue
        rewards.append(1.0 if _unifer_answer(_text(completions[i])) == gold else 0.0)
    return rewards


def _unifer_answer(text: str) -> str:
    found = search_answer(_UNIFER_ANSWER_RE, text)  # _UNIFER_ANSWER_RE.search, in linear time
    return (text if found is None else found).strip()


def think_answer_format_reward(
    completions: Sequence[Any], task: Sequence[Any] | None = None, **kwargs: Any
) -> Reward:
    r"""UniFER's format reward: 1.0 iff the whole completion is ``<think>…</think>`` then ``<answer>…</answer>``.

    The test is ``re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", completion, re.DOTALL)`` on the raw
    completion (:data:`evaluators.knowledge.answers.THINK_ANSWER_FORMAT_RE`): nothing may precede the think block
    or follow the answer block.

    Args:
        completions (`list[str]` or `list[list[dict]]`): plain or conversational completions.
        task (`list[str]`, *optional*): per-row task; rows whose task is not ``"fer"`` get ``None``.
        **kwargs: every other column or trainer keyword; ignored.

    Returns:
        `list[float | None]`: one reward per completion.

    Example:

    >>> think_answer_format_reward(
    ...     ["<think>a</think>\n<answer>sad</answer>", "<answer>sad</answer>", "<think>a</think><answer>sad</answer>."]
    ... )
    [1.0, 0.0, 0.0]
    """
    n = _check_columns("think_answer_format_reward", completions, task=task)
    fullmatch = is_think_answer_format  # THINK_ANSWER_FORMAT_RE.fullmatch, in linear time
    rewards: Reward = []
    for i in range(n):
        if not _applies(task, i, TASK_FER):
            rewards.append(None)
            continue
        rewards.append(1.0 if fullmatch(_text(completions[i])) else 0.0)
    return rewards


def _gold_fer_label(solution: Any) -> str | None:
    """The gold label of a FER row: its last answer span, else the whole solution; case-folded."""
    text = _text(solution)
    answer = extract_answer(text)
    if answer is None:
        answer = text.strip().casefold()
    return answer or None


@lru_cache(maxsize=8192)
def _canonical(answer: str | None, candidates: tuple[str, ...]) -> str | None:
    """:func:`canonical_label`, memoised: a run sees few distinct (answer, candidate list) pairs."""
    return canonical_label(answer, candidates)


def _row_candidates(candidate_labels: Sequence[Any] | None, index: int) -> tuple[str, ...] | None:
    if candidate_labels is None:
        return None
    labels = candidate_labels[index]
    if isinstance(labels, str) or not isinstance(labels, Sequence) or not labels:
        return None
    candidates = tuple(labels)
    if all(isinstance(label, str) for label in candidates):
        return candidates
    return tuple(label for label in candidates if isinstance(label, str))


def _fer_accuracy(
    reward_name: str,
    completions: Sequence[Any],
    solution: Sequence[Any] | None,
    candidate_labels: Sequence[Any] | None,
    task: Sequence[Any] | None,
    fixed_candidates: tuple[str, ...] | None,
) -> Reward:
    _require_solution(reward_name, solution)
    n = _check_columns(
        reward_name,
        completions,
        solution=solution,
        task=task,
        candidate_labels=None if fixed_candidates is not None else candidate_labels,
    )
    rewards: Reward = []
    for i in range(n):
        if not _applies(task, i, TASK_FER):
            rewards.append(None)
            continue
        gold = _gold_fer_label(solution[i])
        candidates = (
            fixed_candidates if fixed_candidates is not None else _row_candidates(candidate_labels, i)
        )
        if candidates is None:
            # Without a candidate list the gold's own spelling is the list: for every FERBench list this scores
            # the same as the evaluator, since no list holds two spellings (happy/happiness) of one emotion.
            if gold is None or gold not in _KNOWN_FER_LABELS:
                # Not a FER row (e.g. an HMER row of a mixed batch without a task column).
                rewards.append(None)
                continue
            candidates = (gold,)
        gold_label = _canonical(gold, candidates)
        if gold_label is None:
            rewards.append(None)  # gold outside its own candidate list: the row cannot be scored
            continue
        predicted = _canonical(extract_answer(_text(completions[i])), candidates)
        rewards.append(1.0 if predicted == gold_label else 0.0)
    return rewards


def fer_accuracy_reward(
    completions: Sequence[Any],
    solution: Sequence[Any] | None = None,
    candidate_labels: Sequence[Any] | None = None,
    task: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Reward:
    r"""The FER evaluator's strict protocol as a reward: 1.0 iff the answer is the gold label among the candidates.

    The prediction is :func:`~evaluators.knowledge.answers.extract_answer` of the completion (the last well-formed
    ``<answer>`` span, case-folded; nothing is read from the think text) mapped by
    :func:`~evaluators.knowledge.fer_labels.canonical_label` onto the row's candidate list (exact label, or the
    ``happy/happiness``, ``sad/sadness``, ``angry/anger`` pairs only). The gold is the solution's answer span (or
    the whole solution when it has none), canonicalised the same way.

    The candidate list comes from the row's ``candidate_labels`` column when the dataset has one (``unitune data
    fer-rlvr`` writes it). Without it, the gold's own spelling is the list, which gives the same reward for every
    FERBench list (no list holds two spellings of one emotion). Rows whose gold is not a FER label, or lies outside
    its candidate list, get ``None``.

    Args:
        completions (`list[str]` or `list[list[dict]]`): plain or conversational completions.
        solution (`list[str]`): gold answers, ``"<answer>happiness</answer>"`` or a bare label.
        candidate_labels (`list[list[str]]`, *optional*): each row's candidate labels.
        task (`list[str]`, *optional*): per-row task; rows whose task is not ``"fer"`` get ``None``.
        **kwargs: every other column or trainer keyword; ignored.

    Returns:
        `list[float | None]`: one reward per completion.

    Example:

    >>> fer_accuracy_reward(
    ...     ["<answer>Happy</answer>", "<think>happiness</think>", "<answer>joy</answer>", "<answer>sad</answer>"],
    ...     solution=["<answer>happiness</answer>"] * 4,
    ... )
    [1.0, 0.0, 0.0, 0.0]
    >>> fer_accuracy_reward(["<answer>contempt</answer>"], ["contempt"], candidate_labels=[["angry", "sad"]])
    [None]
    """
    return _fer_accuracy("fer_accuracy_reward", completions, solution, candidate_labels, task, None)


class _FerAccuracyReward:
    """:func:`fer_accuracy_reward` with one fixed candidate list for every row (see the factory)."""

    def __init__(self, candidates: tuple[str, ...], name: str) -> None:
        self.candidates = candidates
        self.__name__ = name

    def __call__(
        self,
        completions: Sequence[Any],
        solution: Sequence[Any] | None = None,
        task: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> Reward:
        return _fer_accuracy(self.__name__, completions, solution, None, task, self.candidates)

    def __repr__(self) -> str:
        return f"{self.__name__}(candidates={list(self.candidates)})"


def make_fer_accuracy_reward(
    candidate_labels: str | Sequence[str], name: str | None = None
) -> _FerAccuracyReward:
    """Build :func:`fer_accuracy_reward` with one candidate list for every row (ignoring any column).

    Args:
        candidate_labels (`str` or `list[str]`): a FERBench dataset name (``"rafdb"``, ``"ferplus"``,
            ``"affectnet"``, ``"sfew"``) or an explicit list of labels.
        name (`str`, *optional*): the reward's ``__name__``; defaults to ``fer_accuracy_reward_<dataset>`` or
            ``fer_accuracy_reward_custom``.

    Returns:
        A picklable callable with TRL's reward signature.

    Raises:
        ValueError: an unknown dataset name or an empty list.

    Example:

    >>> reward = make_fer_accuracy_reward("ferplus")
    >>> reward.__name__
    'fer_accuracy_reward_ferplus'
    >>> reward(["<answer>happiness</answer>", "<answer>joy</answer>"], solution=["happy", "happy"])
    [1.0, 0.0]
    """
    if isinstance(candidate_labels, str):
        key = candidate_labels.strip().lower()
        if key not in CANDIDATE_LABELS:
            raise ValueError(
                f"make_fer_accuracy_reward: unknown dataset {candidate_labels!r}; "
                f"expected one of {list(CANDIDATE_LABELS)} or a list of labels."
            )
        return _FerAccuracyReward(CANDIDATE_LABELS[key], name or f"fer_accuracy_reward_{key}")
    labels = tuple(str(label) for label in candidate_labels)
    if not labels:
        raise ValueError("make_fer_accuracy_reward: `candidate_labels` is empty.")
    return _FerAccuracyReward(labels, name or "fer_accuracy_reward_custom")


# --------------------------------------------------------------------------------------------------------------
# HMER
# --------------------------------------------------------------------------------------------------------------


def _hmer_tokens(value: Any, mode: str) -> list[str]:
    return tokenize(extract_latex(_text(value), mode))


def _exact_match(gold: list[str], pred: list[str]) -> float:
    return 1.0 if gold == pred else 0.0


def _edit_score(gold: list[str], pred: list[str]) -> float:
    return edit_similarity(edit_distance(gold, pred), len(gold), len(pred))


_HMER_METRICS = {"exact_match": _exact_match, "edit_score": _edit_score}


def _hmer_reward(
    reward_name: str,
    metric: str,
    completions: Sequence[Any],
    solution: Sequence[Any] | None,
    task: Sequence[Any] | None,
    mode: str,
    max_edits: int | None = None,
) -> Reward:
    _require_solution(reward_name, solution)
    n = _check_columns(reward_name, completions, solution=solution, task=task)
    score = _HMER_METRICS.get(metric)
    rewards: Reward = []
    for i in range(n):
        if not _applies(task, i, TASK_HMER):
            rewards.append(None)
            continue
        gold = _hmer_tokens(solution[i], mode)
        if not gold:
            rewards.append(None)  # an empty gold would pay an empty completion 1.0
            continue
        pred = _hmer_tokens(completions[i], mode)
        if max_edits is not None:
            rewards.append(1.0 if edit_distance(gold, pred) <= max_edits else 0.0)
        else:
            rewards.append(score(gold, pred))
    return rewards


def hmer_exact_match_reward(
    completions: Sequence[Any],
    solution: Sequence[Any] | None = None,
    task: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Reward:
    r"""ExpRate as a reward: 1.0 iff the whitespace tokens of the predicted LaTeX equal the gold's.

    The LaTeX of both completion and ``solution`` is extracted as the HMER evaluator does
    (:func:`~evaluators.knowledge.latex.extract_latex` with ``mode="auto"``: the last non-empty line of a multi-line
    (Tree-CoT / Symbol-Counting) output, else the whole stripped text), then split on whitespace; nothing is
    normalised.

    Args:
        completions (`list[str]` or `list[list[dict]]`): plain or conversational completions.
        solution (`list[str]`): gold LaTeX (or a CoT target ending with the LaTeX line).
        task (`list[str]`, *optional*): per-row task; rows whose task is not ``"hmer"`` get ``None``.
        **kwargs: every other column or trainer keyword; ignored.

    Returns:
        `list[float | None]`: one reward per completion.

    Example:

    >>> hmer_exact_match_reward(
    ...     ["x ^ { 2 }", "\\frac\n\ta (above)\nx  ^ {  2 }", "x ^ 2"], solution=["x ^ { 2 }"] * 3
    ... )
    [1.0, 1.0, 0.0]
    """
    return _hmer_reward("hmer_exact_match_reward", "exact_match", completions, solution, task, "auto")


def hmer_edit_score_reward(
    completions: Sequence[Any],
    solution: Sequence[Any] | None = None,
    task: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Reward:
    r"""Token edit score: ``1 - d / max(len(gt), len(pred))`` on the extracted LaTeX's whitespace tokens.

    ``d`` is the Levenshtein distance of :func:`~evaluators.knowledge.alignment.edit_distance` (the evaluator's).
    A row whose gold is empty gets ``None`` (it cannot be scored; 1.0 for an empty completion would be a hack). The LaTeX is extracted as in :func:`hmer_exact_match_reward`.

    Args:
        completions (`list[str]` or `list[list[dict]]`): plain or conversational completions.
        solution (`list[str]`): gold LaTeX (or a CoT target ending with the LaTeX line).
        task (`list[str]`, *optional*): per-row task; rows whose task is not ``"hmer"`` get ``None``.
        **kwargs: every other column or trainer keyword; ignored.

    Returns:
        `list[float | None]`: one reward per completion, in ``[0, 1]``.

    Example:

    >>> hmer_edit_score_reward(["x ^ { 2 }", "x ^ { 3 }", "", "a b c d e f"], solution=["x ^ { 2 }"] * 4)
    [1.0, 0.8, 0.0, 0.0]
    """
    return _hmer_reward("hmer_edit_score_reward", "edit_score", completions, solution, task, "auto")


class _HmerReward:
    """An HMER reward with a fixed extraction mode (and edit tolerance); built by the ``make_hmer_*`` factories."""

    def __init__(self, metric: str, extract_mode: str, name: str, max_edits: int | None = None) -> None:
        self.metric = metric
        self.extract_mode = extract_mode
        self.max_edits = max_edits
        self.__name__ = name

    def __call__(
        self,
        completions: Sequence[Any],
        solution: Sequence[Any] | None = None,
        task: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> Reward:
        return _hmer_reward(
            self.__name__, self.metric, completions, solution, task, self.extract_mode, self.max_edits
        )

    def __repr__(self) -> str:
        extra = f", max_edits={self.max_edits}" if self.max_edits is not None else ""
        return f"{self.__name__}(extract_mode={self.extract_mode!r}{extra})"


def _check_mode(factory: str, extract_mode: str) -> None:
    if extract_mode not in EXTRACT_MODES:
        raise ValueError(f"{factory}: `extract_mode` must be one of {EXTRACT_MODES}, got {extract_mode!r}.")


def make_hmer_exact_match_reward(extract_mode: str = "auto", name: str | None = None) -> _HmerReward:
    """Build :func:`hmer_exact_match_reward` with another LaTeX extraction mode.

    Args:
        extract_mode (`str`, defaults to ``"auto"``): ``"raw"``, ``"last-line"`` or ``"auto"``
            (see :func:`~evaluators.knowledge.latex.extract_latex`).
        name (`str`, *optional*): the reward's ``__name__``; defaults to ``hmer_exact_match_reward_<mode>``.

    Example:

    >>> reward = make_hmer_exact_match_reward("raw")
    >>> reward.__name__
    'hmer_exact_match_reward_raw'
    >>> reward(["a\\nb"], solution=["a b"])
    [1.0]
    """
    _check_mode("make_hmer_exact_match_reward", extract_mode)
    return _HmerReward("exact_match", extract_mode, name or f"hmer_exact_match_reward_{extract_mode}")


def make_hmer_edit_score_reward(extract_mode: str = "auto", name: str | None = None) -> _HmerReward:
    """Build :func:`hmer_edit_score_reward` with another LaTeX extraction mode.

    Example:

    >>> reward = make_hmer_edit_score_reward("last-line")
    >>> reward.__name__
    'hmer_edit_score_reward_last-line'
    >>> reward(["tree\\na + b"], solution=["a - b"])
    [0.6666666666666667]
    """
    _check_mode("make_hmer_edit_score_reward", extract_mode)
    return _HmerReward("edit_score", extract_mode, name or f"hmer_edit_score_reward_{extract_mode}")


def make_hmer_within_edits_reward(
    max_edits: int = 1, extract_mode: str = "auto", name: str | None = None
) -> _HmerReward:
    """Build a reward of 1.0 iff the token edit distance is at most ``max_edits`` (the evaluator's ExpRate ≤ k).

    Example:

    >>> reward = make_hmer_within_edits_reward(1)
    >>> reward.__name__
    'hmer_within_1_edits_reward'
    >>> reward(["x ^ { 3 }", "x ^ 3"], solution=["x ^ { 2 }", "x ^ { 2 }"])
    [1.0, 0.0]
    """
    _check_mode("make_hmer_within_edits_reward", extract_mode)
    if isinstance(max_edits, bool) or not isinstance(max_edits, int) or max_edits < 0:
        raise ValueError(
            f"make_hmer_within_edits_reward: `max_edits` must be an int >= 0, got {max_edits!r}."
        )
    return _HmerReward(
        "within_edits", extract_mode, name or f"hmer_within_{max_edits}_edits_reward", max_edits=max_edits
    )
