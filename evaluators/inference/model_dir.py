"""Check a model folder before any weights load: it exists, is a merged model of a known family, has its processor."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from evaluators.errors import UserError
from evaluators.model_family import FAMILIES, family_for_model_type, model_family, require_transformers

__all__ = [
    "GENERATION_ARCHITECTURES",
    "SUPPORTED_MODEL_TYPES",
    "VLLM_CPU_HEAD_SIZES",
    "check_model_dir",
    "load_processor",
    "vllm_hf_overrides",
]

logger = logging.getLogger(__name__)

#: ``model_type`` values whose processor and chat template the runner knows how to drive (every family's).
SUPPORTED_MODEL_TYPES = tuple(t for family in FAMILIES.values() for t in family.model_types)

#: The generation class of each supported ``model_type``: what vLLM must read in ``architectures``.
GENERATION_ARCHITECTURES = {
    **{model_type: family.hf_class for family in FAMILIES.values() for model_type in family.model_types},
    "qwen2_vl": "Qwen2VLForConditionalGeneration",  # served by the Qwen2.5-VL family's processor code
}

#: Attention head sizes vLLM's CPU attention runs (0.32: ``Unsupported CPU attention configuration`` else).
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_dir(model: str) -> str:
    """Validate ``model`` (a local folder, or a hub id already in the local cache) and return it.

    Raises:
        UserError: missing folder, a LoRA adapter folder (must be merged first), no ``config.json``,
            a ``model_type`` of no known family (:mod:`evaluators.model_family`), or a family the installed
            transformers does not ship.

    Example:

    >>> check_model_dir("/nonexistent/model")
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: --model /nonexistent/model: no such folder. Give the folder of a merged Qwen2.5-VL / Qwen3-VL checkpoint (config.json, weights, tokenizer and processor files).
    """
    path = Path(model)
    if not path.is_dir():
        if _HUB_ID.match(model) and not path.exists():
            return model  # a hub id: the processor load below reports a missing cache entry clearly
        raise UserError(
            f"--model {model}: no such folder. Give the folder of a merged Qwen2.5-VL / Qwen3-VL checkpoint "
            "(config.json, weights, tokenizer and processor files)."
        )
    config_path = path / "config.json"
    if not config_path.is_file():
        if (path / "adapter_config.json").is_file():
            raise UserError(
                f"--model {model} is a LoRA adapter, not a model. Merge it first: "
                f"llamafactory-cli export recipes/unimumer_merge_lora.yaml adapter_name_or_path={model} "
                "export_dir=MERGED, then pass --model MERGED."
            )
        raise UserError(
            f"--model {model}: no config.json in this folder; it is not a transformers checkpoint."
        )
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError as err:
        raise UserError(f"{config_path}: malformed JSON ({err.msg}).") from None
    require_transformers(family_for_model_type(model_type, f"--model {model}"), f"--model {model}")
    return model


def load_processor(model: str) -> Any:
    """Load the model's processor and check it drives its family's images and chat.

    Raises:
        UserError: the processor does not load, has no image processor, no ``<|image_pad|>`` token or no
            chat template.
    """
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(model, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(
            f"--model {model}: the processor does not load ({type(err).__name__}: {err})."
        ) from None
    tokenizer = getattr(processor, "tokenizer", None)
    family = model_family(model)
    problems = []
    if getattr(processor, "image_processor", None) is None or tokenizer is None:
        problems.append("it is not a multimodal processor (no image processor/tokenizer pair)")
    elif tokenizer.convert_tokens_to_ids(family.image_token) in (None, tokenizer.unk_token_id):
        problems.append(f"its tokenizer has no {family.image_token} token")
    if not getattr(processor, "chat_template", None) and not getattr(tokenizer, "chat_template", None):
        problems.append("it has no chat template")
    if problems:
        raise UserError(
            f"--model {model}: not a {family.display} processor: {'; '.join(problems)}. "
            f"Use a {family.display} checkpoint saved with its processor (processor_config.json or preprocessor_config.json, tokenizer files)."
        )
    return processor


def _read_config(model: str) -> dict[str, Any] | None:
    path = Path(model) / "config.json"
    if not path.is_file():
        return None  # a hub id from the local cache: vLLM reads the hub's config, which is complete
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: malformed JSON ({err.msg}).") from None


def vllm_hf_overrides(
    model: str, hf_overrides: dict[str, Any] | None = None, cpu: bool = False, dtype: str = "auto"
) -> dict[str, Any]:
    """The ``hf_overrides`` to load ``model`` with vLLM, after checking vLLM will read it as a generator.

    vLLM takes the model class from the top-level ``architectures`` of ``config.json``. transformers
    4.57's ``save_pretrained`` of a Qwen2.5-VL (so also ``llamafactory-cli export``) writes it only inside
    ``text_config``; vLLM then resolves ``Qwen2_5_VLModel``, picks its pooling runner and refuses to
    generate. A missing top-level value is supplied here (logged); a different one is refused. On the CPU
    the text head size must be one vLLM's CPU attention supports, and a model with linear-attention layers
    (Qwen3.5's Gated DeltaNet) must run in bfloat16: vLLM 0.32's CPU kernel for them asserts "CPU GDN
    attention requires BF16" after the weights have loaded.

    Args:
        model (`str`): the checked model folder (or hub id: nothing to check).
        hf_overrides (`dict`, *optional*): the user's ``--hf-overrides``; they win over ``config.json``.
        cpu (`bool`): vLLM runs on the CPU (head-size and linear-attention dtype checks).
        dtype (`str`): the ``--dtype`` vLLM gets (``auto``: the checkpoint's ``dtype`` / ``torch_dtype``).

    Raises:
        UserError: ``architectures`` names a class other than the generation class of ``model_type``,
            or (``cpu``) the head size is not supported by vLLM's CPU attention, or linear-attention layers
            would run in a dtype other than bfloat16.

    Example:

    >>> import json, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> text = {"hidden_size": 64, "num_attention_heads": 2, "architectures": ["Qwen2_5_VLForConditionalGeneration"]}
    >>> _ = (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl", "text_config": text}))
    >>> vllm_hf_overrides(str(folder), cpu=True)
    {'architectures': ['Qwen2_5_VLForConditionalGeneration']}
    >>> _ = (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLModel"]}))
    >>> vllm_hf_overrides(str(folder))
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: --model ...: config.json declares architectures ['Qwen2_5_VLModel'], which vLLM would load as a model without a generation head; expected ['Qwen2_5_VLForConditionalGeneration']. Fix config.json or pass --hf-overrides '{"architectures": ["Qwen2_5_VLForConditionalGeneration"]}'.
    """
    overrides = dict(hf_overrides or {})
    config = _read_config(model)
    if config is None:
        return overrides
    merged = {**config, **overrides}
    expected = GENERATION_ARCHITECTURES.get(str(merged.get("model_type")))
    declared = merged.get("architectures")
    if expected is not None and not declared:
        logger.warning(
            "%s/config.json has no top-level `architectures` (transformers 4.57 and llamafactory-cli export "
            "write it only inside text_config); vLLM is told it is %s.",
            model,
            expected,
        )
        overrides["architectures"] = [expected]
    elif expected is not None and list(declared) != [expected]:
        raise UserError(
            f"--model {model}: config.json declares architectures {list(declared)}, which vLLM would load "
            f"as a model without a generation head; expected [{expected!r}]. Fix config.json or pass "
            f'--hf-overrides \'{{"architectures": ["{expected}"]}}\'.'
        )
    if cpu:
        text = {**merged, **(merged.get("text_config") or {})}
        heads = text.get("num_attention_heads")
        head_size = text.get("head_dim") or (
            text["hidden_size"] // heads if heads and text.get("hidden_size") else None
        )
        if head_size is not None and head_size not in VLLM_CPU_HEAD_SIZES:
            raise UserError(
                f"--model {model}: attention head size {head_size} (hidden_size / num_attention_heads) is not "
                f"supported by vLLM on the CPU (supported: {', '.join(map(str, VLLM_CPU_HEAD_SIZES))}); "
                "use --backend hf, or a GPU."
            )
        if "linear_attention" in (text.get("layer_types") or []):
            resolved = (
                dtype if dtype != "auto" else (text.get("dtype") or text.get("torch_dtype") or "float32")
            )
            if str(resolved).removeprefix("torch.") != "bfloat16":
                raise UserError(
                    f"--model {model}: its linear-attention (Gated DeltaNet) layers run on vLLM's CPU backend "
                    f"only in bfloat16, got dtype {resolved}; pass --dtype bfloat16, or use --backend hf, or a GPU."
                )
    return overrides
