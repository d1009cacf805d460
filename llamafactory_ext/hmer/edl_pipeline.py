"""Error-Driven Learning end to end: labelled corpus -> k fold models -> sampled errors -> registered EDL sets.

``unitune edl run CONFIG`` runs, or resumes, these steps (``CONFIG``: see :mod:`llamafactory_ext.hmer.edl_config`):

1. ``folds``: the corpus with absolute image paths, split into k folds (``unitune data hmer-folds``'s code);
2. ``train`` fold i: ``llamafactory-cli train OUT/recipes/fold{i}_train.yaml`` (any recipe; LLaMA-Factory's own
   launcher, so ``FORCE_TORCHRUN``, ``NNODES``, ``NODE_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` pass through);
3. ``export`` fold i ((Q)LoRA only): ``llamafactory-cli export OUT/recipes/fold{i}_export.yaml``;
4. ``sample`` fold i shard j: ``unitune infer HELDOUT -n K --temperature T ... --shard j/N`` on the held-out fold;
5. ``merge`` fold i: the shards' samples in input order (byte-identical to one unsharded run);
6. ``build``: ``error_find`` / ``error_fix`` per fold (correct and duplicate predictions dropped), concatenated;
7. ``register``: both sets added to ``dataset_dir/dataset_info.json``; a summary table is printed.

Every step owns a folder with a marker ``.edl_step.json`` holding a hash of everything that made it (input
bytes, settings, the keys of the steps before it). A re-run skips steps whose marker matches and redoes the
rest: missing, interrupted or stale ones (a changed setting invalidates that step and everything after it).
An interrupted ``sample`` step resumes inside the file (``unitune infer`` keeps finished samples).
``unitune edl plan CONFIG`` prints the exact command of every step for a cluster's own scheduler, and
``--only STEP --fold I --shard J`` runs a single one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evaluators.errors import UserError
from evaluators.io_utils import atomic_write_json, atomic_write_text

from .edl_config import EdlConfig, load_config

__all__ = ["STEP_KINDS", "Pipeline", "Step", "add_arguments", "run"]

logger = logging.getLogger(__name__)

STEP_KINDS = ("folds", "train", "export", "sample", "merge", "build", "register")
MARKER = ".edl_step.json"
#: Bumped when a step's outputs change for the same inputs (old markers then count as stale).
_FORMAT = 1


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint_path(path: str | Path) -> str:
    """Content hash of a file; (name, size, mtime) of the files of a folder (a 3B model is not re-read)."""
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    if path.is_dir():
        rows = sorted(
            (p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*")
            if p.is_file()
        )
        return _hash(rows)
    return f"not a local path: {path}"


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Step:
    """One unit of work: its folder, marker key, the command it runs (for ``plan``) and its action."""

    kind: str
    folder: Path
    key: str
    action: Callable[[], dict[str, Any] | None]
    fold: int | None = None
    shard: int | None = None
    needs: list[Step] = field(default_factory=list)
    command: list[str] | None = None
    resumable: bool = False

    @property
    def label(self) -> str:
        text = self.kind
        if self.fold is not None:
            text += f" fold {self.fold}"
        if self.shard is not None:
            text += f" shard {self.shard}"
        return text

    def marker(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_done(self) -> bool:
        marker = self.marker()
        return bool(marker and marker.get("key") == self.key and marker.get("state") == "done")

    def write_marker(self, state: str, extra: dict[str, Any] | None = None) -> None:
        atomic_write_json(
            self.folder / MARKER, {"step": self.label, "key": self.key, "state": state, **(extra or {})}
        )


def _quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def _llamafactory_cli() -> str:
    beside = Path(sys.executable).parent / "llamafactory-cli"
    found = str(beside) if beside.is_file() else shutil.which("llamafactory-cli")
    if found is None:
        raise UserError(
            "llamafactory-cli is not installed; install the training extra (pip install -e '.[train]')."
        )
    return found


def _load_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file.")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: expected a YAML mapping.")
    return data


class Pipeline:
    """The steps of one configuration, their keys and actions (nothing runs until :meth:`run`)."""

    def __init__(self, config: EdlConfig, log: Callable[[str], None] | None = None) -> None:
        self.c = config
        self.say = log or (lambda text: logger.info("%s", text))
        self.out = Path(config.out_dir).absolute()
        self.folds_dir = self.out / "folds"
        self.recipes = self.out / "recipes"
        self.logs = self.out / "logs"
        self.edl_dir = self.out / "edl"
        self.recipe = _load_yaml(config.recipe, "recipe")
        ft = str(self.recipe.get("finetuning_type", config.train.get("finetuning_type", "lora")))
        self.finetuning_type = str(config.train.get("finetuning_type", ft))
        self.needs_export = self.finetuning_type not in ("full", "freeze")
        self.export_recipe = _load_yaml(config.export_recipe, "export_recipe") if self.needs_export else {}
        self.steps = self._make_steps()

    # -- paths ---------------------------------------------------------------------------------------------
    def fold_name(self, fold: int, part: str) -> str:
        return f"{self.c.name}_fold{fold}_{part}"

    def heldout_file(self, fold: int) -> Path:
        return self.folds_dir / f"{self.fold_name(fold, 'heldout')}.json"

    def train_dir(self, fold: int) -> Path:
        return self.out / f"fold{fold}" / "train"

    def model_dir(self, fold: int) -> Path:
        return self.out / f"fold{fold}" / ("merged" if self.needs_export else "train")

    def shard_dir(self, fold: int, shard: int) -> Path:
        return self.out / f"fold{fold}" / "samples" / f"shard{shard}of{self.c.shards}"

    def merged_predictions(self, fold: int) -> Path:
        return self.out / f"fold{fold}" / "predictions" / "predictions.jsonl"

    def edl_file(self, task: str) -> Path:
        name = self.c.error_find_name if task == "error_find" else self.c.error_fix_name
        return self.edl_dir / f"{name}.json"

    # -- recipes and commands ------------------------------------------------------------------------------
    def train_recipe(self, fold: int) -> dict[str, Any]:
        recipe = {**self.recipe, **self.c.train}
        recipe.update(
            model_name_or_path=self.c.model_name_or_path,
            dataset=self.fold_name(fold, "train"),
            dataset_dir=str(self.folds_dir),
            output_dir=str(self.train_dir(fold)),
            overwrite_output_dir=True,
        )
        recipe.pop("eval_dataset", None)
        return recipe

    def export_recipe_for(self, fold: int) -> dict[str, Any]:
        recipe = {**self.export_recipe, **self.c.export}
        recipe.update(
            model_name_or_path=self.c.model_name_or_path,
            adapter_name_or_path=str(self.train_dir(fold)),
            export_dir=str(self.model_dir(fold)),
            finetuning_type=self.finetuning_type,
        )
        if "template" in self.recipe:
            recipe["template"] = self.c.train.get("template", self.recipe["template"])
        return recipe

    def write_recipes(self) -> list[Path]:
        """Write ``OUT/recipes/fold{i}_{train,export}.yaml`` (what the train/export commands read)."""
        written = []
        for fold in range(self.c.k):
            items = [("train", self.train_recipe(fold))]
            if self.needs_export:
                items.append(("export", self.export_recipe_for(fold)))
            for kind, recipe in items:
                path = self.recipes / f"fold{fold}_{kind}.yaml"
                header = f"# written by `unitune edl` from {self.c.source}: fold {fold} {kind}\n"
                atomic_write_text(path, header + yaml.safe_dump(recipe, sort_keys=False))
                written.append(path)
        return written

    def infer_argv(self, fold: int, shard: int) -> list[str]:
        s = self.c.sampling
        argv = ["infer", str(self.heldout_file(fold)), "--model", str(self.model_dir(fold))]
        argv += ["--out-dir", str(self.shard_dir(fold, shard)), "-n", str(s["n"])]
        argv += [
            "--temperature",
            str(s["temperature"]),
            "--top-p",
            str(s["top_p"]),
            "--top-k",
            str(s["top_k"]),
        ]
        argv += ["--max-new-tokens", str(s["max_new_tokens"]), "--seed", str(s["seed"])]
        if self.c.shards > 1:
            argv += ["--shard", f"{shard}/{self.c.shards}"]
        return argv + list(self.c.infer_args)

    # -- steps ---------------------------------------------------------------------------------------------
    def _make_steps(self) -> list[Step]:
        c = self.c
        input_path = Path(c.input)
        base = {"format": _FORMAT}
        folds = Step(
            "folds",
            self.folds_dir,
            _hash(
                {
                    **base,
                    "input": _fingerprint_path(input_path),
                    "image_dir": str(c.image_dir),
                    "k": c.k,
                    "seed": c.seed,
                    "tasks": c.fold_tasks,
                    "name": c.name,
                }
            ),
            self._do_folds,
            command=["unitune", "data", "hmer-folds", str(input_path), "--k", str(c.k), "..."],
        )
        steps = [folds]
        model_fp = _fingerprint_path(c.model_name_or_path)
        merges = []
        for fold in range(c.k):
            train = Step(
                "train",
                self.train_dir(fold),
                _hash({**base, "folds": folds.key, "recipe": self.train_recipe(fold), "model": model_fp}),
                lambda f=fold: self._do_train(f),
                fold=fold,
                needs=[folds],
                command=["llamafactory-cli", "train", str(self.recipes / f"fold{fold}_train.yaml")],
            )
            steps.append(train)
            model_step = train
            if self.needs_export:
                model_step = Step(
                    "export",
                    self.model_dir(fold),
                    _hash({**base, "train": train.key, "recipe": self.export_recipe_for(fold)}),
                    lambda f=fold: self._do_export(f),
                    fold=fold,
                    needs=[train],
                    command=["llamafactory-cli", "export", str(self.recipes / f"fold{fold}_export.yaml")],
                )
                steps.append(model_step)
            shards = []
            for shard in range(c.shards):
                argv = self.infer_argv(fold, shard)
                shards.append(
                    Step(
                        "sample",
                        self.shard_dir(fold, shard),
                        _hash({**base, "model": model_step.key, "argv": argv[1:]}),
                        lambda f=fold, j=shard: self._do_sample(f, j),
                        fold=fold,
                        shard=shard,
                        needs=[model_step],
                        command=["unitune", *argv],
                        resumable=True,
                    )
                )
            steps += shards
            merge = Step(
                "merge",
                self.merged_predictions(fold).parent,
                _hash({**base, "shards": [s.key for s in shards]}),
                lambda f=fold: self._do_merge(f),
                fold=fold,
                needs=shards,
            )
            steps.append(merge)
            merges.append(merge)
        names = [c.error_find_name, c.error_fix_name]
        build = Step(
            "build",
            self.edl_dir,
            _hash({**base, "merges": [m.key for m in merges], "names": names}),
            self._do_build,
            needs=merges,
        )
        steps.append(build)
        return steps

    def select(self, kind: str | None, fold: int | None = None, shard: int | None = None) -> list[Step]:
        """The steps matching ``--only KIND [--fold I] [--shard J]`` (all steps when ``kind`` is None)."""
        if kind is None:
            return list(self.steps)
        chosen = [
            s
            for s in self.steps
            if s.kind == kind
            and (fold is None or s.fold is None or s.fold == fold)
            and (shard is None or s.shard is None or s.shard == shard)
        ]
        if kind == "export" and not self.needs_export:
            raise UserError(
                f"--only export: the recipe trains {self.finetuning_type!r} models, nothing to export."
            )
        if not chosen and kind != "register":
            raise UserError(
                f"--only {kind} --fold {fold} --shard {shard}: no such step (k={self.c.k}, shards={self.c.shards})."
            )
        return chosen

    # -- actions -------------------------------------------------------------------------------------------
    def _shell(self, argv: list[str], log_name: str) -> None:
        log_path = self.logs / f"{log_name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as handle:
            handle.write(f"$ {_quote(argv)}\n")
            handle.flush()
            status = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
        if status != 0:
            tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
            raise UserError(f"`{_quote(argv[:3])} ...` exited with {status}; see {log_path}:\n{tail}")

    def _do_folds(self) -> dict[str, Any]:
        from llamafactory_ext.dataset_registry import register_dataset

        from .build import build_file
        from .folds import make_folds

        labels = self.folds_dir / "labels.json"
        stats = build_file(
            self.c.input, labels, "vanilla", image_dir=self.c.image_dir, absolute_images=True, progress=False
        )
        manifest = make_folds(
            labels, self.folds_dir, self.c.k, self.c.name, self.c.fold_tasks, self.c.seed, dataset_dir=None
        )
        ids = Counter(i for f in manifest["folds"] for i in f["heldout_ids"])
        dupes = sorted(i for i, n in ids.items() if n > 1)
        if dupes:
            raise UserError(
                f"input {self.c.input}: {len(dupes)} image ids occur more than once ({', '.join(dupes[:5])}); "
                "predictions are matched by image file stem, so stems must be unique."
            )
        shutil.rmtree(self.folds_dir / "recipes", ignore_errors=True)  # ours are in OUT/recipes
        for fold in manifest["folds"]:
            register_dataset(fold["train"], fold["train_file"], self.folds_dir)
            register_dataset(fold["heldout"], fold["heldout_file"], self.folds_dir)
        return {
            "labelled": stats.written,
            "rejected": stats.rejected,
            "reasons": dict(stats.reasons),
            "folds": [{"n_train": f["n_train"], "n_heldout": f["n_heldout"]} for f in manifest["folds"]],
        }

    def _do_train(self, fold: int) -> None:
        self.write_recipes()
        self._shell(
            [_llamafactory_cli(), "train", str(self.recipes / f"fold{fold}_train.yaml")], f"fold{fold}_train"
        )

    def _do_export(self, fold: int) -> None:
        self.write_recipes()
        self._shell(
            [_llamafactory_cli(), "export", str(self.recipes / f"fold{fold}_export.yaml")],
            f"fold{fold}_export",
        )

    def _do_sample(self, fold: int, shard: int) -> dict[str, Any]:
        from evaluators.inference.cli import pick_backend

        argv = self.infer_argv(fold, shard)
        backend = "auto"
        if "--backend" in argv:
            backend = argv[argv.index("--backend") + 1]
        if pick_backend(backend) == "hf":  # in-process: no second torch import per shard
            from evaluators.cli import main as unitune_main

            status = unitune_main([*argv, "--no-progress"])
        else:  # a process per shard, so each vLLM engine's GPU memory is freed when it ends
            status = subprocess.run([sys.executable, "-m", "evaluators.cli", *argv], check=False).returncode
        if status not in (0, 1):
            raise UserError(f"`unitune {_quote(argv[:2])} ...` exited with {status}.")
        missing = self.shard_dir(fold, shard) / f"{self.fold_name(fold, 'heldout')}_missing.json"
        return {"missing_images": len(json.loads(missing.read_text())) if missing.is_file() else 0}

    def _do_merge(self, fold: int) -> dict[str, Any]:
        heldout = json.loads(self.heldout_file(fold).read_text(encoding="utf-8"))
        from evaluators.inference.prompts import record_id

        order = {record_id(r, (r.get("images") or [None])[0], i): i for i, r in enumerate(heldout)}
        lines: dict[tuple[int, int], str] = {}
        missing: list[dict] = []
        stem = self.fold_name(fold, "heldout")
        for shard in range(self.c.shards):
            folder = self.shard_dir(fold, shard)
            with (folder / f"{stem}_infer.jsonl").open(encoding="utf-8") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if str(item["id"]) not in order:
                        raise UserError(
                            f"{folder}: prediction id {item['id']!r} is not in {self.heldout_file(fold)}."
                        )
                    lines.setdefault((order[str(item["id"])], int(item["sample_index"])), line.rstrip("\n"))
            path = folder / f"{stem}_missing.json"
            if path.is_file():
                missing += json.loads(path.read_text(encoding="utf-8"))
        target = self.merged_predictions(fold)
        atomic_write_text(target, "".join(lines[key] + "\n" for key in sorted(lines)))
        if missing:
            atomic_write_json(target.with_name("missing.json"), sorted(missing, key=lambda m: m["index"]))
        return {"predictions": len(lines), "missing_images": len(missing)}

    def _do_build(self) -> dict[str, Any]:
        from .build import build_file, write_sharegpt

        summary: dict[str, Any] = {"folds": [], "sampling": self.c.sampling, "k": self.c.k}
        per_task: dict[str, list[Path]] = {"error_find": [], "error_fix": []}
        for fold in range(self.c.k):
            predictions = self.merged_predictions(fold)
            row: dict[str, Any] = {"fold": fold}
            heldout = json.loads(self.heldout_file(fold).read_text(encoding="utf-8"))
            row["heldout_images"] = len(heldout)
            preds = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
            row["predictions"] = len(preds)
            correct = sum(
                1
                for p in preds
                if isinstance(p.get("pred"), str) and p["pred"].split() == str(p.get("gt", "")).split()
            )
            row["correct"] = correct
            row["error_rate"] = 1 - correct / len(preds) if preds else None
            missing = predictions.with_name("missing.json")
            row["missing_images"] = len(json.loads(missing.read_text())) if missing.is_file() else 0
            for task in per_task:
                target = self.edl_dir / f"fold{fold}" / f"{self.fold_name(fold, task)}.json"
                stats = build_file(
                    self.heldout_file(fold),
                    target,
                    task,
                    predictions_path=predictions,
                    absolute_images=True,
                    progress=False,
                )
                per_task[task].append(target)
                row[f"{task}_rows"] = stats.written
                if task == "error_find":
                    row["duplicates_dropped"] = stats.dropped_duplicate
                    row["correct_dropped"] = stats.dropped_correct
                    row["rejected"] = stats.rejected
                    row["rejected_reasons"] = dict(sorted(stats.reasons.items()))
            summary["folds"].append(row)
        for task, files in per_task.items():

            def records(paths: list[Path] = files) -> Iterator[dict]:
                for path in paths:
                    yield from json.loads(path.read_text(encoding="utf-8"))

            write_sharegpt(self.edl_file(task), records())
        summary["outputs"] = {task: str(self.edl_file(task)) for task in per_task}
        atomic_write_json(self.edl_dir / "summary.json", summary)
        atomic_write_text(self.edl_dir / "summary.md", format_summary(summary))
        return {}

    def registered_file(self, task: str) -> Path:
        """Where :meth:`register` copies a set: ``DATASET_DIR/data/NAME.json`` (the shipped entries' layout)."""
        name = self.c.error_find_name if task == "error_find" else self.c.error_fix_name
        return Path(self.c.dataset_dir) / "data" / f"{name}.json"

    def check_registrable(self) -> None:
        """Refuse now (not after hours of GPU work) when ``dataset_dir`` holds other entries of our names."""
        from llamafactory_ext.dataset_registry import ensure_registrable

        for task, name in (("error_find", self.c.error_find_name), ("error_fix", self.c.error_fix_name)):
            ensure_registrable(name, self.registered_file(task), self.c.dataset_dir, False)

    def register(self) -> None:
        """Copy both sets to :meth:`registered_file` (atomically) and register them in ``dataset_dir``."""
        from llamafactory_ext.dataset_registry import register_dataset

        self.check_registrable()
        for task, name in (("error_find", self.c.error_find_name), ("error_fix", self.c.error_fix_name)):
            target = self.registered_file(task)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(self.edl_file(task), partial)
            os.replace(partial, target)
            register_dataset(name, target, self.c.dataset_dir)
            self.say(f"registered {name!r} ({target}) in {Path(self.c.dataset_dir) / 'dataset_info.json'}")

    # -- running -------------------------------------------------------------------------------------------
    def run_step(self, step: Step) -> str:
        """Run ``step`` unless its marker matches; return ``reused``, ``resumed`` or ``done``."""
        if step.is_done():
            return "reused"
        unfinished = [n.label for n in step.needs if not n.is_done()]
        if unfinished:
            raise UserError(
                f"step {step.label!r} needs {', '.join(unfinished)} first (run them, or `unitune edl run` without --only)."
            )
        marker = step.marker()
        resume = step.resumable and marker is not None and marker.get("key") == step.key
        if not resume and step.folder.exists():
            shutil.rmtree(step.folder)
        step.folder.mkdir(parents=True, exist_ok=True)
        step.write_marker("running")
        extra = step.action() or {}
        step.write_marker("done", extra)
        return "resumed" if resume else "done"

    def run(
        self, steps: list[Step] | None = None, register: bool | None = None
    ) -> list[tuple[str, str, float]]:
        """Run ``steps`` (default: all) in order; register the EDL sets when the build is done."""
        steps = self.steps if steps is None else steps
        if not Path(self.c.input).exists() and any(s.kind == "folds" and not s.is_done() for s in steps):
            raise UserError(f"CONFIG {self.c.source}: input {self.c.input}: no such file or folder.")
        registering = register if register is not None else self.c.register
        if registering:
            self.check_registrable()
        report = []
        for step in steps:
            start = time.monotonic()
            if not step.is_done():
                self.say(f"[edl] {step.label} ...")
            status = self.run_step(step)
            seconds = time.monotonic() - start
            self.say(f"[edl] {step.label}: {status} ({seconds:.1f} s)")
            report.append((step.label, status, seconds))
        build = self.steps[-1]
        if registering and build.is_done():
            self.register()
        return report

    def plan(self) -> str:
        """Every step's exact command, in dependency order, with the scale-out notes."""
        c = self.c
        config = shlex.quote(str(c.source))
        lines = [
            f"# EDL pipeline for {config}: k={c.k} folds, {c.shards} sampling shard(s) per fold, outputs in {self.out}",
            "# Each `unitune edl run CONFIG --only ...` line runs one step and writes its marker; the engine command it",
            "# runs is shown below it. Steps of the same number can run in parallel.",
        ]
        number = {"folds": 1, "train": 2, "export": 3, "sample": 4, "merge": 5, "build": 6}
        for step in self.steps:
            only = ["unitune", "edl", "run", str(c.source), "--only", step.kind]
            if step.fold is not None:
                only += ["--fold", str(step.fold)]
            if step.shard is not None:
                only += ["--shard", str(step.shard)]
            lines.append("")
            lines.append(
                f"# [{number[step.kind]}] {step.label}"
                + ("  (needs: " + ", ".join(n.label for n in step.needs) + ")" if step.needs else "")
            )
            lines.append(_quote(only))
            if step.kind in ("train", "export", "sample"):
                lines.append(f"#   runs: {_quote(step.command or [])}")
            if step.kind == "train":
                lines.append(
                    "#   multi-GPU/node: FORCE_TORCHRUN=1 NNODES=2 NODE_RANK=0 MASTER_ADDR=<node0> MASTER_PORT=29500 "
                    "on node 0 (this line); other nodes run the `runs:` command with their NODE_RANK"
                )
        lines.append("")
        lines.append(
            f"# [7] register (also done by [6] when `register: true`): {c.error_find_name}, {c.error_fix_name} "
            f"in {c.dataset_dir}/dataset_info.json"
        )
        lines.append(_quote(["unitune", "edl", "run", str(c.source), "--only", "register"]))
        return "\n".join(lines) + "\n"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary table (Markdown): one row per fold and a total.

    Example:

    >>> row = {"fold": 0, "heldout_images": 2, "predictions": 4, "correct": 1, "error_rate": 0.75,
    ...        "duplicates_dropped": 1, "correct_dropped": 1, "rejected": 0, "rejected_reasons": {},
    ...        "error_find_rows": 2, "error_fix_rows": 2, "missing_images": 0}
    >>> print(format_summary({"folds": [row]}).splitlines()[2])
    | 0 | 2 | 4 | 75.0% | 1 | 1 | 0 | 2 | 2 |
    """
    head = (
        "| fold | held-out images | predictions | fold-model error rate | correct dropped | duplicates dropped "
        "| rejected | error_find rows | error_fix rows |"
    )
    lines = [head, "|" + "---|" * 9]
    total = Counter()
    reasons: Counter = Counter()
    for row in summary["folds"]:
        rate = "n/a" if row["error_rate"] is None else f"{100 * row['error_rate']:.1f}%"
        lines.append(
            f"| {row['fold']} | {row['heldout_images']} | {row['predictions']} | {rate} | {row['correct_dropped']} "
            f"| {row['duplicates_dropped']} | {row['rejected']} | {row['error_find_rows']} | {row['error_fix_rows']} |"
        )
        for key in (
            "heldout_images",
            "predictions",
            "correct",
            "correct_dropped",
            "duplicates_dropped",
            "rejected",
            "error_find_rows",
            "error_fix_rows",
            "missing_images",
        ):
            total[key] += row[key]
        reasons.update(row["rejected_reasons"])
    if len(summary["folds"]) > 1:
        rate = (
            f"{100 * (1 - total['correct'] / total['predictions']):.1f}%" if total["predictions"] else "n/a"
        )
        lines.append(
            f"| all | {total['heldout_images']} | {total['predictions']} | {rate} | {total['correct_dropped']} "
            f"| {total['duplicates_dropped']} | {total['rejected']} | {total['error_find_rows']} | {total['error_fix_rows']} |"
        )
    if reasons:
        lines.append("")
        lines.append("Rejected predictions: " + ", ".join(f"{k}: {n}" for k, n in reasons.most_common()))
    if total["missing_images"]:
        lines.append(f"Held-out images missing or undecodable (not sampled): {total['missing_images']}")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune edl run``."""
    parser.add_argument(
        "config", metavar="CONFIG", type=Path, help="EDL pipeline YAML (see recipes/unimumer_edl.yaml)"
    )
    parser.add_argument("--only", choices=STEP_KINDS, help="run only this step (its inputs must be done)")
    parser.add_argument("--fold", type=int, help="with --only: this fold only")
    parser.add_argument(
        "--shard", type=int, help="with --only sample: this shard only (0-based, of `shards`)"
    )
    parser.add_argument("--until", choices=STEP_KINDS[:-1], help="stop after every step of this kind is done")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    """Run ``unitune edl run``; exit status 0."""
    pipeline = Pipeline(load_config(args.config), log=_say)
    if (args.fold is not None or args.shard is not None) and args.only is None:
        raise UserError("--fold/--shard need --only STEP.")
    if args.only == "register":
        if not pipeline.steps[-1].is_done():
            raise UserError("--only register: the build step is not done yet.")
        pipeline.register()
        return 0
    steps = pipeline.select(args.only, args.fold, args.shard)
    if args.until:
        steps = [s for s in steps if STEP_KINDS.index(s.kind) <= STEP_KINDS.index(args.until)]
    start = time.monotonic()
    pipeline.run(steps, register=None if args.only in (None, "build") and not args.until else False)
    if pipeline.steps[-1].is_done() and args.only in (None, "build") and not args.until:
        _say((pipeline.edl_dir / "summary.md").read_text(encoding="utf-8"))
        _say(
            f"EDL sets: {pipeline.edl_file('error_find')} and {pipeline.edl_file('error_fix')} "
            f"({time.monotonic() - start:.0f} s)"
        )
    return 0
