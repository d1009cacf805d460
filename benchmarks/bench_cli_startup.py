"""Start-up cost of the ``unitune`` command line: every ``--help`` and ``eval hmer`` on a 20-sample file.

Run: ``.venv/bin/python benchmarks/bench_cli_startup.py [--repeats 5]``. Goals (issue 14): every ``--help``
< 0.3 s, ``unitune eval hmer`` on 20 samples < 0.5 s. Each command is a fresh process, run ``--repeats``
times round-robin; the table shows the median wall time and the median CPU time (user + system of the
process, from ``wait4``: what the command itself costs, whatever else the machine is doing), plus the
machine's load average, since wall times on a busy machine include waiting for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluators.cli import COMMANDS  # noqa: E402


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -m evaluators.cli ARGV`` (which must succeed)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "evaluators.cli", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"unitune {' '.join(argv)} failed")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    commands: list[tuple[list[str], float]] = [(["--help"], 0.3)]
    for name, target in COMMANDS.items():
        commands.append(([name, "--help"], 0.3))
        if isinstance(target, dict):
            commands.extend(([name, sub, "--help"], 0.3) for sub in target)
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "twenty_pred.json"
        rows = [
            {"gt": "x ^ { 2 } + 1", "pred": "x ^ { 2 } + 7" if i % 4 else "x ^ { 2 } + 1", "img_id": str(i)}
            for i in range(20)
        ]
        sample.write_text(json.dumps(rows), encoding="utf-8")
        commands.append((["eval", "hmer", str(sample), "--out-dir", str(Path(tmp) / "out")], 0.5))
        runs: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(commands))}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            for i, (argv, _) in enumerate(commands):
                runs[i].append(measure(argv))
        load_after = os.getloadavg()[0]
    print(
        f"load average {load_before:.1f} -> {load_after:.1f} ({os.cpu_count()} CPUs), medians of {args.repeats}"
    )
    print("\n| command | wall (s) | CPU (s) | goal | met (CPU / wall) |\n|---|---:|---:|---|---|")
    for i, (argv, goal) in enumerate(commands):
        wall = statistics.median(w for w, _ in runs[i])
        cpu = statistics.median(c for _, c in runs[i])
        shown = (
            "eval hmer FILE(20 samples) --out-dir DIR"
            if argv[:2] == ["eval", "hmer"] and len(argv) > 3
            else " ".join(argv)
        )
        verdict = f"{'yes' if cpu < goal else 'NO'} / {'yes' if wall < goal else 'no'}"
        print(f"| unitune {shown} | {wall:.3f} | {cpu:.3f} | < {goal} s | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
