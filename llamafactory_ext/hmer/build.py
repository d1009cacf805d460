"""Build HMER sharegpt datasets: vanilla, Tree-CoT (``tree``), Symbol Counting (``can``) and EDL (``error_find``/``error_fix``).

Every output record has one image, a human turn (``"<image>" + prompt``) and a gpt turn (the answer):
``{"messages": [{"from": "human", "value": …}, {"from": "gpt", "value": …}], "images": [path]}``.
A record that cannot be built (empty label, tree parse error, missing image, unmatched prediction…) is
*rejected* with a reason instead of being written; correct and duplicate EDL predictions are *dropped*
(counted, not errors). Reading (JSON list or JSONL) and writing stream: memory does not grow with the
corpus (except for EDL from ``--predictions``, which indexes the labelled records by id).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import repeat
from json.encoder import encode_basestring as _encode  # json.dumps(str, ensure_ascii=False)
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from evaluators.errors import UserError
from evaluators.fork_pool import available_cpus
from evaluators.io_utils import ensure_output_dir, rejected_path, temp_sibling
from evaluators.outputs import OutputSet
from llamafactory_ext.media import MediaPaths

from .edl import correction_log, mark_errors
from .label_workers import LabelWorkers
from .prompts import MARKERS, TASKS, human_prompt
from .records import (
    HmerSample,
    count_records,
    is_json_list,
    iter_json_objects,
    iter_samples,
    resolve_image,
    sample_from_record,
)
from .tree_cot import TreeParseError, can_answer, tree_answer

__all__ = [
    "BuildStats",
    "build_dataset",
    "build_file",
    "iter_build",
    "make_record",
    "rejected_path",
    "write_sharegpt",
]

logger = logging.getLogger(__name__)
EDL_TASKS = ("error_find", "error_fix")
#: Tasks whose targets :class:`LabelWorkers` helpers compute (a vanilla target is the label itself).
_POOLED_TASKS = ("tree", "can")
#: Paths are resolved component by component (a file below a missing folder cannot exist).
_POSIX_PATHS = os.name == "posix"


@dataclass
class BuildStats:
    """Counts of one build.

    Attributes:
        written (`int`): records produced.
        rejected (`int`): records (or predictions) rejected, reasons in the rejected list / file.
        dropped_correct (`int`): EDL predictions equal to the label (not errors, skipped).
        dropped_duplicate (`int`): EDL predictions already seen for the same image.
        reasons (`Counter`): rejected count per reason kind (text before the first ``:``).
    """

    written: int = 0
    rejected: int = 0
    dropped_correct: int = 0
    dropped_duplicate: int = 0
    reasons: Counter = field(default_factory=Counter)

    def summary(self, task: str) -> str:
        """One line for the log."""
        text = f"{task}: {self.written} records written, {self.rejected} rejected"
        if self.reasons:
            text += " (" + ", ".join(f"{kind}: {n}" for kind, n in self.reasons.most_common()) + ")"
        if task in EDL_TASKS:
            text += (
                f", {self.dropped_correct} correct and {self.dropped_duplicate} duplicate predictions dropped"
            )
        return text


def _sharegpt(prompt: str, answer: str, image: str) -> dict[str, Any]:
    return {
        "messages": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}],
        "images": [image],
    }


def _target(task: str, latex: str, pred: str | None = None) -> tuple[str, str]:
    """``(human turn, answer)`` of one record; raises like :func:`make_record`."""
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
    if not latex.strip():
        raise ValueError("empty LaTeX label")
    if task == "vanilla":
        return human_prompt(task), latex
    if task == "tree":
        return human_prompt(task), tree_answer(latex)
    if task == "can":
        return human_prompt(task), can_answer(latex)
    if pred is None:
        raise ValueError(f"{task} needs a prediction")
    marked = mark_errors(latex, pred)
    if task == "error_find":
        return human_prompt(task, pred=" ".join(pred.split())), marked
    answer = "\n".join([*correction_log(latex, pred), " ".join(latex.split())])
    return human_prompt(task, marked=marked), answer


def make_record(task: str, image: str, latex: str, pred: str | None = None) -> dict[str, Any]:
    r"""One sharegpt record of ``task`` for an image and its label (and a wrong prediction for EDL).

    Raises:
        TreeParseError: ``task="tree"`` and the LaTeX does not parse.
        ValueError: unknown task, empty label, or an EDL task without a prediction.

    Example:

    >>> r = make_record("tree", "img/a.png", "x _ { i }")
    >>> r["messages"][1]["value"], r["images"]
    ('x\n\ti (sub)\nx _ { i }', ['img/a.png'])
    >>> make_record("error_fix", "a.png", "x ^ { 2 }", "x ^ { 3 }")["messages"][1]["value"]
    'REPLACE:3 -> 2\nx ^ { 2 }'
    """
    prompt, answer = _target(task, latex, pred)
    return _sharegpt(prompt, answer, image)


#: Characters of labels and targets one build remembers (plus :data:`_ENTRY_COST` per label): about 64 MB
#: at most, whatever the input. Corpora repeat expressions (CROHME's 5,632 test labels hold 4,762 distinct
#: ones; a dataset cycled or merged with others repeats them all), and a target costs far more than a lookup.
ANSWER_CACHE_CHARS = 32 * 1024 * 1024
_ENTRY_COST = 200  # bytes of a dict slot, a tuple and two string headers, counted as characters


class _BoundedMemo:
    """Remember ``fn(key)`` for string keys until :data:`ANSWER_CACHE_CHARS` are held, then start afresh.

    Remembering costs time too (about a tenth of a tree target), so while the keys stop repeating (fewer than
    one lookup in :attr:`SPARSE_BELOW` answered from the table over the last :attr:`WINDOW` lookups) only one
    new key in :attr:`SPARSE_EVERY` is kept: repeats of those still show up, and a window with enough of them
    brings back remembering every key. The answers never change, only the time.

    Example:

    >>> memo = _BoundedMemo(str.upper, budget=2 * _ENTRY_COST + 8)
    >>> memo("ab"), memo("ab"), len(memo.table)
    ('AB', 'AB', 1)
    >>> memo("cd"), len(memo.table)
    ('CD', 2)
    >>> memo("ef"), len(memo.table)  # over the budget: the table was emptied first
    ('EF', 1)
    >>> memo = _BoundedMemo(str.upper)
    >>> _ = [memo(str(i)) for i in range(2 * memo.WINDOW)]  # no repeats: sparse after the first window
    >>> memo.sparse, len(memo.table) == memo.WINDOW + memo.WINDOW // memo.SPARSE_EVERY
    (True, True)
    >>> _ = [memo(str(i)) for i in range(memo.WINDOW)]  # repeats: at the next new key, every key once more
    >>> memo("new"), memo.sparse
    ('NEW', False)
    """

    #: Lookups over which the share answered from the table is measured.
    WINDOW = 4096
    #: Keep every key while at least one lookup in this many was answered from the table.
    SPARSE_BELOW = 32
    #: Otherwise keep one new key in this many.
    SPARSE_EVERY = 8

    def __init__(self, fn: Callable[[str], Any], budget: int | None = None) -> None:
        self.fn, self.budget = fn, ANSWER_CACHE_CHARS if budget is None else budget
        self.table: dict[str, Any] = {}
        self.used = 0
        self.hits = self.misses = 0  # lookups of the current window
        self.sparse = False

    def __call__(self, key: str) -> Any:
        value = self.table.get(key)
        if value is None:
            value = self.fn(key)
            self.remember(key, value)
        else:
            self.hits += 1
        return value

    def remember(self, key: str, value: Any) -> None:
        """Hold ``value`` as ``fn(key)`` after a missed lookup (``fn`` ran here or e.g. in a
        :class:`~.label_workers.LabelWorkers` helper, which adds the hits it found to :attr:`hits`)."""
        self.misses += 1
        if self.misses + self.hits >= self.WINDOW:
            self.sparse = self.hits * self.SPARSE_BELOW < self.misses
            self.hits = self.misses = 0
        elif self.sparse and self.misses % self.SPARSE_EVERY:
            return
        if type(value) is tuple and len(value) == 2:  # (answer, reason): one of them is a string
            first, second = value
            size = (len(first) if type(first) is str else 0) + (len(second) if type(second) is str else 0)
        else:
            size = sum(len(part) for part in value if type(part) is str)
        cost = _ENTRY_COST + len(key) + size
        if self.used + cost > self.budget:
            self.table.clear()
            self.used = 0
        if cost <= self.budget:
            self.table[key] = value
            self.used += cost


def _label_answers(
    task: str, encode: Callable[[str], str] | None = None
) -> Callable[[str], tuple[str | None, str | None]]:
    r"""``latex -> (answer, None)`` or ``(None, rejection reason)`` for ``vanilla``, ``tree`` and ``can``.

    The targets of these tasks are pure functions of the label string, so they are memoised per distinct
    label (:class:`_BoundedMemo`, at most :data:`ANSWER_CACHE_CHARS`); rejections are remembered too.
    With ``encode`` the answers come (and are remembered) as ``encode(answer)``, e.g. as JSON strings.

    Example:

    >>> answer = _label_answers("tree")
    >>> answer("x ^ { 2 }")
    ('x\n\t2 (sup)\nx ^ { 2 }', None)
    >>> answer("x ^ 2"), answer("  ")
    ((None, 'tree parse error: ^ not with {'), (None, 'bad record: empty LaTeX label'))
    """
    if task == "vanilla":

        def vanilla(latex: str) -> tuple[str | None, str | None]:
            if not latex or latex.isspace():  # == not latex.strip(), without a copy
                return None, "bad record: empty LaTeX label"
            return (latex if encode is None else encode(latex)), None

        return vanilla
    target = {"tree": tree_answer, "can": can_answer}[task]

    def outcome(latex: str) -> tuple[str | None, str | None]:
        if not latex or latex.isspace():
            return None, "bad record: empty LaTeX label"
        try:
            answer = target(latex)
        except TreeParseError as err:
            return None, f"tree parse error: {err}"
        except ValueError as err:
            return None, f"bad record: {err}"
        return (answer if encode is None else encode(answer)), None

    return _BoundedMemo(outcome)


def _as_sample(item: HmerSample | dict, index: int) -> HmerSample:
    return item if isinstance(item, HmerSample) else sample_from_record(item, index)


class _ImageChecker:
    """Find each image as :func:`resolve_image` does; choose the path to write (:mod:`llamafactory_ext.media`).

    Once per record of a million-record build, so it works on strings (no pathlib) and remembers image
    folders: a file below a missing folder cannot exist (POSIX path resolution needs every component), so
    its two ``stat`` calls are skipped. Images in existing folders are looked up one by one (one ``stat``).
    """

    #: How many image folders to remember before starting afresh (memory stays bounded on any input).
    MAX_FOLDERS = 4096

    def __init__(
        self,
        root: str | os.PathLike | None,
        check: bool,
        absolute: bool,
        media_dir: str | os.PathLike | None = None,
    ) -> None:
        self.check, self.absolute, self.media_dir = check, absolute, media_dir
        self.root = None if root is None else os.fspath(root)
        self._root_prefix = "" if not self.root or self.root.endswith("/") else "/"
        self.passthrough = not check and not absolute and media_dir is None
        self._media_path = MediaPaths(media_dir) if media_dir is not None and not absolute else None
        # folder part of an image path -> (root/folder is a folder, folder is a folder from the working dir)
        self._folders: dict[str, tuple[bool, bool]] = {}
        self._real_folders: dict[str, str] = {}  # folder of a found image -> its real path

    def _folders_exist(self, folder: str) -> tuple[bool, bool]:
        if len(self._folders) >= self.MAX_FOLDERS:
            self._folders.clear()
        in_root = self.root is not None and os.path.isdir(os.path.join(self.root, folder or "."))
        known = self._folders[folder] = (in_root, os.path.isdir(folder or "."))
        return known

    def _real_path(self, found: str) -> str:
        """``str(Path(found).resolve())``, the folder's real path remembered (one ``lstat`` per image)."""
        cut = found.rfind("/")
        if not _POSIX_PATHS or cut < 0 or os.path.islink(found):
            return str(Path(found).resolve())
        folder = found[:cut] or "/"
        real = self._real_folders.get(folder)
        if real is None:
            if len(self._real_folders) >= self.MAX_FOLDERS:
                self._real_folders.clear()
            real = self._real_folders[folder] = os.path.realpath(folder)
        path = real + found[cut:] if real != "/" else found[cut:]
        return str(Path(found).resolve()) if path.startswith("//") else path

    def find(self, image: str) -> str | None:
        """:func:`resolve_image` (``root/image``, then ``image``) as a string, skipping missing folders."""
        if not _POSIX_PATHS:
            found = resolve_image(image, self.root)
            return None if found is None else str(found)
        cut = image.rfind("/")
        folder = image[:cut] if cut > 0 else "/" if cut == 0 else ""
        known = self._folders.get(folder)
        in_root, in_cwd = known if known is not None else self._folders_exist(folder)
        if in_root:
            # os.path.join(root, image), by concatenation (in_root implies a root)
            root = self.root or ""
            candidate = image if image.startswith("/") else root + self._root_prefix + image
            if os.path.isfile(candidate):
                return candidate
        if in_cwd and os.path.isfile(image):
            return image
        return None

    def __call__(self, image: str) -> tuple[str | None, str | None]:
        """``(path to write, None)`` or ``(None, reason)``."""
        if self.passthrough:
            return image, None
        found = self.find(image)
        if found is None:
            if self.check:
                return None, f"missing image: {image}"
            return image, None
        if self.absolute:
            return self._real_path(found), None
        if self._media_path is not None:
            return self._media_path(found), None
        return image, None


def _reject(sample: HmerSample, reason: str, **extra: Any) -> dict[str, Any]:
    return {"index": sample.index, "id": sample.id, "image": sample.image, **extra, "reason": reason}


def _edl_pairs(
    samples: Iterable[HmerSample], predictions: Iterable[dict] | None, stats: BuildStats
) -> Iterator[tuple[HmerSample, str | None, dict | None]]:
    """Yield ``(sample, pred, None)`` for each new wrong prediction, or ``(sample, None, rejected)``.

    Duplicates exist only with ``predictions`` (several per image); without, each record holds one prediction
    and nothing is remembered, so memory stays flat.
    """
    seen: set[tuple[int, tuple[str, ...]]] = set()
    dedupe = predictions is not None

    def screen(sample: HmerSample, pred: Any, key: int) -> tuple[HmerSample, str | None, dict | None] | None:
        if not isinstance(pred, str) or not pred.strip():
            return (
                sample,
                None,
                _reject(
                    sample,
                    "empty prediction"
                    if isinstance(pred, str) or pred is None
                    else f"bad prediction: `pred` is a {type(pred).__name__}",
                    pred=pred,
                ),
            )
        tokens = tuple(pred.split())
        marker = MARKERS.intersection(tokens)
        if marker:
            return (
                sample,
                None,
                _reject(sample, f"reserved token: the prediction contains {min(marker)}", pred=pred),
            )
        if list(tokens) == sample.latex.split():
            stats.dropped_correct += 1
            return None
        if dedupe:
            if (key, tokens) in seen:
                stats.dropped_duplicate += 1
                return None
            seen.add((key, tokens))
        return sample, pred, None

    if predictions is None:
        for sample in samples:
            if sample.pred is None:
                yield (
                    sample,
                    None,
                    _reject(sample, "no prediction: the record has no `pred` (use --predictions)"),
                )
                continue
            result = screen(sample, sample.pred, sample.index)
            if result is not None:
                yield result
        return

    index: dict[str, HmerSample | None] = {}
    for sample in samples:
        for key in {sample.id, Path(sample.image).stem}:
            if key in index and index[key] is not sample:
                index[key] = None  # ambiguous
            else:
                index[key] = sample
    for number, pred_record in enumerate(predictions):
        ident = pred_record.get("id", pred_record.get("img_id")) if isinstance(pred_record, dict) else None
        placeholder = HmerSample(id=str(ident), image="", latex="", index=number)
        if ident is None:
            yield placeholder, None, _reject(placeholder, "bad prediction: no `id`")
            continue
        ident = str(ident)
        if ident not in index:
            yield (
                placeholder,
                None,
                _reject(placeholder, f"unmatched prediction: no input record with id {ident!r}"),
            )
            continue
        sample = index[ident]
        if sample is None:
            yield (
                placeholder,
                None,
                _reject(placeholder, f"ambiguous id: {ident!r} matches several input records"),
            )
            continue
        gt = pred_record.get("gt")
        if isinstance(gt, str) and gt.split() != sample.latex.split():
            yield (
                sample,
                None,
                _reject(
                    sample,
                    "label mismatch: the prediction's `gt` differs from the input label",
                    pred=pred_record.get("pred"),
                    pred_gt=gt,
                ),
            )
            continue
        result = screen(sample, pred_record.get("pred"), id(sample))
        if result is not None:
            yield result


def iter_build(
    records: Iterable[HmerSample | dict],
    task: str,
    *,
    predictions: Iterable[dict] | None = None,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
    absolute_images: bool = False,
    media_dir: str | os.PathLike | None = None,
    stats: BuildStats | None = None,
) -> Iterator[tuple[dict | None, dict | None]]:
    """Stream ``(record, None)`` for each built record and ``(None, rejected)`` for each rejection.

    Args:
        records: :class:`HmerSample` or raw sharegpt/flat dicts (labels).
        task (`str`): ``vanilla``, ``tree``, ``can``, ``error_find`` or ``error_fix``.
        predictions: EDL only — our inference records ``{"id", "pred", "gt"?, "sample_index"?}``, matched to
            ``records`` by ``img_id``/``id`` or image stem. Without it, EDL uses each record's ``pred``.
        image_root: folder relative image paths are looked up in first (then the working directory).
        check_images (`bool`, defaults to `True`): reject records whose image file does not exist.
        absolute_images (`bool`, defaults to `False`): write resolved absolute image paths.
        media_dir (*optional*): the folder LLaMA-Factory will resolve images from (its ``media_dir``, by default
            the registered ``dataset_dir``): found images are written relative to it when inside it, else
            absolute. ``None`` writes paths as given.
        stats (`BuildStats`, *optional*): updated in place.
    """
    for row in _iter_rows(
        records,
        task,
        predictions=predictions,
        image_root=image_root,
        check_images=check_images,
        absolute_images=absolute_images,
        media_dir=media_dir,
        stats=stats if stats is not None else BuildStats(),
    ):
        if type(row) is tuple:
            yield _sharegpt(*row), None
        else:
            yield None, row


def _iter_rows(
    records: Iterable[HmerSample | dict],
    task: str,
    *,
    predictions: Iterable[dict] | None,
    image_root: str | os.PathLike | None,
    check_images: bool,
    absolute_images: bool,
    media_dir: str | os.PathLike | None,
    stats: BuildStats,
    json_answers: bool = False,
    workers: LabelWorkers | None = None,
) -> Iterator[tuple[str, str, str] | dict[str, Any]]:
    """:func:`iter_build` without record dicts: ``(prompt, answer, image)`` per record, else the rejection.

    ``json_answers``: each answer comes encoded as a JSON string (memoised with the answer itself).
    ``workers``: tree / can only, a started :class:`LabelWorkers` of :func:`_label_answers`'s function (the
    same task and ``json_answers``) that computes the answers not memoised yet, in other processes too.
    """
    if task not in TASKS:
        raise UserError(f"--task must be one of {', '.join(TASKS)}, got {task!r}.")
    if predictions is not None and task not in EDL_TASKS:
        raise UserError(f"--predictions only applies to error_find / error_fix, not {task}.")
    images = _ImageChecker(image_root, check_images, absolute_images, media_dir)
    samples = (
        item if type(item) is HmerSample else _as_sample(item, number) for number, item in enumerate(records)
    )

    def reject(rejected: dict) -> dict:
        stats.rejected += 1
        stats.reasons[rejected["reason"].split(":", 1)[0]] += 1
        return rejected

    if task not in EDL_TASKS:
        prompt, answers = human_prompt(task), _label_answers(task, _encode if json_answers else None)
        if workers is not None and isinstance(answers, _BoundedMemo):
            answered = workers.answered(samples, answers)  # answers computed here or in a helper, in order
        else:
            answered = zip(samples, repeat(None))  # answered below, once the image is found
        for sample, known in answered:
            image, reason = images(sample.image)
            if reason is not None:
                yield reject(_reject(sample, reason))
                continue
            answer, reason = answers(sample.latex) if known is None else known
            if reason is not None:
                yield reject(_reject(sample, reason, latex=sample.latex))
                continue
            stats.written += 1
            yield prompt, answer, image  # type: ignore[misc]  # answer is set when reason is None
        return
    for sample, pred, rejected in _edl_pairs(samples, predictions, stats):
        if rejected is not None:
            yield reject(rejected)
            continue
        image, reason = images(sample.image)
        if reason is not None:
            yield reject(_reject(sample, reason))
            continue
        try:
            prompt, answer = _target(task, sample.latex, pred)
        except ValueError as err:
            yield reject(_reject(sample, f"bad record: {err}", latex=sample.latex))
            continue
        stats.written += 1
        yield prompt, _encode(answer) if json_answers else answer, image  # type: ignore[misc]  # set: no reason


def build_dataset(
    records: Iterable[HmerSample | dict], task: str, **kwargs: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    r"""Build ``task`` records in memory: ``(records_out, rejected)``. Keyword arguments as :func:`iter_build`.

    Example:

    >>> src = [{"images": ["a.png"], "messages": [{"from": "human", "value": "<image>q"},
    ...                                          {"from": "gpt", "value": "x ^ { 2 }"}]},
    ...        {"images": ["b.png"], "messages": [{"from": "human", "value": "<image>q"},
    ...                                          {"from": "gpt", "value": "x ^ 2"}]}]
    >>> out, rejected = build_dataset(src, "tree", check_images=False)
    >>> out[0]["messages"][1]["value"]
    'x\n\t2 (sup)\nx ^ { 2 }'
    >>> rejected[0]["reason"]
    'tree parse error: ^ not with {'
    """
    out: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for record, bad in iter_build(records, task, **kwargs):
        if record is not None:
            out.append(record)
        else:
            rejected.append(bad)
    return out, rejected


class _AtomicLines:
    """A text file written to a temp sibling and renamed on :meth:`commit` (removed on :meth:`abort`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = temp_sibling(self.path)
        self.handle: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="")

    def commit(self) -> Path:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        os.replace(self.tmp, self.path)  # before closing: the open temp file's lock marks it as ours, live
        self.handle.close()
        return self.path

    def abort(self) -> None:
        self.handle.close()
        Path(self.tmp).unlink(missing_ok=True)


def _sharegpt_json(prompt_json: str, answer_json: str, image: str) -> str:
    r"""``json.dumps(_sharegpt(prompt, answer, image), ensure_ascii=False)``, prompt and answer given encoded.

    ``encode_basestring`` is what ``json.dumps(..., ensure_ascii=False)`` writes for a string, and the frame is
    its text for this dict (default separators), so the bytes are the same without building the dict.

    Example:

    >>> args = ("<image>Q", 'x "1"\n\\frac é', "a.png")
    >>> _sharegpt_json(_encode(args[0]), _encode(args[1]), args[2]) == json.dumps(
    ...     _sharegpt(*args), ensure_ascii=False
    ... )
    True
    """
    return (
        '{"messages": [{"from": "human", "value": '
        + prompt_json
        + '}, {"from": "gpt", "value": '
        + answer_json
        + '}], "images": ['
        + _encode(image)
        + "]}"
    )


class _JsonListWriter(_AtomicLines):
    """Stream a JSON list, one compact record per line (written in batches of :attr:`BATCH` lines)."""

    BATCH = 512

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self.count = 0
        self._flushed = 0
        self._pending: list[str] = []
        self.handle.write("[")

    def write(self, record: Any) -> None:
        self.write_json(json.dumps(record, ensure_ascii=False))

    def write_json(self, text: str) -> None:
        """Add one record already encoded as compact JSON (no newline inside)."""
        self._pending.append(text)
        self.count += 1
        if len(self._pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.handle.write(("\n" if self._flushed == 0 else ",\n") + ",\n".join(self._pending))
            self._flushed += len(self._pending)
            self._pending.clear()

    def commit(self) -> Path:
        self._flush()
        self.handle.write("\n]\n" if self.count else "]\n")
        return super().commit()


def write_sharegpt(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Write records as a JSON list (one record per line), streaming and atomically; return the count.

    Example:

    >>> import tempfile, json, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "out.json"
    >>> write_sharegpt(p, [make_record("can", "a.png", "a + a")])
    1
    >>> json.loads(p.read_text())[0]["messages"][1]["value"]
    'a: 2, +: 1\\na + a'
    """
    writer = _JsonListWriter(path)
    try:
        for record in records:
            writer.write(record)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return writer.count


def build_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    task: str,
    *,
    predictions_path: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
    absolute_images: bool = False,
    strict: bool = False,
    register: str | None = None,
    dataset_dir: str | os.PathLike = "dataset_info",
    progress: bool = True,
    force: bool = False,
    media_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> BuildStats:
    """Build ``output_path`` from ``input_path`` (see :mod:`llamafactory_ext.hmer.records` for inputs).

    Rejected records go to :func:`rejected_path` (one JSON object with a ``reason`` per line; a stale file
    from an earlier run is removed when nothing is rejected). With ``strict`` the first rejection raises
    :class:`UserError` and nothing is written. ``register`` adds an entry to ``dataset_dir/dataset_info.json`` (a different existing one only with ``force``;
    checked before any work).
    Relative image paths are checked against ``image_root`` (default: the input file's folder), then the
    working directory. Found images are written so that LLaMA-Factory resolves them from ``media_dir``
    (default ``dataset_dir``, LLaMA-Factory's default): relative to it when inside it, else absolute
    (always absolute with ``absolute_images``).
    ``workers`` (``tree`` and ``can``; default: one per available CPU): processes computing targets, this one
    included (:class:`~.label_workers.LabelWorkers`); the output is the same for any number.

    Raises:
        UserError: bad input, or ``strict`` and a record was rejected.
    """
    from llamafactory_ext.dataset_registry import ensure_registrable, register_dataset

    if register:
        ensure_registrable(register, output_path, dataset_dir, force)
    input_path = Path(input_path)
    if image_root is None:
        image_root = input_path if input_path.is_dir() else input_path.parent
    output_path = Path(output_path)
    if output_path.is_dir():
        raise UserError(
            f"OUTPUT {output_path}: is a folder; give the JSON file to write, e.g. {output_path}/data.json."
        )
    ensure_output_dir(output_path.parent, "OUTPUT's folder")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}.")
    stats = BuildStats()
    cleanup = ExitStack()
    pool = None
    if task in _POOLED_TASKS and predictions_path is None:
        # Forked before any progress bar starts tqdm's monitor thread (no fork while other threads run).
        answer = _label_answers(task, _encode)
        pool = cleanup.enter_context(
            LabelWorkers(answer.fn, available_cpus() if workers is None else workers)  # type: ignore[attr-defined]
        )
    byte_bars: list[tqdm] = []
    try:

        def bytes_read(path: str | os.PathLike, desc: str) -> Callable[[int], object] | None:
            """A bar over the bytes of a JSON list (counting its records would read it twice), else ``None``."""
            if not progress or not is_json_list(path):
                return None
            bar = tqdm(
                total=os.path.getsize(path), desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                mininterval=0.5, maxinterval=2,
            )  # fmt: skip
            byte_bars.append(bar)
            return bar.update

        predictions = None
        if predictions_path is not None:
            on_read = bytes_read(predictions_path, f"{task} predictions")
            predictions = (record for _, record in iter_json_objects(predictions_path, on_read=on_read))
            if progress and on_read is None:
                predictions = tqdm(
                    predictions, desc=f"{task} predictions", unit="pred",
                    total=count_records(predictions_path), mininterval=0.5, maxinterval=2,
                )  # fmt: skip
            samples: Iterable[HmerSample] = iter_samples(input_path, image_dir)
        else:
            on_read = bytes_read(input_path, task)
            samples = iter_samples(input_path, image_dir, on_read=on_read)
            if progress and on_read is None:
                samples = tqdm(
                    samples,
                    desc=task,
                    unit="rec",
                    total=count_records(input_path),
                    mininterval=0.5,
                    maxinterval=2,
                )
        # The dataset and its rejected list are one set: staged, then published together (old or new, never mixed).
        with OutputSet(output_path.parent, output_path.name) as out:
            writer = _JsonListWriter(out.path(output_path.name))
            side = _AtomicLines(out.path(rejected_path(output_path).name))
            try:
                prompt, prompt_json = None, ""
                for row in _iter_rows(
                    samples,
                    task,
                    predictions=predictions,
                    image_root=image_root,
                    check_images=check_images,
                    absolute_images=absolute_images,
                    media_dir=dataset_dir if media_dir is None else media_dir,
                    stats=stats,
                    json_answers=True,
                    workers=pool,
                ):
                    if type(row) is tuple:
                        if row[0] is not prompt:  # one prompt for a whole build, except EDL's
                            prompt, prompt_json = row[0], _encode(row[0])
                        writer.write_json(_sharegpt_json(prompt_json, row[1], row[2]))
                        continue
                    if strict:
                        raise UserError(
                            f"{input_path}: record {row['index']} (id {row['id']!r}) rejected: "
                            f"{row['reason']} (--strict)."
                        )
                    side.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                if stats.written == 0 and stats.rejected == 0:
                    dropped = stats.dropped_correct + stats.dropped_duplicate
                    why = (
                        f"all {dropped} predictions were correct or duplicates"
                        if dropped
                        else "the input holds no records"
                    )
                    raise UserError(f"{input_path}: nothing to build ({why}); {output_path} left as it was.")
            except BaseException:
                writer.abort()
                side.abort()
                raise
            writer.commit()
            if stats.rejected:
                side.commit()
            else:
                side.abort()
                out.remove.append(rejected_path(output_path).name)
    finally:
        cleanup.close()
        for bar in byte_bars:
            bar.close()
    logger.info("%s -> %s", stats.summary(task), output_path)
    if stats.rejected:
        logger.warning("%d rejected records listed in %s", stats.rejected, rejected_path(output_path))
    if register and stats.written == 0:
        logger.error("%s: every record was rejected; %r is not registered.", output_path, register)
    elif register:
        register_dataset(register, output_path, dataset_dir, force=force)
    return stats
