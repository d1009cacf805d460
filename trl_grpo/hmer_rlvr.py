"""Convert HMER data (sharegpt or RLVR records) into a TRL GRPO dataset folder (images kept at their size).

``unitune data hmer-rlvr`` is ``unitune data fer-rlvr`` with ``--task hmer --image-size 0``: Uni-MuMER's
LLaMA-Factory files (``{"images", "messages"}``; the human turn is the problem, the gpt turn the solution) become
a dataset folder that ``datasets.load_dataset`` and ``trl grpo --dataset_name`` read, with the same columns as
the FER sets. See :mod:`trl_grpo.rlvr_data`.
"""

from __future__ import annotations

import argparse

from trl_grpo import rlvr_data

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune data hmer-rlvr``."""
    rlvr_data.add_arguments(parser, task="hmer", image_size=0)


def run(args: argparse.Namespace) -> int:
    """Run ``unitune data hmer-rlvr``."""
    return rlvr_data.run(args)
