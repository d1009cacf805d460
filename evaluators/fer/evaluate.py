"""Load FERBench results files, validate them, and score them with either protocol (per file or pooled).

A results file is a JSON list (or JSONL) of QA records ``{"image_path", "true_label", "prompt",
"candidate_labels"}`` plus ``"model_response"`` and, when inference failed, ``"error": true``.

How the two protocols treat the same items:

- ``"error": true`` (failed inference): ``unifer`` skips the item (counted in ``errors``, as upstream);
  ``strict`` scores it as wrong (``errors``), so its accuracy is over every item of the file.
- no usable answer: ``unifer`` reads the think text and synonyms, else predicts ``"unknown"``, which is a
  class of its macro average; ``strict`` predicts ``"invalid"`` (wrong, counted in ``invalid``, not a class).
- a non-string ``model_response`` on a non-error item: upstream crashes; here ``unifer`` treats it as ``""``
  (``"unknown"``) and ``strict`` as ``"invalid"``; both count it in ``bad_response`` and log a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.errors import UserError
from evaluators.fer.metrics import compute_metrics
from evaluators.fer.strict_protocol import INVALID, extract_label_strict
from evaluators.fer.unifer_protocol import UNKNOWN, extract_label_unifer
from evaluators.io_utils import read_records
from evaluators.knowledge.fer_labels import (
    CANDIDATE_LABELS,
    DATASET_NAMES,
    POOLED_LABEL_MAP,
    UNIFER_ANSWER_RE,
    UNIFER_TOTAL_ANSWER_RE,
    detect_dataset,
)

__all__ = [
    "PROTOCOLS",
    "LoadedResults",
    "ProtocolScore",
    "load_results",
    "load_results_records",
    "results_stem",
    "score_file",
    "score_total",
]

logger = logging.getLogger(__name__)

#: Protocol names accepted by :func:`score_file` and :func:`score_total`.
PROTOCOLS: tuple[str, ...] = ("strict", "unifer")


@dataclass
class LoadedResults:
    """A validated results file: one entry per item in every list, in file order."""

    source: str
    dataset: str
    labels: tuple[str, ...]
    records: list[dict]
    true_labels: list[str]
    errors: list[bool]
    responses: list[str | None]
    bad_response: list[bool] = field(default_factory=list)


@dataclass
class ProtocolScore:
    """One protocol's result on one file (or the pool): predictions, rules, metrics and counts."""

    protocol: str
    dataset: str
    labels: list[str]
    predictions: list[str | None]
    rules: list[str]
    metrics: dict[str, Any]
    counts: dict[str, int]
    #: The scored (true, predicted) pairs behind ``metrics``, predictions outside ``labels`` included.
    scored: list[tuple[str, str]] = field(default_factory=list)


def results_stem(path: str | os.PathLike) -> str:
    """File name without ``.json``/``.jsonl`` and a trailing ``_results``.

    Example:

    >>> results_stem("out/rafdb_unifer_7b_results.json")
    'rafdb_unifer_7b'
    >>> results_stem("sfew.jsonl")
    'sfew'
    """
    name = Path(path).name
    for suffix in (".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.endswith("_results") and len(name) > len("_results"):
        name = name[: -len("_results")]
    return name


def load_results_records(records: Sequence[Any], source: str, dataset: str | None = None) -> LoadedResults:
    """Validate in-memory result records; see :func:`load_results`.

    Raises:
        UserError: no items, an item that is not an object, a missing/non-string ``true_label``, candidate
            lists that differ or match no dataset (without ``dataset``), or a true label outside the candidates.

    Example:

    >>> sfew = list(CANDIDATE_LABELS["sfew"])
    >>> recs = [{"true_label": "sad", "candidate_labels": sfew, "model_response": "<answer>sad</answer>"},
    ...         {"true_label": "happy", "candidate_labels": sfew, "error": True, "model_response": "ERROR: oom"}]
    >>> loaded = load_results_records(recs, "mem")
    >>> loaded.dataset, loaded.errors, loaded.bad_response
    ('sfew', [False, True], [False, False])
    """
    if not records:
        raise UserError(f"{source}: no items to evaluate (empty file).")
    if dataset is not None and dataset not in CANDIDATE_LABELS:
        raise UserError(f"--dataset {dataset!r} is unknown; choose one of {', '.join(CANDIDATE_LABELS)}.")
    first_list: tuple[str, ...] | None = None
    true_labels, errors, responses, bad = [], [], [], []
    mismatch_warned = False
    for index, item in enumerate(records):
        if not isinstance(item, dict):
            raise UserError(f"{source}: item {index} is a {type(item).__name__}, expected an object.")
        true_label = item.get("true_label")
        if not isinstance(true_label, str):
            raise UserError(f"{source}: item {index} has no string `true_label` (got {true_label!r}).")
        cands = item.get("candidate_labels")
        cand_tuple = (
            tuple(cands) if isinstance(cands, list) and all(isinstance(c, str) for c in cands) else None
        )
        if dataset is None:
            if cand_tuple is None:
                raise UserError(
                    f"{source}: item {index} has no list of strings `candidate_labels`; "
                    "pass --dataset to say which FERBench set this is."
                )
            if first_list is None:
                first_list = cand_tuple
            elif cand_tuple != first_list:
                raise UserError(
                    f"{source}: item {index} has candidate_labels {list(cand_tuple)}, item 0 has "
                    f"{list(first_list)}; one file must hold one dataset (or pass --dataset)."
                )
        elif cand_tuple is not None and cand_tuple != CANDIDATE_LABELS[dataset] and not mismatch_warned:
            logger.warning(
                "%s: item %d candidate_labels %s differ from %s's; using %s's list (--dataset).",
                source, index, list(cand_tuple), dataset, dataset,
            )  # fmt: skip
            mismatch_warned = True
        is_error = item.get("error", False)
        if is_error is None:
            is_error = False
        if not isinstance(is_error, bool):
            raise UserError(
                f'{source}: item {index} has "error": {is_error!r}, expected true or false (a JSON boolean).'
            )
        response = item.get("model_response")
        is_bad = not is_error and not isinstance(response, str)
        true_labels.append(true_label)
        errors.append(is_error)
        responses.append(response if isinstance(response, str) else None)
        bad.append(is_bad)
    if dataset is None:
        try:
            dataset = detect_dataset(first_list or ())
        except ValueError as err:
            raise UserError(f"{source}: {err}") from None
    labels = CANDIDATE_LABELS[dataset]
    for index, true_label in enumerate(true_labels):
        if true_label not in labels:
            raise UserError(
                f"{source}: item {index} has true_label {true_label!r}, not one of {dataset}'s candidates "
                f"{list(labels)}."
            )
    if all(errors):
        raise UserError(
            f'{source}: all {len(errors)} items are marked as failed inference ("error": true); '
            "there is no prediction to score."
        )
    if any(bad):
        logger.warning(
            "%s: %d item(s) without a string `model_response` and no `error` flag; scored as unreadable "
            "(unifer: 'unknown', strict: 'invalid').",
            source, sum(bad),
        )  # fmt: skip
    return LoadedResults(source, dataset, labels, list(records), true_labels, errors, responses, bad)


def load_results(
    path: str | os.PathLike, dataset: str | None = None, allow_torn: bool = False
) -> LoadedResults:
    """Read and validate one results file (JSON list or JSONL).

    Args:
        path (`str` or `os.PathLike`): the results file.
        dataset (`str`, *optional*): force the dataset (``rafdb``, ``ferplus``, ``affectnet``, ``sfew``);
            by default it is detected from ``candidate_labels`` (order included).
        allow_torn (`bool`): drop a cut-off last JSONL line with a warning instead of refusing the file.

    Raises:
        UserError: a missing, malformed or empty file, or invalid items (see :func:`load_results_records`).
    """
    return load_results_records(read_records(path, allow_torn=allow_torn), str(path), dataset)


def _score_items(loaded: LoadedResults, protocol: str, *, pooled: bool) -> tuple[list, list, list, list]:
    """Per-item predictions and rules; plus the (true, pred) lists that enter the metrics."""
    preds: list[str | None] = []
    rules: list[str] = []
    scored_true: list[str] = []
    scored_pred: list[str] = []
    for true_label, is_error, response in zip(
        loaded.true_labels, loaded.errors, loaded.responses, strict=True
    ):
        if protocol == "unifer":
            if is_error:
                preds.append(None)
                rules.append("error")
                continue
            label, rule = extract_label_unifer(response or "", loaded.labels, loaded.dataset, pooled=pooled)
        elif protocol == "strict":
            if is_error:
                label, rule = INVALID, "error"
            else:
                label, rule = extract_label_strict(response, loaded.labels)
        else:
            raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}.")
        preds.append(label)
        rules.append(rule)
        scored_true.append(true_label)
        scored_pred.append(label)
    return preds, rules, scored_true, scored_pred


def _counts(protocol: str, total: int, errors: int, bad: int, scored_pred: Sequence[str]) -> dict[str, int]:
    if protocol == "unifer":
        return {
            "total": total,
            "errors": errors,
            "unknown": sum(p == UNKNOWN for p in scored_pred),
            "valid": len(scored_pred),
            "bad_response": bad,
        }
    invalid = sum(p == INVALID for p in scored_pred) - errors
    return {
        "total": total,
        "errors": errors,
        "invalid": invalid,
        "scored": len(scored_pred),
        "bad_response": bad,
    }


def score_file(loaded: LoadedResults, protocol: str) -> ProtocolScore:
    """Score one validated file with ``protocol`` (``"unifer"`` or ``"strict"``).

    ``unifer`` skips error items, extracts with the per-dataset evaluator (SFEW 2.0's own regex) and takes
    the macro average over every label seen; ``strict`` scores every item (errors and invalid answers are
    wrong) with the macro average over the candidates.

    Example:

    >>> recs = [{"true_label": "happy", "candidate_labels": list(CANDIDATE_LABELS["ferplus"]),
    ...          "model_response": "<think>not angry at all</think><answer>happiness</answer>"}]
    >>> loaded = load_results_records(recs, "mem")
    >>> score_file(loaded, "unifer").predictions, score_file(loaded, "strict").predictions
    (['angry'], ['happy'])
    """
    preds, rules, true, pred = _score_items(loaded, protocol, pooled=False)
    labels = list(loaded.labels)
    metrics = compute_metrics(true, pred, labels, macro_over_labels=(protocol == "strict"))
    counts = _counts(protocol, len(loaded.true_labels), sum(loaded.errors), sum(loaded.bad_response), pred)
    return ProtocolScore(
        protocol, loaded.dataset, labels, preds, rules, metrics, counts, list(zip(true, pred, strict=True))
    )


def _pooled_extraction_is_per_file(protocol: str, dataset: str) -> bool:
    """Whether ``--total`` extracts this dataset's labels exactly as its own file's scoring did.

    ``strict`` has no pooled variant; ``unifer``'s pooled regex differs from the per-dataset one for SFEW
    2.0 only.

    Example:

    >>> _pooled_extraction_is_per_file("unifer", "rafdb"), _pooled_extraction_is_per_file("unifer", "sfew")
    (True, False)
    """
    if protocol != "unifer":
        return True
    own = UNIFER_ANSWER_RE[dataset]
    return own.pattern == UNIFER_TOTAL_ANSWER_RE.pattern and own.flags == UNIFER_TOTAL_ANSWER_RE.flags


def score_total(
    files: Sequence[LoadedResults],
    protocol: str,
    per_file: Sequence[ProtocolScore | None] | None = None,
) -> ProtocolScore:
    """Pool several files (one per dataset) the way UniFER's ``eval_total`` does.

    Files are taken in UniFER's order (AffectNet, RAF-DB, FERPlus, SFEW 2.0), each extracted with its own
    dataset's rules (for ``unifer`` with the pooled regex, so SFEW 2.0 uses IGNORECASE), then ``angry→anger,
    happy→happiness, sad→sadness`` is applied to true and predicted labels. ``unifer`` uses
    ``sorted(set(true_labels))`` as matrix labels and a macro without ``labels=``; ``strict`` uses the sorted
    union of the pooled candidates and a macro over them.

    ``per_file`` (the same protocol's :func:`score_file` result of each file, in ``files`` order) lets a file
    whose pooled extraction is its own (every dataset but SFEW 2.0 under ``unifer``) reuse its labels
    instead of extracting them again.

    Raises:
        UserError: no files, or two files of the same dataset.
    """
    if per_file is not None and len(per_file) != len(files):
        raise ValueError(f"per_file: {len(per_file)} scores for {len(files)} files")
    if not files:
        raise UserError("--total needs at least one results file.")
    seen: dict[str, str] = {}
    for loaded in files:
        if loaded.dataset in seen:
            raise UserError(
                f"--total pools one file per dataset, but {seen[loaded.dataset]} and {loaded.source} are both "
                f"{loaded.dataset}."
            )
        seen[loaded.dataset] = loaded.source
    missing = [d for d in DATASET_NAMES if d not in seen]
    if missing:
        logger.warning("--total without %s: the pooled numbers are not FERBench's total.", ", ".join(missing))
    scores = per_file if per_file is not None else [None] * len(files)
    pairs = sorted(zip(files, scores, strict=True), key=lambda pair: DATASET_NAMES.index(pair[0].dataset))
    ordered = [loaded for loaded, _ in pairs]
    preds: list[str | None] = []
    rules: list[str] = []
    true_all: list[str] = []
    pred_all: list[str] = []
    for loaded, own in pairs:
        if (
            own is not None
            and own.protocol == protocol
            and own.dataset == loaded.dataset
            and _pooled_extraction_is_per_file(protocol, loaded.dataset)
        ):
            p, r = own.predictions, own.rules
            t = [true for true, _ in own.scored]
            s = [pred for _, pred in own.scored]
        else:
            p, r, t, s = _score_items(loaded, protocol, pooled=True)
        preds.extend(p)
        rules.extend(r)
        true_all.extend(t)
        pred_all.extend(s)
    true_all = [POOLED_LABEL_MAP.get(x, x) for x in true_all]
    pred_all = [POOLED_LABEL_MAP.get(x, x) for x in pred_all]
    preds = [None if x is None else POOLED_LABEL_MAP.get(x, x) for x in preds]
    if protocol == "unifer":
        labels = sorted(set(true_all))
    else:
        labels = sorted({POOLED_LABEL_MAP.get(c, c) for f in ordered for c in f.labels})
    metrics = compute_metrics(true_all, pred_all, labels, macro_over_labels=(protocol == "strict"))
    counts = _counts(
        protocol,
        sum(len(f.true_labels) for f in ordered),
        sum(sum(f.errors) for f in ordered),
        sum(sum(f.bad_response) for f in ordered),
        pred_all,
    )
    return ProtocolScore(
        protocol, "total", labels, preds, rules, metrics, counts, list(zip(true_all, pred_all, strict=True))
    )
