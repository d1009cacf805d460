"""The one place where inference inputs become model requests, for every backend.

An input file (HMER sharegpt records, FERBench QA records, or JSONL of either) is read into
:class:`InferenceRecord` objects; :func:`prepare_request` turns one record into a
:class:`PreparedRequest`: chat messages, the chat-template-rendered prompt text and the decoded images.
The transformers backend feeds ``prompt`` + ``images`` to the processor, the vLLM backend sends the very
same ``prompt`` + ``images`` as ``{"prompt", "multi_modal_data"}``; neither builds prompts itself.

The ``<image>`` placeholder: training (LLaMA-Factory's ``qwen2_vl`` template) replaces ``<image>`` in the
human turn with the vision tokens. Upstream's inference scripts instead prepend an image part and leave the
literal text ``<image>`` in the prompt, which the model never saw in training. By default the placeholder is
removed and a real image part is put where it stood (as in training); ``upstream_prompt=True`` reproduces
upstream's leftover literal.

System prompt: ``system_prompt`` is sent as an explicit system turn; ``None`` sends no system turn and lets
the chat template decide (UniFER's inference; Qwen2.5-VL's template then inserts Qwen's default); ``""`` sends
an empty system turn. :data:`FAMILY_SYSTEM` (the runner's default) means the model family's training default
(:func:`resolve_system_prompt`): Qwen2.5-VL gets Qwen's ``"You are a helpful assistant."``, as upstream
Uni-MuMER and LLaMA-Factory's ``qwen2_vl`` template; Qwen3-VL gets none, as the ``qwen3_vl_nothink`` template.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.errors import UserError
from evaluators.io_utils import read_records
from evaluators.model_family import DEFAULT_FAMILY, ModelFamily

__all__ = [
    "FAMILY_SYSTEM",
    "IMAGE_PLACEHOLDER",
    "QWEN_DEFAULT_SYSTEM",
    "TASKS",
    "ImageProblem",
    "InferenceRecord",
    "PreparedRequest",
    "PromptOptions",
    "build_messages",
    "detect_task",
    "load_images",
    "load_records",
    "prepare_request",
    "record_id",
    "render_prompt",
    "resolve_system_prompt",
]

logger = logging.getLogger(__name__)

#: The placeholder LLaMA-Factory and upstream's data put in the human turn for each image.
IMAGE_PLACEHOLDER = "<image>"

#: Qwen's default system prompt (what Qwen2.5-VL's chat template inserts when no system turn is given).
QWEN_DEFAULT_SYSTEM: str = DEFAULT_FAMILY.default_system or ""

#: ``system_prompt`` value meaning "the model family's default system turn" (see the module docstring).
FAMILY_SYSTEM = "<model family default>"

#: Task names: ``hmer`` (LaTeX predictions, ``pred``/``gt``) and ``fer`` (``model_response``/``true_label``).
TASKS = ("hmer", "fer")

_HUMAN_ROLES = {"human", "user"}
_GPT_ROLES = {"gpt", "assistant"}


@dataclass(frozen=True)
class PromptOptions:
    """How records become prompts; identical for every backend.

    Args:
        system_prompt (`str` or `None`): explicit system turn; ``None`` = none (the template decides).
        upstream_prompt (`bool`): keep upstream's literal ``<image>`` text and prepend the images.
        image_size (`int` or `None`): resize every image to exactly ``image_size``×``image_size``
            (UniFER uses 224; the aspect ratio is not kept). ``None`` leaves images to the processor.
    """

    system_prompt: str | None = QWEN_DEFAULT_SYSTEM
    upstream_prompt: bool = False
    image_size: int | None = None


@dataclass
class InferenceRecord:
    """One input item: its id, user text (placeholders included), image paths and label."""

    index: int
    id: str
    task: str
    text: str
    images: list[str]
    image_paths: list[Path]
    gt: str | None
    record: dict[str, Any] = field(repr=False)


@dataclass
class PreparedRequest:
    """A record ready for any backend: chat ``messages``, rendered ``prompt`` text and decoded ``images``."""

    record: InferenceRecord
    messages: list[dict[str, Any]]
    user_text: str
    prompt: str
    images: list[Any]


class ImageProblem(Exception):
    """An image of a record is missing or does not decode (the record is listed and skipped)."""


def detect_task(record: dict[str, Any]) -> str:
    """Tell an HMER record from a FER one.

    Example:

    >>> detect_task({"images": ["a.png"], "messages": [{"from": "human", "value": "<image>hi"}]})
    'hmer'
    >>> detect_task({"image_path": "/RAF-DB/x.jpg", "true_label": "fear", "prompt": "p", "candidate_labels": []})
    'fer'
    """
    if "candidate_labels" in record or "true_label" in record:
        return "fer"
    return "hmer"


def record_id(record: dict[str, Any], image: str | None, index: int) -> str:
    """The id of a record: ``id``, else ``img_id``, else the stem of its first image, else the index.

    Example:

    >>> record_id({"image_path": "/RAF-DB/aligned/test_0001_aligned.jpg"}, "/RAF-DB/aligned/test_0001_aligned.jpg", 0)
    'test_0001_aligned'
    >>> record_id({"img_id": "18_em_0"}, "x.png", 3)
    '18_em_0'
    >>> record_id({}, None, 7)
    '7'
    """
    for key in ("id", "img_id"):
        value = record.get(key)
        if value not in (None, ""):
            return str(value)
    if image:
        return Path(str(image).replace("\\", "/")).stem
    return str(index)


def _conversation(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    for key in ("messages", "conversations"):
        turns = record.get(key)
        if isinstance(turns, list):
            return turns
    return None


def _turn(turn: Any) -> tuple[str, str]:
    if not isinstance(turn, dict):
        return "", ""
    role = turn.get("from", turn.get("role", ""))
    content = turn.get("value", turn.get("content", ""))
    return str(role).lower(), content if isinstance(content, str) else ""


def _parse(record: dict[str, Any], task: str, path: Path, index: int) -> tuple[str, list[str], str | None]:
    """Return (user text, image strings, label) of one record, or raise UserError naming it."""
    turns = _conversation(record)
    if turns is not None:
        text, gt = None, None
        for turn in turns:
            role, content = _turn(turn)
            if text is None and role in _HUMAN_ROLES:
                text = content
            elif text is not None and role in _GPT_ROLES:
                gt = content
                break
        if text is None:
            raise UserError(f"{path}: record {index} has no human/user turn to use as the prompt.")
        images = record.get("images") or []
        if isinstance(images, str):
            images = [images]
        return text, [str(i) for i in images], gt
    text = record.get("prompt", record.get("question", record.get("problem")))
    if not isinstance(text, str):
        raise UserError(
            f"{path}: record {index} has neither `messages` (sharegpt) nor a `prompt` string "
            f"(FERBench QA); its keys: {', '.join(map(repr, list(record)[:8]))}."
        )
    image = record.get("image_path", record.get("image", record.get("images")))
    images = image if isinstance(image, list) else ([image] if image else [])
    label_key = "true_label" if task == "fer" else "gt"
    gt = record.get(label_key, record.get("gt", record.get("label")))
    return text, [str(i) for i in images], gt if isinstance(gt, str) else None


def resolve_image(image: str, image_root: Path | None, input_dir: Path) -> Path:
    """Where an image path of a record points.

    With ``image_root`` the path is joined to it (a leading ``/`` is dropped, as FERBench's
    ``/RAF-DB/...`` paths need). Without it absolute paths are used as they are and relative ones are looked
    up beside the input file first, then in the current directory.

    Example:

    >>> str(resolve_image("/RAF-DB/aligned/a.jpg", Path("/data/ferbench"), Path("/in")))
    '/data/ferbench/RAF-DB/aligned/a.jpg'
    >>> str(resolve_image("/abs/a.png", None, Path("/in")))
    '/abs/a.png'
    """
    if image_root is not None:
        return image_root / image.lstrip("/\\")
    candidate = Path(image)
    if candidate.is_absolute():
        return candidate
    beside = input_dir / candidate
    if beside.exists() or not candidate.exists():
        return beside
    return candidate


def load_records(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    task: str = "auto",
    allow_torn: bool = False,
) -> list[InferenceRecord]:
    """Read an HMER sharegpt file, a FERBench QA file or JSONL of either into records.

    Ids are made unique within the file (a repeated id gets ``#2``, ``#3``... with a warning), because the
    runner resumes by id.

    Raises:
        UserError: a missing or malformed file (a cut-off last JSONL line too, unless ``allow_torn``), an
            empty file, or a record without a prompt.
    """
    path = Path(path)
    items = read_records(path, allow_torn=allow_torn)
    if not items:
        raise UserError(f"{path}: no records; there is nothing to run.")
    if task == "auto":
        task = detect_task(items[0])
    elif task not in TASKS:
        raise UserError(f"--task must be one of auto, {', '.join(TASKS)}; got {task!r}.")
    root = Path(image_root) if image_root is not None else None
    seen: Counter[str] = Counter()
    records: list[InferenceRecord] = []
    for index, item in enumerate(items):
        text, images, gt = _parse(item, task, path, index)
        base = record_id(item, images[0] if images else None, index)
        seen[base] += 1
        rid = base if seen[base] == 1 else f"{base}#{seen[base]}"
        paths = [resolve_image(image, root, path.parent) for image in images]
        records.append(InferenceRecord(index, rid, task, text, images, paths, gt, item))
    repeated = sum(n - 1 for n in seen.values() if n > 1)
    if repeated:
        logger.warning(
            "%s: %d records repeat an id; they get #2, #3... suffixes to stay distinct.", path, repeated
        )
    return records


def resolve_system_prompt(system_prompt: str | None, family: ModelFamily) -> str | None:
    """``system_prompt`` with :data:`FAMILY_SYSTEM` replaced by ``family``'s default system turn.

    Example:

    >>> from evaluators.model_family import get_family
    >>> resolve_system_prompt(FAMILY_SYSTEM, get_family("qwen2_5_vl"))
    'You are a helpful assistant.'
    >>> resolve_system_prompt(FAMILY_SYSTEM, get_family("qwen3_vl")) is None
    True
    >>> resolve_system_prompt("Be brief.", get_family("qwen3_vl"))
    'Be brief.'
    """
    return family.default_system if system_prompt == FAMILY_SYSTEM else system_prompt


def build_messages(text: str, n_images: int, options: PromptOptions) -> list[dict[str, Any]]:
    """Chat messages for one user turn with ``n_images`` images (image parts carry no data).

    Example:

    >>> build_messages("<image>Read the formula.", 1, PromptOptions())  # doctest: +NORMALIZE_WHITESPACE
    [{'role': 'system', 'content': 'You are a helpful assistant.'},
     {'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Read the formula.'}]}]
    >>> build_messages("<image>Read the formula.", 1, PromptOptions(system_prompt=None, upstream_prompt=True))
    [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': '<image>Read the formula.'}]}]
    >>> build_messages("Which expression?", 1, PromptOptions(system_prompt=""))[1]["content"][0]
    {'type': 'image'}

    Raises:
        ImageProblem: the text has ``<image>`` placeholders but not one per image.
    """
    content: list[dict[str, Any]] = []
    placeholders = text.count(IMAGE_PLACEHOLDER)
    if options.upstream_prompt or placeholders == 0:
        content.extend({"type": "image"} for _ in range(n_images))
        content.append({"type": "text", "text": text})
    elif placeholders != n_images:
        raise ImageProblem(
            f"the prompt has {placeholders} {IMAGE_PLACEHOLDER} placeholders but {n_images} images"
        )
    else:
        for position, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if position:
                content.append({"type": "image"})
            if piece:
                content.append({"type": "text", "text": piece})
    messages: list[dict[str, Any]] = []
    if options.system_prompt is not None:
        messages.append({"role": "system", "content": options.system_prompt})
    messages.append({"role": "user", "content": content})
    return messages


def user_text(messages: list[dict[str, Any]]) -> str:
    """The text parts of the last user message, joined (what is logged as ``prompt``).

    Example:

    >>> user_text(build_messages("<image>Read it.", 1, PromptOptions()))
    'Read it.'
    """
    content = messages[-1]["content"]
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def render_prompt(processor: Any, messages: list[dict[str, Any]]) -> str:
    """Render ``messages`` with the processor's chat template, ready for generation.

    Image parts become ``<|vision_start|><|image_pad|><|vision_end|>``; both the transformers processor and
    vLLM expand the single pad token to the image's vision tokens.
    """
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def load_images(paths: list[Path], image_size: int | None = None) -> list[Any]:
    """Open images as RGB, optionally resized to exactly ``image_size``×``image_size``.

    Raises:
        ImageProblem: a file is missing, is not a readable image, or is over PIL's decompression-bomb
            limit (the record is then a listed failure; the run goes on).
    """
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        if not path.is_file():
            raise ImageProblem(f"image not found: {path}")
        try:
            with Image.open(path) as handle:
                image = handle.convert("RGB")
        except Image.DecompressionBombError as err:
            raise ImageProblem(f"image too large to decode safely: {path} ({err})") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
            raise ImageProblem(f"image does not decode: {path} ({err})") from None
        if image_size:
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
        images.append(image)
    return images


def prepare_request(record: InferenceRecord, processor: Any, options: PromptOptions) -> PreparedRequest:
    """Build everything a backend sends for ``record``: messages, rendered prompt, images.

    Raises:
        ImageProblem: an image is missing/undecodable or the placeholders do not match the images.
    """
    if not record.image_paths:
        raise ImageProblem("the record has no image")
    messages = build_messages(record.text, len(record.image_paths), options)
    images = load_images(record.image_paths, options.image_size)
    return PreparedRequest(record, messages, user_text(messages), render_prompt(processor, messages), images)
