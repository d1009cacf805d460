"""Convert RLVR data (problem, solution, image_path) into TRL GRPO rows with 224x224 images.

UniFER's RLVR files are JSON lists (or JSONL) of ``{"problem", "solution", "image_path"}``; ``image_path`` is
resolved against ``--image-root`` (a leading ``/`` is dropped, as UniFER's paths are root-relative). Each row
becomes one GRPO row:

- ``prompt``: one user turn, no system turn, an image placeholder then the problem text
  (``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": problem}]}]``); a ``<image>``
  token in the problem (LLaMA-Factory style) is removed, the placeholder stands for it;
- ``image``: the image, RGB, resized to 224x224 (UniFER's input size) and written once per source image;
- ``solution``, ``problem``, ``image_path`` (the source path), ``task`` (``"fer"`` or ``"hmer"``);
- ``candidate_labels`` (FER): the record's own list, else the list in the problem text ("candidate labels: a,
  b, c."), else ``[]`` (the reward then uses the gold's spelling, which scores the same).

Validation (every row, all problems reported at once): the image exists and decodes; a FER solution has an
``<answer>…</answer>`` span whose label is one of the candidates; an HMER solution is non-empty. The output is
``OUT/grpo.jsonl`` plus ``OUT/images/``, loadable with :func:`load_grpo_dataset`. Sharegpt records
(``{"images": [...], "messages": [human, gpt]}``, e.g. Uni-MuMER's LLaMA-Factory data) are read too.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluators.cli import add_out_dir
from evaluators.errors import UserError
from evaluators.io_utils import read_records, write_jsonl_atomic
from evaluators.knowledge.answers import extract_answer
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS, canonical_label

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "FER_PROBLEM",
    "OUTPUT_NAME",
    "build_prompt",
    "convert_records",
    "load_grpo_dataset",
    "parse_candidate_labels",
    "prepare_grpo_data",
    "write_synthetic_rlvr",
]

logger = logging.getLogger(__name__)

#: UniFER's input size; images are resized to (size, size).
DEFAULT_IMAGE_SIZE = 224
#: File name of the converted rows inside the output folder.
OUTPUT_NAME = "grpo.jsonl"
#: FERBench's question, with ``{labels}`` for the comma-separated candidates (used by the synthetic data).
FER_PROBLEM = (
    "As an expert in facial expression recognition, which expression is most prominent in this image? Please "
    "select your answer from the following candidate labels: {labels}. Provide your detailed reasoning between "
    "the <think></think> tags, and then give your final answer between the <answer></answer> tags."
)
#: Uni-MuMER's plain HMER question (used by the synthetic data).
HMER_PROBLEM = (
    "I have an image of a handwritten mathematical expression. Please write out the expression of the formula "
    "in the image using LaTeX format."
)

_TASKS = ("fer", "hmer")
_CANDIDATES_RE = re.compile(r"candidate labels?\s*:\s*(.+?)(?:\.(?:\s|$)|\n|$)", re.IGNORECASE)
_KNOWN_LABELS = tuple(dict.fromkeys(label for labels in CANDIDATE_LABELS.values() for label in labels))
_MAX_REPORTED = 5


def parse_candidate_labels(problem: str) -> list[str] | None:
    """Return the candidate list written in a FER question ("... candidate labels: a, b, c. ..."), if any.

    Example:

    >>> parse_candidate_labels("Select from the following candidate labels: angry, happy, sad. Think first.")
    ['angry', 'happy', 'sad']
    >>> parse_candidate_labels("Which emotion is shown?") is None
    True
    """
    if not isinstance(problem, str):
        return None
    match = _CANDIDATES_RE.search(problem)
    if not match:
        return None
    labels = [label.strip() for label in match.group(1).split(",")]
    labels = [label for label in labels if label]
    return labels or None


def build_prompt(problem: str) -> list[dict[str, Any]]:
    """The conversational GRPO prompt: one user turn with an image placeholder, then the text; no system turn.

    Example:

    >>> build_prompt("<image>Which expression is shown?")
    [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Which expression is shown?'}]}]
    """
    text = problem.replace("<image>", "").strip()
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def _from_sharegpt(record: dict) -> dict:
    """``{"images": [p], "messages"|"conversations": [human, gpt]}`` -> ``{problem, solution, image_path}``."""
    messages = record.get("messages") or record.get("conversations") or []
    images = record.get("images") or []
    user = next((m for m in messages if m.get("from", m.get("role")) in ("human", "user")), {})
    answer = next((m for m in messages if m.get("from", m.get("role")) in ("gpt", "assistant")), {})
    return {
        "problem": user.get("value", user.get("content")),
        "solution": answer.get("value", answer.get("content")),
        "image_path": images[0] if len(images) == 1 else images,
    }


def _resolve(image_path: str, image_root: Path | None) -> Path:
    """``image_root / image_path`` (UniFER's leading ``/`` dropped); an existing absolute path is kept."""
    if image_root is None:
        return Path(image_path)
    joined = image_root / image_path.lstrip("/\\")
    if not joined.exists() and Path(image_path).is_absolute() and Path(image_path).is_file():
        return Path(image_path)
    return joined


def _check_row(index: int, record: Any, task: str) -> tuple[dict | None, str | None]:
    """Validate the text fields of one record; return ``(row, None)`` or ``(None, error)``."""
    if not isinstance(record, dict):
        return None, f"row {index}: expected an object, got {type(record).__name__}"
    if "problem" not in record and ("messages" in record or "conversations" in record):
        record = _from_sharegpt(record)
    for key in ("problem", "solution", "image_path"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            got = record.get(key)
            return None, f"row {index}: `{key}` must be a non-empty string, got {got!r}"
    problem, solution = record["problem"], record["solution"]
    row: dict[str, Any] = {
        "prompt": build_prompt(problem),
        "problem": problem,
        "solution": solution,
        "image_path": record["image_path"],
        "task": task,
    }
    if task == "fer":
        answer = extract_answer(solution)
        if answer is None:
            return None, f"row {index}: `solution` has no <answer>...</answer> span: {solution[:80]!r}"
        given = record.get("candidate_labels")
        candidates = list(given) if isinstance(given, list) and given else parse_candidate_labels(problem)
        if canonical_label(answer, candidates or _KNOWN_LABELS) is None:
            shown = candidates or "any FERBench label"
            return None, f"row {index}: answer {answer!r} is not one of the candidate labels ({shown})"
        row["candidate_labels"] = [str(label) for label in candidates or []]
    return row, None


def _image_name(source: Path) -> str:
    return hashlib.sha1(str(source).encode("utf-8")).hexdigest()[:20] + ".png"


def _write_image(source: Path, dest: Path, image_size: int | None) -> str | None:
    """Decode, convert to RGB, resize and save atomically; return an error text or ``None``."""
    from PIL import Image, UnidentifiedImageError

    if not source.is_file():
        return f"image not found: {source}"
    if dest.is_file() and dest.stat().st_size > 0:
        return None  # converted before (the name is a hash of the source path)
    try:
        with Image.open(source) as img:
            img = img.convert("RGB")
            if image_size:
                img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            img.save(tmp, format="PNG")
        os.replace(tmp, dest)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return f"cannot decode image {source} ({type(err).__name__}: {err})"
    return None


def convert_records(
    records: Sequence[Any],
    out_dir: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    task: str = "fer",
    image_size: int | None = DEFAULT_IMAGE_SIZE,
    skip_invalid: bool = False,
    source: str = "input",
) -> Path:
    """Validate and convert RLVR records into ``out_dir/grpo.jsonl`` and ``out_dir/images/``.

    Args:
        records (`Sequence[dict]`): ``{"problem", "solution", "image_path"}`` (or sharegpt) records.
        out_dir (`str` or `PathLike`): output folder; existing converted images are reused.
        image_root (`str` or `PathLike`, *optional*): folder that ``image_path`` is relative to.
        task (`str`, defaults to ``"fer"``): ``"fer"`` (label checks) or ``"hmer"``.
        image_size (`int` or `None`, defaults to 224): square output size; ``None`` keeps the size.
        skip_invalid (`bool`, defaults to `False`): drop invalid rows with a warning instead of failing.
        source (`str`): name of the input, used in messages.

    Returns:
        `Path`: the written JSONL file; its ``image`` paths are relative to its folder.

    Raises:
        UserError: invalid rows (the count and the first few, one line), or no valid row at all.
    """
    if task not in _TASKS:
        raise UserError(f"task must be one of {_TASKS}, got {task!r}.")
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    root = Path(image_root) if image_root is not None else None
    rows, errors, done = [], [], {}
    for index, record in enumerate(records):
        row, error = _check_row(index, record, task)
        if row is None:
            errors.append(error)
            continue
        src = _resolve(row["image_path"], root)
        if src not in done:
            dest = images_dir / _image_name(src)
            done[src] = (dest, _write_image(src, dest, image_size))
        dest, error = done[src]
        if error is not None:
            errors.append(f"row {index}: {error}")
            continue
        row["image"] = f"images/{dest.name}"
        rows.append(row)
    if errors:
        summary = f"{source}: {len(errors)} of {len(records)} rows are invalid: " + "; ".join(
            errors[:_MAX_REPORTED]
        )
        if len(errors) > _MAX_REPORTED:
            summary += f"; ... ({len(errors) - _MAX_REPORTED} more)"
        if not skip_invalid:
            raise UserError(summary + " (pass --skip-invalid / data.skip_invalid to drop them).")
        logger.warning("%s; dropped.", summary)
    if not rows:
        raise UserError(f"{source}: no valid row to train on.")
    path = write_jsonl_atomic(out / OUTPUT_NAME, rows)
    logger.info("wrote %d GRPO rows (%d images) to %s", len(rows), len(done), path)
    return path


def prepare_grpo_data(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    task: str = "fer",
    image_size: int | None = DEFAULT_IMAGE_SIZE,
    skip_invalid: bool = False,
) -> Path:
    """Return a GRPO JSONL for ``path``: the file itself if it already holds GRPO rows, else its conversion.

    Example:

    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> rlvr = write_synthetic_rlvr(tmp / "raw", task="fer", n=2)
    >>> converted = prepare_grpo_data(rlvr, tmp / "grpo", image_root=tmp / "raw")
    >>> converted.name, sorted(read_records(converted)[0])
    ('grpo.jsonl', ['candidate_labels', 'image', 'image_path', 'problem', 'prompt', 'solution', 'task'])
    """
    records = read_records(path)
    if records and all("prompt" in r and "image" in r for r in records):
        return Path(path)
    return convert_records(records, out_dir, image_root, task, image_size, skip_invalid, source=str(path))


def load_grpo_dataset(path: str | os.PathLike):
    """Load a GRPO JSONL (from :func:`convert_records`) as a ``datasets.Dataset`` with a decoded ``image`` column.

    Relative image paths are resolved against the file's folder.
    """
    from datasets import Dataset, Image

    path = Path(path)
    rows = read_records(path)
    for row in rows:
        image = Path(row["image"])
        row["image"] = str(image if image.is_absolute() else path.parent / image)
    return Dataset.from_list(rows).cast_column("image", Image())


def write_synthetic_rlvr(out_dir: str | os.PathLike, task: str = "fer", n: int = 8, seed: int = 0) -> Path:
    """Write ``n`` synthetic RLVR records and their images (for smoke runs and tests); return the JSON file.

    FER rows cycle through RAF-DB's labels with FERBench's question; HMER rows hold short LaTeX. Images are
    random coloured shapes of assorted sizes (so the 224x224 resize is exercised). Paths are relative to
    ``out_dir``, which is the image root.
    """
    import random

    from PIL import Image, ImageDraw

    from evaluators.io_utils import atomic_write_json

    if task not in _TASKS:
        raise UserError(f"task must be one of {_TASKS}, got {task!r}.")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels = CANDIDATE_LABELS["rafdb"]
    latex = ["x ^ { 2 }", "a + b", "\\frac { 1 } { 2 }", "\\sqrt { x }", "y = 2 x", "a _ { i }"]
    records = []
    for i in range(n):
        size = (rng.randrange(40, 300), rng.randrange(40, 300))
        img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
            box = [x0, y0, x0 + rng.randrange(5, 40), y0 + rng.randrange(5, 40)]
            draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        name = f"images/{task}_{i:03d}.png"
        img.save(out / name)
        if task == "fer":
            problem = FER_PROBLEM.format(labels=", ".join(labels))
            solution = f"<answer>{labels[i % len(labels)]}</answer>"
        else:
            problem, solution = HMER_PROBLEM, latex[i % len(latex)]
        records.append({"problem": problem, "solution": solution, "image_path": name})
    return atomic_write_json(out / f"synthetic_{task}_rlvr.json", records)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune data fer-rlvr``."""
    parser.add_argument("input", type=Path, help="RLVR JSON/JSONL of {problem, solution, image_path}")
    parser.add_argument("--image-root", type=Path, default=None, help="folder image_path is relative to")
    add_out_dir(parser, "output folder (grpo.jsonl + images/)", required=True)
    parser.add_argument(
        "--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="square size; 0 keeps images as they are"
    )
    parser.add_argument(
        "--task", choices=_TASKS, default="fer", help="fer checks labels; hmer only non-empty"
    )
    parser.add_argument("--skip-invalid", action="store_true", help="drop invalid rows instead of failing")


def run(args: argparse.Namespace) -> int:
    """Run ``unitune data fer-rlvr``."""
    records = read_records(args.input)
    convert_records(
        records,
        args.out_dir,
        image_root=args.image_root,
        task=args.task,
        image_size=args.image_size or None,
        skip_invalid=args.skip_invalid,
        source=str(args.input),
    )
    return 0
