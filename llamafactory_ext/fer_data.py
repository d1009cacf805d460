"""Convert UniFER CoT records into a LLaMA-Factory sharegpt dataset (with optional 224×224 image copies).

Input: a JSON list or JSONL of UniFER CoT records ``{"image_path", "question", "response"}`` (UniFER_CoT_230K),
where ``response`` is ``<think>…</think><answer>…</answer>``. Output: a JSON list of one-image sharegpt entries

    {"messages": [{"from": "human", "value": "<image>QUESTION"}, {"from": "gpt", "value": RESPONSE}],
     "images": ["/abs/path.jpg"]}

(LLaMA-Factory's ``mllm_demo`` layout; ``--register NAME`` adds it to ``dataset_info/dataset_info.json``).

Image paths: UniFER joins ``data_dir + image_path`` ("/RAF-DB/…" under the data folder); ``--image-root DIR``
does the same (a leading "/" is dropped before joining). Written paths are absolute.

``--resize 224`` writes RGB copies resized to exactly 224×224 (aspect ratio *not* kept, bicubic, PNG) into
``--cache-dir`` and points the dataset at them, as UniFER's trainer did with ``resized_height/width=224``;
LLaMA-Factory's ``image_max_pixels`` keeps the aspect ratio, so it cannot do this itself. Copies are named by
the SHA-256 of the source bytes and the size, so re-runs and duplicate images reuse them.

Each record is checked: the image exists and decodes, the response has ``<think>…</think><answer>…</answer>``
and nothing else, and its answer (read by the strict extractor) is one of the question's candidate labels
(parsed from the "candidate labels: a, b, c." sentence; all FERBench labels when the question has none).
Rejected records go to ``OUT.rejected.jsonl`` with a reason (``--strict``: stop at the first one).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.errors import UserError
from evaluators.io_utils import (
    atomic_write_json,
    read_records,
    rejected_path,
    remove_stale_temps,
    save_png_replacing,
    write_jsonl_atomic,
)
from evaluators.knowledge.answers import extract_answer, is_think_answer_format
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS, canonical_label
from evaluators.outputs import OutputSet
from evaluators.progress import progress_bar

__all__ = [
    "ConvertStats",
    "add_arguments",
    "candidate_labels_from_question",
    "convert_file",
    "convert_records",
    "resize_copy",
    "run",
    "to_sharegpt",
]

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
_CANDIDATES_RE = re.compile(r"candidate labels\s*:\s*([^.<\n]+)", re.IGNORECASE)
_ALL_LABELS: tuple[str, ...] = tuple(dict.fromkeys(label for v in CANDIDATE_LABELS.values() for label in v))


def candidate_labels_from_question(question: str) -> tuple[str, ...] | None:
    """The candidate list a UniFER question offers ("…candidate labels: a, b, c. …"), or ``None``.

    Example:

    >>> candidate_labels_from_question("Please select from the following candidate labels: sad, happy. Then…")
    ('sad', 'happy')
    >>> candidate_labels_from_question("What is the expression?") is None
    True
    """
    match = _CANDIDATES_RE.search(question)
    if not match:
        return None
    labels = tuple(part.strip().casefold() for part in match.group(1).split(",") if part.strip())
    return labels or None


def to_sharegpt(question: str, response: str, image: str) -> dict[str, Any]:
    """One sharegpt entry; the ``<image>`` token is put in front of the question unless it already has one.

    Example:

    >>> to_sharegpt("Which expression?", "<think>t</think><answer>sad</answer>", "/x.png")["messages"][0]
    {'from': 'human', 'value': '<image>Which expression?'}
    """
    value = question if IMAGE_TOKEN in question else IMAGE_TOKEN + question
    return {
        "messages": [{"from": "human", "value": value}, {"from": "gpt", "value": response}],
        "images": [image],
    }


def resize_copy(source: Path, cache_dir: Path, size: int) -> Path:
    """Return a ``size``×``size`` RGB PNG copy of ``source`` in ``cache_dir`` (made once, reused after).

    The name is ``<sha256 of the source bytes>_<size>.png``; the copy is written atomically.

    Raises:
        OSError: the source cannot be read or decoded (Pillow's errors derive from it).

    Example:

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("L", (40, 10)).save(d / "a.png")
    >>> out = resize_copy(d / "a.png", d / "cache", 224)
    >>> Image.open(out).size, Image.open(out).mode, resize_copy(d / "a.png", d / "cache", 224) == out
    ((224, 224), 'RGB', True)
    """
    from PIL import Image

    data = source.read_bytes()
    target = cache_dir / f"{hashlib.sha256(data).hexdigest()}_{size}.png"
    if target.is_file():
        return target
    import io

    with Image.open(io.BytesIO(data)) as image:
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return save_png_replacing(resized, target)


def _decodes(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return f"image does not decode: {path} ({err.__class__.__name__}: {err})"
    return None


@dataclass
class ConvertStats:
    """Counts of one conversion; ``reasons`` counts rejections by kind."""

    read: int = 0
    written: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        """Number of rejected records."""
        return self.read - self.written


def _resolve(image_path: str, image_root: Path | None) -> Path:
    if image_root is None:
        return Path(image_path)
    return image_root / image_path.lstrip("/")


def _check_text(item: Any) -> tuple[str, str] | None:
    """``(kind, message)`` of the first text problem of a record, or ``None``."""
    if not isinstance(item, dict):
        return "not_an_object", f"record is a {type(item).__name__}, expected an object"
    for key in ("image_path", "question", "response"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            return "missing_field", f"`{key}` is missing or not a non-empty string"
    question, response = item["question"], item["response"]
    if question.count(IMAGE_TOKEN) > 1:
        return (
            "image_tokens",
            f"question has {question.count(IMAGE_TOKEN)} {IMAGE_TOKEN} tokens, expected at most 1",
        )
    if not is_think_answer_format(response.strip()):
        return "format", "response is not <think>…</think><answer>…</answer>"
    answer = extract_answer(response)
    candidates = candidate_labels_from_question(question) or _ALL_LABELS
    if canonical_label(answer, candidates) is None:
        return "answer_not_candidate", f"answer {answer!r} is not one of the candidates {list(candidates)}"
    return None


def convert_records(
    records: Sequence[Any],
    *,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
    resize: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 8,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], ConvertStats]:
    """Convert and validate UniFER CoT records.

    Args:
        records (`Sequence`): the input records, ``{"image_path", "question", "response"}``.
        image_root (`str` or `os.PathLike`, *optional*): folder the ``image_path`` values are under.
        check_images (`bool`, defaults to `True`): require every image to exist and decode.
        resize (`int`, *optional*): write ``resize``×``resize`` copies into ``cache_dir`` and use them.
        cache_dir (`str` or `os.PathLike`, *optional*): where resized copies go (required with ``resize``).
        workers (`int`, defaults to 8): threads for decoding/resizing images.
        progress (`bool`, defaults to `False`): show a progress bar over the images (total, rate, ETA).

    Returns:
        `tuple`: ``(entries, rejected, stats)``; each rejected item is ``{"index", "image_path", "kind",
        "reason"}``.

    Example:

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 8)).save(d / "f.png")
    >>> q = "Pick one of the candidate labels: sad, happy. Answer in tags."
    >>> recs = [{"image_path": "/f.png", "question": q, "response": "<think>t</think><answer>sad</answer>"},
    ...         {"image_path": "/f.png", "question": q, "response": "<answer>joy</answer>"}]
    >>> entries, rejected, stats = convert_records(recs, image_root=d)
    >>> entries[0]["images"] == [str((d / "f.png").resolve())], rejected[0]["kind"], stats.written
    (True, 'format', 1)
    """
    if resize is not None and cache_dir is None:
        raise UserError("--resize needs --cache-dir (the folder for the resized copies).")
    root = Path(image_root) if image_root is not None else None
    cache = Path(cache_dir) if cache_dir is not None else None
    stats = ConvertStats(read=len(records))
    if cache is not None:
        remove_stale_temps(cache)  # copies a killed run was writing (one folder scan per run)
    text_problems = [_check_text(item) for item in records]

    from PIL import Image

    def image_job(index: int) -> tuple[str | None, tuple[str, str] | None]:
        source = _resolve(records[index]["image_path"], root)
        if resize is not None:
            if not source.is_file():
                return None, ("missing_image", f"image not found: {source}")
            try:
                return str(resize_copy(source, cache, resize).resolve()), None
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
                return None, (
                    "bad_image",
                    f"image does not decode: {source} ({err.__class__.__name__}: {err})",
                )
        if check_images:
            if not source.is_file():
                return None, ("missing_image", f"image not found: {source}")
            problem = _decodes(source)
            if problem:
                return None, ("bad_image", problem)
        return str(source.resolve()), None

    todo = [i for i, problem in enumerate(text_problems) if problem is None]
    image_results = {}
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        progress_bar(len(todo), "fer-sft images", "image", progress and bool(todo)) as bar,
    ):
        for index, result in zip(todo, pool.map(image_job, todo), strict=True):
            image_results[index] = result
            bar.update(1)
    entries, rejected = [], []
    for index, item in enumerate(records):
        problem = text_problems[index]
        image = None
        if problem is None:
            image, problem = image_results[index]
        if problem is not None:
            kind, reason = problem
            stats.reasons[kind] += 1
            path = item.get("image_path") if isinstance(item, dict) else None
            rejected.append({"index": index, "image_path": path, "kind": kind, "reason": reason})
            continue
        entries.append(to_sharegpt(item["question"], item["response"], image))
    stats.written = len(entries)
    return entries, rejected, stats


def convert_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
    resize: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    strict: bool = False,
    register: str | None = None,
    dataset_dir: str | os.PathLike = "dataset_info",
    workers: int = 8,
    force: bool = False,
    progress: bool = False,
) -> ConvertStats:
    """Convert ``input_path`` into ``output_path`` (atomic); see :func:`convert_records` for the checks.

    Rejected records go to :func:`rejected_path` (a stale one is removed when nothing is rejected); the two
    files are published as one set (:class:`~evaluators.outputs.OutputSet`).
    ``register`` adds the entry ``register`` to ``dataset_dir/dataset_info.json`` (atomic, locked); a different
    existing entry is only replaced with ``force``, and that is checked before any work.

    Raises:
        UserError: unreadable or empty input, no valid record, or ``strict`` and a record was rejected.
    """
    if register:
        from llamafactory_ext.dataset_registry import ensure_registrable

        ensure_registrable(register, output_path, dataset_dir, force)
    records = read_records(input_path)
    if not records:
        raise UserError(f"{input_path}: no records (empty file).")
    entries, rejected, stats = convert_records(
        records, image_root=image_root, check_images=check_images, resize=resize, cache_dir=cache_dir,
        workers=workers, progress=progress,
    )  # fmt: skip
    if rejected and strict:
        first = rejected[0]
        raise UserError(f"{input_path}: record {first['index']} rejected: {first['reason']} (--strict).")
    if not entries:
        first = rejected[0]
        raise UserError(
            f"{input_path}: all {stats.read} records rejected ({dict(stats.reasons)}); first: record "
            f"{first['index']}: {first['reason']}."
        )
    output_path, side = Path(output_path), rejected_path(output_path)
    # The dataset and its rejected list are one set: staged, then published together (old or new, never mixed).
    with OutputSet(output_path.parent, output_path.name) as out:
        atomic_write_json(out.path(output_path.name), entries, indent=None)
        if rejected:
            write_jsonl_atomic(out.path(side.name), rejected)
        else:
            out.remove.append(side.name)
    if rejected:
        logger.warning("%d of %d records rejected (%s), listed in %s", stats.rejected, stats.read,
                       dict(stats.reasons), side)  # fmt: skip
    logger.info("wrote %d sharegpt entries to %s", stats.written, output_path)
    if register:
        from llamafactory_ext.dataset_registry import register_dataset

        register_dataset(register, output_path, dataset_dir, force=force)
    return stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``unitune data fer-sft``'s options on ``parser``."""
    parser.add_argument("input", type=Path, help="UniFER CoT records (JSON list or JSONL)")
    parser.add_argument("--output", "--out", type=Path, default=Path("dataset_info/data/unifer_cot_sft.json"),
                        help="sharegpt JSON to write (default: %(default)s)")  # fmt: skip
    parser.add_argument("--image-root", type=Path, help="folder the records' image_path values are under")
    parser.add_argument("--resize", type=int, metavar="PX",
                        help="write PX×PX copies (aspect not kept; UniFER used 224) and train on them")  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, help="folder for the resized copies (with --resize)")
    parser.add_argument("--no-check-images", dest="check_images", action="store_false",
                        help="do not open the images (without --resize)")  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="stop at the first rejected record")
    parser.add_argument("--register", metavar="NAME", help="add NAME to DATASET_DIR/dataset_info.json")
    parser.add_argument(
        "--force", action="store_true", help="with --register: replace a different entry NAME"
    )
    parser.add_argument("--dataset-dir", type=Path, default=Path("dataset_info"),
                        help="folder of dataset_info.json (default: %(default)s)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=8, help="image threads (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``unitune data fer-sft``; returns 0 (rejections are logged and listed; --strict makes them fatal)."""
    if args.resize is not None and args.resize < 1:
        raise UserError(f"--resize must be a positive number of pixels, got {args.resize}.")
    stats = convert_file(
        args.input, args.output, image_root=args.image_root, check_images=args.check_images, resize=args.resize,
        cache_dir=args.cache_dir, strict=args.strict, register=args.register, dataset_dir=args.dataset_dir,
        workers=args.workers, force=args.force, progress=not args.no_progress,
    )  # fmt: skip
    return 0 if stats.written else 1
