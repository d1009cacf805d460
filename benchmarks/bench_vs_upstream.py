"""Whole-process speed and peak memory of unitune's evaluators against the upstream scripts, side by side.

Every job runs as a fresh process (interpreter start-up and imports included), ours and upstream's
interleaved, ``--repeats`` times after one untimed warm-up run each (both sides then run from cached
bytecode: ``PYTHONDONTWRITEBYTECODE`` is dropped from their environment); the table shows medians of wall time, of CPU time (user + system, from
``wait4``: less disturbed than wall time when other work shares the machine) and of peak RSS, the
speed-ups, the machine's load average, and whether the outputs agree (``results.txt`` byte for byte for
HMER; accuracy and macro P/R/F1 for FER; every built record for the tree builder).

Jobs (each skipped, with a message, when its upstream checkout is not given):

- ``hmer``: every ``*_pred.json`` under ``<unimumer>/src_author/example_data/*/results*/`` (upstream's
  committed predictions, ~55k samples) in one ``unitune eval hmer`` process (default outputs: results.txt,
  metrics JSON with the analysis, samples JSONL) vs one process calling upstream's
  ``TextEvaluator.evaluate`` (``scripts/eval_metrics_calculator.py``) on each file. Ours runs twice: with
  its default ``--workers`` (one forked worker per available CPU; wall time gains from the second core,
  CPU time is the sum over all processes) and with ``--workers 1`` (one process, like upstream).
- ``hmer-synthetic``: ``--n`` synthetic samples (default 1,000,000) in one upstream-format file, same two
  commands: shows time and memory at scale.
- ``tree``: ``--n`` labels (the 5,632 real CROHME labels of ``../shared`` cycled) as one sharegpt JSON list,
  converted to Tree-CoT records by upstream's ``preprocess/make_unimumer_tree_data.py --task tree`` vs
  ``unitune data hmer --task tree --no-check-images`` (records compared, and their number). Cycled labels
  repeat, and unitune computes each distinct label's target once (a pure function of the label), as real
  corpora repeat too.
- ``tree-distinct``: the same with every label made distinct (``" , <i>"`` appended: two more tokens), the
  worst case for that memo: every target is computed.

  Both tree jobs run ours twice, like ``hmer``: with its default ``--workers`` (one process per available CPU
  computing targets while the first also reads and writes; CPU time is the sum over all processes) and with
  ``--workers 1`` (one process, like upstream); the two outputs must be byte-identical.
- ``fer``: the four FERBench files (real QA items of ``../shared``, synthetic responses from
  ``bench_fer_eval.py``) scored by UniFER's five ``eval_*/code/eval_unifer.py`` scripts (one process each,
  the time is their sum) vs one ``unitune eval fer --protocol unifer --total`` process.

Upstream code is run from where it lies (a checkout outside this repository), never copied in::

    git clone https://github.com/NhatPot/Uni-MuMER-project /tmp/Uni-MuMER-project
    git clone https://github.com/zfkarl/UniFER /tmp/UniFER
    git clone https://github.com/BFlameSwift/Uni-MuMER /tmp/Uni-MuMER  # preprocess/ at commit e88e29cd6d9f
    pip install --target /tmp/upstream-deps editdistance  # upstream's only dependency we lack
    .venv/bin/python benchmarks/bench_vs_upstream.py --unimumer /tmp/Uni-MuMER-project \\
        --unifer /tmp/UniFER --tree-upstream /tmp/Uni-MuMER --upstream-path /tmp/upstream-deps
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FER_FILES = {
    "affectnet": "affectnet_qa.json.gz",
    "rafdb": "rafdb_qa.json.gz",
    "ferplus": "ferplus_qa.json.gz",
    "sfew_2.0": "sfew_2.0_qa.json.gz",
}

# Upstream's evaluator, called from its own checkout: argv = scripts folder, output folder, files...
UPSTREAM_HMER_DRIVER = """
import os, sys
sys.path.insert(0, sys.argv[1])
from eval_metrics_calculator import TextEvaluator
evaluator = TextEvaluator()
for path in sys.argv[3:]:
    name = os.path.basename(path)[: -len("_pred.json")] + "_results.txt"
    evaluator.evaluate(path, os.path.join(sys.argv[2], name))
"""


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one child process, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd[:6])} ...\n{stderr.decode()[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def interleaved(
    jobs: dict[str, list[tuple[list[str], Path]]], env: dict, repeats: int, warm_up: bool = True
) -> dict:
    """Run each job's commands (summed) ``repeats`` times, alternating jobs; medians of wall, CPU, peak RSS.

    With ``warm_up``, one untimed run of every command comes first, so both sides start from cached bytecode
    (and a warm page cache), as installed code does; the minute-long synthetic jobs skip it (what it would
    save there is far below their noise).
    """
    if warm_up:
        for commands in jobs.values():
            for cmd, cwd in commands:
                run_measured(cmd, cwd, env)
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, commands in jobs.items():
            wall = cpu = peak = 0.0
            for cmd, cwd in commands:
                w, c, m = run_measured(cmd, cwd, env)
                wall, cpu, peak = wall + w, cpu + c, max(peak, m)
            runs[name].append((wall, cpu, peak))
    return {
        name: [statistics.median(column) for column in zip(*r, strict=True)] + [r] for name, r in runs.items()
    }


def print_row(job: str, res: dict, ours: str, theirs: str, agree: str) -> None:
    o_wall, o_cpu, o_mem, o_runs = res[ours]
    u_wall, u_cpu, u_mem, u_runs = res[theirs]
    runs = ", ".join(f"{w:.2f}" for w, _, _ in u_runs) + " / " + ", ".join(f"{w:.2f}" for w, _, _ in o_runs)
    print(
        f"| {job} | {u_wall:.2f} s ({u_cpu:.2f} CPU), {u_mem:.0f} MB | {o_wall:.2f} s ({o_cpu:.2f} CPU), "
        f"{o_mem:.0f} MB | **{u_wall / o_wall:.1f}×** ({u_cpu / o_cpu:.1f}× CPU) | {u_mem / o_mem:.1f}× less | "
        f"{agree} | {runs} |"
    )


def env_with(paths: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    # Both sides may cache bytecode (upstream's script folder, this checkout's __pycache__, both ignored by
    # git), so neither recompiles its modules on every timed run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def stage_hmer(unimumer: Path, dest: Path) -> list[Path]:
    """Upstream's prediction files under unique flat names (``CROHME__results_7b__crohme_2014_pred.json``)."""
    files = []
    for path in sorted((unimumer / "src_author" / "example_data").glob("*/results*/*_pred.json")):
        if path.stat().st_size < 100:  # a Git LFS pointer, not the predictions
            continue
        target = dest / f"{path.parent.parent.name}__{path.parent.name}__{path.name}"
        shutil.copyfile(path, target)
        files.append(target)
    return files


def hmer_job(name: str, files: list[Path], work: Path, args, env: dict) -> None:
    ours_out, up_out = work / "ours", work / "upstream"
    ours_out.mkdir()
    up_out.mkdir()
    scripts = args.unimumer / "src_author" / "scripts"
    ours_cmd = [
        sys.executable,
        "-m",
        "evaluators.cli",
        "eval",
        "hmer",
        *map(str, files),
        "--out-dir",
        str(ours_out),
    ]
    one_worker_cmd = [*ours_cmd[:-1], str(work / "ours_1_worker"), "--workers", "1"]
    res = interleaved(
        {
            "upstream": [
                (
                    [
                        args.upstream_python,
                        "-c",
                        UPSTREAM_HMER_DRIVER,
                        str(scripts),
                        str(up_out),
                        *map(str, files),
                    ],
                    work,
                )
            ],
            "ours": [(ours_cmd, REPO)],
            **({"ours, 1 worker": [(one_worker_cmd, REPO)]} if len(files) > 1 else {}),
        },
        env,
        args.repeats,
        warm_up=len(files) > 1,
    )

    def agreement(ours: Path) -> str:
        same = sum((up_out / p.name).read_bytes() == (ours / p.name).read_bytes() for p in up_out.iterdir())
        return f"results.txt identical {same}/{len(files)}"

    n = sum(len(json.loads(f.read_text(encoding="utf-8"))) for f in files) if len(files) > 1 else args.n
    workers = min(len(files), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    label = f"{name}: {len(files)} files, {n:,} samples ({workers} worker{'s' if workers > 1 else ''})"
    print_row(label, res, "ours", "upstream", agreement(ours_out))
    if "ours, 1 worker" in res:
        one = agreement(work / "ours_1_worker")
        print_row(f"{name}: same, `--workers 1`", res, "ours, 1 worker", "upstream", one)


def synthetic_hmer(path: Path, n: int) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_hmer_eval import synthetic

    with path.open("w", encoding="utf-8") as handle:
        handle.write("[")
        for i, s in enumerate(synthetic(n)):
            handle.write(("," if i else "") + json.dumps({"gt": s.gt, "pred": s.pred, "img_id": s.id}))
        handle.write("]")


def fer_job(work: Path, args, env: dict) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_fer_eval import synthetic_response

    rng = random.Random(0)
    ours_files = []
    for dataset, qa in FER_FILES.items():
        with gzip.open(args.shared / "reference" / "unifer_ferbench" / qa, "rt", encoding="utf-8") as handle:
            items = [synthetic_response(item, rng) for item in json.load(handle)]
        folder = work / "UniFER" / f"eval_{dataset}" / "results"
        folder.mkdir(parents=True)
        path = folder / f"{dataset}_unifer_7b_results.json"
        path.write_text(json.dumps(items, indent=1), encoding="utf-8")
        ours_files.append(path)
    (work / "UniFER" / "eval_total" / "results").mkdir(parents=True)
    scripts = [args.unifer / f"eval_{d}" / "code" / "eval_unifer.py" for d in (*FER_FILES, "total")]
    out = work / "ours"
    res = interleaved(
        {
            "upstream": [([args.upstream_python, str(s)], work) for s in scripts],
            "ours": [
                (
                    [sys.executable, "-m", "evaluators.cli", "eval", "fer", *map(str, ours_files)]
                    + ["--protocol", "unifer", "--total", "--out-dir", str(out)],
                    REPO,
                )
            ],
        },
        env,
        args.repeats,
    )
    agree_n = 0
    pairs = [
        (f"eval_{d}/results/{d}_unifer_7b_metrics.json", f"{d}_unifer_7b_metrics.json") for d in FER_FILES
    ]
    pairs.append(("eval_total/results/unifer_7b_results.json", "total_metrics.json"))
    for theirs, ours in pairs:
        up = json.loads((work / "UniFER" / theirs).read_text())["overall"]
        doc = json.loads((out / ours).read_text())
        mine = doc.get("overall") or doc.get("metrics", {}).get("overall", {})
        agree_n += all(mine.get(k) == v for k, v in up.items())
    n = sum(len(json.loads(p.read_text())) for p in ours_files)
    print_row(
        f"fer: 4 files + pooled, {n:,} items",
        res,
        "ours",
        "upstream",
        f"overall P/R/F1/acc equal {agree_n}/5",
    )


def tree_job(work: Path, args, env: dict, distinct: bool = False) -> None:
    with gzip.open(
        args.shared / "reference" / "unimumer" / "tree_can_golden_from_gt.jsonl.gz", "rt"
    ) as handle:
        labels = [json.loads(line)["latex"] for line in handle]
    source = work / "labels.json"
    prompt = "<image>Please write out the expression of the formula in the image using LaTeX format."
    with source.open("w", encoding="utf-8") as handle:
        handle.write("[")
        for i in range(args.n):
            record = {
                "messages": [
                    {"from": "human", "value": prompt},
                    {"from": "gpt", "value": labels[i % len(labels)] + (f" , {i}" if distinct else "")},
                ],
                "images": [f"images/{i}.png"],
            }
            handle.write(("," if i else "") + json.dumps(record))
        handle.write("]")
    theirs, ours = work / "upstream_tree.json", work / "ours_tree.json"
    ours_1 = work / "ours_1_worker" / "ours_tree.json"
    ours_1.parent.mkdir(exist_ok=True)
    ours_cmd = [sys.executable, "-m", "evaluators.cli", "data", "hmer", "--task", "tree", str(source)]
    ours_cmd += ["--no-check-images", "--no-progress"]
    script = args.tree_upstream / "preprocess" / "make_unimumer_tree_data.py"
    upstream_env = dict(env, PYTHONPATH=os.pathsep.join([str(args.tree_upstream), env["PYTHONPATH"]]))
    res = interleaved(
        {
            "upstream": [
                (
                    [
                        args.upstream_python,
                        str(script),
                        "--task",
                        "tree",
                        "--input",
                        str(source),
                        "--output",
                        str(theirs),
                    ],
                    work,
                )
            ],
            "ours": [([*ours_cmd, str(ours)], REPO)],
            "ours, 1 worker": [([*ours_cmd, str(ours_1), "--workers", "1"], REPO)],
        },
        upstream_env,
        args.repeats,
        warm_up=False,
    )
    from evaluators.json_stream import iter_json_array

    same, count = True, 0
    for a, b in itertools.zip_longest(
        iter_json_array(theirs), iter_json_array(ours)
    ):  # counts must match too
        same = same and a is not None and a == b
        count += b is not None
    agree = f"{count:,} records (prompt, tree answer, image) {'identical' if same else 'DIFFER'}"
    kind = "distinct labels" if distinct else f"labels ({min(args.n, len(labels)):,} distinct, cycled)"
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    label = f"tree builder: {args.n:,} {kind} ({workers} worker{'s' if workers > 1 else ''})"
    print_row(label, res, "ours", "upstream", agree)
    one = "output bytes " + ("identical" if filecmp.cmp(ours, ours_1, shallow=False) else "DIFFER")
    print_row("tree builder: same, `--workers 1`", res, "ours, 1 worker", "upstream", one)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unimumer", type=Path, help="checkout of NhatPot/Uni-MuMER-project")
    parser.add_argument("--unifer", type=Path, help="checkout of zfkarl/UniFER")
    parser.add_argument(
        "--shared", type=Path, default=REPO.parent / "shared", help="the shared reference folder"
    )
    parser.add_argument(
        "--upstream-python", default=sys.executable, help="interpreter for upstream's scripts"
    )
    parser.add_argument(
        "--upstream-path", action="append", default=[], help="extra PYTHONPATH (editdistance)"
    )
    parser.add_argument("--tree-upstream", type=Path, help="checkout of BFlameSwift/Uni-MuMER (preprocess/)")
    parser.add_argument(
        "--jobs", default="hmer,fer,tree,tree-distinct,hmer-synthetic", help="comma-separated jobs to run"
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="samples of hmer-synthetic, labels of tree")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--synthetic-repeats",
        type=int,
        default=1,
        help="repeats of tree, tree-distinct and hmer-synthetic (slow)",
    )
    args = parser.parse_args()
    jobs = args.jobs.split(",")
    env = env_with(args.upstream_path)
    print(
        f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs); medians of {args.repeats} runs "
        f"({args.synthetic_repeats} for tree, tree-distinct and hmer-synthetic)"
    )
    print("\n| job | upstream | unitune | speed-up | memory | outputs | runs (s): upstream / unitune |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-upstream-") as tmp:
        tmp_path = Path(tmp)
        if "hmer" in jobs:
            if args.unimumer and (args.unimumer / "src_author").is_dir():
                work = tmp_path / "hmer"
                work.mkdir()
                hmer_job("hmer", stage_hmer(args.unimumer, work), work, args, env)
            else:
                print(
                    "| hmer | skipped: give --unimumer (a checkout of NhatPot/Uni-MuMER-project) | | | | | |"
                )
        if "fer" in jobs:
            if args.unifer and (args.unifer / "eval_total").is_dir() and (args.shared / "reference").is_dir():
                work = tmp_path / "fer"
                work.mkdir()
                fer_job(work, args, env)
            else:
                print(
                    f"| fer | skipped: give --unifer (zfkarl/UniFER) and --shared ({args.shared}) | | | | | |"
                )
        for job in ("tree", "tree-distinct"):
            if job not in jobs:
                continue
            if args.tree_upstream and (args.tree_upstream / "preprocess").is_dir():
                work = tmp_path / job
                work.mkdir()
                repeats, args.repeats = args.repeats, args.synthetic_repeats
                tree_job(work, args, env, distinct=job == "tree-distinct")
                args.repeats = repeats
            else:
                print(
                    f"| {job} | skipped: give --tree-upstream (a checkout of BFlameSwift/Uni-MuMER) | | | | | |"
                )
        if "hmer-synthetic" in jobs:
            if args.unimumer and (args.unimumer / "src_author").is_dir():
                work = tmp_path / "synthetic"
                work.mkdir()
                path = work / "synthetic_pred.json"
                synthetic_hmer(path, args.n)
                repeats, args.repeats = args.repeats, args.synthetic_repeats
                hmer_job("hmer-synthetic", [path], work, args, env)
                args.repeats = repeats
            else:
                print("| hmer-synthetic | skipped: give --unimumer | | | | | |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
