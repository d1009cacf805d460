"""Where a metrics file came from: unitune version, time, git revision, and the model that made the predictions.

Every ``*_metrics.json`` (HMER and FER) carries :func:`provenance`'s fields, so a number found on disk months
later still says what produced it.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["git_revision", "model_from_inference_meta", "provenance", "unitune_version"]

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def unitune_version() -> str:
    """unitune's version: ``evaluators.__version__``, the same string as ``pyproject.toml``'s ``version``
    (a test keeps them equal), so no installed-package metadata has to be read (~25 ms per process).

    Example:

    >>> unitune_version().count(".") >= 2
    True
    """
    from evaluators import __version__

    return __version__


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The commit of the unitune source tree in use (``+dirty`` with local changes), or ``None`` outside git.

    Example:

    >>> rev = git_revision()
    >>> rev is None or len(rev.removesuffix("+dirty")) == 40
    True
    """
    if not (_SOURCE_ROOT / ".git").exists():
        return None
    # One git process for both answers: the commit is porcelain v2's "# branch.oid" header ("(initial)"
    # before the first commit), and any other line is a changed tracked file.
    try:
        lines = subprocess.run(
            ["git", "-C", str(_SOURCE_ROOT), "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.splitlines()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    head = next((line[len("# branch.oid ") :] for line in lines if line.startswith("# branch.oid ")), "")
    if not head or head == "(initial)":  # no commit yet
        return None
    dirty = any(not line.startswith("#") for line in lines)
    return head + ("+dirty" if dirty else "")


def model_from_inference_meta(prediction_file: str | os.PathLike) -> str | None:
    """The model recorded by ``unitune infer`` beside its outputs (``<stem>_infer.meta.json``), if any.

    ``crohme_2014_pred.json`` pairs with ``crohme_2014_infer.meta.json``; FER's ``rafdb_results.json`` with
    ``rafdb_qa_infer.meta.json`` or ``rafdb_infer.meta.json``.

    Example:

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "x_infer.meta.json").write_text('{"model": "/m/qwen"}')
    >>> model_from_inference_meta(d / "x_pred.json"), model_from_inference_meta(d / "y_pred.json")
    ('/m/qwen', None)
    """
    path = Path(prediction_file)
    stem = path.name.removesuffix(".jsonl").removesuffix(".json")
    for suffix in ("_infer", "_pred", "_results"):
        stem = stem.removesuffix(suffix)
    for name in (f"{stem}_infer.meta.json", f"{stem}_qa_infer.meta.json"):
        meta = path.with_name(name)
        if meta.is_file():
            try:
                model = json.loads(meta.read_text(encoding="utf-8")).get("model")
            except (json.JSONDecodeError, AttributeError, OSError):
                return None
            return str(model) if model else None
    return None


def provenance(model: str | None) -> dict[str, Any]:
    """The fields every metrics JSON carries besides its metrics, config and ``higher_is_better``.

    Example:

    >>> sorted(provenance("m"))
    ['git_revision', 'model', 'timestamp', 'unitune_version']
    """
    return {
        "unitune_version": unitune_version(),
        "git_revision": git_revision(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model,
    }
