"""Print the exact command of every EDL pipeline step, for a cluster user's own scheduler (runs nothing).

``unitune edl plan CONFIG`` lists, in dependency order, one ``unitune edl run CONFIG --only STEP --fold I
--shard J`` line per step (it runs that step and writes its marker) with the engine command it runs
(``llamafactory-cli train|export OUT/recipes/...``, ``unitune infer ... --shard J/N``). ``--write-recipes``
writes the fold recipes into ``OUT/recipes/`` so the engine commands can also be run as they are (the other
nodes of a multi-node training run). See :mod:`llamafactory_ext.hmer.edl_pipeline`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .edl_config import load_config
from .edl_pipeline import Pipeline

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune edl plan``."""
    parser.add_argument("config", metavar="CONFIG", type=Path, help="EDL pipeline YAML")
    parser.add_argument(
        "--write-recipes",
        action="store_true",
        help="also write OUT/recipes/fold*_{train,export}.yaml, so the engine commands run as printed",
    )


def run(args: argparse.Namespace) -> int:
    """Print the plan; exit status 0."""
    pipeline = Pipeline(load_config(args.config))
    if args.write_recipes:
        pipeline.write_recipes()
    sys.stdout.write(pipeline.plan())
    return 0
