"""GRPO on Qwen2.5-VL with unitune's rewards: ``python -m trl_grpo.train --config YAML [--smoke] [key=value ...]``.

The YAML (read with ``yaml.safe_load``) has five sections:

- ``model``: ``name_or_path``, ``dtype``, ``attn_implementation``, ``processor`` (kwargs of ``AutoProcessor``,
  e.g. ``min_pixels``), ``lora`` (``{r, alpha, dropout, target_modules}`` or null), ``quantization``
  (``4bit``/``8bit`` for QLoRA, needs ``lora``), ``tiny`` (true: build and use the tiny offline Qwen2.5-VL).
- ``data``: ``path`` (RLVR JSON/JSONL of ``{problem, solution, image_path}``, sharegpt records, or rows already
  converted by ``unitune data fer-rlvr``), ``image_root``, ``task`` (``fer``/``hmer``), ``image_size`` (224; null
  keeps sizes), ``prepared_dir`` (default ``<output_dir>/grpo_data``), ``skip_invalid``, ``synthetic``
  (``fer``/``hmer``: generate ``synthetic_rows`` rows instead of reading ``path``).
- ``rewards``: a list of ``{func: dotted.path, weight: 1.0, kwargs: {...}}`` (``kwargs`` calls ``func`` as a
  factory) or bare dotted paths.
- ``grpo``: any :class:`trl.GRPOConfig` field. ``max_prompt_length`` defaults to null here: truncating a
  multimodal prompt cuts image tokens ("Image features and image tokens do not match").
- ``smoke``: ``dotted.key: value`` overrides applied by ``--smoke`` (tiny model, synthetic data, CPU, no vLLM).

Command-line ``key=value`` overrides (``grpo.max_steps=2``, values parsed as YAML) are applied last.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import logging
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from evaluators.errors import UserError

__all__ = [
    "apply_overrides",
    "build_grpo_config",
    "build_trainer",
    "load_config",
    "load_reward",
    "main",
    "resolve_config",
    "train",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
_SECTIONS = ("model", "data", "rewards", "grpo", "smoke")
_MODEL_KEYS = ("name_or_path", "dtype", "attn_implementation", "processor", "lora", "quantization", "tiny")
_DATA_KEYS = (
    "path",
    "image_root",
    "task",
    "image_size",
    "prepared_dir",
    "skip_invalid",
    "synthetic",
    "synthetic_rows",
)
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_LM_LINEAR = r"^(?!.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe with ``yaml.safe_load`` and check its sections.

    Raises:
        UserError: missing file, invalid YAML, or an unknown section.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file.")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"--config {path}: invalid YAML ({err}).") from None
    if not isinstance(cfg, dict):
        raise UserError(f"--config {path}: expected a mapping of sections, got {type(cfg).__name__}.")
    unknown = sorted(set(cfg) - set(_SECTIONS))
    if unknown:
        raise UserError(f"--config {path}: unknown section(s) {unknown}; expected {list(_SECTIONS)}.")
    return cfg


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied (values parsed as YAML).

    Example:

    >>> apply_overrides({"grpo": {"beta": 0.04}}, ["grpo.beta=0.0", "model.lora={r: 8}"])
    {'grpo': {'beta': 0.0}, 'model': {'lora': {'r': 8}}}
    """
    out = copy.deepcopy(cfg)
    items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
    for key, value in items:
        parts = key.split(".")
        if parts[0] not in _SECTIONS or len(parts) < 2:
            raise UserError(f"override {key!r}: expected SECTION.KEY with SECTION in {list(_SECTIONS[:4])}.")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def _split_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r}: expected KEY=VALUE, e.g. grpo.max_steps=2.")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise UserError(f"override {text!r}: the value is not valid YAML ({err}).") from None


def resolve_config(
    path: str | os.PathLike, smoke: bool = False, overrides: Sequence[str] | dict[str, Any] = ()
) -> dict[str, Any]:
    """Load a recipe, apply its ``smoke`` section when ``smoke`` is set, then ``overrides``."""
    cfg = load_config(path)
    smoke_overrides = cfg.pop("smoke", None) or {}
    if smoke:
        if not isinstance(smoke_overrides, dict):
            raise UserError(f"--config {path}: `smoke` must map dotted keys to values.")
        cfg = apply_overrides(cfg, smoke_overrides)
    return apply_overrides(cfg, overrides)


def load_reward(spec: str | dict[str, Any]) -> tuple[Callable[..., list], float]:
    """Import one reward from ``{func: dotted.path, weight, kwargs}`` (or a bare dotted path).

    With ``kwargs`` the imported object is a factory and is called with them.

    Example:

    >>> func, weight = load_reward({"func": "trl_grpo.rewards.fer_accuracy_reward", "weight": 2})
    >>> func.__name__, weight
    ('fer_accuracy_reward', 2.0)
    """
    if isinstance(spec, str):
        spec = {"func": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("func"), str):
        raise UserError(f"rewards: each entry needs `func: dotted.path`, got {spec!r}.")
    unknown = sorted(set(spec) - {"func", "weight", "kwargs"})
    if unknown:
        raise UserError(f"rewards: unknown key(s) {unknown} in {spec!r}; expected func, weight, kwargs.")
    dotted = spec["func"]
    module_name, _, attr = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(f"rewards: cannot import {dotted!r} ({err}).") from None
    if spec.get("kwargs") is not None:
        if not isinstance(spec["kwargs"], dict):
            raise UserError(f"rewards: `kwargs` of {dotted!r} must be a mapping.")
        obj = obj(**spec["kwargs"])
    if not callable(obj) or not getattr(obj, "__name__", None):
        raise UserError(f"rewards: {dotted!r} is not a callable with a __name__.")
    try:
        weight = float(spec.get("weight", 1.0))
    except (TypeError, ValueError):
        raise UserError(
            f"rewards: weight of {dotted!r} must be a number, got {spec.get('weight')!r}."
        ) from None
    return obj, weight


def _coerce(value: Any, annotation: Any) -> Any:
    """Turn YAML strings like ``1e-6`` (PyYAML reads them as str) into floats for float fields."""
    if isinstance(value, str) and _NUMBER_RE.match(value):
        args = typing.get_args(annotation) or (annotation,)
        if float in args:
            return float(value)
    return value


def build_grpo_config(cfg: dict[str, Any]):
    """Build :class:`trl.GRPOConfig` from the ``grpo`` section and the reward weights.

    Raises:
        UserError: an unknown GRPOConfig field or an invalid value.
    """
    from trl import GRPOConfig

    section = dict(cfg.get("grpo") or {})
    if "reward_weights" in section:
        raise UserError("grpo.reward_weights: set `weight` on each entry of `rewards` instead.")
    hints = typing.get_type_hints(GRPOConfig)
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise UserError(
            f"grpo: unknown GRPOConfig field(s) {unknown} (trl's GRPOConfig lists the valid ones)."
        )
    section = {k: _coerce(v, hints.get(k)) for k, v in section.items()}
    section.setdefault("max_prompt_length", None)
    if section["max_prompt_length"] is not None:
        logger.warning(
            "grpo.max_prompt_length=%s truncates prompts; a cut through the image tokens fails with "
            "'Image features and image tokens do not match'. Prefer null.",
            section["max_prompt_length"],
        )
    if section.get("deepspeed"):
        section["deepspeed"] = str(_existing(section["deepspeed"], "grpo.deepspeed"))
    section["reward_weights"] = [weight for _, weight in (load_reward(s) for s in _reward_specs(cfg))]
    section.setdefault("output_dir", "saves/grpo")
    try:
        return GRPOConfig(**section)
    except (TypeError, ValueError) as err:
        raise UserError(f"grpo: {err}") from None


def _reward_specs(cfg: dict[str, Any]) -> list:
    specs = cfg.get("rewards")
    if not isinstance(specs, list) or not specs:
        raise UserError(
            "rewards: list at least one reward, e.g. `- func: trl_grpo.rewards.fer_accuracy_reward`."
        )
    return specs


def _existing(value: str | os.PathLike, what: str) -> Path:
    """A path as given (relative to the working directory), else relative to the repository root."""
    path = Path(value)
    if path.exists() or path.is_absolute():
        return path
    alt = REPO_ROOT / path
    return alt if alt.exists() else path


# --------------------------------------------------------------------------------------------------------------
# Data, model, trainer
# --------------------------------------------------------------------------------------------------------------


def _build_dataset(data: dict[str, Any], output_dir: Path, args):
    from trl_grpo.rlvr_data import (
        DEFAULT_IMAGE_SIZE,
        load_grpo_dataset,
        prepare_grpo_data,
        write_synthetic_rlvr,
    )

    unknown = sorted(set(data) - set(_DATA_KEYS))
    if unknown:
        raise UserError(f"data: unknown key(s) {unknown}; expected {list(_DATA_KEYS)}.")
    task = data.get("task", "fer")
    prepared = Path(data.get("prepared_dir") or output_dir / "grpo_data")
    with args.main_process_first(desc="GRPO data preparation"):
        if data.get("synthetic"):
            task = data["synthetic"]
            raw = write_synthetic_rlvr(
                output_dir / "synthetic_data", task=task, n=int(data.get("synthetic_rows", 8))
            )
            path, image_root = raw, raw.parent
        else:
            if not data.get("path"):
                raise UserError(
                    "data.path: give the RLVR JSON/JSONL to train on (or data.synthetic for a smoke run)."
                )
            path = _existing(data["path"], "data.path")
            image_root = _existing(data["image_root"], "data.image_root") if data.get("image_root") else None
        converted = prepare_grpo_data(
            path,
            prepared,
            image_root=image_root,
            task=task,
            image_size=data.get("image_size", DEFAULT_IMAGE_SIZE),
            skip_invalid=bool(data.get("skip_invalid", False)),
        )
    return load_grpo_dataset(converted)


def _build_model(model_cfg: dict[str, Any], output_dir: Path, args):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    unknown = sorted(set(model_cfg) - set(_MODEL_KEYS))
    if unknown:
        raise UserError(f"model: unknown key(s) {unknown}; expected {list(_MODEL_KEYS)}.")
    if model_cfg.get("tiny"):
        from llamafactory_ext.tiny_model import build_tiny_model

        with args.main_process_first(desc="tiny model"):
            name = str(build_tiny_model(output_dir / "tiny_model"))
    else:
        name = model_cfg.get("name_or_path")
        if not name:
            raise UserError("model.name_or_path: name the model to train (or model.tiny: true).")
        name = str(_existing(name, "model.name_or_path")) if Path(name).exists() else name
    kwargs: dict[str, Any] = {}
    dtype = model_cfg.get("dtype", "bfloat16")
    if dtype not in (None, "auto"):
        if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise UserError(f"model.dtype: expected a torch dtype name like bfloat16, got {dtype!r}.")
        dtype = getattr(torch, dtype)
    kwargs["dtype"] = dtype
    if model_cfg.get("attn_implementation"):
        kwargs["attn_implementation"] = model_cfg["attn_implementation"]
    quant = model_cfg.get("quantization")
    if quant:
        kwargs["quantization_config"] = _quantization_config(quant, model_cfg, dtype)
    model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    processor = AutoProcessor.from_pretrained(name, **(model_cfg.get("processor") or {}))
    return model, processor, _peft_config(model_cfg.get("lora"))


def _quantization_config(quant: str, model_cfg: dict[str, Any], dtype):
    from transformers import BitsAndBytesConfig

    if not model_cfg.get("lora"):
        raise UserError(
            "model.quantization needs model.lora: a quantized model is trained through LoRA (QLoRA)."
        )
    if quant == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype not in (None, "auto") else None,
        )
    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise UserError(f"model.quantization: expected 4bit, 8bit or null, got {quant!r}.")


def _peft_config(lora: dict[str, Any] | None):
    if not lora:
        return None
    from peft import LoraConfig

    if not isinstance(lora, dict):
        raise UserError("model.lora: expected {r, alpha, dropout, target_modules} or null.")
    unknown = sorted(set(lora) - {"r", "alpha", "dropout", "target_modules"})
    if unknown:
        raise UserError(f"model.lora: unknown key(s) {unknown}; expected r, alpha, dropout, target_modules.")
    r = int(lora.get("r", 64))
    return LoraConfig(
        r=r,
        lora_alpha=int(lora.get("alpha", 2 * r)),
        lora_dropout=float(lora.get("dropout", 0.05)),
        # Default: the language model's linear layers only (the vision tower's MLP shares their names).
        target_modules=lora.get("target_modules") or _LM_LINEAR,
        task_type="CAUSAL_LM",
    )


def build_trainer(cfg: dict[str, Any]):
    """Build the :class:`trl.GRPOTrainer` a resolved config describes (model, data, rewards, GRPOConfig)."""
    from trl import GRPOTrainer

    from trl_grpo.compat import ensure_warnings_issued

    args = build_grpo_config(cfg)
    output_dir = Path(args.output_dir)
    funcs = [func for func, _ in (load_reward(spec) for spec in _reward_specs(cfg))]
    dataset = _build_dataset(dict(cfg.get("data") or {}), output_dir, args)
    model, processor, peft_config = _build_model(dict(cfg.get("model") or {}), output_dir, args)
    ensure_warnings_issued(model)
    logger.info(
        "GRPO: %d rows, rewards %s with weights %s, G=%d, output %s",
        len(dataset),
        [f.__name__ for f in funcs],
        args.reward_weights,
        args.num_generations,
        output_dir,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
    )


def train(cfg: dict[str, Any]):
    """Train with a resolved config; save the model and the trainer state; return the trainer."""
    trainer = build_trainer(cfg)
    trainer.train()
    trainer.save_model(trainer.args.output_dir)
    trainer.save_state()
    return trainer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trl_grpo.train",
        description=__doc__.strip().splitlines()[0],
        epilog="Example: python -m trl_grpo.train --config recipes/unifer_grpo.yaml --smoke grpo.max_steps=3",
    )
    parser.add_argument("--config", required=True, type=Path, help="recipe YAML (recipes/unifer_grpo.yaml)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="apply the recipe's `smoke` overrides: tiny model, synthetic data, CPU",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. grpo.max_steps=2 data.path=x.json"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m trl_grpo.train``; returns the exit status (2 for a user error)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = resolve_config(args.config, smoke=args.smoke, overrides=args.overrides)
        train(cfg)
    except UserError as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
