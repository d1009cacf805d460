"""Tag extraction stays linear: time to read the answer from hostile completions of 64 KB to 1 MB.

Run: ``.venv/bin/python benchmarks/bench_tag_extraction.py [--sizes 65536,262144,1048576] [--repeats 3]
[--regex-limit 65536]``. Every extractor a reward or the FER evaluator uses (``extract_answer``,
UniFER's per-dataset and pooled answer regexes through ``search_answer``, the think/answer format check) is
timed on the inputs that made the old regexes quadratic: thousands of ``<answer>`` tags without a close, on
one line, and repeated ``</think><answer>`` joints. The target is < 50 ms for a 1 MB completion; the exit
status is 1 when one is over it. With ``--regex-limit N`` the plain regexes are timed too, up to size N (they
are quadratic: seconds at 64 KB, hours at 1 MB), so the table shows what was fixed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from evaluators.knowledge import answers
from evaluators.knowledge.fer_labels import UNIFER_ANSWER_RE, UNIFER_TOTAL_ANSWER_RE

TARGET_MS_PER_MB = 50.0


def hostile_inputs(size: int) -> dict[str, str]:
    """Completions of about ``size`` characters built to defeat backtracking regexes."""
    return {
        "<answer> x N, no close": ("<answer>" * (size // 8 + 1))[:size],
        "<answer>x x N, close after a newline": ("<answer>x" * (size // 9 + 1))[: size - 12] + "\ny</answer>",
        "<think> + </think><answer> x N": "<think>" + ("</think><answer>" * (size // 16 + 1))[: size - 7],
        "whitespace runs between tags": ("<answer>" + " " * 56 + "\n") * (size // 65) + "</answer>",
        "one long whitespace run": "<answer>x" + " " * (size - 19) + "y</answer>",
        "<answer>a\\nb</answer> x N (dense failing spans)": "<answer>a\nb</answer>" * (size // 20),
    }


def extractors(linear: bool) -> dict[str, Callable[[str], object]]:
    """What the rewards and evaluators call on a completion, linear versions or the plain regexes."""
    sfew, rafdb = UNIFER_ANSWER_RE["sfew"], UNIFER_ANSWER_RE["rafdb"]
    if linear:
        return {
            "extract_answer (last span)": answers.extract_answer,
            "UniFER rafdb/ferplus/affectnet regex": lambda t: answers.search_answer(rafdb, t),
            "UniFER sfew regex": lambda t: answers.search_answer(sfew, t),
            "UniFER pooled regex": lambda t: answers.search_answer(UNIFER_TOTAL_ANSWER_RE, t),
            "think/answer format": answers.is_think_answer_format,
        }
    return {
        "extract_answer (last span)": answers.ANSWER_TAG_RE.findall,
        "UniFER rafdb/ferplus/affectnet regex": rafdb.search,
        "UniFER sfew regex": sfew.search,
        "UniFER pooled regex": UNIFER_TOTAL_ANSWER_RE.search,
        "think/answer format": answers.THINK_ANSWER_FORMAT_RE.fullmatch,
    }


def best_ms(func: Callable[[str], object], text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func(text)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="65536,262144,1048576", help="completion sizes in characters")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    parser.add_argument(
        "--regex-limit", type=int, default=0, help="also time the plain regexes on inputs up to this size"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print("| extractor | input | size | linear ms | regex ms | verdict (1 MB < 50 ms) |")
    print("|---|---|---:|---:|---:|---|")
    failed = False
    linear, plain = extractors(True), extractors(False)
    for size in sizes:
        for kind, text in hostile_inputs(size).items():
            for name, func in linear.items():
                ms = best_ms(func, text, args.repeats)
                regex = best_ms(plain[name], text, 1) if size <= args.regex_limit else None
                limit = TARGET_MS_PER_MB * len(text) / 2**20
                ok = ms < max(limit, TARGET_MS_PER_MB * 0.05)
                failed |= not ok
                regex_text = "—" if regex is None else f"{regex:,.1f}"
                verdict = "ok" if ok else "OVER"
                print(f"| {name} | {kind} | {len(text):,} | {ms:.2f} | {regex_text} | {verdict} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
