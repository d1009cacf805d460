"""Split an HMER corpus into k folds for Error-Driven Learning: fold data, dataset_info entries, recipes.

Upstream collects (gt, wrong prediction) pairs by k-fold cross-validation (k = 3): fold model *i* trains on
every fold but *i*, then samples several predictions per held-out image of fold *i*; the wrong ones become
the ``error_find`` / ``error_fix`` data. ``unitune data hmer-folds INPUT --k 3 --out-dir DIR`` writes, for each
fold *i*: ``DIR/NAME_fold{i}_train.json`` (the training tasks of the other folds, ``--tasks``),
``DIR/NAME_fold{i}_heldout.json`` (vanilla records of fold *i*, to run inference on), the dataset_info entries
``NAME_fold{i}_train`` / ``NAME_fold{i}_heldout``, and a LLaMA-Factory SFT recipe ``DIR/recipes/NAME_fold{i}.yaml``
(from ``--base-recipe``, default ``recipes/unimumer_crohme.yaml`` when present, with ``dataset``,
``dataset_dir`` and ``output_dir`` replaced), plus
``DIR/folds.json`` (the manifest: seed, sizes, ids per fold). Assignment is a seeded shuffle, so a run is
reproducible. The files of a run are one output set (:class:`~evaluators.outputs.OutputSet`): a killed run leaves
the previous folds or the new ones, and the fold files an earlier run's ``folds.json`` lists that this run does not
rewrite (it had a larger k) are removed with the publication; the dataset_info entries are written after it, and
the entries of those removed folds are unregistered (only while they still name the removed file). Image paths are written so LLaMA-Factory finds them from the recipes' ``dataset_dir`` (relative to
it when the image lies inside it, else absolute), wherever training runs. Afterwards: train each recipe, sample ``n`` predictions per held-out image with ``unitune infer``,
concatenate the prediction JSONL files and run ``unitune data hmer --task error_find INPUT OUT --predictions P``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import yaml

from evaluators.cli import add_out_dir
from evaluators.errors import UserError
from evaluators.io_utils import atomic_write_json, atomic_write_text
from evaluators.outputs import OutputSet

from .build import BuildStats, iter_build, write_sharegpt
from .prompts import TASKS
from .records import HmerSample, iter_samples

__all__ = ["DEFAULT_RECIPE", "PROJECT_RECIPE", "add_arguments", "assign_folds", "make_folds", "run"]

logger = logging.getLogger(__name__)

#: The project's full-SFT recipe, the default ``--base-recipe`` (relative to the working directory).
PROJECT_RECIPE = "recipes/unimumer_crohme.yaml"

#: SFT settings used when no ``--base-recipe`` is given (LLaMA-Factory 0.9.5 keys; full fine-tuning like upstream).
DEFAULT_RECIPE: dict[str, Any] = {
    "model_name_or_path": "Qwen/Qwen2.5-VL-3B-Instruct",
    "image_max_pixels": 262144,
    "trust_remote_code": False,
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "full",
    "freeze_vision_tower": True,
    "template": "qwen2_vl",
    "cutoff_len": 2048,
    "overwrite_cache": True,
    "preprocessing_num_workers": 16,
    "logging_steps": 10,
    "save_strategy": "epoch",
    "plot_loss": True,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "learning_rate": 1.0e-5,
    "num_train_epochs": 1.0,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "bf16": True,
}


def assign_folds(n: int, k: int, seed: int = 0) -> list[int]:
    """Fold of each of ``n`` records: a seeded shuffle dealt round-robin (sizes differ by at most one).

    Example:

    >>> folds = assign_folds(10, 3, seed=0)
    >>> sorted(folds.count(i) for i in range(3))
    [3, 3, 4]
    >>> folds == assign_folds(10, 3, seed=0)
    True
    """
    if k < 2:
        raise UserError(f"--k must be at least 2, got {k}.")
    if n < k:
        raise UserError(f"{n} records cannot be split into {k} folds.")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    folds = [0] * n
    for position, index in enumerate(order):
        folds[index] = position % k
    return folds


def _build(samples: list[HmerSample], task: str, image_root: Path, media_dir: Path) -> list[dict]:
    stats = BuildStats()
    built = iter_build(
        samples, task, image_root=image_root, check_images=False, media_dir=media_dir, stats=stats
    )
    out = [record for record, _ in built if record is not None]
    if stats.rejected:
        logger.warning(
            "%s: %d records rejected while building fold data (%s)", task, stats.rejected, dict(stats.reasons)
        )
    return out


def _earlier_folds(out_dir: Path) -> tuple[list[str], dict[str, str]]:
    """What ``out_dir/folds.json`` (an earlier run) lists: its fold data and recipes, relative to ``out_dir``,
    and its dataset names with their data files.

    Only files directly in ``out_dir`` or ``out_dir/recipes`` are named, so a manifest cannot point the
    removal (or an unregistration) anywhere else.
    """
    path = out_dir / "folds.json"
    if not path.is_file():
        return [], {}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        entries = [f for f in earlier["folds"] if isinstance(f, dict)]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        logger.warning("%s: not a folds manifest; the files it may list are left alone.", path)
        return [], {}
    names, datasets = [], {}
    for entry in entries:
        for key, below, dataset_key in (
            ("train_file", "", "train"),
            ("heldout_file", "", "heldout"),
            ("recipe", "recipes/", None),
        ):
            value = entry.get(key)
            if not isinstance(value, str):
                continue
            listed = Path(value)
            if listed.parent.resolve() == (out_dir / below).resolve():
                names.append(below + listed.name)
                dataset = entry.get(dataset_key) if dataset_key else None
                if isinstance(dataset, str):
                    datasets[dataset] = str(out_dir / listed.name)
    return names, datasets


def make_folds(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    k: int = 3,
    name: str = "local_crohme_train",
    tasks: tuple[str, ...] = ("vanilla",),
    seed: int = 0,
    dataset_dir: str | os.PathLike | None = "dataset_info",
    base_recipe: dict[str, Any] | None = None,
    image_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the fold files, register them and write one recipe per fold; return the manifest.

    Args:
        input_path: any input of :func:`llamafactory_ext.hmer.records.iter_samples`.
        out_dir: where fold files, ``recipes/`` and ``folds.json`` go.
        k (`int`, defaults to 3): number of folds.
        name (`str`, defaults to ``"local_crohme_train"``): prefix of file and dataset names (``local_*``, the
            names of self-built data beside the released hub entries).
        tasks (`tuple[str]`, defaults to ``("vanilla",)``): training tasks of the fold models.
        seed (`int`, defaults to 0): shuffle seed.
        dataset_dir: folder of dataset_info.json to register in (``None``: do not register).
        base_recipe (`dict`, *optional*): recipe keys to start from (default :data:`DEFAULT_RECIPE`).
        image_dir: image folder of a caption.txt input.
        force (`bool`, defaults to `False`): replace different dataset_info entries of the same names.

    Example:

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "caption.txt").write_text("".join(f"im{i} x ^ {{ {i} }}\\n" for i in range(6)))
    >>> manifest = make_folds(d / "caption.txt", d / "folds", k=3, tasks=("vanilla", "tree"), dataset_dir=d)
    >>> [(f["n_train"], f["n_heldout"]) for f in manifest["folds"]]
    [(8, 2), (8, 2), (8, 2)]
    """
    unknown = [task for task in tasks if task not in TASKS or task.startswith("error")]
    if unknown:
        raise UserError(f"fold models train on vanilla/tree/can, not {', '.join(unknown)}.")
    samples = list(iter_samples(input_path, image_dir))
    folds = assign_folds(len(samples), k, seed)
    out_dir = Path(out_dir)
    if dataset_dir is not None:
        from llamafactory_ext.dataset_registry import ensure_registrable

        for fold in range(k):
            for part in ("train", "heldout"):
                fold_name = f"{name}_fold{fold}_{part}"
                ensure_registrable(fold_name, out_dir / f"{fold_name}.json", dataset_dir, force)
    input_path = Path(input_path)
    image_root = input_path if input_path.is_dir() else input_path.parent
    media_dir = Path(dataset_dir) if dataset_dir is not None else out_dir  # the recipes' dataset_dir
    recipes_dir = out_dir / "recipes"
    manifest: dict[str, Any] = {
        "input": str(input_path),
        "k": k,
        "seed": seed,
        "tasks": list(tasks),
        "folds": [],
    }
    registrations = []
    # Every file of the run (fold data, recipes, folds.json) is one set: a kill leaves the old folds or the new.
    with OutputSet(out_dir, "hmer-folds") as out:
        for fold in range(k):
            heldout = [s for s, f in zip(samples, folds, strict=True) if f == fold]
            train = [s for s, f in zip(samples, folds, strict=True) if f != fold]
            train_records = [
                record for task in tasks for record in _build(train, task, image_root, media_dir)
            ]
            heldout_records = _build(heldout, "vanilla", image_root, media_dir)
            train_name, heldout_name = f"{name}_fold{fold}_train", f"{name}_fold{fold}_heldout"
            train_file, heldout_file = out_dir / f"{train_name}.json", out_dir / f"{heldout_name}.json"
            write_sharegpt(out.path(train_file.name), train_records)
            write_sharegpt(out.path(heldout_file.name), heldout_records)
            registrations += [(train_name, train_file), (heldout_name, heldout_file)]
            recipe = dict(base_recipe if base_recipe is not None else DEFAULT_RECIPE)
            recipe.update(
                dataset=train_name,
                dataset_dir=str(media_dir.resolve()),  # the recipe runs from any working directory
                output_dir=str(Path("saves") / f"{name}_fold{fold}"),
            )
            recipe_file = recipes_dir / f"{name}_fold{fold}.yaml"
            atomic_write_text(
                out.path(f"recipes/{recipe_file.name}"), yaml.safe_dump(recipe, sort_keys=False)
            )
            manifest["folds"].append(
                {
                    "fold": fold,
                    "train": train_name,
                    "heldout": heldout_name,
                    "train_file": str(train_file),
                    "heldout_file": str(heldout_file),
                    "recipe": str(recipe_file),
                    "n_train": len(train_records),
                    "n_heldout": len(heldout_records),
                    "heldout_ids": [s.id for s in heldout],
                }
            )
            logger.info(
                "fold %d: %d training records (%s), %d held out -> %s",
                fold,
                len(train_records),
                "+".join(tasks),
                len(heldout_records),
                recipe_file,
            )
        atomic_write_json(out.path("folds.json"), manifest)
        earlier_files, earlier_datasets = _earlier_folds(out_dir)
        out.remove += earlier_files  # folds of an earlier run that this one does not rewrite
    if dataset_dir is not None:
        from llamafactory_ext.dataset_registry import register_dataset, unregister_stale

        for dataset_name, path in registrations:
            register_dataset(dataset_name, path, dataset_dir, force=force)
        # The entries of the earlier run's removed folds (a larger k) would name missing files.
        registered = {dataset_name for dataset_name, _ in registrations}
        unregister_stale({n: f for n, f in earlier_datasets.items() if n not in registered}, dataset_dir)
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune data hmer-folds``."""
    parser.add_argument(
        "input", metavar="INPUT", help="labelled corpus (sharegpt/flat JSON or JSONL, caption.txt)"
    )
    parser.add_argument("--k", type=int, default=3, help="number of folds (default: %(default)s)")
    add_out_dir(parser, "folder for fold files, recipes/ and folds.json", required=True)
    parser.add_argument(
        "--name", default="local_crohme_train", help="dataset name prefix (default: %(default)s)"
    )
    parser.add_argument(
        "--tasks",
        default="vanilla",
        help="comma-separated training tasks of the fold models (vanilla, tree, can; default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="fold shuffle seed (default: %(default)s)")
    parser.add_argument(
        "--dataset-dir", default="dataset_info", help="dataset_info.json folder (default: %(default)s)"
    )
    parser.add_argument("--no-register", action="store_true", help="do not touch dataset_info.json")
    parser.add_argument("--force", action="store_true", help="replace different entries of the same names")
    parser.add_argument(
        "--base-recipe",
        default=PROJECT_RECIPE,
        help="LLaMA-Factory YAML the fold recipes start from (default: %(default)s when it exists, "
        "else built-in full-SFT settings)",
    )
    parser.add_argument("--image-dir", help="image folder of a caption.txt input")


def run(args: argparse.Namespace) -> int:
    """Write the folds; exit status 0."""
    base = None
    path = Path(args.base_recipe) if args.base_recipe else None
    if path is not None and not path.is_file():
        if args.base_recipe != PROJECT_RECIPE:
            raise UserError(f"--base-recipe {path}: no such file.")
        path = None  # the project recipe is optional: fall back to DEFAULT_RECIPE
    if path is not None:
        try:
            base = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            problem = " ".join(str(err).split())
            raise UserError(f"--base-recipe {path}: not plain YAML ({problem}).") from None
        except UnicodeDecodeError:
            raise UserError(f"--base-recipe {path}: not UTF-8 text.") from None
        if not isinstance(base, dict):
            raise UserError(f"--base-recipe {path}: expected a YAML mapping.")
        logger.info("fold recipes start from %s", path)
    tasks = tuple(task.strip() for task in args.tasks.split(",") if task.strip())
    make_folds(
        args.input,
        args.out_dir,
        args.k,
        args.name,
        tasks,
        args.seed,
        None if args.no_register else args.dataset_dir,
        base,
        args.image_dir,
        args.force,
    )
    return 0
