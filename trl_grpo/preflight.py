"""Check a resolved GRPO config against this machine before anything heavy is loaded.

A recipe written for GPUs (DeepSpeed ZeRO-3, vLLM, bf16, flash-attention) fails deep inside TRL, accelerate
or DeepSpeed on a machine without them (transformers already fails while parsing ``bf16`` or ``deepspeed``),
with a traceback that does not say which field to change. This check runs on the recipe's fields and the
command line before TRL parses them, and names every field that cannot work here and its override, in one line.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

from evaluators.errors import UserError

__all__ = ["check_machine", "effective_fields", "machine_problems"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _bf16_gpu() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _flag(value: Any) -> bool:
    return value not in (None, False, "false", "False", "None", "null", "no", "0", 0, "")


def effective_fields(recipe: dict[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """The recipe's fields with ``--field value`` / ``--field=value`` pairs of ``argv`` applied in order.

    Example:

    >>> effective_fields({"bf16": True, "use_vllm": True}, ["--bf16", "false", "--max_steps=2", "--smoke"])
    {'bf16': 'false', 'use_vllm': True, 'max_steps': '2'}
    """
    fields = dict(recipe)
    argv = list(argv)
    for index, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        if eq:
            fields[key] = value
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            fields[key] = argv[index + 1]
    return fields


def machine_problems(
    fields: dict[str, Any],
    installed: Callable[[str], bool] = _installed,
    cuda: Callable[[], bool] = _cuda,
    bf16_gpu: Callable[[], bool] = _bf16_gpu,
) -> list[str]:
    """One message per field (GRPOConfig / ModelConfig names) this machine cannot run, each naming its override.

    Example:

    >>> fields = {"deepspeed": "recipes/deepspeed/ds_z3.json", "bf16": True, "use_vllm": True}
    >>> for m in machine_problems(fields, installed=lambda m: False, cuda=lambda: False, bf16_gpu=lambda: False):
    ...     print(m)
    deepspeed: recipes/deepspeed/ds_z3.json needs DeepSpeed, which is not installed (make install adds it): pass --deepspeed None
    use_vllm: true needs vLLM, which is not installed (pip install 'unitune[vllm]' on a CUDA machine): pass --use_vllm false
    bf16: true needs a GPU with bf16, and this machine has none: pass --bf16 false (and --use_cpu true on CPU)
    >>> machine_problems({"bf16": True, "use_cpu": True}, cuda=lambda: False)
    []
    """
    problems = []
    deepspeed = fields.get("deepspeed")
    if _flag(deepspeed):
        if not installed("deepspeed"):
            problems.append(
                f"deepspeed: {deepspeed} needs DeepSpeed, which is not installed (make install adds it): "
                "pass --deepspeed None"
            )
        elif not cuda():
            problems.append(
                f"deepspeed: {deepspeed} needs a CUDA GPU, and this machine has none: pass --deepspeed None"
            )
    if _flag(fields.get("use_vllm")):
        if not installed("vllm"):
            problems.append(
                "use_vllm: true needs vLLM, which is not installed (pip install 'unitune[vllm]' on a CUDA machine): "
                "pass --use_vllm false"
            )
        elif not cuda():
            problems.append(
                "use_vllm: true needs a CUDA GPU, and this machine has none: pass --use_vllm false"
            )
    if _flag(fields.get("bf16")) and not _flag(fields.get("use_cpu")) and not bf16_gpu():
        problems.append(
            "bf16: true needs a GPU with bf16, and this machine has none: pass --bf16 false (and --use_cpu true on CPU)"
        )
    if fields.get("attn_implementation") == "flash_attention_2" and not installed("flash_attn"):
        problems.append(
            "attn_implementation: flash_attention_2 needs flash-attn, which is not installed: "
            "pass --attn_implementation sdpa"
        )
    return problems


def check_machine(fields: dict[str, Any]) -> None:
    """Raise one :class:`UserError` listing every override this machine needs (``--smoke`` sets them all).

    Raises:
        UserError: some field cannot run here.
    """
    problems = machine_problems(fields)
    if problems:
        raise UserError("; ".join(problems) + " (or run the CPU smoke test: --smoke).")
