"""Check a resolved GRPO config against this machine before anything heavy is loaded.

A recipe written for GPUs (DeepSpeed ZeRO-3, vLLM, bf16, flash-attention) fails deep inside TRL, accelerate
or DeepSpeed on a machine without them, with a traceback that does not say which key to change. This check
names every key that cannot work here and the override that makes the run possible, in one line.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from evaluators.errors import UserError

__all__ = ["check_machine", "machine_problems"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _bf16_gpu() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def machine_problems(
    cfg: dict[str, Any],
    installed=_installed,
    cuda=_cuda,
    bf16_gpu=_bf16_gpu,
) -> list[str]:
    """One message per setting of ``cfg`` that this machine cannot run, each naming its override.

    Example:

    >>> cfg = {"grpo": {"deepspeed": "recipes/deepspeed/ds_z3.json", "bf16": True, "use_vllm": True}, "model": {}}
    >>> for m in machine_problems(cfg, installed=lambda m: False, cuda=lambda: False, bf16_gpu=lambda: False):
    ...     print(m)
    grpo.deepspeed=recipes/deepspeed/ds_z3.json needs DeepSpeed, which is not installed (make install adds it): pass grpo.deepspeed=null
    grpo.use_vllm=true needs vLLM, which is not installed (pip install 'unitune[vllm]' on a CUDA machine): pass grpo.use_vllm=false
    grpo.bf16=true needs a GPU with bf16, and this machine has none: pass grpo.bf16=false (and grpo.use_cpu=true on CPU)
    >>> machine_problems({"grpo": {"bf16": True, "use_cpu": True}, "model": {}}, cuda=lambda: False)
    []
    """
    grpo, model = cfg.get("grpo") or {}, cfg.get("model") or {}
    problems = []
    deepspeed = grpo.get("deepspeed")
    if deepspeed:
        if not installed("deepspeed"):
            problems.append(
                f"grpo.deepspeed={deepspeed} needs DeepSpeed, which is not installed (make install adds it): "
                "pass grpo.deepspeed=null"
            )
        elif not cuda():
            problems.append(
                f"grpo.deepspeed={deepspeed} needs a CUDA GPU, and this machine has none: pass grpo.deepspeed=null"
            )
    if grpo.get("use_vllm"):
        if not installed("vllm"):
            problems.append(
                "grpo.use_vllm=true needs vLLM, which is not installed (pip install 'unitune[vllm]' on a CUDA "
                "machine): pass grpo.use_vllm=false"
            )
        elif not cuda():
            problems.append(
                "grpo.use_vllm=true needs a CUDA GPU, and this machine has none: pass grpo.use_vllm=false"
            )
    if grpo.get("bf16") and not grpo.get("use_cpu") and not bf16_gpu():
        problems.append(
            "grpo.bf16=true needs a GPU with bf16, and this machine has none: pass grpo.bf16=false "
            "(and grpo.use_cpu=true on CPU)"
        )
    if model.get("attn_implementation") == "flash_attention_2" and not installed("flash_attn"):
        problems.append(
            "model.attn_implementation=flash_attention_2 needs flash-attn, which is not installed: "
            "pass model.attn_implementation=sdpa"
        )
    return problems


def check_machine(cfg: dict[str, Any]) -> None:
    """Raise one :class:`UserError` listing every override this machine needs (``--smoke`` sets them all).

    Raises:
        UserError: some setting cannot run here.
    """
    problems = machine_problems(cfg)
    if problems:
        raise UserError("; ".join(problems) + " (or run the CPU smoke test: --smoke).")
