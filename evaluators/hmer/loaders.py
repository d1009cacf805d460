"""Read HMER predictions from the three formats unitune meets into one list of samples.

- ``upstream``: Uni-MuMER's prediction JSON, a list of ``{"gt", "pred", "image_path", "img_id"}``
  (the ``backup__*.json`` runs add ``raw_gt``/``raw_pred``/``distance``; ``gt`` vs ``pred`` is scored).
- ``llamafactory``: LLaMA-Factory's ``generated_predictions.jsonl``, ``{"prompt", "predict", "label"}``.
- ``inference``: ``unitune infer`` JSONL, ``{"id", "pred", "gt", "sample_index"}``; with several samples
  per id only ``sample_index`` 0 is scored (the greedy/first sample), and the loader says so.

The format is detected from the first record unless given. User mistakes raise
:class:`~evaluators.errors.UserError` naming the file and the record.
"""

from __future__ import annotations

import logging
import operator
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, itemgetter
from pathlib import Path

from evaluators.errors import UserError
from evaluators.io_utils import read_records

__all__ = ["FORMATS", "HmerSample", "LoadedPredictions", "detect_format", "load_predictions", "output_stem"]

logger = logging.getLogger(__name__)

#: Accepted values of ``load_predictions(fmt=...)`` (and of ``unitune eval hmer --format``).
FORMATS = ("auto", "upstream", "llamafactory", "inference")

# format -> (gt key, pred key, id key or None for the record index)
_KEYS = {
    "upstream": ("gt", "pred", "img_id"),
    "llamafactory": ("label", "predict", None),
    "inference": ("gt", "pred", "id"),
}


@dataclass(slots=True)
class HmerSample:
    """One scored pair: ``id``, the label ``gt`` and the model output ``pred`` (raw text, ``""`` if missing).

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, which made building the
    samples of a file three times slower; nothing changes a sample after loading.
    """

    id: str
    gt: str
    pred: str


@dataclass
class LoadedPredictions:
    """The samples of one file, with its detected format and counts of tolerated problems."""

    path: Path
    format: str
    samples: list[HmerSample]
    warnings: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def detect_format(record: dict) -> str:
    """Guess the format of a file from its first record.

    Example:

    >>> detect_format({"prompt": "p", "predict": "x", "label": "x"})
    'llamafactory'
    >>> detect_format({"id": "a", "pred": "x", "gt": "x", "sample_index": 0})
    'inference'
    >>> detect_format({"gt": "x", "pred": "x", "img_id": "a"})
    'upstream'
    """
    if "predict" in record or "label" in record:
        return "llamafactory"
    if "sample_index" in record:
        return "inference"
    return "upstream"


def output_stem(path: str | os.PathLike) -> str:
    """Upstream's name for a file's outputs: no ``.json``/``.jsonl``, no trailing ``_pred``.

    Example:

    >>> output_stem("results/crohme_2014_pred.json")
    'crohme_2014'
    >>> output_stem("backup__N2.json")
    'backup__N2'
    >>> output_stem("out/generated_predictions.jsonl")
    'generated_predictions'
    """
    name = Path(path).name
    for suffix in (".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.removesuffix("_pred") or name


def _describe_keys(record: dict) -> str:
    return ", ".join(repr(k) for k in list(record)[:8]) or "none"


def load_predictions(
    path: str | os.PathLike, fmt: str = "auto", allow_torn: bool = False
) -> LoadedPredictions:
    """Load one prediction file.

    Args:
        path (`str` or `os.PathLike`): a JSON list or JSONL file.
        fmt (`str`, defaults to ``"auto"``): one of :data:`FORMATS`.
        allow_torn (`bool`): drop a cut-off last JSONL line with a warning instead of refusing the file.

    Returns:
        :class:`LoadedPredictions`. ``warnings`` counts ``null_pred`` / ``non_string_pred`` (scored as
        empty predictions), ``failed`` (records marked ``"error": true``, e.g. a missing image in
        ``unitune infer``; scored as wrong), ``duplicate_ids`` and, for inference files,
        ``extra_samples_skipped``.

    Raises:
        UserError: missing file, malformed JSON, empty file, a record without its label/prediction key,
            a label that is not a string, an empty label (unlabelled data cannot be scored), an ``error``
            field that is not a boolean, or no prediction at all (every record failed, null or non-string).

    Example:

    >>> import json, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x_pred.json"
    >>> _ = p.write_text(json.dumps([{"gt": "a + b", "pred": None, "img_id": "1"}, {"gt": "c", "pred": "c", "img_id": "2"}]))
    >>> loaded = load_predictions(p)
    >>> loaded.format, loaded.samples[0], loaded.warnings
    ('upstream', HmerSample(id='1', gt='a + b', pred=''), {'null_pred': 1})
    """
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    path = Path(path)
    records = read_records(path, allow_torn=allow_torn)
    if not records:
        raise UserError(f"{path}: no samples (the file is empty); there is nothing to evaluate.")
    if fmt == "auto":
        fmt = detect_format(records[0])
    gt_key, pred_key, id_key = _KEYS[fmt]
    warnings: Counter[str] = Counter()
    notes: list[str] = []

    if fmt == "inference":
        indexed, skipped, missing_first, repeated = _first_samples(path, records)
        if repeated:
            warnings["duplicate_ids"] = repeated
            notes.append(
                f"{path}: {repeated} records repeat an (id, sample_index) pair; the first is scored."
            )
        if skipped:
            warnings["extra_samples_skipped"] = skipped
            notes.append(
                f"{path}: several samples per id; scoring sample_index 0 only "
                f"({len(indexed)} ids scored, {skipped} extra samples skipped)."
            )
        if missing_first:
            warnings["ids_without_sample_0"] = missing_first
            notes.append(f"{path}: {missing_first} ids have no sample_index 0; their lowest index is scored.")

    else:
        samples = _plain_samples(records, gt_key, pred_key, id_key)
        if samples is not None:
            return _checked(path, fmt, samples, gt_key, warnings, notes, 0)
        indexed = list(enumerate(records))

    samples: list[HmerSample] = []
    append = samples.append
    empty_gt = 0
    for index, record in indexed:
        try:
            gt = record[gt_key]
            pred = record[pred_key]
        except KeyError:
            key = gt_key if gt_key not in record else pred_key
            raise UserError(
                f"{path}: record {index} has no {key!r} key (its keys: {_describe_keys(record)}); "
                f"a {fmt} file needs {gt_key!r} and {pred_key!r}."
            ) from None
        if type(gt) is not str:
            raise UserError(
                f"{path}: record {index} has a {type(gt).__name__} {gt_key!r}, expected the LaTeX label string."
            )
        if not gt or gt.isspace():
            empty_gt += 1
        if "error" in record:
            failed = record["error"]
            if type(failed) is not bool:
                raise UserError(
                    f'{path}: record {index} has "error": {failed!r}, expected true or false (a JSON boolean).'
                )
            if failed:
                warnings["failed"] += 1
                pred = ""
        if type(pred) is not str:
            if pred is None:
                warnings["null_pred"] += 1
            else:
                warnings["non_string_pred"] += 1
            pred = ""
        sample_id = record.get(id_key) if id_key else None
        append(HmerSample(str(index if sample_id is None else sample_id), gt, pred))

    return _checked(path, fmt, samples, gt_key, warnings, notes, empty_gt)


def _plain_samples(
    records: list[dict], gt_key: str, pred_key: str, id_key: str | None
) -> list[HmerSample] | None:
    """The samples of a file whose records are all plain (both keys present, string texts, no ``error``
    field, no blank label, string or no ids), read column by column in C; ``None`` for any other file,
    which the record-by-record loop of :func:`load_predictions` reads (and reports on).
    """
    try:
        gts = list(map(itemgetter(gt_key), records))
        preds = list(map(itemgetter(pred_key), records))
    except KeyError:
        return None
    if set(map(type, gts)) != {str} or set(map(type, preds)) != {str}:
        return None
    if not all(gts) or any(map(str.isspace, gts)) or any(map(operator.contains, records, repeat("error"))):
        return None
    if id_key is None:
        ids = list(map(str, range(len(records))))
    else:
        ids = list(map(dict.get, records, repeat(id_key)))
        if set(map(type, ids)) != {str}:
            return None
    return list(map(HmerSample, ids, gts, preds))


def _checked(
    path: Path,
    fmt: str,
    samples: list[HmerSample],
    gt_key: str,
    warnings: Counter[str],
    notes: list[str],
    empty_gt: int,
) -> LoadedPredictions:
    """Refuse a meaningless file, note duplicate ids and missing predictions, and wrap up the samples."""
    _refuse_meaningless(path, samples, gt_key, warnings, empty_gt)
    duplicates = len(samples) - len(set(map(attrgetter("id"), samples)))
    if duplicates and fmt != "inference":
        warnings["duplicate_ids"] = duplicates
        notes.append(f"{path}: {duplicates} duplicate ids; every record is still scored.")
    bad_preds = warnings["null_pred"] + warnings["non_string_pred"]
    if bad_preds:
        notes.append(f"{path}: {bad_preds} null or non-string predictions scored as empty.")
    if warnings["failed"]:
        notes.append(
            f'{path}: {warnings["failed"]} of {len(samples)} records failed upstream ("error": true, e.g. a '
            "missing image); scored as wrong."
        )
    for note in notes:
        logger.warning("%s", note)
    return LoadedPredictions(path=path, format=fmt, samples=samples, warnings=dict(+warnings), notes=notes)


def _refuse_meaningless(
    path: Path, samples: list[HmerSample], gt_key: str, warnings: Counter[str], empty_gt: int
) -> None:
    """Refuse a file whose score would mean nothing: unlabelled records, or no prediction at all.

    An empty *output* of the model is a prediction (it scores 0); a *missing* one is a failed inference
    (``"error": true``, ``null`` or a non-string): a file with only missing predictions measures nothing.
    """
    n = len(samples)
    if empty_gt:
        raise UserError(
            f"{path}: {empty_gt} of {n} records have an empty label {gt_key!r}; unlabelled data cannot be "
            "scored (evaluate a file whose records all carry their LaTeX label)."
        )
    missing = warnings["failed"] + warnings["null_pred"] + warnings["non_string_pred"]
    if missing == n:
        raise UserError(
            f"{path}: all {n} predictions are missing ({warnings['failed']} marked as failed, e.g. missing "
            "images); there is nothing to score."
        )


def _first_samples(path: Path, records: list[dict]) -> tuple[list[tuple[int, dict]], int, int, int]:
    """Keep, per id, the record with the lowest ``sample_index`` (0 normally), in file order.

    Returns the kept ``(index, record)`` pairs, the number of extra samples skipped, the number of ids
    without a sample 0, and the number of records repeating an ``(id, sample_index)`` pair.
    """
    best: dict[object, tuple[int, int, dict]] = {}
    pairs: Counter[tuple[object, int]] = Counter()
    for index, record in enumerate(records):
        if "id" not in record:
            raise UserError(
                f"{path}: record {index} has no 'id' key (its keys: {_describe_keys(record)}); "
                "an inference file needs 'id', 'gt', 'pred' and 'sample_index'."
            )
        sample_index = record.get("sample_index", 0)
        if not isinstance(sample_index, int) or isinstance(sample_index, bool):
            raise UserError(f"{path}: record {index} has sample_index {sample_index!r}, expected an integer.")
        key = record["id"] if isinstance(record["id"], (str, int)) else str(record["id"])
        pairs[(key, sample_index)] += 1
        if key not in best or sample_index < best[key][0]:
            best[key] = (sample_index, index, record)
    kept = sorted(((index, record) for _, index, record in best.values()), key=lambda item: item[0])
    missing_first = sum(1 for sample_index, _, _ in best.values() if sample_index != 0)
    repeated = sum(n - 1 for n in pairs.values())
    return kept, len(records) - len(kept) - repeated, missing_first, repeated
