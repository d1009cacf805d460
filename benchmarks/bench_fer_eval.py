"""Speed of the FER evaluation: both protocols over all 11,072 FERBench items, per file and pooled.

Run: ``.venv/bin/python benchmarks/bench_fer_eval.py [--repeats 5] [--write-samples DIR]``. Target: both
protocols over all four files (extraction + metrics, per file and the pooled total) in under 2 s. The items
are FERBench's real QA files from ``../shared/reference/unifer_ferbench`` paired with *synthetic* responses
that mix correct answers with every quirk of UniFER's extractor (pooled-vocabulary answers after "not angry
at all", ``unhappy``, upper-case tags, multi-line answers, no tags, wrong labels, garbage, inference errors).
``--write-samples DIR`` also writes the synthetic results files (``<dataset>_synthetic_results.json``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

from evaluators.fer.evaluate import load_results, load_results_records, score_file, score_total
from evaluators.knowledge.fer_labels import POOLED_LABEL_MAP

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "unifer_ferbench"
FILES = {
    "affectnet": "affectnet_qa.json.gz",
    "rafdb": "rafdb_qa.json.gz",
    "ferplus": "ferplus_qa.json.gz",
    "sfew": "sfew_2.0_qa.json.gz",
}
TARGET_S = 2.0
THINK = (
    "The eyebrows are slightly raised and the corners of the mouth are pulled back; the eyes are open and "
    "the cheeks lifted. Weighing these action units against the candidates, one expression dominates."
)


def synthetic_response(item: dict, rng: random.Random) -> dict:
    """The QA item plus a synthetic ``model_response`` (and ``error``) drawn from a fixed mix of cases."""
    gold, cands = item["true_label"], item["candidate_labels"]
    pooled = POOLED_LABEL_MAP.get(gold, gold)
    r = rng.random()
    if r < 0.02:
        return {**item, "model_response": "ERROR: CUDA out of memory", "error": True}
    if r < 0.55:
        text = f"<think>{THINK}</think>\n<answer>{gold}</answer>"
    elif r < 0.65:  # pooled vocabulary after a negated mention of angry (quirk 1 on FERPlus / SFEW)
        text = f"<think>Not angry at all. {THINK}</think>\n<answer>{pooled}</answer>"
    elif r < 0.70:  # "unhappy" scores happy under unifer, invalid under strict
        text = f"<think>{THINK}</think>\n<answer>unhappy</answer>"
    elif r < 0.75:  # upper-case tags: SFEW's own regex misses them
        text = f"<think>Not angry. {THINK}</think>\n<ANSWER>{gold}</ANSWER>"
    elif r < 0.80:  # answer across lines: only SFEW's own regex (DOTALL) reads it
        text = f"<think>No surprise here. {THINK}</think>\n<answer>clearly\n{gold}</answer>"
    elif r < 0.85:  # no tags, the label only in prose
        text = f"{THINK} I would call it {gold}."
    elif r < 0.97:
        text = f"<think>{THINK}</think>\n<answer>{rng.choice(cands)}</answer>"
    else:
        text = f"<think>{THINK}</think> I cannot tell."
    return {**item, "model_response": text}


def load_qa(dataset: str) -> list[dict]:
    with gzip.open(SHARED / FILES[dataset], "rt", encoding="utf-8") as handle:
        return json.load(handle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-samples", type=Path, help="also write the synthetic results files here")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"shared FERBench QA files not found at {SHARED}; nothing to benchmark.")
        return 1
    rng = random.Random(args.seed)
    results = {d: [synthetic_response(item, rng) for item in load_qa(d)] for d in FILES}
    if args.write_samples:
        args.write_samples.mkdir(parents=True, exist_ok=True)
        for dataset, recs in results.items():
            path = args.write_samples / f"{dataset}_synthetic_results.json"
            path.write_text(json.dumps(recs, indent=1), encoding="utf-8")
            load_results(path)  # the written file loads
        print(f"wrote synthetic results files to {args.write_samples}")
    n_items = sum(len(v) for v in results.values())

    timings: dict[str, float] = {}

    def timed(name: str, fn) -> None:
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        timings[name] = best

    loaded = {d: load_results_records(recs, d) for d, recs in results.items()}
    timed(
        "validate (load_results_records, 4 files)",
        lambda: [load_results_records(r, d) for d, r in results.items()],
    )
    for protocol in ("unifer", "strict"):
        timed(f"{protocol}: 4 files", lambda p=protocol: [score_file(f, p) for f in loaded.values()])
        timed(f"{protocol}: pooled total", lambda p=protocol: score_total(list(loaded.values()), p))

    def everything() -> None:
        files = [load_results_records(r, d) for d, r in results.items()]
        for protocol in ("unifer", "strict"):
            for f in files:
                score_file(f, protocol)
            score_total(files, protocol)

    timed("ALL: validate + both protocols, files + total", everything)
    print(f"FER evaluation over {n_items} items (best of {args.repeats}, {sys.platform})")
    print(f"| {'step':<48} | {'seconds':>8} | {'items/s':>10} |")
    print(f"|{'-' * 50}|{'-' * 10}|{'-' * 12}|")
    for name, seconds in timings.items():
        print(f"| {name:<48} | {seconds:>8.3f} | {n_items / seconds:>10,.0f} |")
    total = timings["ALL: validate + both protocols, files + total"]
    verdict = "OK" if total < TARGET_S else "TOO SLOW"
    print(f"target < {TARGET_S:.1f} s for everything: {total:.3f} s -> {verdict}")
    return 0 if total < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
