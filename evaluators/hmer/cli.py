"""Score handwritten-math predictions with upstream Uni-MuMER's exact ExpRate family, plus error analysis.

For each FILE (upstream prediction JSON, LLaMA-Factory generated_predictions.jsonl, or unitune
inference JSONL) it writes to --out-dir:

  <stem>_results.txt   byte-identical to upstream's scripts/eval_metrics_calculator.py output
  <stem>_metrics.json  every metric unrounded as a fraction in 0-1, N, config, higher_is_better, error
                       analysis, unitune version, git revision, timestamp and model
  <stem>_samples.jsonl per sample: id, distance, edit score, edit ops
  <stem>_analysis.png  with --plots: ExpRate by length/structure, top token confusions

<stem> is the file name without .json/.jsonl and a trailing _pred. One Markdown table with a row per
file goes to stdout. Defaults (--extract raw, no --normalize) reproduce upstream's numbers exactly;
upstream's "Character Error Rate" is token edits per label character and is named
token_edits_per_gt_char in the JSON, next to a true character error rate (cer).
"""

from __future__ import annotations

import argparse
import json
import logging
import operator
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress, count, repeat, tee
from json.encoder import encode_basestring
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

from evaluators.cli import add_out_dir
from evaluators.errors import UserError
from evaluators.fork_pool import available_cpus, run_jobs
from evaluators.hmer.analysis import analyze, plot_analysis
from evaluators.hmer.loaders import FORMATS, LoadedPredictions, load_predictions, output_stem
from evaluators.hmer.metrics import (
    HIGHER_IS_BETTER,
    THRESHOLDS,
    Alignment,
    HmerResult,
    ScoreMemo,
    evaluate_samples,
    gc_paused,
)
from evaluators.hmer.upstream_report import format_upstream_results, upstream_rounded
from evaluators.io_utils import ensure_output_dir
from evaluators.knowledge.latex import EXTRACT_MODES
from evaluators.outputs import OutputSet
from evaluators.provenance import git_revision, model_from_inference_meta, provenance, unitune_version

__all__ = [
    "LineMemo",
    "add_arguments",
    "markdown_table",
    "metrics_document",
    "resolve_stems",
    "run",
    "sample_lines",
    "sample_records",
    "group_by_test_set",
]

logger = logging.getLogger(__name__)

_BLEU_CONFIG = "nltk corpus_bleu, weights (0.25,)*4, SmoothingFunction().method4, x100, refs [[gt_tokens]]"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unitune eval hmer``."""
    parser.add_argument(
        "files", nargs="+", metavar="FILE", type=Path, help="prediction files (JSON or JSONL)"
    )
    add_out_dir(parser, "folder for the per-file outputs", required=True)
    parser.add_argument(
        "--extract",
        choices=EXTRACT_MODES,
        default="raw",
        help="how to take the LaTeX from an output: raw = whole text stripped (upstream, default); "
        "last-line = last non-empty line (Tree-CoT / Symbol-Counting); auto = last line if several",
    )
    parser.add_argument(
        "--normalize",
        action="store_true",
        help="normalise both sides to the *_normalized test-set conventions (\\le->\\leq, a_i->a _ { i }, ...)",
    )
    parser.add_argument("--plots", action="store_true", help="also write <stem>_analysis.png")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="input format (default: detect)")
    parser.add_argument("--top", type=int, default=20, help="confusions to list per kind (default 20)")
    parser.add_argument(
        "--model",
        help="model recorded in the metrics JSON (default: from unitune infer's .meta.json, if any)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="processes sharing the files (default: one per available CPU, at most one per file); "
        "outputs are the same for any number",
    )
    parser.add_argument(
        "--allow-torn",
        action="store_true",
        help="score a JSONL file whose last line was cut off by an interrupted writer (that line is dropped)",
    )


def resolve_stems(paths: list[Path]) -> list[str]:
    """Output stems for ``paths``; names that collide get their parent folder as a prefix.

    Example:

    >>> from pathlib import Path
    >>> resolve_stems([Path("a/generated_predictions.jsonl"), Path("b/generated_predictions.jsonl")])
    ['a__generated_predictions', 'b__generated_predictions']
    >>> resolve_stems([Path("x/crohme_2014_pred.json")])
    ['crohme_2014']
    """
    stems = [output_stem(p) for p in paths]
    clashing = {s for s in stems if stems.count(s) > 1}
    stems = [
        f"{p.resolve().parent.name}__{s}" if s in clashing else s for p, s in zip(paths, stems, strict=True)
    ]
    seen: dict[str, Path] = {}
    for path, stem in zip(paths, stems, strict=True):
        if stem in seen:
            raise UserError(
                f"{seen[stem]} and {path} would write the same outputs ({stem}_*); "
                "give each file once, or evaluate them in separate calls with different --out-dir."
            )
        seen[stem] = path
    return stems


#: Metrics ``HmerResult`` holds in percent (upstream's scale, kept for results.txt and the printed table).
PERCENT_METRICS = frozenset(["exprate", "error_le_1", "error_le_2", "error_le_3", "mean_edit_score", "bleu4"])


def as_fractions(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics on a 0-1 scale, as every metrics JSON stores them (percent only in printed tables).

    Example:

    >>> as_fractions({"exprate": 50.0, "cer": 0.25})
    {'exprate': 0.5, 'cer': 0.25}
    """
    return {k: (v / 100 if k in PERCENT_METRICS and v is not None else v) for k, v in metrics.items()}


def _analysis_fractions(analysis: dict) -> dict:
    out = dict(analysis)
    for key in ("by_length", "by_structure"):
        if key in out:
            out[key] = {name: as_fractions(group) for name, group in out[key].items()}
    if "sc_consistency" in out and out["sc_consistency"].get("rate") is not None:
        out["sc_consistency"] = {**out["sc_consistency"], "rate": out["sc_consistency"]["rate"] / 100}
    return out


def metrics_document(
    result: HmerResult, loaded: LoadedPredictions, analysis: dict | None = None, model: str | None = None
) -> dict[str, object]:
    """The ``<stem>_metrics.json`` content: every rate a fraction in 0-1, plus provenance.

    ``upstream_rounded`` alone keeps upstream's own percent values and keys, for a side-by-side check.
    """
    return {
        "evaluator": "unitune eval hmer",
        **provenance(model if model is not None else model_from_inference_meta(loaded.path)),
        "version": unitune_version(),
        "scale": "fractions in 0-1 (upstream_rounded: upstream's percent values)",
        "input": str(loaded.path),
        "format": loaded.format,
        "N": result.n,
        "config": {
            **result.config,
            "tokenizer": "whitespace (str.split), no normalisation"
            if not result.config.get("normalize")
            else "whitespace (str.split) after normalize_latex",
            "bleu": _BLEU_CONFIG,
            "thresholds": list(THRESHOLDS),
            "cer": "character Levenshtein / label characters, whitespace removed on both sides",
            "token_edits_per_gt_char": "upstream's 'Character Error Rate': token edits / label characters",
        },
        "metrics": as_fractions(result.metrics),
        "higher_is_better": HIGHER_IS_BETTER,
        "counts": {f"distance_le_{k}": result.counts[k] for k in THRESHOLDS},
        "upstream_rounded": upstream_rounded(result),
        "warnings": loaded.warnings,
        "notes": loaded.notes,
        "analysis": _analysis_fractions(analysis or {}),
    }


def sample_records(result: HmerResult) -> Iterator[dict]:
    """One ``<stem>_samples.jsonl`` row per sample: id, distance, edit score, texts and edit ops.

    A generator, so the rows are written as they are made instead of being held all at once.

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> row = next(sample_records(evaluate_samples([HmerSample("a", "x + 1", "x + 7")])))
    >>> row["distance"], row["ops"]
    (1, [{'op': 'replace', 'gt': ['1'], 'pred': ['7'], 'gt_span': [2, 3], 'pred_span': [2, 3]}])
    """
    rows = zip(
        result.ids,
        result.gts,
        result.preds,
        result.gt_lens,
        result.pred_lens,
        result.alignments,
        result.edit_scores,
        strict=True,
    )
    for index, (sample_id, gt, pred, gt_len, pred_len, alignment, score) in enumerate(rows):
        yield {
            "index": index,
            "id": sample_id,
            "distance": alignment.distance,
            "edit_score": score,
            "gt_len": gt_len,
            "pred_len": pred_len,
            "gt": gt,
            "pred": pred,
            "ops": [
                {
                    "op": tag,
                    "gt": list(gt_tokens),
                    "pred": list(pred_tokens),
                    "gt_span": [i1, i2],
                    "pred_span": [j1, j2],
                }
                for (tag, i1, i2, j1, j2), (gt_tokens, pred_tokens) in zip(
                    alignment.ops, alignment.op_tokens, strict=True
                )
            ],
        }


#: The start of a ``<stem>_samples.jsonl`` line (``json.dumps``'s separators; ``%s``: pre-encoded JSON): index
#: and id, all that differs between samples of the same label and prediction.
_HEAD = '{"index": %d, "id": %s, '
#: A line from its index, id and tail (the rest, made from the label and the prediction).
_LINE = _HEAD + "%s"

#: The rest of the line of a sample with edits.
_TAIL = '"distance": %d, "edit_score": %s, "gt_len": %d, "pred_len": %d, "gt": %s, "pred": %s, "ops": %s}'

#: The rest of the line of an exact match (same tokens): distance 0, edit score 100.0, ``pred_len == gt_len``
#: and no ops.
_EXACT_TAIL = (
    '"distance": 0, "edit_score": 100.0, "gt_len": %d, "pred_len": %d, "gt": %s, "pred": %s, "ops": []}'
)


@dataclass
class LineMemo:
    """What :func:`sample_lines` formatted, kept for the next files of a run: line tails by (label,
    prediction) and op heads by (tag, label tokens, prediction tokens), at most ``limit`` of each (a tail is
    about 300 bytes)."""

    tails: dict[tuple[str, str], str] = field(default_factory=dict)
    op_heads: dict[tuple[str, tuple[str, ...], tuple[str, ...]], str] = field(default_factory=dict)
    limit: int = 1 << 16


#: One edit op of a ``<stem>_samples.jsonl`` line (the ``"ops"`` list of :func:`sample_records`).
_OP = '{"op": "%s", "gt": [%s], "pred": [%s], "gt_span": [%d, %d], "pred_span": [%d, %d]}'
#: The same in two parts: what depends on the op's tag and tokens only, then its spans.
_OP_HEAD = '{"op": "%s", "gt": [%s], "pred": [%s], "gt_span": ['
_OP_SPANS = '%d, %d], "pred_span": [%d, %d]}'


def _ops_json(alignments: Iterable[Alignment]) -> Iterator[str]:
    """The ``"ops"`` value of each sample as JSON text, in order (``[]`` for exact matches; spans of one token
    are encoded inline)."""
    encode = encode_basestring
    for alignment in alignments:
        if not alignment.ops:
            yield "[]"
            continue
        yield (
            "["
            + ", ".join(
                [
                    _OP
                    % (
                        tag,
                        encode(gt[0]) if len(gt) == 1 else ", ".join(map(encode, gt)),
                        encode(pred[0]) if len(pred) == 1 else ", ".join(map(encode, pred)),
                        i1,
                        i2,
                        j1,
                        j2,
                    )
                    for (tag, i1, i2, j1, j2), (gt, pred) in zip(
                        alignment.ops, alignment.op_tokens, strict=True
                    )
                ]
            )
            + "]"
        )


def _ops_json_memo(alignment: Alignment, memo: LineMemo) -> str:
    """:func:`_ops_json` of a sample with edits, keeping the head of each distinct (tag, label tokens, prediction tokens) in
    ``memo.op_heads``: a run's confusions recur across samples, and only their spans are formatted again."""
    encode = encode_basestring
    heads = memo.op_heads
    parts = []
    for (tag, i1, i2, j1, j2), (gt, pred) in zip(alignment.ops, alignment.op_tokens, strict=True):
        key = (tag, tuple(gt), tuple(pred))
        head = heads.get(key)
        if head is None:
            head = _OP_HEAD % (tag, ", ".join(map(encode, gt)), ", ".join(map(encode, pred)))
            if len(heads) < memo.limit:
                heads[key] = head
        parts.append(head + _OP_SPANS % (i1, i2, j1, j2))
    return "[" + ", ".join(parts) + "]"


def _score_reprs(scores: Sequence[float]) -> Iterator[str]:
    """``repr`` of each edit score, each distinct value formatted once (scores repeat: 100.0 above all).

    Equal floats share one text; the only equal floats with different ``repr`` are ``0.0`` and ``-0.0``,
    and :func:`~evaluators.hmer.metrics.edit_score` never returns ``-0.0`` (``1 - d / m`` with ``d <= m``).

    Example:

    >>> list(_score_reprs([100.0, 80.0, 100.0]))
    ['100.0', '80.0', '100.0']
    """
    reprs = {score: float.__repr__(score) for score in set(scores)}
    return map(reprs.__getitem__, scores)


def _preds_json(gts: Iterable[str], preds: Iterable[str], gts_json: Iterable[str]) -> Iterator[str]:
    """The predictions JSON-encoded; a prediction equal to its label reuses the label's encoding."""
    encode = encode_basestring
    return (
        gt_json if pred == gt else encode(pred)
        for gt_json, gt, pred in zip(gts_json, gts, preds, strict=True)
    )


def _exact_tails(result: HmerResult, selected: list[bool]) -> Iterator[str]:
    """:data:`_EXACT_TAIL` of each selected sample (exact matches), in order, encoded by C functions."""
    gts = list(compress(result.gts, selected))
    gts_json, gts_json_for_preds = tee(map(encode_basestring, gts))  # tee holds one row
    gt_lens, gt_lens_again = tee(compress(result.gt_lens, selected))
    rows = zip(
        gt_lens,
        gt_lens_again,
        gts_json,
        _preds_json(gts, compress(result.preds, selected), gts_json_for_preds),
        strict=True,
    )
    return map(_EXACT_TAIL.__mod__, rows)


def _wrong_tails(result: HmerResult, selected: list[bool], memo: LineMemo) -> Iterator[str]:
    """:data:`_TAIL` of each selected sample (samples with edits), in order; only their ops run Python code
    (:func:`_ops_json_memo`, keeping op heads in ``memo``)."""
    alignments = list(compress(result.alignments, selected))
    rows = zip(
        map(attrgetter("distance"), alignments),
        _score_reprs(list(compress(result.edit_scores, selected))),
        compress(result.gt_lens, selected),
        compress(result.pred_lens, selected),
        map(encode_basestring, compress(result.gts, selected)),
        map(encode_basestring, compress(result.preds, selected)),
        map(_ops_json_memo, alignments, repeat(memo)),
        strict=True,
    )
    return map(_TAIL.__mod__, rows)


def sample_lines(result: HmerResult, memo: LineMemo | None = None) -> Iterator[str]:
    """The JSON lines of :func:`sample_records`, formatted directly: byte-identical to ``json.dumps`` of each
    row with ``ensure_ascii=False``, several times faster.

    Each line is one ``%`` over columns encoded by C functions mapped over the samples (``encode_basestring``,
    ``float.__repr__``, ``len``); only the ops of samples with edits run Python code. Without ``memo`` the
    lines are made as they are written, like :func:`sample_records`. ``memo``, a :class:`LineMemo` given to
    every file of a run, keeps each line's tail (all but its index and id: it depends only on the label and the
    prediction) for the next files, so that a pair met again is not formatted again. The new tails are then made at
    once, exact matches and the others as two streams, and kept there; when they would not fit its limit, the
    lines are made as they are written and not kept.

    Example:

    >>> import json
    >>> from evaluators.hmer.loaders import HmerSample
    >>> r = evaluate_samples([HmerSample("a", "x + 1", "x + 7"), HmerSample('"b"', "\\\\alpha", "\\\\alpha ")])
    >>> list(sample_lines(r)) == [json.dumps(row, ensure_ascii=False) for row in sample_records(r)]
    True
    >>> memo = LineMemo()
    >>> list(sample_lines(r, memo)) == list(sample_lines(r, memo)) == list(sample_lines(r)), len(memo.tails)
    (True, 2)
    """
    n = len(result.alignments)
    columns = (result.ids, result.gts, result.preds, result.gt_lens, result.pred_lens, result.edit_scores)
    if any(len(column) != n for column in columns):
        raise ValueError("HmerResult: its per-sample lists differ in length")
    if memo is not None and n <= memo.limit:  # a bigger file's new tails could not all be kept
        keys = list(zip(result.gts, result.preds, strict=True))
        tails = list(map(memo.tails.get, keys))
        new = list(map(operator.is_, tails, repeat(None)))
        missing = sum(new)
        if len(memo.tails) + missing <= memo.limit:  # the new tails fit in the memo: made now, kept there
            if missing:
                wrong = list(map(bool, map(attrgetter("ops"), result.alignments)))  # exact: no ops
                _make_tails(result, memo, wrong, new, keys, tails)
            return map(_LINE.__mod__, zip(count(), map(encode_basestring, result.ids), tails))
    # made as they are written: one % per line over columns encoded by C functions
    gts_json, gts_json_for_preds = tee(map(encode_basestring, result.gts))  # tee holds one row
    rows = zip(
        count(),
        map(encode_basestring, result.ids),
        map(attrgetter("distance"), result.alignments),
        _score_reprs(result.edit_scores),
        result.gt_lens,
        result.pred_lens,
        gts_json,
        _preds_json(result.gts, result.preds, gts_json_for_preds),
        _ops_json(result.alignments),
        strict=False,  # count() is endless; the other columns were checked to be of one length
    )
    return map((_HEAD + _TAIL).__mod__, rows)


def _make_tails(
    result: HmerResult,
    memo: LineMemo,
    wrong: list[bool],
    new: list[bool],
    keys: list[tuple[str, str]],
    tails: list[str | None],
) -> None:
    """Fill the ``new`` entries of ``tails`` (exact matches and the others as two streams) and remember them."""
    exact = list(map(operator.gt, new, wrong))  # new and not wrong
    with_edits = list(map(operator.and_, new, wrong))
    for selected, made in (
        (exact, _exact_tails(result, exact)),
        (with_edits, _wrong_tails(result, with_edits, memo)),
    ):
        for i, tail in zip(compress(range(len(tails)), selected), made, strict=True):
            tails[i] = tail
    memo.tails.update(compress(zip(keys, tails, strict=True), new))


class FileSummary(NamedTuple):
    """What the table needs of one file's :class:`~evaluators.hmer.metrics.HmerResult` (a worker sends it)."""

    n: int
    metrics: dict[str, float]


def markdown_table(rows: list[tuple[str, HmerResult | FileSummary]], failed: list[int] | None = None) -> str:
    """One Markdown row per evaluated file (percentages with 2 decimals, rates with 4).

    ``failed`` gives, per row, the records whose inference failed (``"error": true``, e.g. a missing image)
    or whose prediction is missing; they are scored as wrong and shown in the last column.

    Example:

    >>> from evaluators.hmer.loaders import HmerSample
    >>> r = evaluate_samples([HmerSample("0", "a b", "a b"), HmerSample("1", "a b", "a c")])
    >>> print(markdown_table([("demo", r)]))
    | file | N | ExpRate | ≤1 | ≤2 | ≤3 | EditScore | BLEU-4 | tok-edits/gt-char | CER | failed |
    |---|---|---|---|---|---|---|---|---|---|---|
    | demo | 2 | 50.00 | 100.00 | 100.00 | 100.00 | 75.00 | 17.32 | 0.1667 | 0.2500 | 0 |
    """
    failed = failed if failed is not None else [0] * len(rows)
    lines = [
        "| file | N | ExpRate | ≤1 | ≤2 | ≤3 | EditScore | BLEU-4 | tok-edits/gt-char | CER | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, r), n_failed in zip(rows, failed, strict=True):
        m = r.metrics
        lines.append(
            f"| {name} | {r.n} | {m['exprate']:.2f} | {m['error_le_1']:.2f} | {m['error_le_2']:.2f} | "
            f"{m['error_le_3']:.2f} | {m['mean_edit_score']:.2f} | {m['bleu4']:.2f} | "
            f"{m['token_edits_per_gt_char']:.4f} | {m['cer']:.4f} | {n_failed} |"
        )
    return "\n".join(lines)


def _failed(loaded: LoadedPredictions) -> int:
    return sum(loaded.warnings.get(k, 0) for k in ("failed", "null_pred", "non_string_pred"))


def group_by_test_set(loaded_files: Sequence[LoadedPredictions]) -> list[list[int]]:
    """The files' indices grouped by test set, as far as their first sample tells (same id and label).

    Predictions of several checkpoints on one test set share most labels and many wrong predictions, which
    one process scores once (see :class:`~evaluators.hmer.metrics.ScoreMemo`): ``unitune eval hmer`` gives
    each group to one worker. Groups are in the order of their first file.

    Example:

    >>> from pathlib import Path
    >>> from evaluators.hmer.loaders import HmerSample
    >>> def file(first): return LoadedPredictions(Path("f"), "upstream", [HmerSample(*first)])
    >>> group_by_test_set([file(("1", "x", "x")), file(("9", "y", "y")), file(("1", "x", "z"))])
    [[0, 2], [1]]
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for index, loaded in enumerate(loaded_files):
        first = loaded.samples[0]
        groups.setdefault((first.id, first.gt), []).append(index)
    return list(groups.values())


def _import_numpy_single_threaded() -> None:
    """Import numpy (BLEU's n-gram counting) with OpenBLAS limited to one thread, unless already imported.

    BLEU sorts and counts; it does no linear algebra. OpenBLAS otherwise starts a busy thread per CPU when
    numpy is imported, which took ~0.08 s of CPU per run away from the scoring (and from other processes).
    The limit is set only for this import and only when the user has not set it; imported here, before any
    worker is forked, numpy is loaded once for every worker.
    """
    if "numpy" in sys.modules:
        return
    user_setting = os.environ.get("OPENBLAS_NUM_THREADS")
    if user_setting is None:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        if user_setting is None:
            del os.environ["OPENBLAS_NUM_THREADS"]


def run(args: argparse.Namespace) -> int:
    """Evaluate every file (in ``--workers`` processes), publish the outputs as one set, print the table.

    Returns 0.

    The garbage collector is paused for the whole run (see :func:`~evaluators.hmer.metrics.gc_paused`).
    """
    with gc_paused():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.top < 0:
        raise UserError(f"--top must be >= 0, got {args.top}.")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}.")
    ensure_output_dir(args.out_dir, "--out-dir")
    stems = resolve_stems(list(args.files))
    # Load (and validate) every input first: a bad file 3 must not leave outputs of files 1-2 behind. The git
    # revision the metrics JSON records (a git process) is found meanwhile, in a thread joined before any fork.
    revision = threading.Thread(target=git_revision, name="unitune-git-revision")
    revision.start()
    try:
        loaded_files = [
            load_predictions(path, args.format, allow_torn=args.allow_torn) for path in args.files
        ]
    finally:
        revision.join()
    provenance(args.model)  # cached parts (version, git revision) found once, before any worker starts
    _import_numpy_single_threaded()
    workers = args.workers if args.workers is not None else available_cpus()
    # Files of one test set share most labels and many wrong predictions: scored once per process.
    memo = ScoreMemo()
    lines_memo = LineMemo()

    def evaluate_file(index: int) -> dict[str, object]:
        """Score file ``index`` and stage its outputs; the summary the table needs comes back."""
        stem, loaded = stems[index], loaded_files[index]
        result = evaluate_samples(loaded.samples, extract=args.extract, normalize=args.normalize, memo=memo)
        analysis = analyze(result, raw_preds=list(map(attrgetter("pred"), loaded.samples)), top=args.top)
        out.write_text(f"{stem}_results.txt", format_upstream_results(result))
        document = metrics_document(result, loaded, analysis, args.model)
        out.write_text(f"{stem}_metrics.json", json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        out.write_lines(f"{stem}_samples.jsonl", sample_lines(result, lines_memo))
        if args.plots:
            plot_analysis(analysis, out.path(f"{stem}_analysis.png"), title=f"{stem} (N={result.n})")
        return {"n": result.n, "metrics": result.metrics}

    # Files that look like one test set go to the same process, where its memos serve them all.
    groups = group_by_test_set(loaded_files)

    def evaluate_group(group: int) -> list[dict[str, object]]:
        return [evaluate_file(index) for index in groups[group]]

    # Every file of this run is staged, then published together: a kill leaves the old set or the new one.
    # The groups are independent jobs: with several, worker processes share them (same outputs, less wall).
    with OutputSet(args.out_dir, "eval-hmer") as out:
        weights = [sum(len(loaded_files[index].samples) for index in group) for group in groups]
        summaries: list[dict[str, object]] = [{} for _ in loaded_files]
        for group, results in zip(groups, run_jobs(evaluate_group, weights, workers), strict=True):
            for index, summary in zip(group, results, strict=True):
                summaries[index] = summary
        rows: list[tuple[str, FileSummary]] = []
        for stem, loaded, summary in zip(stems, loaded_files, summaries, strict=True):
            if not args.plots:
                out.remove.append(f"{stem}_analysis.png")  # a plot of an earlier run would not match
            row = FileSummary(n=summary["n"], metrics=summary["metrics"])
            logger.info(
                "%s: N=%d, ExpRate %.2f%% -> %s/%s_*",
                loaded.path,
                row.n,
                row.metrics["exprate"],
                args.out_dir,
                stem,
            )
            rows.append((stem, row))
    sys.stdout.write(markdown_table(rows, [_failed(loaded) for loaded in loaded_files]) + "\n")
    return 0
