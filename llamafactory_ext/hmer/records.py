"""Read HMER (image, LaTeX) samples from sharegpt JSON, JSONL, flat prediction files or CROHME ``caption.txt``.

Accepted inputs (detected from the path):

- a **sharegpt** JSON list (or JSONL, one record a line) as upstream uses it:
  ``{"images": [path], "messages": [{"from": "human", "value": "<image>…"}, {"from": "gpt", "value": LaTeX}]}``;
  ``role``/``content`` keys (``user``/``assistant``) work too. The label is the first assistant turn.
- **flat** records: ``{"image" | "image_path" | "images", "gt" | "latex" | "label", "pred"?, "img_id" | "id"?}``
  (upstream's ``*_pred.json`` files are of this kind, with the wrong predictions already in ``pred``).
- a CROHME **caption.txt** (``name tok tok …`` per line) or a folder holding one; images are looked up by
  name (with or without extension) in ``--image-dir``, else ``img/`` or ``images/`` beside the file, else the
  file's folder.

Image paths: sharegpt / flat paths are **kept as given** (LLaMA-Factory resolves relative ones against its
``media_dir``); caption.txt images are **written absolute**. JSONL is read line by line (streaming).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.errors import UserError
from evaluators.io_utils import iter_jsonl
from evaluators.json_stream import iter_json_array

__all__ = [
    "IMAGE_EXTENSIONS",
    "HmerSample",
    "iter_caption",
    "iter_json_objects",
    "iter_samples",
    "count_records",
    "is_json_list",
    "resolve_image",
    "sample_from_record",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_USER_ROLES = ("human", "user")
_ASSISTANT_ROLES = ("gpt", "assistant")


@dataclass(slots=True)
class HmerSample:
    """One (image, LaTeX) pair, optionally with a model prediction for Error-Driven Learning.

    Attributes:
        id (`str`): ``img_id``/``id`` of the record, else the image file stem.
        image (`str`): the image path (as given, or absolute for caption.txt input).
        latex (`str`): the space-tokenised label, unchanged.
        pred (`str`, *optional*): a prediction of the same image (flat records only).
        index (`int`): position in the input file (0-based), for error messages.
    """

    id: str
    image: str
    latex: str
    pred: str | None = None
    index: int = 0


def _image_stem(path: str) -> str:
    """``os.path.splitext(os.path.basename(path))[0]`` on POSIX, by string slicing (once per record).

    Example:

    >>> [_image_stem(p) for p in ("a/b.png", "b", "x/.hidden", "..a", "c.d.jpg", "/d/")]
    ['b', 'b', '.hidden', '..a', 'c.d', '']
    """
    name = path.rpartition("/")[2]
    stem = name.rpartition(".")[0]
    return stem if stem.strip(".") else name  # splitext keeps leading dots: ".hidden" has no extension


def sample_from_record(record: Any, index: int = 0, source: str = "input") -> HmerSample:
    """Turn one sharegpt or flat record into a :class:`HmerSample`.

    Raises:
        UserError: the record has no image or no label, naming ``source`` and ``index``.

    Example:

    >>> s = sample_from_record({"images": ["a/b.png"], "messages": [
    ...     {"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "x ^ { 2 }"}]})
    >>> (s.id, s.image, s.latex)
    ('b', 'a/b.png', 'x ^ { 2 }')
    >>> sample_from_record({"img_id": "7", "image_path": "p.jpg", "gt": "a", "pred": "b"}).pred
    'b'
    """
    # Hot path (once per record of a million-record build): plain key tests, the error text built only on error.
    if not isinstance(record, dict):
        raise UserError(f"{source}: record {index} is a {type(record).__name__}, expected an object.")
    if "images" in record:
        images = record["images"]
    elif "image" in record:
        images = record["image"]
    else:
        images = record.get("image_path")
    if isinstance(images, list):
        if len(images) != 1:
            raise UserError(
                f"{source}: record {index} has {len(images)} images; HMER records have exactly one."
            )
        images = images[0]
    if not isinstance(images, str) or not images:
        raise UserError(
            f"{source}: record {index} has no image (expected `images`, `image` or `image_path`)."
        )
    latex = None
    pred = record.get("pred")
    messages = record["messages"] if "messages" in record else record.get("conversations")
    if messages is not None:
        if not isinstance(messages, list):
            raise UserError(
                f"{source}: record {index}: `messages` is a {type(messages).__name__}, expected a list."
            )
        for turn in messages:
            if not isinstance(turn, dict):
                raise UserError(
                    f"{source}: record {index}: a message is a {type(turn).__name__}, expected an object."
                )
            role = turn["from"] if "from" in turn else turn.get("role")
            if role in _ASSISTANT_ROLES:
                latex = turn["value"] if "value" in turn else turn.get("content")
                break
        if latex is None:
            raise UserError(
                f"{source}: record {index} has no assistant turn (`from: gpt` or `role: assistant`)."
            )
    else:
        for key in ("gt", "latex", "label"):
            if key in record:
                latex = record[key]
                break
        if latex is None:
            raise UserError(
                f"{source}: record {index} has neither `messages` nor a label (`gt`, `latex` or `label`)."
            )
    if not isinstance(latex, str):
        raise UserError(
            f"{source}: record {index}: the label is a {type(latex).__name__}, expected a string."
        )
    if pred is not None and not isinstance(pred, str):
        raise UserError(f"{source}: record {index}: `pred` is a {type(pred).__name__}, expected a string.")
    ident = record["img_id"] if "img_id" in record else record.get("id")
    ident = _image_stem(images) if ident is None else str(ident)
    return HmerSample(id=ident, image=images, latex=latex, pred=pred, index=index)


def is_json_list(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file whose first non-blank character is ``[`` (else JSONL, caption.txt, a folder…).

    Example:

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a.json").write_text(' \\n[{}]'); _ = (d / "b.jsonl").write_text('{}\\n')
    >>> is_json_list(d / "a.json"), is_json_list(d / "b.jsonl"), is_json_list(d)
    (True, False, False)
    """
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def iter_json_objects(
    path: str | os.PathLike, *, on_read: Callable[[int], object] | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, object)`` from a JSON list or a JSONL file, streamed (one item in memory at a time).

    ``on_read`` (*optional*, JSON lists only): called with the bytes of each chunk read (a progress bar).

    Raises:
        UserError: the file is missing or malformed (file and line named).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a JSON or JSONL file.")
    if not path.is_file():
        raise UserError(f"{path}: no such file.")
    if is_json_list(path):  # a JSON list is streamed item by item too (memory flat at any size)
        yield from enumerate(iter_json_array(path, on_read=on_read))
        return
    # JSONL is streamed; non-UTF-8, bad JSON, absurd nesting or a cut-off last line are one-line errors.
    yield from enumerate(iter_jsonl(path))


def _default_image_dir(caption: Path) -> Path:
    for name in ("img", "images"):
        if (caption.parent / name).is_dir():
            return caption.parent / name
    return caption.parent


def iter_caption(path: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> Iterator[HmerSample]:
    """Yield samples from a CROHME ``caption.txt`` (``name<TAB or space>tok tok …``), images made absolute.

    Images are matched by file name, or by stem when the caption names no extension. A missing image
    keeps the path ``image_dir/name`` so that the builder rejects the record with a clear reason.

    Example:

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "img").mkdir(); (d / "img" / "18_em_0.bmp").write_bytes(b"")
    0
    >>> _ = (d / "caption.txt").write_text("18_em_0\\tx ^ { 2 }\\n")
    >>> [(s.id, pathlib.Path(s.image).name, s.latex) for s in iter_caption(d / "caption.txt")]
    [('18_em_0', '18_em_0.bmp', 'x ^ { 2 }')]
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file.")
    folder = (Path(image_dir) if image_dir is not None else _default_image_dir(path)).resolve()
    by_stem: dict[str, str] = {}
    if folder.is_dir():
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in IMAGE_EXTENSIONS:
                    by_stem.setdefault(stem, entry.name)
    index = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path}: line {number} is not UTF-8 text (byte offset {err.start} in the line); "
                    "convert the file to UTF-8."
                ) from None
            if not line.strip():
                continue
            parts = line.strip().split(None, 1)
            if len(parts) < 2:
                raise UserError(f"{path}: line {number} has an image name but no LaTeX.")
            name, latex = parts
            stem, ext = os.path.splitext(name)
            file_name = name if ext.lower() in IMAGE_EXTENSIONS else by_stem.get(name, name)
            yield HmerSample(
                id=stem if ext.lower() in IMAGE_EXTENSIONS else name,
                image=str(folder / file_name),
                latex=latex,
                index=index,
            )
            index += 1


def count_records(path: str | os.PathLike) -> int | None:
    """How many records an input holds (the total of the builders' progress bars); ``None`` if unreadable.

    JSONL and caption.txt: non-empty lines (a cheap byte scan); a JSON list: one streaming pass.

    Example:

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jsonl").write_text('{"x": 1}\\n\\n{"x": 2}\\n'); _ = (d / "b.json").write_text('[{}, {}, {}]')
    >>> count_records(d / "a.jsonl"), count_records(d / "b.json"), count_records(d / "none.json")
    (2, 3, None)
    """
    path = Path(path)
    if path.is_dir():
        path = path / "caption.txt"
    if not path.is_file():
        return None
    if not is_json_list(path):
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    try:
        return sum(1 for _ in iter_json_array(path))
    except UserError:
        return None


def iter_samples(
    path: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    *,
    on_read: Callable[[int], object] | None = None,
) -> Iterator[HmerSample]:
    """Yield :class:`HmerSample` from any accepted input (see the module docstring), streaming JSONL.

    Args:
        path: a ``.json`` list, a ``.jsonl`` file, a ``caption.txt`` or a folder holding ``caption.txt``.
        image_dir: the image folder of a caption.txt (ignored for JSON inputs).
        on_read (*optional*): JSON lists only, called with the bytes of each chunk read (a progress bar).

    Raises:
        UserError: the input is missing or malformed.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "caption.txt").is_file():
            raise UserError(f"{path}: a folder input must hold caption.txt.")
        yield from iter_caption(path / "caption.txt", image_dir)
        return
    if path.suffix.lower() == ".txt":
        yield from iter_caption(path, image_dir)
        return
    source = str(path)
    for index, record in iter_json_objects(path, on_read=on_read):
        yield sample_from_record(record, index, source)


def resolve_image(image: str, root: str | os.PathLike | None = None) -> Path | None:
    """Find an image the way LLaMA-Factory does: ``root/image`` first, then ``image`` itself; ``None`` if absent.

    Example:

    >>> resolve_image("/definitely/not/here.png") is None
    True
    """
    # os.path, not pathlib: this runs once per record of a million-record build.
    if root is not None:
        candidate = os.path.join(root, image)
        if os.path.isfile(candidate):
            return Path(candidate)
    return Path(image) if os.path.isfile(image) else None
