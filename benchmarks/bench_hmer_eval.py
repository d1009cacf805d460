"""Benchmark ``unitune eval hmer``: samples/s per metric on the reference files and on 100k synthetic samples.

Run: ``.venv/bin/python benchmarks/bench_hmer_eval.py [--n 100000] [--reference ../shared/reference/unimumer]``.
Targets (issue 3): all reference files together well under 1 s of compute; 100k samples under 3 s on one
core. Times are compute only (files already parsed, nltk already imported); the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

from evaluators.hmer.analysis import analyze
from evaluators.hmer.loaders import HmerSample, load_predictions
from evaluators.hmer.metrics import (
    align,
    bleu4,
    bleu4_nltk,
    char_error_rate,
    evaluate_samples,
    mean_edit_score,
    prepare_texts,
    threshold_counts,
    token_edits_per_gt_char,
)
from evaluators.hmer.upstream_report import format_upstream_results
from evaluators.knowledge.latex import tokenize

REPO = Path(__file__).resolve().parents[1]
VOCAB = (
    list("abcdxyzn0123456789+-=()")
    + [
        "\\frac",
        "\\sqrt",
        "\\alpha",
        "\\beta",
        "\\pi",
        "\\times",
        "\\leq",
        "\\int",
        "\\sum",
        "\\infty",
        "^",
        "_",
    ]
    + ["{", "}"]
)


def synthetic(n: int, seed: int = 0, exact: float = 0.6) -> list[HmerSample]:
    """``n`` label/prediction pairs: lengths 1-60 tokens, ``exact`` of them correct, others 1-6 random edits."""
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        gt = [rng.choice(VOCAB) for _ in range(min(60, max(1, int(rng.lognormvariate(2.8, 0.6)))))]
        pred = list(gt)
        if rng.random() > exact:
            for _ in range(rng.randint(1, 6)):
                kind = rng.random()
                pos = rng.randrange(len(pred) + 1)
                if kind < 0.5 and pos < len(pred):
                    pred[pos] = rng.choice(VOCAB)
                elif kind < 0.75:
                    pred.insert(pos, rng.choice(VOCAB))
                elif pred:
                    del pred[min(pos, len(pred) - 1)]
        samples.append(HmerSample(str(i), " ".join(gt), " ".join(pred)))
    return samples


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(samples: list[HmerSample], repeat: int, with_nltk: bool) -> dict[str, float]:
    gts, preds = prepare_texts(samples)
    gt_tokens = [tokenize(t) for t in gts]
    pred_tokens = [tokenize(t) for t in preds]
    alignments = [align(g, p) for g, p in zip(gt_tokens, pred_tokens, strict=True)]
    distances = [a.distance for a in alignments]
    gt_lens = [len(t) for t in gt_tokens]
    pred_lens = [len(t) for t in pred_tokens]
    result = evaluate_samples(samples)
    timings = {
        "extract + tokenize": best_of(lambda: [tokenize(t) for t in (*gts, *preds)], repeat),
        "alignment (distance + ops)": best_of(
            lambda: [align(g, p) for g, p in zip(gt_tokens, pred_tokens, strict=True)], repeat
        ),
        "ExpRate + ≤1/2/3": best_of(lambda: threshold_counts(distances), repeat),
        "mean edit score": best_of(lambda: mean_edit_score(distances, gt_lens, pred_lens), repeat),
        "BLEU-4 (unitune)": best_of(lambda: bleu4(gt_tokens, pred_tokens), repeat),
        "token edits / gt char": best_of(lambda: token_edits_per_gt_char(distances, gts), repeat),
        "CER (character)": best_of(lambda: char_error_rate(gts, preds, distances), repeat),
        "analysis (length/structure/confusions)": best_of(lambda: analyze(result), repeat),
        "upstream text report": best_of(lambda: format_upstream_results(result), repeat),
        "TOTAL evaluate_samples": best_of(lambda: evaluate_samples(samples), repeat),
        "TOTAL + analysis": best_of(lambda: analyze(evaluate_samples(samples)), repeat),
    }
    if with_nltk:
        timings["BLEU-4 (nltk corpus_bleu, for comparison)"] = best_of(
            lambda: bleu4_nltk(gt_tokens, pred_tokens), 1
        )
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=REPO.parent / "shared" / "reference" / "unimumer")
    parser.add_argument("--n", type=int, default=100_000, help="synthetic samples (default 100000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-nltk", action="store_true", help="skip the slow nltk comparison")
    args = parser.parse_args()

    bleu4_nltk([["a"]], [["a"]])  # import nltk outside the timings
    columns: dict[str, tuple[int, dict[str, float]]] = {}
    files = sorted(p for p in args.reference.glob("*.json") if not p.name.startswith("preprocess_"))
    if files:
        reference = [s for f in files for s in load_predictions(f).samples]
        columns[f"reference ({len(files)} files)"] = (
            len(reference),
            measure(reference, args.repeat, not args.no_nltk),
        )
    else:
        print(f"(no reference files under {args.reference}; synthetic only)")
    data = synthetic(args.n)
    columns[f"synthetic {args.n:,}"] = (len(data), measure(data, args.repeat, not args.no_nltk))

    names = list(next(iter(columns.values()))[1])
    header = "| metric | " + " | ".join(f"{c}: N={n:,}" for c, (n, _) in columns.items()) + " |"
    print(header)
    print("|---" * (len(columns) + 1) + "|")
    for name in names:
        cells = []
        for _, (n, timings) in columns.items():
            seconds = timings[name]
            cells.append(f"{n / seconds:,.0f} samples/s ({seconds * 1000:.1f} ms)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
