"""Convert RLVR data (problem, solution, image_path) into a TRL GRPO dataset folder with 224x224 images.

UniFER's RLVR files are JSON lists (or JSONL) of ``{"problem", "solution", "image_path"}``; ``image_path`` is
resolved against ``--image-root`` (a leading ``/`` is dropped, as UniFER's paths are root-relative). FERBench QA
records (``{"prompt", "true_label", "image_path", "candidate_labels"}``, a held-out eval set) and sharegpt
records (``{"images": [...], "messages": [human, gpt]}``, e.g. Uni-MuMER's LLaMA-Factory data) are read too.
Each record becomes one GRPO row:

- ``prompt``: one user turn, no system turn, an image placeholder then the problem text
  (``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": problem}]}]``); a ``<image>``
  token in the problem (LLaMA-Factory style) is removed, the placeholder stands for it;
- ``image``: the image, RGB, resized to 224x224 (UniFER's input size), **embedded** as PNG bytes;
- ``solution``, ``candidate_labels`` (FER: the record's own list, else the list in the problem text
  ("candidate labels: a, b, c."), else ``[]``; HMER: ``[]``), ``task`` (``"fer"`` or ``"hmer"``), ``problem``
  and ``image_path`` (the source path). Every task has the same columns, so FER and HMER sets mix.

Validation (every row, all problems reported at once): the image exists and decodes; a FER solution has an
``<answer>…</answer>`` span whose label is one of the candidates; an HMER solution is non-empty.

The output folder is a Hugging Face dataset that ``datasets.load_dataset(OUT)`` and ``trl grpo --dataset_name
OUT`` load from any working directory: ``OUT/data/<split>-00000-of-00001.parquet`` (``train``, and ``test``
with ``--eval``; the Hub's file naming, which ``load_dataset`` maps to splits) and a ``README.md`` card. Resized images
are cached under ``OUT/.cache/images/`` (hidden from ``load_dataset``), so a re-run only re-encodes new images.
The split files and the card of a run are published together (:class:`~evaluators.outputs.OutputSet`): a killed
run leaves the previous dataset or the new one, never a new ``train`` beside an old ``test``.
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
from evaluators.io_utils import (
    atomic_write_text,
    read_records,
    remove_stale_temps,
    save_png_replacing,
    temp_sibling,
)
from evaluators.knowledge.answers import extract_answer
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS, canonical_label
from evaluators.outputs import OutputSet
from evaluators.progress import progress_bar

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "FER_PROBLEM",
    "build_prompt",
    "convert_records",
    "grpo_features",
    "load_grpo_dataset",
    "parse_candidate_labels",
    "split_file",
    "write_synthetic_rlvr",
]

logger = logging.getLogger(__name__)

#: UniFER's input size; images are resized to (size, size).
DEFAULT_IMAGE_SIZE = 224
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
_PARQUET_CHUNK = 256


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


def _from_ferbench(record: dict) -> dict:
    """A FERBench QA item ``{prompt, true_label, image_path, candidate_labels}`` -> an RLVR record."""
    label = record.get("true_label")
    return {
        **record,
        "problem": record["prompt"],
        "solution": f"<answer>{label}</answer>" if isinstance(label, str) and label.strip() else None,
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
    elif "problem" not in record and isinstance(record.get("prompt"), str) and "true_label" in record:
        record = _from_ferbench(record)
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
    else:
        row["candidate_labels"] = []
    return row, None


def _image_name(data: bytes, image_size: int | None) -> str:
    """Cache name of a converted image: a hash of the source *content* and the target size.

    A replaced source image or another ``--image-size`` gets another name, so a stale copy is never reused.

    Example:

    >>> _image_name(b"abc", 224) != _image_name(b"abc", 448) != _image_name(b"abd", 224)
    True
    """
    return f"{hashlib.sha256(data).hexdigest()[:32]}_{image_size or 'orig'}.png"


def _write_image(source: Path, images_dir: Path, image_size: int | None) -> tuple[Path | None, str | None]:
    """Decode, convert to RGB, resize and save atomically; return ``(dest, None)`` or ``(None, error text)``."""
    import io

    from PIL import Image, UnidentifiedImageError

    if not source.is_file():
        return None, f"image not found: {source}"
    try:
        data = source.read_bytes()
    except OSError as err:
        return None, f"cannot read image {source} ({err.strerror})"
    dest = images_dir / _image_name(data, image_size)
    if dest.is_file() and dest.stat().st_size > 0:
        return dest, None  # converted before from the same bytes at the same size
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            if image_size:
                img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
            save_png_replacing(img, dest)
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
    ) as err:
        return None, f"cannot decode image {source} ({type(err).__name__}: {err})"
    return dest, None


def grpo_features():
    """The ``datasets.Features`` of every GRPO dataset unitune writes (FER and HMER alike, so they mix).

    Example:

    >>> sorted(grpo_features())
    ['candidate_labels', 'image', 'image_path', 'problem', 'prompt', 'solution', 'task']
    """
    from datasets import Features, Image, Value

    text = Value("string")
    return Features(
        {
            "prompt": [{"role": text, "content": [{"type": text, "text": text}]}],
            "image": Image(),
            "solution": text,
            "candidate_labels": [text],
            "task": text,
            "problem": text,
            "image_path": text,
        }
    )


def split_file(out_dir: str | os.PathLike, split: str) -> Path:
    """Where split ``split`` of the dataset folder ``out_dir`` is written (the Hub's parquet naming)."""
    return Path(out_dir) / "data" / f"{split}-00000-of-00001.parquet"


def _write_parquet(path: Path, rows: list[dict], images_dir: Path, bar: Any) -> None:
    """Write ``rows`` (``image`` = a cached file name) to ``path`` atomically, in chunks, images embedded.

    ``bar`` (a progress bar) advances by each chunk's rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = grpo_features()
    schema = features.arrow_schema
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    fd, tmp = temp_sibling(path)  # held open until the rename: its lock marks the temp file as live
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(rows), _PARQUET_CHUNK):
                chunk = []
                for row in rows[start : start + _PARQUET_CHUNK]:
                    name = row["image"]
                    image = {"bytes": (images_dir / name).read_bytes(), "path": name}
                    chunk.append(features.encode_example({**row, "image": image}))
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                bar.update(len(chunk))
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _card(splits: Sequence[str]) -> str:
    """The dataset card ``README.md`` of a folder holding ``splits``.

    The card has no ``configs`` block on purpose: with one, datasets 4.0 caches a local folder under its
    *name* and the patterns alone, so two folders both called ``grpo`` would load the same cached rows. Without
    it, ``load_dataset`` finds ``data/<split>-*.parquet`` by the Hub's naming and hashes the real files.
    """
    return (
        "---\npretty_name: unitune GRPO dataset\ntags: [unitune, grpo]\n---\n\n"
        "# GRPO dataset written by `unitune data fer-rlvr` / `hmer-rlvr`\n\n"
        f"Splits: {', '.join(sorted(splits))}. Columns: `prompt` (conversational, one image placeholder), `image` "
        "(embedded PNG), `solution`, `candidate_labels`, `task`, `problem`, `image_path` (the source image). Load it "
        "with `datasets.load_dataset(THIS_FOLDER)` or train with `trl grpo --dataset_name THIS_FOLDER "
        "--reward_funcs trl_grpo.rewards.fer_accuracy_reward`.\n"
    )


def _present_splits(out_dir: Path) -> set[str]:
    return {p.name.split("-", 1)[0] for p in (out_dir / "data").glob("*-00000-of-00001.parquet")}


def _publish(out_dir: Path, splits: dict[str, list[dict]], progress: bool, keep_others: bool) -> None:
    """Write the parquet files of ``splits`` and the card as one output set (old folder or new, never mixed).

    ``keep_others``: splits already in the folder and not in ``splits`` stay (else they are removed with
    the publication).
    """
    images_dir = out_dir / ".cache" / "images"
    present = _present_splits(out_dir)
    final = (present | set(splits)) if keep_others else set(splits)
    with OutputSet(out_dir, "grpo-dataset") as out:
        for split, rows in splits.items():
            target = split_file(out_dir, split)
            with progress_bar(len(rows), f"{split} parquet", "row", progress) as bar:
                _write_parquet(out.path(f"data/{target.name}"), rows, images_dir, bar)
        atomic_write_text(out.path("README.md"), _card(final))
        out.remove += [f"data/{split_file(out_dir, split).name}" for split in sorted(present - final)]


def convert_records(
    records: Sequence[Any],
    out_dir: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    task: str = "fer",
    image_size: int | None = DEFAULT_IMAGE_SIZE,
    skip_invalid: bool = False,
    source: str = "input",
    split: str = "train",
    progress: bool = False,
) -> Path:
    """Validate and convert records into split ``split`` of the dataset folder ``out_dir`` (with the card, as one set).

    Args:
        records (`Sequence[dict]`): RLVR ``{"problem", "solution", "image_path"}``, FERBench QA or sharegpt records.
        out_dir (`str` or `PathLike`): the dataset folder; other splits in it are kept, cached images reused.
        image_root (`str` or `PathLike`, *optional*): folder that ``image_path`` is relative to.
        task (`str`, defaults to ``"fer"``): ``"fer"`` (label checks) or ``"hmer"``.
        image_size (`int` or `None`, defaults to 224): square output size; ``None`` keeps the size.
        skip_invalid (`bool`, defaults to `False`): drop invalid rows with a warning instead of failing.
        source (`str`): name of the input, used in messages.
        split (`str`, defaults to ``"train"``): the split to write (``"test"`` for an eval set).
        progress (`bool`, defaults to `False`): progress bars (total, rate, ETA) over the rows checked and
            converted, then over the rows written.

    Returns:
        `Path`: the dataset folder (``datasets.load_dataset(str(path))`` loads it).

    Raises:
        UserError: invalid rows (the count and the first few, one line), or no valid row at all.

    Example:

    >>> import tempfile, pathlib, datasets
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> rlvr = write_synthetic_rlvr(tmp / "raw", task="fer", n=2)
    >>> folder = convert_records(read_records(rlvr), tmp / "grpo", image_root=tmp / "raw")
    >>> ds = datasets.load_dataset(str(folder), split="train")
    >>> ds.num_rows, ds[0]["image"].size, ds[0]["task"]
    (2, (224, 224), 'fer')
    """
    out = Path(out_dir)
    rows = _prepare_split(records, out, image_root, task, image_size, skip_invalid, source, split, progress)
    _publish(out, {split: rows}, progress, keep_others=True)
    return out


def _prepare_split(
    records: Sequence[Any],
    out: Path,
    image_root: str | os.PathLike | None,
    task: str,
    image_size: int | None,
    skip_invalid: bool,
    source: str,
    split: str,
    progress: bool,
) -> list[dict]:
    """Validate ``records`` and convert their images into ``out``'s cache; return the rows of the split.

    Raises:
        UserError: as :func:`convert_records`.
    """
    if task not in _TASKS:
        raise UserError(f"task must be one of {_TASKS}, got {task!r}.")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", split):
        raise UserError(f"split must be a lowercase name like train or test, got {split!r}.")
    images_dir = out / ".cache" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    root = Path(image_root) if image_root is not None else None
    remove_stale_temps(images_dir)  # images a killed run was writing (one folder scan per run)
    rows, errors, done = [], [], {}
    with progress_bar(len(records), f"{split} rows", "row", progress and bool(records)) as bar:
        for index, record in enumerate(records):
            bar.update(1)
            row, error = _check_row(index, record, task)
            if row is None:
                errors.append(error)
                continue
            src = _resolve(row["image_path"], root)
            if src not in done:
                done[src] = _write_image(src, images_dir, image_size)
            dest, error = done[src]
            if error is not None:
                errors.append(f"row {index}: {error}")
                continue
            assert dest is not None
            row["image"] = dest.name
            rows.append(row)
    if errors:
        summary = f"{source}: {len(errors)} of {len(records)} rows are invalid: " + "; ".join(
            errors[:_MAX_REPORTED]
        )
        if len(errors) > _MAX_REPORTED:
            summary += f"; ... ({len(errors) - _MAX_REPORTED} more)"
        if not skip_invalid:
            raise UserError(summary + " (pass --skip-invalid to drop them).")
        logger.warning("%s; dropped.", summary)
    if not rows:
        raise UserError(f"{source}: no valid row to train on.")
    logger.info("split %r: %d GRPO rows (%d images) for %s", split, len(rows), len(done), out)
    return rows


def load_grpo_dataset(path: str | os.PathLike, split: str | None = "train"):
    """Load a dataset folder written by :func:`convert_records` (``datasets.load_dataset`` on the folder).

    ``split=None`` returns the whole ``DatasetDict``.
    """
    import datasets

    return datasets.load_dataset(str(path), split=split)


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


def add_arguments(
    parser: argparse.ArgumentParser, task: str = "fer", image_size: int = DEFAULT_IMAGE_SIZE
) -> None:
    """Arguments of ``unitune data fer-rlvr`` (and, with other defaults, ``hmer-rlvr``)."""
    parser.add_argument(
        "input", type=Path, help="RLVR JSON/JSONL of {problem, solution, image_path} (or sharegpt records)"
    )
    parser.add_argument("--image-root", type=Path, default=None, help="folder image_path is relative to")
    add_out_dir(parser, "output dataset folder (data/<split>-*.parquet + README.md)", required=True)
    parser.add_argument(
        "--eval",
        type=Path,
        default=None,
        metavar="FILE",
        help="held-out file written as the `test` split (FERBench QA, RLVR or sharegpt records)",
    )
    parser.add_argument(
        "--eval-image-root", type=Path, default=None, help="image root of --eval (default: --image-root)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=image_size,
        help=f"square size; 0 keeps images as they are (default {image_size})",
    )
    parser.add_argument(
        "--task", choices=_TASKS, default=task, help="fer checks labels; hmer only non-empty solutions"
    )
    parser.add_argument("--skip-invalid", action="store_true", help="drop invalid rows instead of failing")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    """Run ``unitune data fer-rlvr`` / ``hmer-rlvr``: write ``train`` (and ``test`` with ``--eval``)."""
    jobs = [("train", args.input, args.image_root)]
    if args.eval is not None:
        jobs.append(("test", args.eval, args.eval_image_root or args.image_root))
    out = Path(args.out_dir)
    splits = {
        split: _prepare_split(
            read_records(path), out, root, args.task, args.image_size or None, args.skip_invalid, str(path),
            split, not args.no_progress,
        )
        for split, path, root in jobs
    }  # fmt: skip
    # Every split is checked before anything is written; then the splits and the card are published together,
    # and a split of an earlier run with other inputs goes with them.
    _publish(out, splits, not args.no_progress, keep_others=False)
    logger.info("wrote %s to %s", ", ".join(f"{s} ({len(rows)} rows)" for s, rows in splits.items()), out)
    return 0
