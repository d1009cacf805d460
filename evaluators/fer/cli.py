"""Score FERBench results files with UniFER's exact protocol and/or the strict one.

Each FILE is a results file: UniFER QA records plus ``model_response`` (and ``"error": true`` for failed
inference). The dataset is detected from ``candidate_labels`` (order included); --dataset overrides.
unifer skips error items and counts "unknown" as a class of its macro average; strict scores every item
(errors and answers that are not exactly a candidate are wrong) and averages over the candidates only.

Outputs in --out-dir, with <stem> = the file name without ``.json`` and a trailing ``_results``:
  <stem>_metrics.json          one protocol: UniFER's schema + counts, protocol, dataset, labels
  <stem>_<protocol>_metrics.json   with --protocol both: one file per protocol (same schema)
  <stem>_samples.jsonl         per item: true label, <protocol>_pred and <protocol>_rule
  total_metrics.json           with --total (total_<protocol>_metrics.json with both)
  *_confusion.png              with --plots, next to each metrics file (without --plots, the PNG of an
                               earlier run beside a metrics file rewritten now is removed with the set)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from evaluators.cli import add_out_dir
from evaluators.errors import UserError
from evaluators.fer.evaluate import ProtocolScore, load_results, results_stem, score_file, score_total
from evaluators.fer.report import (
    DATASET_TITLES,
    build_metrics_json,
    format_comparison,
    format_report,
    sample_records,
)
from evaluators.io_utils import atomic_write_json, ensure_output_dir, write_jsonl_atomic
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS
from evaluators.outputs import OutputSet
from evaluators.provenance import model_from_inference_meta

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``unitune eval fer``'s options on ``parser``."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="results JSON/JSONL files")
    parser.add_argument(
        "--protocol",
        choices=("strict", "unifer", "both"),
        default="strict",
        help="strict (default): last <answer> only, exact candidate; unifer: UniFER's evaluator, quirks included",
    )
    parser.add_argument("--total", action="store_true", help="also pool the files as UniFER's eval_total")
    parser.add_argument("--dataset", choices=sorted(CANDIDATE_LABELS), help="force the dataset of every FILE")
    parser.add_argument("--plots", action="store_true", help="write confusion-matrix PNGs")
    add_out_dir(parser, "folder for the outputs", required=True)
    parser.add_argument(
        "--model",
        help="model recorded in the metrics JSON (default: from unitune infer's .meta.json, if any)",
    )
    parser.add_argument(
        "--allow-torn",
        action="store_true",
        help="score a JSONL file whose last line was cut off by an interrupted writer (that line is dropped)",
    )


def _write(
    out: OutputSet, stem: str, score: ProtocolScore, source, both: bool, plots: bool, model: str | None = None
) -> Path:
    name = f"{stem}_{score.protocol}" if both else stem
    doc = build_metrics_json(score, source, model=model)
    path = atomic_write_json(out.path(f"{name}_metrics.json"), doc)
    if not plots:
        out.remove.append(f"{name}_confusion.png")  # an earlier run's plot would not match these metrics
    else:
        from evaluators.fer.plots import confusion_with_other, plot_confusion_matrix

        title = f"{DATASET_TITLES.get(score.dataset, score.dataset)} · {score.protocol}"
        other = (
            "unknown" if score.protocol == "unifer" else "invalid"
        )  # rows then sum to each class's support
        matrix, columns = confusion_with_other(score.scored, score.labels, other)
        plot_confusion_matrix(matrix, score.labels, out.path(f"{name}_confusion.png"), title, columns)
    return path


def run(args: argparse.Namespace) -> int:
    """Run ``unitune eval fer``; returns the exit status (0)."""
    protocols = ("unifer", "strict") if args.protocol == "both" else (args.protocol,)
    both = len(protocols) > 1
    if args.total and args.dataset and len(args.files) > 1:
        raise UserError("--total with --dataset would pool several files as one dataset; drop --dataset.")
    stems = [results_stem(f) for f in args.files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise UserError(f"several FILEs share the output stem {duplicates}; rename them or run them apart.")
    if args.total and "total" in stems:
        raise UserError("a FILE named total(_results).json would clash with --total's total_metrics.json.")
    ensure_output_dir(args.out_dir, "--out-dir")
    loaded_files = [load_results(f, args.dataset, allow_torn=args.allow_torn) for f in args.files]
    summary: list[tuple[str, ProtocolScore]] = []
    file_scores: list[list[ProtocolScore]] = []  # per file, one per protocol: --total reuses their labels
    # The files of this run are staged, then published together: a kill leaves the old set or the new one.
    with OutputSet(args.out_dir, "eval-fer") as out:
        for stem, loaded in zip(stems, loaded_files, strict=True):
            scores = [score_file(loaded, p) for p in protocols]
            file_scores.append(scores)
            for score in scores:
                model = args.model or model_from_inference_meta(loaded.source)
                path = _write(out, stem, score, loaded.source, both, args.plots, model)
                logger.info("wrote %s", args.out_dir / path.name)
                sys.stdout.write(format_report(score, stem) + "\n\n")
                summary.append((stem, score))
            samples = write_jsonl_atomic(out.path(f"{stem}_samples.jsonl"), sample_records(loaded, scores))
            logger.info("wrote %s", args.out_dir / samples.name)
        if args.total:
            sources = [f.source for f in loaded_files]
            for index, protocol in enumerate(protocols):
                score = score_total(loaded_files, protocol, [scores[index] for scores in file_scores])
                path = _write(out, "total", score, sources, both, args.plots, args.model)
                logger.info("wrote %s", args.out_dir / path.name)
                sys.stdout.write(format_report(score, "total") + "\n\n")
                summary.append(("total", score))
    sys.stdout.write(format_comparison(summary) + "\n")
    return 0
