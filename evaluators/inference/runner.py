"""Resumable inference: one JSONL line per sample, written as requests finish; a re-run skips what is done.

For an input ``DIR/<stem>.json`` and ``--out-dir OUT`` the runner writes:

- ``OUT/<stem>_infer.jsonl``: one line per (id, sample) -- ``id``, ``sample_index``, ``prompt`` (the user
  text sent), ``pred`` + ``gt`` (HMER) or ``model_response`` + ``true_label`` (FER), ``image_path`` --
  appended as each request finishes (the vLLM backend streams results out of its step loop; the
  transformers backend after each batch) and fsync'ed at least once a second, so a crash or ``kill -9``
  loses only the requests in flight.
  A re-run reads it back (a torn last line is cut off), skips every (id, sample) already there and
  generates the rest: each id ends up in the file exactly once per sample.
- ``OUT/<stem>_infer.meta.json``: model and decoding settings; resuming with different ones is refused.
- at the end, published together with ``<stem>_missing.json`` (see :class:`~evaluators.outputs.OutputSet`),
  upstream's formats: ``OUT/<stem>_pred.json`` (HMER, ``[{gt, pred, image_path,
  img_id}]``, first sample of each id) or ``OUT/<ds>_results.json`` (FER, the QA records plus
  ``model_response``; ``<ds>`` is ``<stem>`` without a trailing ``_qa``), which ``unitune eval`` reads.
- ``OUT/<stem>_missing.json`` when records have a missing/undecodable image: they are listed, counted,
  skipped (retried on the next run), and appear in the upstream file as failures (HMER: empty ``pred``;
  FER: ``"error": true`` and an ``ERROR: ...`` response, UniFER's convention).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.errors import UserError
from evaluators.inference.model_dir import check_model_dir, load_processor
from evaluators.inference.prompts import (
    FAMILY_SYSTEM,
    ImageProblem,
    InferenceRecord,
    PreparedRequest,
    PromptOptions,
    load_records,
    prepare_request,
    resolve_system_prompt,
)
from evaluators.inference.sampling import TASK_PRESETS, Sampling, resolve_sampling
from evaluators.io_utils import atomic_write_json, ensure_output_dir, write_jsonl_atomic
from evaluators.model_family import model_family
from evaluators.outputs import OutputSet, output_lock
from evaluators.progress import progress_bar

__all__ = [
    "FileResult",
    "InferenceSettings",
    "export_path",
    "jsonl_path",
    "request_key",
    "run_inference",
    "shard_records",
]

logger = logging.getLogger(__name__)

#: Keys of the meta file that must match for a run to resume an existing JSONL.
_FINGERPRINT_KEYS = ("model", "task", "system_prompt", "upstream_prompt", "image_size", "sampling", "shard")


@dataclass
class InferenceSettings:
    """Everything ``unitune infer`` needs besides the input files.

    ``sampling`` holds overrides (``None`` = the task preset); ``image_size`` ``None`` = the task preset,
    ``0`` = no resize; ``system_prompt`` ``None`` = no system turn, ``FAMILY_SYSTEM`` = the model family's
    default (Qwen2.5-VL: Qwen's default prompt; Qwen3-VL: none); ``shard`` ``(i, n)`` = only records
    ``i, i + n, i + 2n, ...`` of each file (after ``limit``), see :func:`shard_records`.
    """

    model: str
    backend: str = "hf"
    task: str = "auto"
    image_root: str | None = None
    system_prompt: str | None = FAMILY_SYSTEM
    upstream_prompt: bool = False
    image_size: int | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    backend_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    allow_torn: bool = False


@dataclass
class FileResult:
    """What happened to one input file."""

    input: Path
    task: str
    jsonl: Path
    export: Path
    records: int
    done_before: int
    generated: int
    missing: list[dict[str, Any]]
    stale: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".jsonl", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def jsonl_path(input_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Where the per-sample JSONL of ``input_path`` goes.

    Example:

    >>> jsonl_path("data/crohme_2014.json", "out").as_posix()
    'out/crohme_2014_infer.jsonl'
    """
    return Path(out_dir) / f"{_stem(Path(input_path))}_infer.jsonl"


def export_path(input_path: str | os.PathLike, out_dir: str | os.PathLike, task: str) -> Path:
    """Where the upstream-format file of ``input_path`` goes.

    Example:

    >>> export_path("data/crohme_2014.json", "out", "hmer").as_posix()
    'out/crohme_2014_pred.json'
    >>> export_path("ferbench/rafdb_qa.json", "out", "fer").as_posix()
    'out/rafdb_results.json'
    """
    stem = _stem(Path(input_path))
    if task == "fer":
        return Path(out_dir) / f"{stem.removesuffix('_qa') or stem}_results.json"
    return Path(out_dir) / f"{stem}_pred.json"


def shard_records(records: Sequence[Any], index: int, count: int) -> list[Any]:
    """Shard ``index`` of ``count``: every ``count``-th record from position ``index`` (round-robin).

    The shards of a file are disjoint, cover it, and differ in size by at most one; merging their outputs
    in input order gives the records of one unsharded run.

    Example:

    >>> shard_records(list("abcdefg"), 0, 3), shard_records(list("abcdefg"), 2, 3)
    (['a', 'd', 'g'], ['c', 'f'])
    """
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard must be I/N with 0 <= I < N, got {index}/{count}.")
    return list(records[index::count])


def _repair_torn_tail(path: Path) -> None:
    """Cut a last line without a newline (a write interrupted by a kill) so appends stay line-aligned."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as handle:
        handle.truncate(keep)
    logger.warning(
        "%s: dropped a torn last line (%d bytes) left by an interrupted run.", path, len(data) - keep
    )


def request_key(record: InferenceRecord, fingerprint: dict[str, Any]) -> str:
    """What a finished line must match to be reused: prompt, images (path, size, mtime) and all settings.

    A line written for another input with the same file stem and ids, for a replaced image or under other
    decoding settings has another key, so it is regenerated instead of exported as if it were this run's.
    """
    images = []
    for path in record.image_paths:
        try:
            stat = path.stat()
            images.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
        except OSError:
            images.append([str(path), None, None])
    blob = json.dumps([fingerprint, record.text, images], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def _drop_stale(
    path: Path, done: dict[tuple[str, int], dict[str, Any]], keys: dict[str, str]
) -> tuple[dict[tuple[str, int], dict[str, Any]], int]:
    """Keep the finished lines whose ``key`` equals their record's current key; rewrite the file without the rest."""
    kept = {k: line for k, line in done.items() if k[0] in keys and line.get("key") == keys[k[0]]}
    stale = sum(1 for k in done if k[0] in keys and k not in kept)
    if stale:
        others = {k: line for k, line in done.items() if k[0] not in keys}  # ids beyond --limit: keep
        write_jsonl_atomic(path, [*kept.values(), *others.values()])
        logger.warning(
            "%s: %d finished sample(s) no longer match their input (prompt, image or settings changed); "
            "they are generated again.",
            path,
            stale,
        )
        kept.update(others)
    return kept, stale


def _read_done(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key = (str(item["id"]), int(item["sample_index"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise UserError(
                    f"{path}: line {number} is not a unitune inference record; move the file away or use --overwrite."
                ) from None
            done.setdefault(key, item)
    return done


def _fingerprint(settings: InferenceSettings, task: str, options: PromptOptions, sampling: Sampling) -> dict:
    model = settings.model
    if Path(model).exists():
        model = str(Path(model).resolve())
    return {
        "model": model,
        "task": task,
        "system_prompt": options.system_prompt,
        "upstream_prompt": options.upstream_prompt,
        "image_size": options.image_size,
        "sampling": sampling.as_dict(),
        "shard": list(settings.shard) if settings.shard else None,
    }


def _check_meta(meta_path: Path, jsonl: Path, fingerprint: dict) -> None:
    if not meta_path.is_file() or not jsonl.is_file() or jsonl.stat().st_size == 0:
        return
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return
    changed = [key for key in _FINGERPRINT_KEYS if old.get(key) != fingerprint.get(key)]
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
        raise UserError(
            f"{jsonl} was produced with other settings ({details}). Resuming would mix two runs: "
            "use another --out-dir, or --overwrite to start this file again."
        )


def _line(record: InferenceRecord, sample_index: int, prompt: str, text: str, key: str) -> dict[str, Any]:
    line: dict[str, Any] = {"id": record.id, "sample_index": sample_index, "prompt": prompt, "key": key}
    if record.task == "fer":
        line.update(model_response=text, true_label=record.gt)
    else:
        line.update(pred=text, gt=record.gt)
    line["image_path"] = record.images[0] if len(record.images) == 1 else record.images
    return line


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    size = size if size and size > 0 else max(1, len(items))
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _prepared(
    records: Sequence[InferenceRecord],
    processor: Any,
    options: PromptOptions,
    missing: dict[str, str],
    path: Path,
    bar: Any,
    remaining: dict[str, int],
) -> Iterator[PreparedRequest]:
    """Prepare requests lazily; a record with an image problem goes to ``missing`` (logged, counted)."""
    for record in records:
        try:
            yield prepare_request(record, processor, options)
        except ImageProblem as err:
            missing[record.id] = str(err)
            logger.warning("%s: record %d (id %s) skipped: %s", path, record.index, record.id, err)
            bar.update(remaining[record.id])


def _new_lines(
    request: PreparedRequest,
    texts: list[str],
    done: dict[tuple[str, int], dict[str, Any]],
    keys: dict[str, str],
) -> str:
    """The JSONL lines of ``request``'s samples not already in ``done`` (which they are added to)."""
    lines = []
    for sample_index, text in enumerate(texts):
        key = (request.record.id, sample_index)
        if key in done:
            continue
        line = _line(request.record, sample_index, request.user_text, text, keys[request.record.id])
        done[key] = line
        lines.append(json.dumps(line, ensure_ascii=False) + "\n")
    return "".join(lines)


class _SyncedAppender:
    """Append text to an open file: flushed on every write, fsync'ed at most every ``interval`` seconds."""

    def __init__(self, handle: Any, interval: float = 1.0) -> None:
        self.handle, self.interval, self.last = handle, interval, time.monotonic()

    def write(self, text: str) -> None:
        self.handle.write(text)
        self.handle.flush()
        if time.monotonic() - self.last >= self.interval:
            self.sync()

    def sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.last = time.monotonic()


def _export(
    task: str,
    records: Sequence[InferenceRecord],
    done: dict[tuple[str, int], dict[str, Any]],
    missing: dict[str, str],
    path: Path,
) -> None:
    rows = []
    for record in records:
        line = done.get((record.id, 0))
        if line is None and record.id not in missing:
            continue
        image_path = record.images[0] if record.images else ""
        if task == "fer":
            row = dict(record.record)
            if line is not None:
                row["model_response"] = line["model_response"]
            else:
                row.update(model_response=f"ERROR: {missing[record.id]}", error=True)
        else:
            pred = line["pred"] if line is not None else ""
            row = {"gt": record.gt or "", "pred": pred, "image_path": image_path, "img_id": record.id}
            if line is None:
                row["error"] = (
                    True  # counted as a failure by `unitune eval hmer`, not read as an empty output
                )
        rows.append(row)
    atomic_write_json(path, rows, indent=2)


def _counter(bar: Any, remaining: dict[str, int]) -> Callable[[Sequence[PreparedRequest]], None]:
    """Advance ``bar`` by the samples the finished ``requests`` stood for."""

    def count(requests: Sequence[PreparedRequest]) -> None:
        bar.update(sum(remaining[request.record.id] for request in requests))

    return count


def _reports_batches(backend: Any) -> bool:
    """Whether ``backend.generate`` takes ``on_batch`` (the bar then moves after every batch, not every chunk)."""
    import inspect

    return "on_batch" in inspect.signature(backend.generate).parameters


def _generate(
    backend: Any,
    requests: Sequence[PreparedRequest],
    sampling: Sampling,
    on_batch: Callable[[Sequence[PreparedRequest]], None],
) -> list[list[str]]:
    if _reports_batches(backend):
        return backend.generate(requests, sampling, on_batch=on_batch)
    return backend.generate(requests, sampling)


BackendFactory = Callable[[str, Any, InferenceSettings], Any]


def make_backend(model: str, processor: Any, settings: InferenceSettings) -> Any:
    """Build the backend named by ``settings.backend`` (vLLM is imported only here, lazily)."""
    options = dict(settings.backend_options)
    if settings.backend == "vllm":
        from evaluators.inference.vllm_backend import VLLMBackend

        return VLLMBackend(model, processor, seed=int(settings.sampling.get("seed") or 0), **options)
    if settings.backend == "hf":
        from transformers import set_seed

        from evaluators.inference.hf_backend import HFBackend

        set_seed(int(settings.sampling.get("seed") or 0))
        return HFBackend(model, processor, **options)
    raise UserError(f"--backend must be hf or vllm, got {settings.backend!r}.")


def run_inference(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    settings: InferenceSettings,
    backend_factory: BackendFactory | None = None,
) -> list[FileResult]:
    """Run (or resume) inference over ``inputs``, writing into ``out_dir``; see the module docstring.

    The model and processor are loaded only when some file still has work to do, so re-running a finished
    job just re-writes the upstream files.

    Raises:
        UserError: missing inputs or model folder, a model of no known family, or a resume with other settings.
    """
    backend_factory = backend_factory or make_backend
    out = Path(out_dir)
    check_model_dir(settings.model)
    ensure_output_dir(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    # One writer per --out: a second run appending to the same JSONL would duplicate every line.
    with output_lock(out / ".infer.lock", f"--out {out}"):
        return _run_locked(inputs, out, settings, backend_factory)


def _run_locked(
    inputs: Sequence[str | os.PathLike],
    out: Path,
    settings: InferenceSettings,
    backend_factory: BackendFactory,
) -> list[FileResult]:
    system_prompt = resolve_system_prompt(settings.system_prompt, model_family(settings.model))

    plans = []
    for raw in inputs:
        path = Path(raw)
        records = load_records(path, settings.image_root, settings.task, allow_torn=settings.allow_torn)
        task = records[0].task
        if settings.limit is not None:
            records = records[: settings.limit]
        if settings.shard is not None:
            records = shard_records(records, *settings.shard)
            if not records:
                logger.warning("%s: shard %d/%d has no records", path, *settings.shard)
        preset_size = TASK_PRESETS[task]["image_size"]
        size = preset_size if settings.image_size is None else (settings.image_size or None)
        options = PromptOptions(system_prompt, settings.upstream_prompt, size)
        sampling = resolve_sampling(task, settings.sampling)
        if sampling.n > 1 and sampling.greedy:
            raise UserError(
                f"-n {sampling.n} needs sampling: give --temperature > 0 (greedy samples are identical)."
            )
        jsonl = jsonl_path(path, out)
        if jsonl.resolve() == path.resolve():
            raise UserError(f"--out-dir {out} would overwrite the input {path}; choose another --out-dir.")
        meta = jsonl.with_name(jsonl.name.removesuffix(".jsonl") + ".meta.json")
        fingerprint = _fingerprint(settings, task, options, sampling)
        if settings.overwrite:
            jsonl.unlink(missing_ok=True)
        _check_meta(meta, jsonl, fingerprint)
        _repair_torn_tail(jsonl)
        # the shard does not change a record's samples (each record is seeded on its own): not in the key
        unsharded = {k: v for k, v in fingerprint.items() if k != "shard"}
        keys = {r.id: request_key(r, unsharded) for r in records}
        done, stale = _drop_stale(jsonl, _read_done(jsonl), keys)
        todo = [r for r in records if any((r.id, k) not in done for k in range(sampling.n))]
        plans.append(
            (path, records, task, options, sampling, jsonl, meta, fingerprint, done, todo, keys, stale)
        )

    backend = None
    processor = None
    if any(plan[9] for plan in plans):
        processor = load_processor(settings.model)
        backend = backend_factory(settings.model, processor, settings)

    results = []
    for path, records, task, options, sampling, jsonl, meta, fingerprint, done, todo, keys, stale in plans:
        done_before = len({rid for rid, _ in done if rid in keys})
        atomic_write_json(meta, fingerprint)
        missing: dict[str, str] = {}
        generated = 0
        if todo:
            logger.info("%s: %d of %d records to run (%s)", path, len(todo), len(records), task)
        # the bar counts samples (n per record; those of a resumed record already done are left out)
        remaining = {r.id: sum((r.id, i) not in done for i in range(sampling.n)) for r in todo}
        step = getattr(backend, "chunk_size", 0) if backend is not None else 0
        if not sampling.greedy:  # e.g. hf samples record by record: write more often
            step = getattr(backend, "sampling_chunk_size", step)
        enabled = settings.progress and bool(todo)
        with (
            progress_bar(sum(remaining.values()), path.name, "sample", enabled) as bar,
            jsonl.open("a", encoding="utf-8") as handle,
        ):
            count = _counter(bar, remaining)
            out_file = _SyncedAppender(handle)

            if todo and hasattr(backend, "stream"):
                # the vLLM backend: each request is written the moment the engine finishes it
                requests = _prepared(todo, processor, options, missing, path, bar, remaining)
                for request, texts in backend.stream(requests, sampling):
                    out_file.write(_new_lines(request, texts, done, keys))
                    generated += 1
                    count([request])
            else:
                for chunk in _chunks(todo, step):
                    prepared: list[PreparedRequest] = []
                    for record in chunk:
                        try:
                            prepared.append(prepare_request(record, processor, options))
                        except ImageProblem as err:
                            missing[record.id] = str(err)
                            logger.warning(
                                "%s: record %d (id %s) skipped: %s", path, record.index, record.id, err
                            )
                            bar.update(remaining[record.id])
                    if not prepared:
                        continue
                    outputs = _generate(backend, prepared, sampling, count)
                    for request, texts in zip(prepared, outputs, strict=True):
                        out_file.write(_new_lines(request, texts, done, keys))
                    out_file.sync()
                    generated += len(prepared)
                    if not _reports_batches(backend):
                        count(prepared)
            out_file.sync()
        target = export_path(path, out, task)
        missing_path = jsonl.with_name(jsonl.name.removesuffix("_infer.jsonl") + "_missing.json")
        missing_rows = [
            {"index": r.index, "id": r.id, "image_path": r.images, "problem": missing[r.id]}
            for r in records
            if r.id in missing
        ]
        # The upstream file and its missing list are one set: a kill leaves the old pair or the new one.
        with OutputSet(out, target.name) as publish:
            _export(task, records, done, missing, publish.path(target.name))
            if missing_rows:
                atomic_write_json(publish.path(missing_path.name), missing_rows)
            else:
                publish.remove.append(missing_path.name)
        if missing_rows:
            logger.warning(
                "%s: %d record(s) skipped for missing/undecodable images, listed in %s",
                path,
                len(missing_rows),
                missing_path,
            )
        results.append(
            FileResult(path, task, jsonl, target, len(records), done_before, generated, missing_rows, stale)
        )
    return results
