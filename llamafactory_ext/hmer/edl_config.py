"""The YAML configuration of ``unitune edl run|plan``: one file from the labelled corpus to the EDL sets.

Keys (``recipes/unimumer_edl.yaml`` is a commented example; relative paths are taken from the working
directory, as LLaMA-Factory does):

- ``input`` (required): the labelled corpus, any input of ``unitune data hmer`` (sharegpt or flat JSON/JSONL,
  ``caption.txt``); ``image_dir``: the image folder of a ``caption.txt``.
- ``name`` (``local_crohme_train``): prefix of the fold datasets and of the outputs ``NAME_error_find`` /
  ``NAME_error_fix``; ``out_dir`` (``runs/edl/NAME``): where every step writes.
- ``k`` (3, upstream's), ``seed`` (0), ``fold_tasks`` (``[vanilla]``): the folds and what fold models learn.
- ``model_name_or_path`` (required): the base model every fold model starts from.
- ``recipe`` (required): any LLaMA-Factory training YAML; ``train`` (mapping): keys applied over it.
  ``dataset``, ``dataset_dir``, ``output_dir`` and ``model_name_or_path`` are set per fold.
- ``export_recipe`` (``recipes/unimumer_merge_lora.yaml``) and ``export`` (mapping): how (Q)LoRA fold models
  are merged before sampling (``finetuning_type`` other than ``full``/``freeze``).
- ``sampling``: ``n`` (4), ``temperature`` (1.0), ``top_p`` (0.8), ``top_k`` (50), ``max_new_tokens``
  (2048), ``seed`` (0), as ``unitune infer`` options; ``shards`` (1): sampling shards per fold;
  ``infer_args`` (list): more ``unitune infer`` options (``--backend vllm``, ``--tensor-parallel-size 2``...).
- ``dataset_dir`` (``dataset_info``): where the EDL sets are registered; ``register`` (true);
  ``error_find_name`` / ``error_fix_name`` (default ``NAME_error_find`` / ``NAME_error_fix``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evaluators.errors import UserError

__all__ = ["DEFAULT_SAMPLING", "EdlConfig", "load_config"]

#: Sampling of the fold models. The paper gives no EDL decoding settings; top-p 0.8 / top-k 50 / 2048 tokens
#: are upstream's HMER inference settings, temperature 1.0 and n = 4 are ours (diverse wrong predictions).
DEFAULT_SAMPLING: dict[str, Any] = {
    "n": 4,
    "temperature": 1.0,
    "top_p": 0.8,
    "top_k": 50,
    "max_new_tokens": 2048,
    "seed": 0,
}

_KEYS = {
    "input",
    "image_dir",
    "name",
    "out_dir",
    "k",
    "seed",
    "fold_tasks",
    "model_name_or_path",
    "recipe",
    "train",
    "export_recipe",
    "export",
    "sampling",
    "shards",
    "infer_args",
    "dataset_dir",
    "register",
    "error_find_name",
    "error_fix_name",
}


@dataclass
class EdlConfig:
    """A checked ``unitune edl`` configuration (see the module docstring for the keys)."""

    input: Path
    model_name_or_path: str
    recipe: Path
    name: str = "local_crohme_train"
    out_dir: Path | None = None
    image_dir: Path | None = None
    k: int = 3
    seed: int = 0
    fold_tasks: tuple[str, ...] = ("vanilla",)
    train: dict[str, Any] = field(default_factory=dict)
    export_recipe: Path = Path("recipes/unimumer_merge_lora.yaml")
    export: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SAMPLING))
    shards: int = 1
    infer_args: tuple[str, ...] = ()
    dataset_dir: Path = Path("dataset_info")
    register: bool = True
    error_find_name: str | None = None
    error_fix_name: str | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.out_dir is None:
            self.out_dir = Path("runs/edl") / self.name
        self.error_find_name = self.error_find_name or f"{self.name}_error_find"
        self.error_fix_name = self.error_fix_name or f"{self.name}_error_fix"


def _need(raw: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserError(f"{where}: `{key}` must be a {names}, got {value!r}.")
    return value


def load_config(path: str | os.PathLike) -> EdlConfig:
    """Read and check an EDL pipeline YAML (``yaml.safe_load``).

    Raises:
        UserError: missing file, unknown or missing key, or a value of the wrong type.

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "edl.yaml"
    >>> _ = p.write_text("input: t.json\\nmodel_name_or_path: m\\nrecipe: r.yaml\\nk: 2\\nsampling: {n: 2}\\n")
    >>> c = load_config(p)
    >>> c.k, c.sampling["n"], c.sampling["temperature"], c.error_fix_name, c.out_dir.as_posix()
    (2, 2, 1.0, 'local_crohme_train_error_fix', 'runs/edl/local_crohme_train')
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CONFIG {path}: no such file.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"CONFIG {path}: not valid YAML ({err}).") from None
    if not isinstance(raw, dict):
        raise UserError(f"CONFIG {path}: expected a YAML mapping, got {type(raw).__name__}.")
    where = f"CONFIG {path}"
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_KEYS))}).")
    for key in ("input", "model_name_or_path", "recipe"):
        if raw.get(key) in (None, ""):
            raise UserError(f"{where}: `{key}` is required.")
    kwargs: dict[str, Any] = {"source": path}
    for key in ("input", "recipe", "export_recipe", "out_dir", "image_dir", "dataset_dir"):
        if raw.get(key) is not None:
            kwargs[key] = Path(str(_need(raw, key, str, where)))
    for key in ("model_name_or_path", "name", "error_find_name", "error_fix_name"):
        if raw.get(key) is not None:
            kwargs[key] = str(_need(raw, key, str, where))
    for key in ("k", "seed", "shards"):
        if key in raw:
            kwargs[key] = _need(raw, key, int, where)
    if kwargs.get("k", 3) < 2:
        raise UserError(f"{where}: `k` must be at least 2, got {kwargs['k']}.")
    if kwargs.get("shards", 1) < 1:
        raise UserError(f"{where}: `shards` must be at least 1, got {kwargs['shards']}.")
    if "register" in raw:
        kwargs["register"] = _need(raw, "register", bool, where)
    for key in ("train", "export"):
        if raw.get(key) is not None:
            kwargs[key] = dict(_need(raw, key, dict, where))
    if raw.get("fold_tasks") is not None:
        tasks = _need(raw, "fold_tasks", list, where)
        kwargs["fold_tasks"] = tuple(str(t) for t in tasks)
    if raw.get("infer_args") is not None:
        kwargs["infer_args"] = tuple(str(a) for a in _need(raw, "infer_args", list, where))
    sampling = dict(DEFAULT_SAMPLING)
    if raw.get("sampling") is not None:
        given = _need(raw, "sampling", dict, where)
        unknown = sorted(set(given) - set(DEFAULT_SAMPLING))
        if unknown:
            raise UserError(
                f"{where}: unknown sampling key {unknown[0]!r} (allowed: {', '.join(DEFAULT_SAMPLING)}; "
                "other `unitune infer` options go in `infer_args`)."
            )
        sampling.update(given)
    if not isinstance(sampling["n"], int) or sampling["n"] < 1:
        raise UserError(f"{where}: `sampling.n` must be a positive integer, got {sampling['n']!r}.")
    if sampling["n"] > 1 and not float(sampling["temperature"]) > 0:
        raise UserError(
            f"{where}: `sampling.n` > 1 needs `sampling.temperature` > 0 (greedy samples repeat)."
        )
    kwargs["sampling"] = sampling
    return EdlConfig(**kwargs)
