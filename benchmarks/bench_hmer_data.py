"""Benchmark the HMER builders: Tree-CoT + counts throughput on one core, and streaming build memory.

Usage: ``.venv/bin/python benchmarks/bench_hmer_data.py [--n 100000] [--source auto|golden|synthetic]``

Formulas are the 5,632 real CROHME labels of ``../shared/reference/unimumer`` cycled to ``--n`` when present
(``auto``), else synthetic ones. The memory rows run ``build_file`` (tree task, JSONL in, JSON out, no image
checks) in a fresh process per corpus size and report its peak RSS: it should not grow with the corpus.
Target (issue 4): tree + counts for 100k formulas < 20 s on one core.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "reference" / "unimumer" / "tree_can_golden_from_gt.jsonl.gz"
FRAGMENTS = [
    "x ^ { 2 }",
    "\\frac { a + b } { c }",
    "\\sqrt { x + 1 }",
    "\\sqrt [ 3 ] { y }",
    "\\sum _ { i = 1 } ^ { n } i",
    "\\int _ { 0 } ^ { 1 } f ( x ) d x",
    "a _ { i } ^ { 2 }",
    "\\alpha + \\beta",
    "\\lim _ { x \\rightarrow 0 }",
    "\\hat { y }",
    "( x - y )",
    "= 0",
    "\\leq",
    "\\frac { \\sqrt { 2 } } { 2 }",
    "\\{ x \\}",
]

CHILD = """
import json, resource, sys, time, logging
from llamafactory_ext.hmer.build import build_file
t = time.perf_counter()
stats = build_file(sys.argv[1], sys.argv[2], "tree", check_images=False, progress=False)
print(json.dumps({"s": time.perf_counter() - t, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "written": stats.written}))
"""


def formulas(n: int, source: str) -> tuple[list[str], str]:
    if source in ("auto", "golden") and GOLDEN.is_file():
        with gzip.open(GOLDEN, "rt", encoding="utf-8") as handle:
            base = [json.loads(line)["latex"] for line in handle]
        return [base[i % len(base)] for i in range(n)], f"CROHME labels x{n / len(base):.1f}"
    if source == "golden":
        sys.exit(f"{GOLDEN} not found")
    rng = random.Random(0)
    return [" ".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 6))) for _ in range(n)], "synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--source", choices=("auto", "golden", "synthetic"), default="auto")
    parser.add_argument("--memory-sizes", default="20000,100000,300000")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from llamafactory_ext.hmer.tree_cot import TreeParseError, can_answer, tree_answer

    latex, label = formulas(args.n, args.source)
    tokens = sum(len(f.split()) for f in latex)
    rows = []
    for name, fn in (("tree", tree_answer), ("counts", can_answer)):
        start = time.perf_counter()
        for f in latex:
            try:
                fn(f)
            except TreeParseError:
                pass
        rows.append((name, time.perf_counter() - start))
    rows.append(("tree + counts", rows[0][1] + rows[1][1]))

    print(f"\nHMER builders, {args.n:,} formulas ({label}, {tokens / args.n:.1f} tokens avg), one core\n")
    print("| step | seconds | formulas/s | target |\n|---|---:|---:|---|")
    for name, seconds in rows:
        target = "< 20 s" + (" ✓" if seconds < 20 else " ✗") if name == "tree + counts" else ""
        print(f"| {name} | {seconds:.2f} | {args.n / seconds:,.0f} | {target} |")

    print("\n| streaming build (tree, JSONL → JSON) | seconds | peak RSS MB |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.memory_sizes.split(",")):
            src = Path(tmp) / f"in_{size}.jsonl"
            with src.open("w", encoding="utf-8") as handle:
                for i in range(size):
                    handle.write(json.dumps({"image": f"img/{i}.png", "gt": latex[i % len(latex)]}) + "\n")
            result = subprocess.run(
                [sys.executable, "-c", CHILD, str(src), str(Path(tmp) / "out.json")],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            report = json.loads(result.stdout.strip().splitlines()[-1])
            print(
                f"| {size:,} records ({report['written']:,} written) | {report['s']:.2f} | {report['rss_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
