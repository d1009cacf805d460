"""GPU check helpers for ``benchmarks/gpu_check.sh`` (see its header).

UNVERIFIED: written in a session without a GPU. ``build`` and ``--dry-run`` were run on CPU (the config,
parameter count and tokenizer/processor files are checked there); ``sft`` and ``vllm`` have never run.

Subcommands:

    python benchmarks/gpu_check.py build OUT_DIR [--dry-run]   # Qwen2.5-VL-3B-sized random model, offline
    python benchmarks/gpu_check.py data OUT_DIR --n 512         # demo formulas + dataset_info.json
    python benchmarks/gpu_check.py sft MODEL DATA_DIR OUT_JSON [--steps 10]
    python benchmarks/gpu_check.py vllm MODEL DATA_DIR OUT_JSON [--n 512] [--max-tokens 64]
    python benchmarks/gpu_check.py table RESULT_JSON...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Qwen2.5-VL-3B-Instruct's published config (text + vision), with Qwen's vocabulary size.
QWEN25_VL_3B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128000,
    "max_window_layers": 70,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [16, 24, 24]},
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "use_sliding_window": False,
}
QWEN25_VL_3B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_chans": 3,
    "out_hidden_size": 2048,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "hidden_act": "silu",
}
#: Qwen2.5-VL-3B-Instruct has 3.75B parameters (tied embeddings).
EXPECTED_PARAMS = 3.75e9


def build(out_dir: Path, dry_run: bool = False) -> None:
    """Write a random-weight model with Qwen2.5-VL-3B's architecture and sizes, plus a working processor.

    The tokenizer is the tiny model's byte-level BPE (Qwen's 14 special tokens, Qwen2-VL's chat template); the
    config's special-token ids point at its ids. Embedding rows past the tokenizer are unused, exactly as in
    Qwen's own checkpoint (151,665 tokens for 151,936 rows); compute and memory are those of the 3B model.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from llamafactory_ext.tiny_model import QWEN2_VL_CHAT_TEMPLATE, build_tokenizer, qwen2_5_vl_config

    tokenizer = build_tokenizer()
    config = qwen2_5_vl_config(tokenizer, QWEN25_VL_3B_TEXT, QWEN25_VL_3B_VISION, torch_dtype="bfloat16")
    with torch.device("meta"):
        meta_model = Qwen2_5_VLForConditionalGeneration(config)
    n_params = sum(p.numel() for p in meta_model.parameters())
    print(f"parameters: {n_params / 1e9:.3f}B (Qwen2.5-VL-3B-Instruct: {EXPECTED_PARAMS / 1e9:.2f}B)")
    assert abs(n_params - EXPECTED_PARAMS) / EXPECTED_PARAMS < 0.02, n_params
    out_dir.mkdir(parents=True, exist_ok=True)
    image_processor = Qwen2VLImageProcessor(
        min_pixels=3136, max_pixels=262144, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    video_processor = Qwen2VLVideoProcessor(patch_size=14, temporal_patch_size=2, merge_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)
    if dry_run:
        config.save_pretrained(out_dir)
        print(f"dry run: config and processor written to {out_dir} (no weights)")
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[config.eos_token_id, config.pad_token_id],
        pad_token_id=config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    print(f"random Qwen2.5-VL-3B-sized model written to {out_dir}")


def data(out_dir: Path, n: int) -> None:
    """Render ``n`` formulas (demo data) and register them as ``gpu_check_hmer`` for LLaMA-Factory."""
    from evaluators.io_utils import atomic_write_json
    from llamafactory_ext.demo_data.hmer import write_hmer_demo

    paths = write_hmer_demo(out_dir, n=n, n_test=n, seed=0)
    entry = {
        "file_name": paths["train"].name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
    atomic_write_json(out_dir / "dataset_info.json", {"gpu_check_hmer": entry})
    print(f"{n} train + {n} test formulas in {out_dir}")


def sft(model: Path, data_dir: Path, out_json: Path, steps: int, overrides: list[str] | None = None) -> None:
    """One LLaMA-Factory QLoRA run with the recipe's settings; peak GPU memory and samples/s.

    ``overrides`` (``key=value``, YAML values) change recipe keys, e.g. for a CPU dry run on the tiny model.
    """
    import torch
    import yaml
    from llamafactory.train.tuner import run_exp

    recipe = yaml.safe_load((REPO / "recipes" / "unimumer_qlora.yaml").read_text(encoding="utf-8"))
    output_dir = out_json.parent / "sft_out"
    recipe.update(
        model_name_or_path=str(model),
        dataset_dir=str(data_dir),
        dataset="gpu_check_hmer",
        output_dir=str(output_dir),
        max_steps=steps,
        save_steps=10**6,
        logging_steps=1,
        plot_loss=False,
        overwrite_output_dir=True,
        preprocessing_num_workers=8,
        dataloader_num_workers=2,
        report_to="none",
    )
    for item in overrides or []:
        key, _, value = item.partition("=")
        recipe[key] = yaml.safe_load(value)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run_exp(recipe)
    wall = time.perf_counter() - start
    results = json.loads((output_dir / "train_results.json").read_text(encoding="utf-8"))
    samples = steps * recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"]
    row = {
        "bench": "QLoRA SFT (LLaMA-Factory, recipes/unimumer_qlora.yaml)",
        "steps": steps,
        "global_batch": recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"],
        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "train_samples_per_second": results.get("train_samples_per_second"),
        "samples_per_second_wall": samples / wall,
        "wall_s": wall,
    }
    out_json.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(row, indent=2))


def vllm_bench(model: Path, data_dir: Path, out_json: Path, n: int, max_tokens: int) -> None:
    """vLLM images/s: upstream's batch-size-1 loop vs every request at once, on the same ``n`` requests."""
    from vllm import LLM, SamplingParams

    from evaluators.inference.model_dir import load_processor
    from evaluators.inference.prompts import PromptOptions, load_records, prepare_request
    from evaluators.inference.sampling import resolve_sampling
    from evaluators.inference.vllm_backend import build_vllm_inputs, sampling_params_kwargs

    processor = load_processor(str(model))
    records = load_records(data_dir / "hmer_demo_test.json")[:n]
    requests = [prepare_request(r, processor, PromptOptions()) for r in records]
    inputs = build_vllm_inputs(requests)
    kwargs = sampling_params_kwargs(resolve_sampling("hmer", {"max_new_tokens": max_tokens}))
    # Random weights: fixed-length outputs (ignore_eos) so both runs do the same work; no detokenisation,
    # because sampled ids beyond the small stand-in tokenizer have no text.
    params = SamplingParams(**kwargs, ignore_eos=True, detokenize=False)
    llm = LLM(
        model=str(model),
        dtype="bfloat16",
        seed=0,
        max_model_len=4096,
        limit_mm_per_prompt={"image": 1},
        trust_remote_code=False,
    )
    llm.generate(inputs[:8], params, use_tqdm=False)  # warm-up (CUDA graphs, kernels)

    start = time.perf_counter()
    for entry in inputs:
        llm.generate([entry], params, use_tqdm=False)
    loop = time.perf_counter() - start

    start = time.perf_counter()
    llm.generate(inputs, params, use_tqdm=False)
    at_once = time.perf_counter() - start
    rows = [
        {
            "bench": f"vLLM batch-size-1 loop ({n} requests, {max_tokens} tokens)",
            "wall_s": loop,
            "images_per_s": n / loop,
        },
        {
            "bench": f"vLLM all at once ({n} requests, {max_tokens} tokens)",
            "wall_s": at_once,
            "images_per_s": n / at_once,
        },
    ]
    rows[1]["speedup"] = loop / at_once
    out_json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(rows, indent=2))


def table(paths: list[Path]) -> None:
    """Print every result as one Markdown table."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"\nGPU check on {device} (random-weight Qwen2.5-VL-3B-sized model)\n")
    print("| Benchmark | Wall (s) | Peak GPU mem (GiB) | Samples/s | Images/s | Speed-up |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        if not path.is_file():
            print(f"| {path.stem} | — | — | — | — | — (not run) |")
            continue
        doc = json.loads(path.read_text(encoding="utf-8"))
        for row in doc if isinstance(doc, list) else [doc]:

            def cell(key: str, digits: int = 2, row: dict = row) -> str:
                value = row.get(key)
                return "—" if value is None else f"{value:.{digits}f}"

            print(
                f"| {row['bench']} | {cell('wall_s', 1)} | {cell('peak_gpu_mem_gib')} | "
                f"{cell('train_samples_per_second')} | {cell('images_per_s')} | {cell('speedup')} |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("build")
    p.add_argument("out", type=Path)
    p.add_argument("--dry-run", action="store_true", help="config + processor only, no weights")
    p = sub.add_parser("data")
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=512)
    p = sub.add_parser("sft")
    p.add_argument("model", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("out_json", type=Path)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe key=value")
    p = sub.add_parser("vllm")
    p.add_argument("model", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("out_json", type=Path)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=64)
    p = sub.add_parser("table")
    p.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    if args.cmd == "build":
        build(args.out, args.dry_run)
    elif args.cmd == "data":
        data(args.out, args.n)
    elif args.cmd == "sft":
        sft(args.model, args.data, args.out_json, args.steps, args.overrides)
    elif args.cmd == "vllm":
        vllm_bench(args.model, args.data, args.out_json, args.n, args.max_tokens)
    else:
        table(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
