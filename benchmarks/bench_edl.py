"""Throughput of the CPU steps of ``unitune edl run`` (folds, merge, build) and a layout for a full-size run.

Usage: ``.venv/bin/python benchmarks/bench_edl.py [--n 20000] [--k 3] [--samples 4] [--shards 8]``

A synthetic corpus of ``--n`` formulas (empty image files, unique stems) goes through the real pipeline steps;
the GPU steps (fold training, sampling) are replaced by synthetic shard files of predictions (a third correct,
the rest wrong, some duplicated). It prints records/s per step and, from them and the GPU assumptions given on the
command line, the planned layout of a 386k-image run on ``--nodes`` x ``--gpus`` GPUs.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import yaml

from llamafactory_ext.hmer.edl_config import load_config
from llamafactory_ext.hmer.edl_pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
TOKENS = "x y z a b c 1 2 3 + - = \\frac \\sqrt \\alpha \\sum ( )".split()


def _formula(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(2, 8)):
        kind = rng.random()
        if kind < 0.2:
            parts.append(f"\\frac {{ {rng.choice(TOKENS[:9])} }} {{ {rng.choice(TOKENS[:9])} }}")
        elif kind < 0.35:
            parts.append(f"{rng.choice(TOKENS[:6])} ^ {{ {rng.choice(TOKENS[6:9])} }}")
        else:
            parts.append(rng.choice(TOKENS))
    return " ".join(parts)


def _corpus(folder: Path, n: int, rng: random.Random) -> Path:
    images = folder / "images"
    images.mkdir(parents=True)
    records = []
    for i in range(n):
        image = images / f"img_{i:07d}.png"
        image.touch()
        records.append(
            {
                "images": [str(image)],
                "messages": [
                    {"from": "human", "value": "<image>Read the formula."},
                    {"from": "gpt", "value": _formula(rng)},
                ],
            }
        )
    path = folder / "train.json"
    path.write_text(json.dumps(records))
    return path


def _fake_samples(pipeline: Pipeline, samples: int, rng: random.Random) -> None:
    """Write each shard's ``unitune infer`` JSONL as sampling would, and mark the GPU steps done."""
    for step in pipeline.steps:
        if step.kind != "sample":
            continue
        heldout = json.loads(pipeline.heldout_file(step.fold).read_text())
        shard = heldout[step.shard :: pipeline.c.shards]
        step.folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for record in shard:
            gt = record["messages"][1]["value"]
            ident = Path(record["images"][0]).stem
            wrong = gt.split()
            wrong[rng.randrange(len(wrong))] = rng.choice(TOKENS)
            for index in range(samples):
                pred = gt if rng.random() < 0.33 else " ".join(wrong)
                row = {
                    "id": ident,
                    "sample_index": index,
                    "prompt": "Read the formula.",
                    "pred": pred,
                    "gt": gt,
                }
                lines.append(json.dumps({**row, "image_path": record["images"][0]}) + "\n")
        name = f"{pipeline.fold_name(step.fold, 'heldout')}_infer.jsonl"
        (step.folder / name).write_text("".join(lines))
    for step in pipeline.steps:
        if step.kind in ("train", "sample"):
            step.folder.mkdir(parents=True, exist_ok=True)
            step.write_marker("done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="formulas in the synthetic corpus")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4, help="samples per image (n)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--full-n", type=int, default=386_000, help="images of the planned full run")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--gpu-images-per-s", type=float, default=20.0, help="assumed vLLM images/s/GPU at n")
    parser.add_argument(
        "--train-samples-per-s", type=float, default=40.0, help="assumed SFT samples/s per node"
    )
    parser.add_argument(
        "--load-s", type=float, default=90.0, help="assumed start-up of one sampling shard (s)"
    )
    args = parser.parse_args()

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = _corpus(folder / "data", args.n, rng)
        config = {
            "input": str(corpus),
            "name": "bench",
            "out_dir": str(folder / "run"),
            "k": args.k,
            "model_name_or_path": "Qwen/Qwen2.5-VL-3B-Instruct",
            "recipe": str(REPO / "recipes" / "unimumer_crohme.yaml"),
            "sampling": {"n": args.samples},
            "shards": args.shards,
            "dataset_dir": str(folder / "lf"),
        }
        (folder / "edl.yaml").write_text(yaml.safe_dump(config))
        pipeline = Pipeline(load_config(folder / "edl.yaml"), log=lambda _text: None)
        rows = []
        start = time.perf_counter()
        pipeline.run_step(pipeline.steps[0])
        rows.append(("folds (labels + k splits + register)", args.n, time.perf_counter() - start))
        _fake_samples(pipeline, args.samples, rng)
        start = time.perf_counter()
        for step in pipeline.steps:
            if step.kind == "merge":
                pipeline.run_step(step)
        rows.append(("merge (all folds, all shards)", args.n * args.samples, time.perf_counter() - start))
        start = time.perf_counter()
        pipeline.run_step(pipeline.steps[-1])
        rows.append(("build error_find + error_fix", args.n * args.samples, time.perf_counter() - start))
        summary = json.loads((pipeline.edl_dir / "summary.json").read_text())

    print(f"\nEDL CPU steps, {args.n} formulas, k={args.k}, n={args.samples}, {args.shards} shards/fold\n")
    print("| step | items | seconds | items/s | projected for full run (s) |")
    print("|---|---|---|---|---|")
    cpu_total = 0.0
    for name, items, seconds in rows:
        projected = seconds * args.full_n / args.n
        cpu_total += projected
        print(f"| {name} | {items} | {seconds:.2f} | {items / seconds:,.0f} | {projected:,.0f} |")
    rows_out = sum(f["error_find_rows"] for f in summary["folds"])
    print(f"\nerror_find rows: {rows_out} (each also an error_fix row)")

    gpus = args.nodes * args.gpus
    per_fold = args.full_n / args.k
    train_one = per_fold * (args.k - 1) / args.train_samples_per_s  # one node, one epoch
    shards = gpus  # per fold: one shard per GPU, the k folds run in k waves
    shard_images = per_fold / shards
    shard_s = shard_images / args.gpu_images_per_s + args.load_s
    waves = -(-args.k * shards // gpus)
    print(
        f"\nPlanned layout: {args.full_n:,} images, k={args.k}, n={args.samples}, {args.nodes} nodes x {args.gpus} GPUs"
    )
    print("| phase | jobs | each | wall |")
    print("|---|---|---|---|")
    train_wall = train_one / args.nodes * args.k
    print(
        f"| train (all {args.nodes} nodes per fold, folds in turn) | {args.k} | "
        f"{per_fold * (args.k - 1):,.0f} samples, {train_one / args.nodes / 60:.0f} min | {train_wall / 60:.0f} min |"
    )
    print(
        f"| sample (shards: {shards} per fold, 1 GPU each) | {args.k * shards} | "
        f"{shard_images:,.0f} images, {shard_s / 60:.1f} min | {waves * shard_s / 60:.0f} min ({waves} waves) |"
    )
    print(f"| merge + build (CPU, one process) | 1 | | {cpu_total / 60:.1f} min |")
    print(
        f"\nGPU assumptions: {args.gpu_images_per_s:g} images/s/GPU sampling ({args.samples} samples each, vLLM), "
        f"{args.train_samples_per_s:g} SFT samples/s per 8-GPU node, {args.load_s:g} s start-up per shard."
    )


if __name__ == "__main__":
    main()
