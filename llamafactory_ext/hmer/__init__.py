"""HMER multitask data (Uni-MuMER): vanilla, Tree-CoT, Symbol Counting and Error-Driven-Learning builders.

Python API (the CLI is ``unitune data hmer`` / ``unitune data hmer-folds``):

- :func:`build_dataset` ``(records, task, **options) -> (records_out, rejected)``, :func:`iter_build` (streaming),
  :func:`build_file` (file to file, ``.rejected.jsonl`` side file, ``--register``), :func:`write_sharegpt`.
- :func:`tree_answer`, :func:`can_answer`, :func:`latex_to_tree` (Tree-CoT / SC targets).
- :func:`mark_errors`, :func:`correction_log`, :func:`apply_corrections` (EDL targets and their inverse).
- :func:`iter_samples` (sharegpt / flat JSON or JSONL, caption.txt), :func:`make_folds`.
"""

from .build import BuildStats, build_dataset, build_file, iter_build, make_record, write_sharegpt
from .edl import apply_corrections, correction_log, mark_errors
from .folds import make_folds
from .records import HmerSample, iter_samples
from .tree_cot import TreeParseError, can_answer, latex_to_tree, tree_answer

__all__ = [
    "BuildStats",
    "HmerSample",
    "TreeParseError",
    "apply_corrections",
    "build_dataset",
    "build_file",
    "can_answer",
    "correction_log",
    "iter_build",
    "iter_samples",
    "latex_to_tree",
    "make_folds",
    "make_record",
    "mark_errors",
    "tree_answer",
    "write_sharegpt",
]
