"""Check a model folder before any weights load: it exists, is a merged model of a known family, has its processor."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from evaluators.errors import UserError
from evaluators.model_family import FAMILIES, family_for_model_type, model_family, require_transformers

__all__ = ["SUPPORTED_MODEL_TYPES", "check_model_dir", "load_processor"]

#: ``model_type`` values whose processor and chat template the runner knows how to drive (every family's).
SUPPORTED_MODEL_TYPES = tuple(t for family in FAMILIES.values() for t in family.model_types)

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
            f"Use a {family.display} checkpoint saved with its processor (preprocessor_config.json, tokenizer files)."
        )
    return processor
