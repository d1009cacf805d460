"""Run a whole benchmark suite: infer (resuming finished work), evaluate, one summary table vs the papers.

``unitune eval-all --model MODEL [--config SUITE.yaml] [--out-dir DIR]`` (default ``runs/eval-all/<model>/<suite>``) reads the suite (default: the packaged
``evaluators/suites/all.yaml``: CROHME 2014/2016/2019/2023, HME100K, Im2LaTeXv2, MathWriting, MNE N1-N3,
RAF-DB, FERPlus, AffectNet, SFEW 2.0), and for each dataset whose input file exists:

1. runs ``unitune infer`` into ``DIR/<dataset>/infer`` (a re-run skips every sample already generated),
2. runs ``unitune eval hmer`` or ``unitune eval fer --protocol both`` into ``DIR/<dataset>/eval``,
3. reads the headline metric: ExpRate (%) for HMER; accuracy (%) under UniFER's protocol and the strict one
   for FER.

It prints one Markdown table (also ``DIR/summary.md``) with each headline next to the paper's number and
writes ``DIR/summary.json``. Datasets whose files are absent are listed as skipped, not failed. One model
for everything (``--model``) or one per task (``--hmer-model``, ``--fer-model``). All ``unitune infer``
options apply (backend, decoding, ...); the model is loaded once per task.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.cli import add_out_dir
from evaluators.errors import UserError
from evaluators.io_utils import atomic_write_json, atomic_write_text

__all__ = [
    "DEFAULT_SUITE",
    "DatasetResult",
    "add_arguments",
    "load_suite",
    "markdown_summary",
    "run",
    "run_suite",
]

logger = logging.getLogger(__name__)

#: The packaged suite with every paper benchmark.
DEFAULT_SUITE = Path(__file__).resolve().parent / "suites" / "all.yaml"

_SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "n",
    "seed",
    "stop",
    "repetition_penalty",
)
_INFER_KEYS = (*_SAMPLING_KEYS, "image_size", "upstream_prompt", "limit")


@dataclass
class SuiteDataset:
    """One entry of a suite file, paths resolved."""

    name: str
    task: str
    input: Path
    image_root: Path | None = None
    paper: float | None = None
    infer: dict[str, Any] = field(default_factory=dict)
    file: str = ""  # the input as the suite names it (relative to the data root)
    released: float | None = None  # the released checkpoint's own score on this file
    paper_note: str = ""  # where the paper's number comes from (a footnote)
    total_of: list[str] = field(default_factory=list)  # FER: pool these datasets' results (UniFER's total)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_") or "dataset"


@dataclass
class DatasetResult:
    """The outcome of one dataset: status, headline metric(s) and output paths."""

    name: str
    task: str
    status: str
    input: str
    n: int | None = None
    headline: dict[str, float] = field(default_factory=dict)
    paper: float | None = None
    metrics_files: list[str] = field(default_factory=list)
    predictions: str | None = None
    note: str = ""
    file: str = ""
    released: float | None = None
    paper_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _check_infer_block(block: Any, where: str) -> dict[str, Any]:
    if block in (None, {}):
        return {}
    if not isinstance(block, dict):
        raise UserError(f"{where}: `infer` must be a mapping of decoding options.")
    unknown = sorted(set(block) - set(_INFER_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown `infer` keys {unknown}; allowed: {', '.join(_INFER_KEYS)}.")
    return dict(block)


def load_suite(
    path: str | Path, data_root: str | Path | None = None
) -> tuple[dict[str, Any], list[SuiteDataset]]:
    """Read a suite YAML (``yaml.safe_load``) and resolve its dataset paths.

    Paths are relative to ``data_root`` (argument, else the file's ``data_root`` relative to the current
    directory, else the suite file's folder).

    Raises:
        UserError: missing/malformed file, no ``datasets`` list, an entry without ``name``/``task``/``input``,
            an unknown task or unknown ``infer`` keys, duplicate names.

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.yaml"
    >>> _ = p.write_text("datasets:\\n  - {name: CROHME 2014, task: hmer, input: c14.json, paper: 82.05}\\n")
    >>> meta, (ds,) = load_suite(p)
    >>> ds.slug, ds.input == p.parent / "c14.json", ds.paper
    ('crohme_2014', True, 82.05)
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such suite file.")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(err).split())}).") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text.") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), list):
        raise UserError(f"{path}: a suite needs a top-level `datasets:` list.")
    if data_root is not None:
        root = Path(data_root)
    elif doc.get("data_root"):
        root = Path(str(doc["data_root"]))
    else:
        root = path.parent
    meta = {
        "config": str(path),
        "data_root": str(root),
        "paper_model": doc.get("paper_model"),
        "released_model": doc.get("released_model"),
        "title": doc.get("title"),
    }
    meta["infer"] = _check_infer_block(doc.get("infer"), str(path))
    datasets, names, slugs = [], set(), {}
    for index, entry in enumerate(doc["datasets"]):
        where = f"{path}: dataset {index}"
        if not isinstance(entry, dict) or not all(entry.get(k) for k in ("name", "task")):
            raise UserError(f"{where} needs `name`, `task` and `input`.")
        total_of = entry.get("total_of") or []
        if not entry.get("input") and not total_of:
            raise UserError(f"{where} needs `name`, `task` and `input`.")
        if total_of and (entry.get("task") != "fer" or not isinstance(total_of, list)):
            raise UserError(f"{where}: `total_of` (a list of FER dataset names to pool) needs task fer.")
        unknown = sorted(set(total_of) - names)
        if unknown:
            raise UserError(f"{where}: `total_of` names {unknown}, not FER datasets listed above it.")
        name, task = str(entry["name"]), str(entry["task"])
        if task not in ("hmer", "fer"):
            raise UserError(f"{where} ({name}): task must be hmer or fer, got {task!r}.")
        if name in names:
            raise UserError(f"{where}: the name {name!r} is used twice.")
        names.add(name)
        slug = SuiteDataset(name, task, Path()).slug
        if slug in slugs:
            raise UserError(
                f"{where}: the names {slugs[slug]!r} and {name!r} share the output folder {slug!r}; rename one."
            )
        slugs[slug] = name
        paper, released = entry.get("paper"), entry.get("released")
        image_root = entry.get("image_root")
        file = str(entry.get("input") or "pooled: " + ", ".join(total_of))
        datasets.append(
            SuiteDataset(
                name=name,
                task=task,
                input=root / str(entry["input"]) if entry.get("input") else root,
                image_root=root / str(image_root) if image_root else None,
                paper=float(paper) if paper is not None else None,
                infer=_check_infer_block(entry.get("infer"), f"{where} ({name})"),
                file=file,
                released=float(released) if released is not None else None,
                paper_note=str(entry.get("paper_note") or ""),
                total_of=[str(n) for n in total_of],
            )
        )
    return meta, datasets


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _release_summary(results: list[DatasetResult], meta: dict[str, Any]) -> str:
    """The release-suite table: file, ours, the released checkpoint on the same file, the paper, footnotes."""
    paper_model = meta.get("paper_model")
    released_model = meta.get("released_model") or "released checkpoint"
    lines = []
    if meta.get("title"):
        lines += [str(meta["title"]).strip(), ""]
    prompt = (
        "upstream's (the literal `<image>` text kept, as upstream's vllm_infer.py sent it)"
        if meta.get("infer", {}).get("upstream_prompt")
        else "the fixed prompt (`<image>` replaced by the image)"
    )
    lines += [f"Reproduction prompt: {prompt}.", ""]
    lines.append(
        f"| Dataset | File | N | Metric | Ours | {released_model} (same file) | Δ vs released "
        f"| Paper{f' ({paper_model})' if paper_model else ''} | Status |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    notes: list[str] = []
    for result in results:
        note = result.note.strip().splitlines()[0].replace("|", "/") if result.note.strip() else ""
        status = result.status + (f": {note}" if note else "")
        n = "—" if result.n is None else str(result.n)
        mark = ""
        if result.paper_note:
            if result.paper_note not in notes:
                notes.append(result.paper_note)
            mark = f" [{notes.index(result.paper_note) + 1}]"
        paper = ("—" if result.paper is None else f"{result.paper:.2f}") + mark
        rows = list(result.headline.items()) or [("—", None)]
        for position, (metric, value) in enumerate(rows):
            released = result.released if position == 0 else None
            delta = None if value is None or released is None else value - released
            lines.append(
                f"| {result.name} | `{result.file}` | {n} | {metric} | {_fmt(value)} | {_fmt(released)} | "
                f"{'—' if delta is None else f'{delta:+.2f}'} | {paper if position == 0 else '—'} | {status} |"
            )
    if notes:
        lines.append("")
        lines += [f"[{number}] {text}" for number, text in enumerate(notes, start=1)]
    return "\n".join(lines) + "\n"


def markdown_summary(
    results: list[DatasetResult], paper_model: str | None = None, meta: dict[str, Any] | None = None
) -> str:
    """One Markdown table: a row per dataset and headline metric, with the paper's number and the gap.

    Example:

    >>> rows = [DatasetResult("CROHME 2014", "hmer", "ok", "c.json", 986, {"ExpRate": 80.0}, 82.05),
    ...         DatasetResult("HME100K", "hmer", "skipped", "h.json", note="input not found")]
    >>> print(markdown_summary(rows), end="")
    | Dataset | Task | N | Metric | Ours | Paper | Δ | Status |
    |---|---|---|---|---|---|---|---|
    | CROHME 2014 | hmer | 986 | ExpRate | 80.00 | 82.05 | -2.05 | ok |
    | HME100K | hmer | — | — | — | — | — | skipped: input not found |

    A suite with ``released`` numbers (``suites/release.yaml``) gets the release layout instead: the file, the
    released checkpoint's own score on it, the paper's number with a footnote on its source.
    """
    if meta is not None and any(r.released is not None or r.paper_note for r in results):
        return _release_summary(results, meta)
    header = f"| Dataset | Task | N | Metric | Ours | Paper{f' ({paper_model})' if paper_model else ''} | Δ | Status |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for result in results:
        note = result.note.strip().splitlines()[0].replace("|", "/") if result.note.strip() else ""
        status = result.status + (f": {note}" if note else "")
        n = "—" if result.n is None else str(result.n)
        if not result.headline:
            lines.append(
                f"| {result.name} | {result.task} | {n} | — | — | {_fmt(result.paper)} | — | {status} |"
            )
            continue
        for position, (metric, value) in enumerate(result.headline.items()):
            paper = result.paper if position == 0 else None
            delta = None if paper is None else value - paper
            delta_text = "—" if delta is None else f"{delta:+.2f}"
            lines.append(
                f"| {result.name} | {result.task} | {n} | {metric} | {_fmt(value)} | {_fmt(paper)} | {delta_text} | {status} |"
            )
    return "\n".join(lines) + "\n"


def markdown_report(title: str, text: str) -> str:
    """An evaluator's printed output as a Markdown document: its tables kept, other blocks fenced as text.

    Example:

    >>> print(markdown_report("demo", "counts: 3\\n| a | b |\\n|---|---|\\n| 1 | 2 |\\n"))
    # demo
    <BLANKLINE>
    ```text
    counts: 3
    ```
    <BLANKLINE>
    | a | b |
    |---|---|
    | 1 | 2 |
    <BLANKLINE>
    """
    parts, block, in_table = [f"# {title}"], [], False
    for line in [*text.rstrip("\n").splitlines(), ""]:
        is_table = line.startswith("|")
        if block and (not line.strip() or is_table != in_table):
            parts.append("\n".join(block) if in_table else "```text\n" + "\n".join(block) + "\n```")
            block = []
        if line.strip():
            block.append(line)
            in_table = is_table
    return "\n\n".join(parts) + "\n"


def _evaluate(
    dataset: SuiteDataset, prediction: Path, eval_dir: Path
) -> tuple[int | None, dict[str, float], list[str]]:
    """Run the real ``unitune eval`` command in-process; return N, headline metrics and metrics files."""
    from evaluators.cli import main as unitune

    eval_dir.mkdir(parents=True, exist_ok=True)
    for stale in eval_dir.glob("*_metrics.json"):
        stale.unlink()
    if dataset.task == "hmer":
        argv = ["eval", "hmer", str(prediction), "--out-dir", str(eval_dir)]
    else:
        argv = ["eval", "fer", str(prediction), "--protocol", "both", "--out-dir", str(eval_dir)]
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        status = unitune(argv)
    atomic_write_text(
        eval_dir / "report.md",
        markdown_report(f"{dataset.name}: unitune {' '.join(argv[:2])}", captured.getvalue()),
    )
    if status != 0:
        raise UserError(f"`unitune {' '.join(argv)}` exited with status {status} (see the log above).")
    files = sorted(eval_dir.glob("*_metrics.json"))
    if not files:
        raise UserError(f"`unitune {' '.join(argv)}` wrote no *_metrics.json into {eval_dir}.")
    if dataset.task == "hmer":
        doc = json.loads(files[0].read_text(encoding="utf-8"))
        return int(doc["N"]), {"ExpRate": 100.0 * float(doc["metrics"]["exprate"])}, [str(f) for f in files]
    headline, n = {}, None
    for protocol, label in (("unifer", "Acc (UniFER protocol)"), ("strict", "Acc (strict)")):
        match = [f for f in files if f.name.endswith(f"_{protocol}_metrics.json")]
        if match:
            doc = json.loads(match[0].read_text(encoding="utf-8"))
            headline[label] = 100.0 * float(doc["overall"]["accuracy"])
            n = int(doc.get("counts", {}).get("total", 0)) or n
    return n, headline, [str(f) for f in files]


def _pool_fer(dataset: SuiteDataset, result: DatasetResult, done: list[DatasetResult], out_dir: Path) -> None:
    """UniFER's pooled FERBench accuracy over the results of ``dataset.total_of`` (``unitune eval fer --total``)."""
    from evaluators.cli import main as unitune

    members = {r.name: r for r in done if r.name in dataset.total_of}
    missing = [name for name in dataset.total_of if name not in members or members[name].status != "ok"]
    if missing:
        result.status, result.note = "skipped", f"needs the results of {', '.join(missing)}"
        return
    eval_dir = out_dir / dataset.slug / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    argv = ["eval", "fer", *(str(members[n].predictions) for n in dataset.total_of), "--total"]
    argv += ["--protocol", "both", "--out-dir", str(eval_dir)]
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        status = unitune(argv)
    atomic_write_text(eval_dir / "report.md", captured.getvalue())
    if status != 0:
        result.status, result.note = "failed", f"`unitune {' '.join(argv)}` exited with status {status}"
        return
    for protocol, label in (("unifer", "Acc (UniFER protocol)"), ("strict", "Acc (strict)")):
        path = eval_dir / f"total_{protocol}_metrics.json"
        doc = json.loads(path.read_text(encoding="utf-8"))
        result.headline[label] = 100.0 * float(doc["overall"]["accuracy"])
        result.n = int(doc.get("counts", {}).get("total", 0)) or result.n
        result.metrics_files.append(str(path))


def run_suite(
    datasets: list[SuiteDataset],
    models: dict[str, str | None],
    out_dir: Path,
    args: argparse.Namespace,
    suite_infer: dict[str, Any] | None = None,
    only: list[str] | None = None,
) -> list[DatasetResult]:
    """Infer and evaluate each dataset; a failing dataset is recorded and the suite goes on."""
    from evaluators.inference.cli import settings_from_args
    from evaluators.inference.runner import make_backend, run_inference

    backends: dict[str, Any] = {}

    def shared_backend(model: str, processor: Any, settings: Any) -> Any:
        if model not in backends:
            backends[model] = make_backend(model, processor, settings)
        return backends[model]

    results = []
    for dataset in datasets:
        if only and dataset.name not in only and dataset.slug not in only:
            continue
        result = DatasetResult(
            dataset.name,
            dataset.task,
            "ok",
            str(dataset.input),
            paper=dataset.paper,
            file=dataset.file,
            released=dataset.released,
            paper_note=dataset.paper_note,
        )
        results.append(result)
        if dataset.total_of:
            _pool_fer(dataset, result, results, out_dir)
            continue
        model = models.get(dataset.task)
        if not dataset.input.is_file():
            result.status, result.note = "skipped", f"input not found ({dataset.input})"
            continue
        if not model:
            result.status, result.note = (
                "skipped",
                f"no model for {dataset.task} (--model or --{dataset.task}-model)",
            )
            continue
        logger.info("== %s (%s) with %s", dataset.name, dataset.task, model)
        try:
            settings = settings_from_args(args, model=model)
            settings.task = dataset.task
            if dataset.image_root is not None and args.image_root is None:
                settings.image_root = str(dataset.image_root)
            merged = {**(suite_infer or {}), **dataset.infer}
            settings.sampling = {
                **{k: merged[k] for k in _SAMPLING_KEYS if k in merged},
                **{
                    k: v
                    for k, v in settings.sampling.items()
                    if v is not None and not (k == "seed" and "seed" in merged)
                },
            }
            if settings.image_size is None and "image_size" in merged:
                settings.image_size = merged["image_size"]
            settings.upstream_prompt = settings.upstream_prompt or bool(merged.get("upstream_prompt"))
            if settings.limit is None and merged.get("limit"):
                settings.limit = int(merged["limit"])
            base = out_dir / dataset.slug
            (file_result,) = run_inference(
                [dataset.input], base / "infer", settings, backend_factory=shared_backend
            )
            result.predictions = str(file_result.export)
            if file_result.missing:
                result.note = f"{len(file_result.missing)} missing images (scored as failures)"
            result.n, result.headline, result.metrics_files = _evaluate(
                dataset, file_result.export, base / "eval"
            )
        except UserError as err:
            result.status, result.note = "failed", str(err)
            logger.error("%s: %s", dataset.name, err)
        except Exception as err:  # e.g. CUDA OOM on one dataset: record it, keep the other datasets going
            result.status, result.note = "failed", f"{type(err).__name__}: {err}"
            logger.exception("%s failed", dataset.name)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune eval-all``."""
    from evaluators.inference.cli import add_inference_arguments

    parser.add_argument("--model", default=None, help="model for every dataset (merged Qwen2.5-VL folder)")
    parser.add_argument("--hmer-model", default=None, help="model for the HMER datasets (overrides --model)")
    parser.add_argument("--fer-model", default=None, help="model for the FER datasets (overrides --model)")
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_SUITE, help="suite YAML (default: evaluators/suites/all.yaml)"
    )
    parser.add_argument(
        "--data-root", type=Path, default=None, help="folder the suite's paths are relative to"
    )
    add_out_dir(parser, "output folder (default runs/eval-all/<model name>/<suite name>)")
    parser.add_argument("--only", nargs="+", default=None, help="dataset names or slugs to run")
    add_inference_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``unitune eval-all``; exit 1 when a dataset failed (skipped ones are fine)."""
    meta, datasets = load_suite(args.config, args.data_root)
    models = {"hmer": args.hmer_model or args.model, "fer": args.fer_model or args.model}
    if not any(models.values()):
        raise UserError("give --model (or --hmer-model / --fer-model): the merged checkpoint to evaluate.")
    if args.only:
        known = {d.name for d in datasets} | {d.slug for d in datasets}
        unknown = [name for name in args.only if name not in known]
        if unknown:
            raise UserError(
                f"--only {unknown}: not in {args.config}; known: {', '.join(d.name for d in datasets)}."
            )
    out = (
        args.out_dir
        or Path("runs")
        / "eval-all"
        / Path(str(args.model or args.hmer_model or args.fer_model)).name
        / Path(args.config).stem
    )
    results = run_suite(datasets, models, out, args, meta["infer"], args.only)
    table = markdown_summary(results, meta.get("paper_model"), meta)
    atomic_write_text(out / "summary.md", table)
    atomic_write_json(
        out / "summary.json",
        {**meta, "models": models, "out": str(out), "datasets": [r.as_dict() for r in results]},
    )
    sys.stdout.write("\n" + table)
    sys.stdout.flush()
    logger.info("summary: %s and %s", out / "summary.md", out / "summary.json")
    return 1 if any(r.status == "failed" for r in results) else 0
