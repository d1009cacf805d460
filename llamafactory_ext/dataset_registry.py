"""Add or update entries of LLaMA-Factory's ``dataset_info.json``, refusing keys LLaMA-Factory would ignore.

LLaMA-Factory reads each entry with ``dict.get`` and silently ignores unknown keys: a misspelt ``"tag"``
instead of ``"tags"`` trains on the default ``conversations``/``from``/``value`` layout without a word.
:func:`check_entry` rejects every key, column and tag that LLaMA-Factory 0.9.5 does not read.
Writes are atomic and serialised with an advisory lock on the folder, so concurrent builds do not lose
each other's entries.
"""

from __future__ import annotations

import difflib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evaluators.errors import UserError
from evaluators.io_utils import atomic_write_json

__all__ = [
    "DATASET_INFO",
    "ENTRY_COLUMNS",
    "ENTRY_KEYS",
    "ENTRY_TAGS",
    "check_entry",
    "load_dataset_info",
    "lookup_dataset",
    "ensure_registrable",
    "register_dataset",
    "sharegpt_entry",
    "unregister_stale",
]

logger = logging.getLogger(__name__)

DATASET_INFO = "dataset_info.json"
#: Top-level keys LLaMA-Factory 0.9.5 reads (``llamafactory/data/parser.py``).
ENTRY_KEYS = frozenset(
    [
        "hf_hub_url",
        "ms_hub_url",
        "om_hub_url",
        "script_url",
        "cloud_file_name",
        "file_name",
        "formatting",
        "ranking",
        "subset",
        "split",
        "folder",
        "num_samples",
        "columns",
        "tags",
    ]
)
ENTRY_COLUMNS = frozenset(
    [
        "prompt",
        "query",
        "response",
        "history",
        "messages",
        "system",
        "tools",
        "images",
        "videos",
        "audios",
        "chosen",
        "rejected",
        "kto_tag",
    ]
)
ENTRY_TAGS = frozenset(
    ["role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"]
)
_SOURCES = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name", "file_name")


def sharegpt_entry(file_name: str) -> dict[str, Any]:
    """The entry of a one-image sharegpt file (LLaMA-Factory's ``mllm_demo`` layout).

    Example:

    >>> sharegpt_entry("crohme_train_tree.json")["tags"]["assistant_tag"]
    'gpt'
    """
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }


def _unknown(kind: str, name: str, keys: Any, allowed: frozenset[str]) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"dataset {name!r}: unknown {kind} {key!r}, which LLaMA-Factory would silently ignore{hint} "
                f"(allowed: {', '.join(sorted(allowed))})."
            )


def check_entry(name: str, entry: Any) -> None:
    """Raise :class:`UserError` unless ``entry`` is a dataset_info entry LLaMA-Factory reads fully.

    Example:

    >>> check_entry("ok", sharegpt_entry("a.json"))
    >>> check_entry("bad", {"file_name": "a.json", "formatting": "sharegpt", "tag": {}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: dataset 'bad': unknown key 'tag', which LLaMA-Factory would silently ignore; did you mean 'tags'? (allowed: ...).
    """
    if not isinstance(name, str) or not name:
        raise UserError(f"dataset name must be a non-empty string, got {name!r}.")
    if not isinstance(entry, dict):
        raise UserError(f"dataset {name!r}: entry is a {type(entry).__name__}, expected an object.")
    _unknown("key", name, entry, ENTRY_KEYS)
    if not any(source in entry for source in _SOURCES):
        raise UserError(f"dataset {name!r}: entry needs one of {', '.join(_SOURCES)}.")
    if entry.get("formatting", "alpaca") not in ("alpaca", "sharegpt", "openai"):
        raise UserError(
            f"dataset {name!r}: formatting must be alpaca, sharegpt or openai, got {entry['formatting']!r}."
        )
    for section, allowed, kind in (("columns", ENTRY_COLUMNS, "column"), ("tags", ENTRY_TAGS, "tag")):
        if section in entry:
            if not isinstance(entry[section], dict):
                raise UserError(f"dataset {name!r}: `{section}` must be an object.")
            _unknown(kind, name, entry[section], allowed)
            for key, value in entry[section].items():
                if not isinstance(value, str):
                    raise UserError(f"dataset {name!r}: {kind} {key!r} must be a string, got {value!r}.")


def load_dataset_info(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``dataset_dir/dataset_info.json`` (``{}`` when absent).

    Raises:
        UserError: the file is not a JSON object.
    """
    path = Path(dataset_dir) / DATASET_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}."
        ) from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object of datasets, got {type(info).__name__}.")
    return info


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _relative_file_name(file_path: str | os.PathLike, dataset_dir: Path) -> str:
    path = Path(file_path).resolve()
    try:
        return path.relative_to(dataset_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def _refuse_conflict(name: str, old: Any, entry: dict[str, Any], target: Path, force: bool) -> None:
    if old is not None and old != entry and not force:
        old_file = old.get("file_name", "?") if isinstance(old, dict) else "?"
        raise UserError(
            f"dataset {name!r} is already registered in {target} with file_name {old_file!r}; "
            f"pass --force to replace it with {entry.get('file_name', '?')!r}."
        )


def ensure_registrable(
    name: str,
    file_path: str | os.PathLike,
    dataset_dir: str | os.PathLike = "dataset_info",
    force: bool = False,
) -> None:
    """Fail early (before a long build) when :func:`register_dataset` would refuse ``name``.

    Raises:
        UserError: ``name`` is registered with a different entry and ``force`` is not set.
    """
    folder = Path(dataset_dir)
    entry = sharegpt_entry(_relative_file_name(file_path, folder))
    check_entry(name, entry)
    _refuse_conflict(
        name, load_dataset_info(folder).get(name), entry, (folder / DATASET_INFO).resolve(), force
    )


def register_dataset(
    name: str,
    file_path: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike = "dataset_info",
    entry: dict[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Add the entry ``name`` to ``dataset_dir/dataset_info.json``, atomically and under a lock.

    An existing entry is only replaced when it is identical (a re-run) or ``force`` is set. The absolute path
    written is logged; creating a new ``dataset_info.json`` is logged as a warning, since a recipe only sees
    it through a matching ``dataset_dir``.

    Args:
        name (`str`): the dataset name used in LLaMA-Factory recipes (``dataset: name``).
        file_path (`str` or `os.PathLike`, *optional*): the data file; stored relative to ``dataset_dir``
            when it lies inside it, else absolute. Builds :func:`sharegpt_entry` when ``entry`` is not given.
        dataset_dir (`str` or `os.PathLike`, defaults to ``"dataset_info"``): the folder of dataset_info.json.
        entry (`dict`, *optional*): a full entry instead (checked by :func:`check_entry`).
        force (`bool`, defaults to `False`): replace a different existing entry of the same name.

    Returns:
        `dict`: the entry written. Other entries and their order are kept.

    Raises:
        UserError: a bad entry, or ``name`` is registered with a different entry and ``force`` is not set.

    Example:

    >>> import tempfile, json, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> register_dataset("crohme_train_tree", d / "crohme_train_tree.json", d)["file_name"]
    'crohme_train_tree.json'
    >>> list(json.loads((d / "dataset_info.json").read_text()))
    ['crohme_train_tree']
    >>> register_dataset("crohme_train_tree", d / "other.json", d)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: dataset 'crohme_train_tree' is already registered in ... with file_name 'crohme_train_tree.json'; pass --force to replace it with 'other.json'.
    """
    if entry is None:
        if file_path is None:
            raise ValueError("pass `file_path` or `entry`")
        dataset_dir = Path(dataset_dir)
        entry = sharegpt_entry(_relative_file_name(file_path, dataset_dir))
    check_entry(name, entry)
    folder = Path(dataset_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / DATASET_INFO).resolve()
    with _locked(folder):
        created = not target.is_file()
        info = load_dataset_info(folder)
        old = info.get(name)
        _refuse_conflict(name, old, entry, target, force)
        info[name] = entry
        atomic_write_json(target, info)
    if created:
        logger.warning(
            "created a new %s: LLaMA-Factory reads it only with dataset_dir: %s", target, target.parent
        )
    verb = "replaced" if old is not None and old != entry else "registered"
    logger.info("%s %r in %s (file_name %s)", verb, name, target, entry.get("file_name"))
    return entry


def unregister_stale(
    names: dict[str, str | os.PathLike], dataset_dir: str | os.PathLike = "dataset_info"
) -> list[str]:
    """Remove the entries ``name`` of ``names`` (name -> data file) whose file is gone, atomically and under a lock.

    An entry is removed only when it still points at that very file (its ``file_name``, resolved against
    ``dataset_dir``, is the given path) and the file no longer exists: an entry the user re-pointed elsewhere,
    or whose file is back, is kept. Used by ``unitune data hmer-folds`` when a run with a smaller ``--k`` removes
    an earlier run's extra folds.

    Args:
        names (`dict[str, str | os.PathLike]`): dataset name -> the data file its entry was registered with.
        dataset_dir (`str` or `os.PathLike`, defaults to ``"dataset_info"``): the folder of dataset_info.json.

    Returns:
        `list[str]`: the names removed, in the order given.

    Example:

    >>> import tempfile, json, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = register_dataset("a", d / "a.json", d), register_dataset("b", d / "b.json", d)
    >>> _ = (d / "b.json").write_text("[]")
    >>> unregister_stale({"a": d / "a.json", "b": d / "b.json", "c": d / "c.json"}, d)  # b's file exists
    ['a']
    >>> list(json.loads((d / "dataset_info.json").read_text()))
    ['b']
    """
    folder = Path(dataset_dir)
    target = folder / DATASET_INFO
    if not target.is_file():
        return []
    removed = []
    with _locked(folder):
        info = load_dataset_info(folder)
        for name, file_path in names.items():
            entry = info.get(name)
            if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
                continue
            path = Path(file_path).resolve()
            if (folder / entry["file_name"]).resolve() == path and not path.exists():
                del info[name]
                removed.append(name)
        if removed:
            atomic_write_json(target, info)
    for name in removed:
        logger.info("unregistered %r from %s: its file %s is gone", name, target.resolve(), names[name])
    return removed


def lookup_dataset(name: str, dataset_dir: str | os.PathLike = "dataset_info") -> tuple[dict[str, Any], Path]:
    """The checked entry of ``name`` and the path of its local file.

    Raises:
        UserError: no such dataset, a bad entry, or an entry without a local ``file_name``.
    """
    info = load_dataset_info(dataset_dir)
    if name not in info:
        close = difflib.get_close_matches(name, list(info), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"no dataset {name!r} in {Path(dataset_dir) / DATASET_INFO}{hint}")
    entry = info[name]
    check_entry(name, entry)
    if "file_name" not in entry:
        raise UserError(
            f"dataset {name!r} is not a local file (no `file_name`); only local files can be checked."
        )
    return entry, Path(dataset_dir) / entry["file_name"]
