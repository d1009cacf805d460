"""Check a sharegpt dataset before training: turns, <image> tokens, images on disk, and HMER answers.

``unitune data validate NAME_OR_FILE[,NAME...]`` reads a dataset by its ``dataset_info.json`` name (columns and tags from
the entry) or a JSON / JSONL file directly (standard one-image sharegpt layout). Images are resolved exactly as
LLaMA-Factory 0.9.5 does: ``--media-dir/PATH`` when that is a file (``--media-dir`` defaults to ``--dataset-dir``,
as LLaMA-Factory's ``media_dir`` defaults to ``dataset_dir``), else PATH from the working directory. So run it
from where you will train. A comma-separated list, as in a recipe's ``dataset:``, checks each dataset in turn.
LLaMA-Factory only warns and drops malformed rows mid-run; this fails loudly first.

Entry kinds: ``file_name`` (JSON/JSONL, a ``.parquet`` file or a folder of parquet files) and ``hf_hub_url``
(``subset``/``split`` as LLaMA-Factory reads them). A hub dataset is read from the local Hugging Face cache only
(this never downloads): when the config is not there, it says so in one line. An ``hf_hub_url`` that is a local
folder (a ``huggingface-cli download`` mirror) is read from that folder. Images embedded in parquet (``{bytes,
path}``) are decoded from their bytes.

Per record: ``messages`` is a non-empty list; turns alternate user/assistant (an optional leading system turn)
and end with the assistant; contents are non-empty strings; the number of ``<image>`` tokens equals
``len(images)``; every image exists and decodes (Pillow). HMER answers are checked from their prompt (or
``--task``): ``tree`` — the LaTeX line parses and the tree lines are its tree; ``can`` — the counts match the
LaTeX; ``error_find`` — the marks wrap the erroneous formula of the prompt; ``error_fix`` — the log applied to the
marked formula gives the LaTeX line. Exit status 1 when any record has a problem.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from evaluators.errors import UserError
from llamafactory_ext.dataset_registry import check_entry, load_dataset_info, lookup_dataset, sharegpt_entry
from llamafactory_ext.hmer.edl import apply_corrections, parse_fix_answer
from llamafactory_ext.hmer.prompts import (
    CAN_PROMPT,
    ERROR_FIND_PROMPT,
    ERROR_FIX_PROMPT,
    IMAGE_TOKEN,
    MARKERS,
    TREE_PROMPT,
)
from llamafactory_ext.hmer.records import iter_json_objects
from llamafactory_ext.hmer.tree_cot import TreeParseError, can_answer, latex_to_tree
from llamafactory_ext.media import resolve_media

__all__ = ["CONTENT_TASKS", "Problem", "add_arguments", "run", "validate_dataset", "validate_records"]

logger = logging.getLogger(__name__)

#: Values of ``--task``: ``auto`` detects the HMER task from the prompt, ``none`` skips answer checks.
CONTENT_TASKS = ("auto", "none", "vanilla", "tree", "can", "error_find", "error_fix")
_FIND_HEAD, _FIND_TAIL = ERROR_FIND_PROMPT.split("{pred}")
_FIX_HEAD, _FIX_TAIL = ERROR_FIX_PROMPT.split("{marked}")


@dataclass(frozen=True)
class Problem:
    """One problem of one record: ``kind`` is a short stable code, ``message`` says what to fix."""

    index: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"record {self.index}: [{self.kind}] {self.message}"


def _detect_task(prompt: str) -> str | None:
    if TREE_PROMPT in prompt:
        return "tree"
    if CAN_PROMPT in prompt:
        return "can"
    if _FIND_HEAD in prompt:
        return "error_find"
    if _FIX_HEAD in prompt:
        return "error_fix"
    return None


def _slot(prompt: str, head: str, tail: str) -> str | None:
    start = prompt.find(head)
    if start < 0 or not prompt.endswith(tail):
        return None
    return prompt[start + len(head) : len(prompt) - len(tail)]


def _check_answer(task: str, prompt: str, answer: str) -> tuple[str, str] | None:
    """``(kind, message)`` when the HMER answer is inconsistent, else ``None``."""
    lines = answer.split("\n")
    latex = lines[-1]
    if task == "tree":
        try:
            tree = latex_to_tree(latex)
        except TreeParseError as err:
            return "tree-parse", f"the LaTeX line {latex!r} does not parse as a tree ({err})"
        if answer != f"{tree}\n{latex}":
            return "tree-mismatch", "the tree lines are not the tree of the LaTeX on the last line"
    elif task == "can":
        if answer != can_answer(latex):
            return "count-mismatch", f"the counts line is not the symbol counts of {latex!r}"
    elif task == "error_find":
        pred = _slot(prompt, _FIND_HEAD, _FIND_TAIL)
        if pred is None:
            return "edl-prompt", "the error_find prompt does not end with the 'Marked formula: ' slot"
        unmarked = [tok for tok in answer.split() if tok not in MARKERS]
        if unmarked != pred.split():
            return (
                "edl-mismatch",
                "the marked formula without its marks is not the erroneous formula of the prompt",
            )
    elif task == "error_fix":
        marked = _slot(prompt, _FIX_HEAD, _FIX_TAIL)
        if marked is None:
            return "edl-prompt", "the error_fix prompt does not end with the 'Correction log: ' slot"
        log, corrected = parse_fix_answer(answer)
        try:
            fixed = apply_corrections(marked, log)
        except ValueError as err:
            return "edl-mismatch", f"the correction log does not fit the marked formula ({err})"
        if fixed != " ".join(corrected.split()):
            return (
                "edl-mismatch",
                "the correction log applied to the marked formula does not give the last line",
            )
    return None


@lru_cache(maxsize=65536)
def _decode(path: str) -> str | None:
    """``None`` when the image decodes, else the error text."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # Pillow raises many kinds (OSError, SyntaxError, DecompressionBombError…)
        return f"{type(err).__name__}: {err}"
    return None


def _is_image_ref(image: Any) -> bool:
    if isinstance(image, str):
        return True
    return isinstance(image, dict) and (bool(image.get("bytes")) or isinstance(image.get("path"), str))


def _decode_bytes(data: bytes) -> str | None:
    """``None`` when the embedded image decodes, else the error text."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as err:  # Pillow raises many kinds (OSError, SyntaxError, DecompressionBombError…)
        return f"{type(err).__name__}: {err}"
    return None


def validate_records(
    records: Iterable[tuple[int, Any]],
    entry: dict[str, Any] | None = None,
    media_dir: str | os.PathLike | None = None,
    check_images: bool = True,
    task: str = "auto",
) -> Iterator[Problem]:
    """Yield every :class:`Problem` of ``(index, record)`` pairs read with a dataset_info ``entry``.

    Args:
        records: ``(index, record)`` pairs, e.g. from :func:`llamafactory_ext.hmer.records.iter_json_objects`.
        entry (`dict`, *optional*): the dataset_info entry (default: the one-image sharegpt layout).
        media_dir: folder relative image paths are joined to first (LLaMA-Factory's ``media_dir``).
        check_images (`bool`, defaults to `True`): check that images exist and decode.
        task (`str`, defaults to ``"auto"``): one of :data:`CONTENT_TASKS`.

    Example:

    >>> bad = {"messages": [{"from": "human", "value": "<image><image>q"}, {"from": "gpt", "value": "x"}],
    ...        "images": ["a.png"]}
    >>> [p.kind for p in validate_records([(0, bad)], check_images=False)]
    ['image-count']
    """
    if task not in CONTENT_TASKS:
        raise UserError(f"--task must be one of {', '.join(CONTENT_TASKS)}, got {task!r}.")
    entry = entry or sharegpt_entry("")
    columns, tags = entry.get("columns", {}), entry.get("tags", {})
    messages_key = columns.get("messages", "conversations")
    images_key = columns.get("images")
    role_tag, content_tag = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    user, assistant = tags.get("user_tag", "human"), tags.get("assistant_tag", "gpt")
    system = tags.get("system_tag", "system")
    for index, record in records:
        if not isinstance(record, dict):
            yield Problem(index, "not-an-object", f"is a {type(record).__name__}, expected an object")
            continue
        messages = record.get(messages_key)
        if not isinstance(messages, list) or not messages:
            yield Problem(
                index,
                "no-messages",
                f"`{messages_key}` must be a non-empty list of turns, got {messages!r:.80}",
            )
            continue
        turns: list[tuple[str, str]] = []
        bad_turn = False
        for number, turn in enumerate(messages):
            if (
                not isinstance(turn, dict)
                or not isinstance(turn.get(content_tag), str)
                or role_tag not in turn
            ):
                yield Problem(
                    index,
                    "bad-turn",
                    f"turn {number} needs string `{role_tag}` and `{content_tag}` keys, got {turn!r:.80}",
                )
                bad_turn = True
                break
            turns.append((turn[role_tag], turn[content_tag]))
        if bad_turn:
            continue
        if turns[0][0] == system:
            turns = turns[1:]
        order_ok = bool(turns) and len(turns) % 2 == 0
        for number, (role, _content) in enumerate(turns):
            expected = user if number % 2 == 0 else assistant
            if role != expected:
                yield Problem(
                    index,
                    "role-order",
                    f"turn {number} is from {role!r}, expected {expected!r} "
                    f"(turns must alternate {user}/{assistant})",
                )
                order_ok = False
                break
        else:
            if not order_ok:
                yield Problem(
                    index, "role-order", f"{len(turns)} turns: the conversation must end with {assistant!r}"
                )
        empty = [number for number, (_role, content) in enumerate(turns) if not content.strip()]
        if empty:
            yield Problem(index, "empty-turn", f"turn {empty[0]} has empty content")
        images = record.get(images_key, []) if images_key else []
        if images is None:
            images = []
        elif isinstance(
            images, (str, dict)
        ):  # one image, as in the released parquet (LLaMA-Factory wraps it)
            images = [images]
        if not isinstance(images, list) or not all(_is_image_ref(image) for image in images):
            yield Problem(
                index,
                "bad-images",
                f"`{images_key}` must be a list of paths or {{bytes, path}} images, got {images!r:.80}",
            )
            images = None
        n_tokens = sum(content.count(IMAGE_TOKEN) for _role, content in turns)
        if images is None:
            images = []
        elif n_tokens != len(images):
            hint = "" if images_key else " (the dataset_info entry maps no `images` column)"
            yield Problem(
                index,
                "image-count",
                f"{n_tokens} `<image>` token(s) in the turns but {len(images)} image(s){hint}",
            )
        if check_images:
            for image in images:
                if isinstance(image, dict):
                    error = _decode_bytes(image["bytes"]) if image.get("bytes") else None
                    if error is not None:
                        yield Problem(index, "unreadable-image", f"embedded image cannot be decoded: {error}")
                        continue
                    if image.get("bytes"):
                        continue
                    image = image.get("path")
                path = resolve_media(image, media_dir)
                if not path.is_file():
                    where = (
                        f" (looked in {media_dir} and the working directory)" if media_dir is not None else ""
                    )
                    yield Problem(index, "missing-image", f"image {image!r} not found{where}")
                    continue
                error = _decode(str(path))
                if error is not None:
                    yield Problem(index, "unreadable-image", f"image {image!r} cannot be decoded: {error}")
        if task == "none" or not order_ok or len(turns) < 2:
            continue
        prompt, answer = turns[0][1], turns[1][1]
        content_task = _detect_task(prompt) if task == "auto" else task
        if content_task in (None, "vanilla") or not answer.strip():
            continue
        found = _check_answer(content_task, prompt, answer)
        if found is not None:
            yield Problem(index, *found)


def _hf_records(folder: str, entry: dict[str, Any], name: str) -> Iterator[tuple[int, Any]]:
    """Rows of a Hugging Face dataset folder (a hub snapshot or mirror) or of parquet files; images undecoded."""
    import datasets

    try:
        if (
            Path(folder).is_dir()
            and not (Path(folder) / "README.md").is_file()
            and entry.get("subset") is None
        ):
            files = sorted(str(p) for p in Path(folder).rglob("*.parquet"))
            dataset = datasets.load_dataset("parquet", data_files=files, split="train")
        elif str(folder).endswith(".parquet"):
            dataset = datasets.load_dataset("parquet", data_files=[str(folder)], split="train")
        else:
            dataset = datasets.load_dataset(
                str(folder),
                name=entry.get("subset"),
                data_dir=entry.get("folder"),
                split=entry.get("split", "train"),
            )
    except (
        Exception
    ) as err:  # datasets raises many kinds (ValueError, FileNotFoundError, DatasetGenerationError…)
        raise UserError(f"dataset {name!r}: cannot read {folder} ({type(err).__name__}: {err}).") from None
    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        elif isinstance(feature, datasets.Sequence) and isinstance(feature.feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.Sequence(datasets.Image(decode=False)))
        elif isinstance(feature, list) and feature and isinstance(feature[0], datasets.Image):
            dataset = dataset.cast_column(column, [datasets.Image(decode=False)])
    yield from enumerate(dataset)


def _hub_folder(entry: dict[str, Any], name: str) -> str:
    """The local folder holding the hub dataset of ``entry``: the URL itself when it is a folder, else the HF cache."""
    url = entry["hf_hub_url"]
    if Path(url).is_dir():
        return url
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    subset = entry.get("subset")
    try:
        folder = snapshot_download(repo_id=url, repo_type="dataset", local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        folder = None
    if folder is None or (subset and not any(Path(folder).glob(f"{subset}/**/*.parquet"))):
        what = f"{url} (config {subset!r})" if subset else url
        raise UserError(
            f"dataset {name!r}: {what} is not downloaded (not in the local Hugging Face cache); LLaMA-Factory "
            f"downloads it on first use, or run `huggingface-cli download {url} --repo-type dataset`, then validate."
        )
    return folder


def _dataset_records(
    name: str, dataset_dir: str | os.PathLike
) -> tuple[dict[str, Any], Iterator[tuple[int, Any]]]:
    """The checked entry of ``name`` and its records."""
    info = load_dataset_info(dataset_dir)
    if name not in info:
        lookup_dataset(name, dataset_dir)  # raises the "no dataset … did you mean" error
    entry = info[name]
    check_entry(name, entry)
    if entry.get("formatting", "alpaca") != "sharegpt":
        raise UserError(
            f"dataset {name!r}: only sharegpt datasets can be validated, not {entry.get('formatting', 'alpaca')}."
        )
    if "hf_hub_url" in entry:
        return entry, _hf_records(_hub_folder(entry, name), entry, name)
    if "file_name" not in entry:
        raise UserError(f"dataset {name!r}: only file_name and hf_hub_url entries can be validated.")
    path = Path(dataset_dir) / entry["file_name"]
    if not path.exists():
        raise UserError(f"dataset {name!r}: {path} not found.")
    if path.is_dir() or path.suffix == ".parquet":
        return entry, _hf_records(str(path), entry, name)
    return entry, iter_json_objects(path)


def validate_dataset(
    target: str | os.PathLike,
    dataset_dir: str | os.PathLike = "dataset_info",
    media_dir: str | os.PathLike | None = None,
    check_images: bool = True,
    task: str = "auto",
) -> tuple[int, list[Problem]]:
    """Validate one dataset by dataset_info name or by file; return ``(number of records, problems)``.

    An existing file path wins over a dataset name. ``media_dir`` defaults to ``dataset_dir``, LLaMA-Factory's
    default; images are resolved by :func:`llamafactory_ext.media.resolve_media`, LLaMA-Factory's rule.

    Raises:
        UserError: unknown name, bad dataset_info entry, a hub dataset not downloaded, or an unreadable file.
    """
    path = Path(target)
    entry: dict[str, Any] | None = None
    if path.is_file():
        records = iter_json_objects(path)
    else:
        if path.suffix.lower() in (".json", ".jsonl") or os.sep in str(target):
            raise UserError(f"{target}: no such file.")
        entry, records = _dataset_records(str(target), dataset_dir)
    count = 0

    def counted() -> Iterator[tuple[int, Any]]:
        nonlocal count
        for item in records:
            count += 1
            yield item

    problems = list(
        validate_records(
            counted(), entry, media_dir if media_dir is not None else dataset_dir, check_images, task
        )
    )
    return count, problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune data validate``."""
    parser.add_argument(
        "target",
        metavar="DATASET_NAME_OR_FILE",
        help="a dataset_info.json name, a comma-separated list of names (as in a recipe) or a JSON/JSONL file",
    )
    parser.add_argument(
        "--dataset-dir", default="dataset_info", help="folder of dataset_info.json (default: %(default)s)"
    )
    parser.add_argument(
        "--media-dir", help="LLaMA-Factory's media_dir: relative image paths are looked up there first "
        "(default: DATASET_DIR, as in LLaMA-Factory), then in the working directory"
    )  # fmt: skip
    parser.add_argument(
        "--task",
        default="auto",
        choices=CONTENT_TASKS,
        help="answer checks (default: detect from the prompt)",
    )
    parser.add_argument(
        "--no-check-images", action="store_true", help="skip the image existence / decoding checks"
    )
    parser.add_argument(
        "--max-errors", type=int, default=20, help="problems printed in full (default: %(default)s)"
    )


def _report(target: str, count: int, problems: list[Problem], max_errors: int) -> int:
    for problem in problems[:max_errors]:
        logger.error("%s: %s", target, problem)
    if len(problems) > max_errors:
        logger.error("… %d more problems not shown (--max-errors)", len(problems) - max_errors)
    if not problems and count == 0:
        logger.error("%s: 0 records: an empty dataset has nothing to train on.", target)
        return 1
    if not problems:
        logger.info("%s: %d records, all valid.", target, count)
        return 0
    kinds = Counter(problem.kind for problem in problems)
    bad = len({problem.index for problem in problems})
    logger.error(
        "%s: %d records, %d invalid (%s).",
        target,
        count,
        bad,
        ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common()),
    )
    return 1


def run(args: argparse.Namespace) -> int:
    """Validate each dataset, log the problems and a summary; exit 1 on any problem, 2 when one cannot be read."""
    targets = [args.target] if Path(args.target).is_file() else [t.strip() for t in args.target.split(",")]
    targets = [t for t in targets if t]
    if not targets:
        raise UserError(
            f"DATASET_NAME_OR_FILE: expected a name, a file or a comma-separated list, got {args.target!r}."
        )
    if len(targets) == 1:
        count, problems = validate_dataset(
            targets[0], args.dataset_dir, args.media_dir, not args.no_check_images, args.task
        )
        return _report(targets[0], count, problems, args.max_errors)
    status = 0
    for target in targets:
        try:
            count, problems = validate_dataset(
                target, args.dataset_dir, args.media_dir, not args.no_check_images, args.task
            )
        except UserError as err:
            logger.error("%s", err)
            status = 2
            continue
        status = max(status, _report(target, count, problems, args.max_errors))
    return status
