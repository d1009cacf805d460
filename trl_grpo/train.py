"""GRPO on Qwen2.5-VL with TRL's own configuration: ``accelerate launch -m trl_grpo.train --config RECIPE``.

The recipe and the command line are parsed by TRL's :class:`~trl.TrlParser` into four dataclasses, exactly as
``trl grpo`` parses them, so a TRL GRPO config carries over and every field keeps its TRL name and validation:

- :class:`trl.GRPOConfig`: every training / generation field (``num_generations``, ``beta``, ``reward_weights``,
  ``use_vllm``, ``eval_strategy``, ``resume_from_checkpoint`` ...);
- :class:`trl.ModelConfig`: ``model_name_or_path``, ``dtype``, ``attn_implementation``, ``use_peft`` + ``lora_*``,
  ``load_in_4bit`` ...;
- :class:`trl.DatasetMixtureConfig`: ``datasets`` (a list of ``{path, name, data_dir, data_files, split, columns}``
  for ``datasets.load_dataset``) and ``test_split_size``;
- :class:`GRPOScriptArguments` (TRL's ``ScriptArguments`` + unitune's fields): ``dataset_name``, ``reward_funcs``
  (dotted paths, as in ``trl grpo``), ``reward_kwargs``, ``dataset_weights``, ``eval_datasets``,
  ``freeze_vision_tower``, ``freeze_projector``, ``image_min_pixels``/``image_max_pixels``, ``task``, and the smoke
  helpers ``tiny_model`` / ``synthetic_data``.

Precedence: recipe < ``--smoke`` < command line (``--max_steps 2``; ``None`` or ``null`` sets an optional field
to None). ``resume_from_checkpoint: true`` continues from the last ``checkpoint-*`` of ``output_dir`` (a fresh
start when there is none); a path resumes from that checkpoint.
"""

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import ScriptArguments
from trl.scripts.utils import DatasetConfig

from evaluators.errors import UserError

__all__ = [
    "GRPOScriptArguments",
    "SMOKE_ARGS",
    "build_trainer",
    "check_reward_signature",
    "freeze_vision",
    "load_datasets",
    "load_reward",
    "main",
    "make_parser",
    "parse_args",
    "resolve_checkpoint",
    "suppress_placeholders",
    "train",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
_LM_LINEAR = r"^(?!.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
_TASKS = ("fer", "hmer")
_LEGACY_SECTIONS = ("model", "data", "rewards", "grpo", "smoke")

#: What ``--smoke`` sets (after the recipe, before the command line): unitune's tiny offline Qwen2.5-VL,
#: 8 synthetic rows of the recipe's ``task``, CPU, float32, no vLLM / DeepSpeed / LoRA, 2 steps of G=2.
SMOKE_ARGS: tuple[str, ...] = (
    "--tiny_model", "true",
    "--synthetic_data", "true",
    "--synthetic_rows", "8",
    "--dtype", "float32",
    "--use_peft", "false",
    "--load_in_4bit", "false",
    "--load_in_8bit", "false",
    "--image_min_pixels", "None",
    "--image_max_pixels", "None",
    "--use_cpu", "true",
    "--bf16", "false",
    "--fp16", "false",
    "--deepspeed", "None",
    "--use_vllm", "false",
    "--gradient_checkpointing", "false",
    "--max_steps", "2",
    "--num_generations", "2",
    "--per_device_train_batch_size", "2",
    "--per_device_eval_batch_size", "2",
    "--gradient_accumulation_steps", "1",
    "--max_completion_length", "16",
    "--learning_rate", "1e-4",
    "--save_strategy", "no",
    "--eval_strategy", "no",
    "--report_to", "none",
    "--dataloader_num_workers", "0",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------


@dataclass
class GRPOScriptArguments(ScriptArguments):
    """TRL's ``ScriptArguments`` plus unitune's data, reward, freezing and smoke-run fields.

    Args:
        reward_funcs (`list[str]`): rewards by dotted import path (``trl_grpo.rewards.fer_accuracy_reward``) or a
            name from ``trl.rewards`` (``think_format_reward``); weights are GRPOConfig's ``reward_weights``.
        reward_kwargs (`dict`, *optional*): ``{dotted.path: {kwarg: value}}``; those entries of ``reward_funcs``
            are factories called with the kwargs (``make_hmer_edit_score_reward: {extract_mode: last-line}``).
            On the command line, a JSON/YAML mapping string.
        dataset_weights (`list[float]`, *optional*): one weight per ``datasets`` entry: how many times its rows
            appear per epoch (0.5 = a random half, 2 = every row twice); default 1 each.
        eval_datasets (`list[DatasetConfig]`): held-out sets (``{path, data_files, split, ...}``) scored during
            training with the same rewards (logged as ``eval_rewards/*``); they replace a ``test`` split.
        image_min_pixels / image_max_pixels (`int`, *optional*): the Qwen2.5-VL processor's pixel bounds.
        freeze_vision_tower (`bool`): keep the vision encoder's weights fixed (the projector still trains).
        freeze_projector (`bool`): keep the vision-to-language projector (``visual.merger``) fixed.
        task (`str`, *optional*): ``fer`` or ``hmer``: the recipe's task (the rows ``synthetic_data`` writes).
        tiny_model (`bool`): build unitune's tiny random Qwen2.5-VL in ``output_dir`` and train it (smoke runs).
        tiny_model_family (`str`): the tiny model's family: ``qwen2_5_vl`` (default), ``qwen3_vl`` or ``qwen3_5``.
        synthetic_data (`bool`): train on ``synthetic_rows`` generated rows of ``task`` instead of the dataset.
    """

    reward_funcs: list[str] = field(
        default_factory=list,
        metadata={"help": "Reward functions: dotted import paths or trl.rewards names."},
    )
    reward_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Factory kwargs per reward: {dotted.path: {kwarg: value}} (JSON/YAML on the CLI)."},
    )
    dataset_weights: list[float] | None = field(
        default=None,
        metadata={"help": "One weight per `datasets` entry: rows per epoch = weight x rows (0.5 = half)."},
    )
    eval_datasets: list[DatasetConfig] = field(
        default_factory=list,
        metadata={"help": "Held-out datasets ({path, data_files, split, ...}) scored during training."},
    )
    image_min_pixels: int | None = field(default=None, metadata={"help": "Processor min_pixels."})
    image_max_pixels: int | None = field(default=None, metadata={"help": "Processor max_pixels."})
    freeze_vision_tower: bool = field(default=False, metadata={"help": "Freeze the vision encoder."})
    freeze_projector: bool = field(default=False, metadata={"help": "Freeze the projector (visual.merger)."})
    task: str | None = field(default=None, metadata={"help": "fer or hmer (the task of synthetic rows)."})
    tiny_model: bool = field(default=False, metadata={"help": "Train unitune's tiny offline Qwen2.5-VL."})
    tiny_model_family: str = field(
        default="qwen2_5_vl", metadata={"help": "Family of the tiny model: qwen2_5_vl, qwen3_vl or qwen3_5."}
    )
    synthetic_data: bool = field(default=False, metadata={"help": "Train on generated rows of `task`."})
    synthetic_rows: int = field(default=8, metadata={"help": "Number of synthetic rows."})

    def __post_init__(self):
        if isinstance(self.reward_kwargs, str):
            try:
                self.reward_kwargs = yaml.safe_load(self.reward_kwargs)
            except yaml.YAMLError as err:
                raise UserError(f"reward_kwargs: not a JSON/YAML mapping ({err}).") from None
        if self.reward_kwargs is not None and not (
            isinstance(self.reward_kwargs, dict)
            and all(isinstance(v, dict) for v in self.reward_kwargs.values())
        ):
            raise UserError(
                f"reward_kwargs: expected {{dotted.path: {{kwarg: value}}}}, got {self.reward_kwargs!r}."
            )
        for name in self.reward_kwargs or {}:
            if name not in self.reward_funcs:
                raise UserError(f"reward_kwargs: {name!r} is not one of reward_funcs {self.reward_funcs}.")
        from llamafactory_ext.tiny_model import TINY_BUILDERS

        if self.tiny_model_family not in TINY_BUILDERS:
            raise UserError(
                f"tiny_model_family: expected one of {list(TINY_BUILDERS)}, got {self.tiny_model_family!r}."
            )
        if self.task is not None and self.task not in _TASKS:
            raise UserError(f"task: expected one of {list(_TASKS)}, got {self.task!r}.")
        self.eval_datasets = [DatasetConfig(**d) if isinstance(d, dict) else d for d in self.eval_datasets]
        if self.dataset_weights is not None and any(
            not isinstance(w, (int, float)) or w < 0 for w in self.dataset_weights
        ):
            raise UserError(f"dataset_weights: expected non-negative numbers, got {self.dataset_weights}.")


def make_parser():
    """TRL's parser over ``(GRPOScriptArguments, GRPOConfig, ModelConfig, DatasetMixtureConfig)``."""
    from trl import DatasetMixtureConfig, GRPOConfig, ModelConfig, TrlParser

    parser = TrlParser(
        (GRPOScriptArguments, GRPOConfig, ModelConfig, DatasetMixtureConfig),
        prog="python -m trl_grpo.train",
        description=__doc__.strip().splitlines()[0],
        epilog="Example: python -m trl_grpo.train --config recipes/unifer_grpo.yaml --smoke --max_steps 3",
    )
    _accept_none(parser)
    return parser


def _accept_none(parser) -> None:
    """Let ``--field None`` (or ``null``) set an optional single-valued field to None, as YAML ``null`` does.

    A field whose default is the string ``"none"`` keeps it as a word: ``--report_to none`` means "no
    integration" to transformers, which refuses ``None`` there (transformers 5 lists it as ``[None]``).
    """
    import dataclasses
    import typing

    optional = set()
    for dataclass_type in parser.dataclass_types:
        says_none = {f.name for f in dataclasses.fields(dataclass_type) if f.default == "none"}
        for name, hint in typing.get_type_hints(dataclass_type).items():
            if type(None) in typing.get_args(hint) and name not in says_none:
                optional.add(name)
    for action in parser._actions:
        if action.dest in optional and action.type is not None and action.nargs in (None, "?"):
            action.type = _none_or(action.type)


def _none_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text in ("None", "none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _config_path(argv: list[str]) -> Path | None:
    """The ``--config`` recipe; ``recipes/...`` falls back to the shipped recipes (``argv`` is updated)."""
    from llamafactory_ext.assets import find_existing

    if "--config" not in argv:
        return None
    index = argv.index("--config")
    if index + 1 >= len(argv):
        raise UserError("--config: expected a recipe path after it.")
    path = find_existing(argv[index + 1])
    argv[index + 1] = str(path)
    return path


def _read_recipe(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"--config {path}: no such file.")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"--config {path}: invalid YAML ({err}).") from None
    if not isinstance(cfg, dict):
        raise UserError(f"--config {path}: expected a mapping of fields, got {type(cfg).__name__}.")
    legacy = [k for k in _LEGACY_SECTIONS if isinstance(cfg.get(k), (dict, list))]
    if legacy:
        raise UserError(
            f"--config {path}: sections {legacy} are the old trl_grpo layout; recipes are now flat TRL configs "
            "(GRPOConfig + ModelConfig + script fields): move grpo.* keys to the top level, model.name_or_path "
            "-> model_name_or_path, rewards -> reward_funcs + reward_weights, data.path -> convert it with "
            "`unitune data fer-rlvr` and set dataset_name (see recipes/unifer_grpo.yaml)."
        )
    return cfg


def parse_args(argv: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """Parse ``argv`` (``--config`` recipe, ``--smoke``, ``--field value`` ...) with TRL's parser.

    Returns:
        `tuple`: ``(script_args, training_args, model_args, mixture_args)``.

    Raises:
        UserError: a missing or invalid recipe, an unknown field, an old-style override, or a value TRL rejects.
    """
    argv = list(argv)
    smoke = "--smoke" in argv
    argv = [a for a in argv if a != "--smoke"]
    legacy = [a for a in argv if "=" in a and not a.startswith("-") and a.split("=")[0].count(".") == 1]
    if legacy:
        key, _, value = legacy[0].partition("=")
        raise UserError(
            f"override {legacy[0]!r}: dotted overrides are gone; use TRL's form --{key.split('.')[1]} {value}."
        )
    config = _config_path(argv)
    recipe = _read_recipe(config) if config is not None else {}
    if smoke:
        stem = config.stem if config is not None else "grpo"
        argv = [*SMOKE_ARGS, "--output_dir", f"saves/smoke/{stem}", *argv]
    from trl_grpo.preflight import effective_fields, machine_problems

    fields = effective_fields(recipe, argv)
    deepspeed = fields.get("deepspeed")
    if isinstance(deepspeed, str) and deepspeed not in ("None", "null") and not Path(deepspeed).exists():
        from llamafactory_ext.assets import asset_path

        shipped = asset_path(deepspeed)  # recipes/deepspeed/*.json from any working directory
        if shipped is not None:
            argv = [*argv, "--deepspeed", str(shipped)]
    try:
        *parsed, remaining = make_parser().parse_args_and_config(argv, return_remaining_strings=True)
    except (ValueError, ImportError) as err:  # TRL's / transformers' own validation (__post_init__)
        # bf16 without a GPU or a missing DeepSpeed already fail here: name every override this machine needs
        problems = machine_problems(fields)
        if problems:
            raise UserError("; ".join(problems) + " (or run the CPU smoke test: --smoke).") from None
        raise UserError(f"config: {err}") from None
    if remaining:
        raise UserError(
            f"unknown field(s) {[r for r in remaining if r.startswith('--')] or remaining}: not a GRPOConfig, "
            "ModelConfig, DatasetMixtureConfig or GRPOScriptArguments field (python -m trl_grpo.train --help)."
        )
    return tuple(parsed)


# --------------------------------------------------------------------------------------------------------------
# Rewards, checkpoints
# --------------------------------------------------------------------------------------------------------------


def load_reward(name: str, kwargs: dict[str, Any] | None = None) -> Callable[..., list]:
    """Import one reward by dotted path (or a ``trl.rewards`` name); with ``kwargs`` call it as a factory.

    Example:

    >>> load_reward("trl_grpo.rewards.fer_accuracy_reward").__name__
    'fer_accuracy_reward'
    >>> load_reward("trl_grpo.rewards.make_hmer_edit_score_reward", {"extract_mode": "raw"}).__name__
    'hmer_edit_score_reward_raw'
    """
    import importlib

    module_name, _, attr = name.rpartition(".")
    module_name = module_name or "trl.rewards"
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(f"reward_funcs: cannot import {name!r} ({err}).") from None
    if kwargs is not None:
        if not callable(obj):
            raise UserError(f"reward_kwargs of {name!r}: it is not callable, so it cannot take kwargs.")
        try:
            obj = obj(**kwargs)
        except (TypeError, ValueError) as err:
            raise UserError(f"reward_kwargs of {name!r}: {err}") from None
    if not callable(obj) or not getattr(obj, "__name__", None):
        raise UserError(f"reward_funcs: {name!r} is not a callable with a __name__.")
    check_reward_signature(obj, name)
    return obj


def check_reward_signature(func: Callable[..., Any], name: str) -> None:
    """Refuse a callable TRL could not call as a reward: it needs a ``completions`` keyword and ``**kwargs``.

    TRL calls ``func(prompts=..., completions=..., completion_ids=..., **dataset_columns)``, so anything
    else (``os.system``, a class, a function of one argument) would fail mid-training or do something else.

    Example:

    >>> import os
    >>> check_reward_signature(os.system, "os.system")
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: reward_funcs: 'os.system' is not a reward function: TRL calls it as f(completions=..., prompts=..., **columns), so it needs a `completions` parameter and **kwargs (its signature: (command)).
    """
    import inspect

    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None
    params = signature.parameters if signature is not None else {}
    completions = params.get("completions")
    ok = (
        completions is not None
        and completions.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    )
    if not ok or inspect.isclass(func):
        shown = str(signature) if signature is not None else "unknown"
        raise UserError(
            f"reward_funcs: {name!r} is not a reward function: TRL calls it as f(completions=..., prompts=..., "
            f"**columns), so it needs a `completions` parameter and **kwargs (its signature: {shown})."
        )


def resolve_checkpoint(value: Any, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint ``resume_from_checkpoint`` names: ``true`` = the last one in ``output_dir`` (or ``None``).

    Example:

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> resolve_checkpoint(True, out) is None  # nothing saved yet: a fresh start
    True
    >>> (out / "checkpoint-2").mkdir(); (out / "checkpoint-10").mkdir()
    >>> pathlib.Path(resolve_checkpoint("true", out)).name
    'checkpoint-10'
    >>> resolve_checkpoint(False, out) is None
    True
    """
    from transformers.trainer_utils import get_last_checkpoint

    if value is None or value is False or str(value).lower() in ("false", "no", ""):
        return None
    if value is True or str(value).lower() in ("true", "yes", "last"):
        last = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
        if last is None:
            logger.info("resume_from_checkpoint: no checkpoint in %s yet, starting from step 0", output_dir)
        return last
    path = Path(str(value))
    if not path.is_dir():
        raise UserError(f"resume_from_checkpoint: {path} is not a checkpoint folder.")
    return str(path)


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


def _load_one(cfg, what: str):
    import datasets

    try:
        ds = datasets.load_dataset(
            path=cfg.path, name=cfg.name, data_dir=cfg.data_dir, data_files=cfg.data_files, split=cfg.split
        )
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise UserError(f"{what}: cannot load {cfg.path!r} ({type(err).__name__}: {err}).") from None
    if cfg.columns is not None:
        ds = ds.select_columns(cfg.columns)
    return ds


def _weighted(ds, weight: float, seed: int):
    """``round(weight * len(ds))`` rows: a seeded random subset below 1, whole repeats plus a subset above."""
    n = len(ds)
    k = round(weight * n)
    order = ds.shuffle(seed=seed)
    if k <= n:
        return order.select(range(k))
    return order.select([i % n for i in range(k)])


def _concat(parts: list, names: list[str], what: str):
    import datasets

    first = parts[0].features
    for part, name in zip(parts[1:], names[1:], strict=True):
        if part.features != first:
            cols = sorted(k for k in set(first) | set(part.features) if first.get(k) != part.features.get(k))
            raise UserError(
                f"{what}: {name!r} has other columns or types than {names[0]!r} (differ: {cols}); give each "
                "entry `columns:` to keep the common ones, or build both with unitune data fer-rlvr/hmer-rlvr."
            )
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def load_datasets(script_args, mixture_args, seed: int = 42):
    """Return ``(train, eval)`` datasets: ``datasets`` (weighted mixture) or ``dataset_name``, and the eval set.

    The eval set is, in order: ``eval_datasets``; the ``test_split_size`` share of the mixture; the
    ``dataset_test_split`` split of ``dataset_name`` when it has one; else ``None``.
    """
    import datasets

    eval_ds = None
    if mixture_args.datasets:
        if script_args.dataset_name:
            logger.warning("both `datasets` and `dataset_name` are set: `datasets` is used (as in trl grpo).")
        if mixture_args.streaming:
            raise UserError(
                "streaming: GRPOTrainer does not support iterable datasets; set streaming: false."
            )
        n = len(mixture_args.datasets)
        weights = script_args.dataset_weights or [1.0] * n
        if len(weights) != n:
            raise UserError(f"dataset_weights: {len(weights)} weight(s) for {n} `datasets` entries.")
        names = [cfg.path for cfg in mixture_args.datasets]
        parts = [
            _weighted(_load_one(cfg, f"datasets[{i}]"), w, seed)
            if w != 1
            else _load_one(cfg, f"datasets[{i}]")
            for i, (cfg, w) in enumerate(zip(mixture_args.datasets, weights, strict=True))
        ]
        train_ds = _concat(parts, names, "datasets")
        logger.info(
            "dataset mixture: %s -> %d rows", dict(zip(names, map(len, parts), strict=True)), len(train_ds)
        )
        if mixture_args.test_split_size is not None:
            split = train_ds.train_test_split(test_size=mixture_args.test_split_size, seed=seed)
            train_ds, eval_ds = split["train"], split["test"]
    elif script_args.dataset_name:
        if script_args.dataset_weights:
            raise UserError("dataset_weights: weights apply to `datasets` entries, not to dataset_name.")
        try:
            loaded = datasets.load_dataset(script_args.dataset_name, name=script_args.dataset_config)
        except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
            raise UserError(
                f"dataset_name: cannot load {script_args.dataset_name!r} ({type(err).__name__}: {err})."
            ) from None
        if script_args.dataset_train_split not in loaded:
            raise UserError(
                f"dataset_train_split: {script_args.dataset_train_split!r} is not a split of "
                f"{script_args.dataset_name!r} (splits: {list(loaded)})."
            )
        train_ds = loaded[script_args.dataset_train_split]
        eval_ds = loaded.get(script_args.dataset_test_split)
    else:
        raise UserError(
            "dataset_name or datasets: name the data to train on (or --smoke for synthetic rows)."
        )
    if script_args.eval_datasets:
        names = [cfg.path for cfg in script_args.eval_datasets]
        eval_ds = _concat(
            [_load_one(cfg, f"eval_datasets[{i}]") for i, cfg in enumerate(script_args.eval_datasets)],
            names,
            "eval_datasets",
        )
    return train_ds, eval_ds


def _write_synthetic(script_args, output_dir: Path) -> str:
    from trl_grpo.rlvr_data import convert_records, write_synthetic_rlvr

    task = script_args.task or "fer"
    folder = output_dir / "synthetic_data"
    for split, n, seed in (("train", script_args.synthetic_rows, 0), ("test", 4, 1)):
        raw = write_synthetic_rlvr(folder / f"raw_{split}", task=task, n=n, seed=seed)
        from evaluators.io_utils import read_records

        convert_records(read_records(raw), folder, image_root=raw.parent, task=task, split=split)
    return str(folder)


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


def freeze_vision(model, tower: bool = False, projector: bool = False) -> int:
    """Set ``requires_grad=False`` on the vision encoder and/or its projector (``visual.merger``; Qwen3-VL's
    DeepStack mergers too: the family's ``projector_prefixes``).

    Returns:
        `int`: the number of parameter tensors frozen.

    Raises:
        UserError: the model has no ``visual`` module (Qwen2-VL / Qwen2.5-VL have one).
    """
    if not (tower or projector):
        return 0
    visual = getattr(getattr(model, "model", None), "visual", None) or getattr(model, "visual", None)
    if visual is None:
        raise UserError(
            f"freeze_vision_tower/freeze_projector: {type(model).__name__} has no `visual` module "
            "(expected a Qwen2-VL / Qwen2.5-VL model)."
        )
    from evaluators.model_family import DEFAULT_FAMILY, family_for_model_type

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        prefixes = family_for_model_type(model_type).projector_prefixes
    except UserError:
        prefixes = DEFAULT_FAMILY.projector_prefixes
    frozen = 0
    for name, param in visual.named_parameters():
        is_projector = name.startswith(prefixes)
        if (is_projector and projector) or (not is_projector and tower):
            param.requires_grad_(False)
            frozen += 1
    return frozen


def suppress_placeholders(training_args, tokenizer, family) -> list[int]:
    """Keep the family's image / video placeholder tokens out of sampled completions (transformers generation).

    TRL scores a completion by running the model on prompt + completion with the prompt's images; a completion
    holding an ``<|image_pad|>`` makes transformers count more image tokens than image features and refuse the
    batch ("Image features and image tokens do not match"). Random tiny models sample them, trained ones
    rarely; no answer needs them. Their ids join ``generation_kwargs["suppress_tokens"]`` (the user's own
    entries are kept). vLLM's ``SamplingParams`` has no ``suppress_tokens``: with ``use_vllm`` nothing changes.

    Returns:
        `list[int]`: the ids added.
    """
    if training_args.use_vllm:
        return []
    ids = [tokenizer.convert_tokens_to_ids(t) for t in (family.image_token, family.video_token)]
    ids = [i for i in ids if i is not None and i != tokenizer.unk_token_id]
    kwargs = dict(training_args.generation_kwargs or {})
    existing = list(kwargs.get("suppress_tokens") or [])
    added = [i for i in ids if i not in existing]
    kwargs["suppress_tokens"] = existing + added
    training_args.generation_kwargs = kwargs
    return added


def _load_model(script_args, training_args, model_args):
    import torch
    from transformers import AutoProcessor
    from trl import get_kbit_device_map, get_peft_config, get_quantization_config

    from evaluators.model_family import load_hf_model, model_family

    name = model_args.model_name_or_path
    if script_args.tiny_model:
        from llamafactory_ext.tiny_model import build_tiny

        with training_args.main_process_first(desc="tiny model"):
            out = Path(training_args.output_dir) / "tiny_model"
            name = str(build_tiny(out, script_args.tiny_model_family))
    if not name:
        raise UserError(
            "model_name_or_path: name the model to train (or --smoke for the tiny offline model)."
        )
    common: dict[str, Any] = {"revision": model_args.model_revision}
    if model_args.trust_remote_code:
        common["trust_remote_code"] = True
    kwargs: dict[str, Any] = dict(common)
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = model_args.dtype  # a name: transformers and the reference model read it as such
    kwargs.update(training_args.model_init_kwargs or {})
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        if not model_args.use_peft:
            raise UserError(
                "load_in_4bit/load_in_8bit need use_peft: true (a quantized model trains through LoRA)."
            )
        dtype = kwargs.get("dtype")
        quantization.bnb_4bit_compute_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        kwargs.update(quantization_config=quantization, device_map=get_kbit_device_map())
    model = load_hf_model(name, **kwargs)  # checks the family (Qwen2.5-VL, Qwen3-VL) and its transformers
    # GRPOTrainer loads its reference model (beta > 0, no PEFT) with model_init_kwargs: same dtype/attention.
    # (TRL then warns that model_init_kwargs "will be ignored": that is about the policy, loaded here.)
    training_args.model_init_kwargs = {
        k: v for k, v in kwargs.items() if k not in ("quantization_config", "device_map")
    }
    pixels = model_family(name).processor_pixel_kwargs(
        script_args.image_min_pixels, script_args.image_max_pixels
    )
    processor = AutoProcessor.from_pretrained(name, **common, **pixels)
    suppress_placeholders(training_args, processor.tokenizer, model_family(name))
    frozen = freeze_vision(model, script_args.freeze_vision_tower, script_args.freeze_projector)
    if frozen:
        logger.info("froze %d vision parameter tensors (tower=%s, projector=%s)", frozen,
                    script_args.freeze_vision_tower, script_args.freeze_projector)  # fmt: skip
    peft_config = get_peft_config(model_args)
    if peft_config is not None and model_args.lora_target_modules is None:
        peft_config.target_modules = _LM_LINEAR  # the language model's linears (the vision MLP shares names)
    return model, processor, peft_config


# --------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------


def build_trainer(script_args, training_args, model_args, mixture_args):
    """Build the :class:`trl.GRPOTrainer` the parsed configuration describes."""
    from trl import GRPOTrainer

    from trl_grpo.compat import ensure_warnings_issued

    if not script_args.reward_funcs:
        raise UserError("reward_funcs: list at least one, e.g. trl_grpo.rewards.fer_accuracy_reward.")
    kwargs = script_args.reward_kwargs or {}
    funcs = [load_reward(name, kwargs.get(name)) for name in script_args.reward_funcs]
    weights = training_args.reward_weights
    if weights is not None and len(weights) != len(funcs):
        raise UserError(f"reward_weights: {len(weights)} weight(s) for {len(funcs)} reward_funcs.")
    output_dir = Path(training_args.output_dir)
    if script_args.synthetic_data:
        with training_args.main_process_first(desc="synthetic data"):
            script_args.dataset_name = _write_synthetic(script_args, output_dir)
        mixture_args.datasets, script_args.eval_datasets = [], []
    with training_args.main_process_first(desc="datasets"):
        train_ds, eval_ds = load_datasets(script_args, mixture_args, seed=training_args.seed)
    if training_args.eval_strategy == "no":
        eval_ds = None
    elif eval_ds is None:
        raise UserError(
            f"eval_strategy={training_args.eval_strategy.value}: no eval set; give eval_datasets, "
            "test_split_size, or a dataset_name with a `test` split (unitune data fer-rlvr --eval FILE)."
        )
    model, processor, peft_config = _load_model(script_args, training_args, model_args)
    ensure_warnings_issued(model)
    logger.info(
        "GRPO: %d train rows, %s eval rows, rewards %s, weights %s, G=%d, output %s",
        len(train_ds),
        len(eval_ds) if eval_ds is not None else "no",
        [f.__name__ for f in funcs],
        weights,
        training_args.num_generations,
        output_dir,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=processor,
        peft_config=peft_config,
    )


def train(script_args, training_args, model_args, mixture_args):
    """Train (resuming as ``resume_from_checkpoint`` says); save the model and the trainer state; return the trainer."""
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    trainer = build_trainer(script_args, training_args, model_args, mixture_args)
    if checkpoint is not None:
        if not any((Path(checkpoint) / n).exists() for n in ("optimizer.pt", "optimizer.bin")) and not list(
            Path(checkpoint).glob("global_step*")
        ):
            logger.warning(
                "resume_from_checkpoint: %s holds no optimizer state (save_only_model: true?); "
                "the weights and the step are restored, the optimizer starts afresh.",
                checkpoint,
            )
        logger.info("resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trl_grpo.train``; returns the exit status (2 for a user error)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        parsed = parse_args(sys.argv[1:] if argv is None else argv)
        from trl_grpo.preflight import check_machine

        _, training_args, model_args, _ = parsed
        check_machine(  # one line naming every override (vLLM, flash-attn) before any model is loaded
            {
                "deepspeed": training_args.deepspeed,
                "bf16": training_args.bf16,
                "use_cpu": training_args.use_cpu,
                "use_vllm": training_args.use_vllm,
                "attn_implementation": model_args.attn_implementation,
            }
        )
        train(*parsed)
    except UserError as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
