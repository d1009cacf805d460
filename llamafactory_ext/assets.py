"""The recipes and dataset_info that ship with unitune, found from any working directory.

``recipes/`` and ``dataset_info/`` live at the top of the repository and are installed with the package
(as ``llamafactory_ext/recipes`` and ``llamafactory_ext/dataset_info``), so ``unitune demo`` and
``python -m trl_grpo.train --config recipes/unifer_grpo.yaml --smoke`` work outside the checkout too.
``unitune recipes`` prints where they are, and ``unitune recipes --copy DIR`` copies them to edit.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from evaluators.errors import UserError

__all__ = ["ASSET_DIRS", "add_arguments", "asset_path", "find_existing", "run"]

logger = logging.getLogger(__name__)

#: The shipped folders, relative to the repository root.
ASSET_DIRS = ("recipes", "dataset_info")
_PACKAGE_DIR = Path(__file__).resolve().parent


def asset_path(relative: str | os.PathLike) -> Path | None:
    """The shipped file or folder ``relative`` (e.g. ``recipes/unifer_grpo.yaml``): checkout first, then package.

    Example:

    >>> asset_path("recipes/unifer_grpo.yaml").name, asset_path("recipes/nope.yaml")
    ('unifer_grpo.yaml', None)
    """
    relative = Path(relative)
    if relative.is_absolute() or not relative.parts or relative.parts[0] not in ASSET_DIRS:
        return None
    for base in (_PACKAGE_DIR.parent, _PACKAGE_DIR):  # a checkout / editable install, then an installed wheel
        candidate = base / relative
        if candidate.exists():
            return candidate
    return None


def find_existing(value: str | os.PathLike) -> Path:
    """``value`` as given when it exists (relative to the working directory), else the shipped copy, else as given.

    Example:

    >>> find_existing("recipes/unifer_grpo.yaml").is_file()
    True
    """
    path = Path(value)
    if path.exists():
        return path
    return asset_path(path) or path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unitune recipes``."""
    parser.add_argument(
        "--copy", metavar="DIR", type=Path, help="copy recipes/ and dataset_info/ into DIR (to edit them)"
    )
    parser.add_argument("--force", action="store_true", help="with --copy: overwrite files that exist")


def run(args: argparse.Namespace) -> int:
    """List the shipped recipes (or copy them); exit status 0."""
    folders = {name: asset_path(name) for name in ASSET_DIRS}
    missing = [name for name, folder in folders.items() if folder is None]
    if missing:
        raise UserError(f"{', '.join(missing)} not found beside {_PACKAGE_DIR}: reinstall unitune.")
    if args.copy is None:
        for name, folder in folders.items():
            sys.stdout.write(f"{name}/  {folder}\n")
            for file in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                sys.stdout.write(f"  {file.relative_to(folder).as_posix()}\n")
        return 0
    clashes = [
        args.copy / name / file.relative_to(folder)
        for name, folder in folders.items()
        for file in folder.rglob("*")
        if file.is_file() and (args.copy / name / file.relative_to(folder)).exists()
    ]
    if clashes and not args.force:
        raise UserError(
            f"--copy {args.copy}: {len(clashes)} files exist (first: {clashes[0]}); pass --force."
        )
    for name, folder in folders.items():
        shutil.copytree(
            folder, args.copy / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
        logger.info("copied %s -> %s", folder, (args.copy / name).resolve())
    return 0
