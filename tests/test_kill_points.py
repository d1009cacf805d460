"""Kill ``eval hmer``, ``eval fer``, ``data hmer``, ``data fer-sft`` and ``infer`` at 10 points of their writes: the
output set is the old one or the new one.

The command runs in a forked child that dies with ``os._exit`` (no ``finally``, no flush: what ``kill -9``
leaves) at the k-th file-system step (``os.replace``, ``os.fsync``, ``os.unlink``, ``os.mkdir``,
``os.rmdir``). Then :func:`evaluators.outputs.recover_output_sets` runs, as every writer does first, and
the folder must hold exactly the old set or exactly the new one, with no staging leftovers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

import evaluators.fer.cli  # noqa: F401  (imported once here, not in every forked child)
import evaluators.fer.plots  # noqa: F401
import llamafactory_ext.fer_data  # noqa: F401
import llamafactory_ext.hmer.cli  # noqa: F401
from evaluators.cli import main as unitune
from evaluators.hmer.loaders import HmerSample
from evaluators.hmer.metrics import evaluate_samples
from evaluators.outputs import STAGING_PREFIX, recover_output_sets

_STEPS = ("replace", "fsync", "unlink", "mkdir", "rmdir")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")]


def _run_child(argv: list[str] | Callable[[], int], kill_at: int | None) -> int:
    """Run ``unitune argv`` (or ``argv()``) in a forked child killed at step ``kill_at``; return its step count."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        count = [0]

        def counted(real):
            def step(*args, **kwargs):
                count[0] += 1
                if count[0] == kill_at:
                    os._exit(137)
                return real(*args, **kwargs)

            return step

        for name in _STEPS:
            setattr(os, name, counted(getattr(os, name)))
        status = argv() if callable(argv) else unitune(argv)
        os.write(write_fd, json.dumps([status, count[0]]).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if kill_at is None:
        status, steps = json.loads(report)
        assert status == 0 and os.waitstatus_to_exitcode(wait_status) == 0
        return steps
    return -1


# Warm the lazy imports of the scorer (NLTK's BLEU) in the parent, so that each child only does the work.
evaluate_samples([HmerSample("0", "a", "a")])


def _kill_points(steps: int) -> list[int]:
    """10 distinct steps spread over the run (first and last included)."""
    assert steps >= 10, steps
    return sorted({1 + round(i * (steps - 1) / 9) for i in range(10)})


def _snapshot(folder: Path, only: set[str] | None = None) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and (only is None or p.name in only)
    }


def _kill_test(folder: Path, old_run, new_run, classify, only: set[str] | None = None) -> list[str]:
    """Return the outcome ("old"/"new") at each kill point; assert the set is never mixed.

    ``old_run`` / ``new_run``: ``unitune`` argument lists or callables; ``only``: the files of the set (default:
    every visible file of ``folder``).
    """
    assert _run_child(old_run, None) > 0
    old = _snapshot(folder, only)
    keep = folder.with_name(folder.name + "_old")
    shutil.copytree(folder, keep)
    steps = _run_child(new_run, None)
    new = _snapshot(folder, only)
    assert classify(old) == "old" and classify(new) == "new"
    outcomes = []
    for kill_at in _kill_points(steps):
        shutil.rmtree(folder)
        shutil.copytree(keep, folder)
        _run_child(new_run, kill_at)
        recover_output_sets(folder)
        assert not list(folder.glob(f"{STAGING_PREFIX}*")), kill_at
        state = _snapshot(folder, only)
        outcome = classify(state)
        assert outcome in ("old", "new"), (kill_at, outcome)
        if outcome == "old":
            assert state == old, kill_at  # untouched, byte for byte
        outcomes.append(outcome)
    logging.getLogger(__name__).info("steps %d, kill points %s: %s", steps, _kill_points(steps), outcomes)
    return outcomes


def _hmer_preds(path: Path, n: int) -> Path:
    rows = [{"gt": f"x ^ {{ {i} }}", "pred": "x ^ { 0 }", "img_id": str(i)} for i in range(n)]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_eval_hmer_killed_at_10_points_leaves_old_or_new_set(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old_in = _hmer_preds(tmp_path / "a" / "set_pred.json", 2)  # ExpRate 50.00
    new_in = _hmer_preds(tmp_path / "b" / "set_pred.json", 3)  # ExpRate 33.33

    def classify(files: dict[str, bytes]) -> str:
        names = {"set_results.txt", "set_metrics.json", "set_samples.jsonl"}
        if set(files) != names:
            return f"incomplete: {sorted(files)}"
        sizes = {
            json.loads(files["set_metrics.json"])["N"],
            files["set_samples.jsonl"].count(b"\n"),
            _results_n(files),
        }
        return {frozenset({2}): "old", frozenset({3}): "new"}.get(frozenset(sizes), f"mixed {sizes}")

    outcomes = _kill_test(
        out,
        ["eval", "hmer", str(old_in), "--out-dir", str(out)],
        ["eval", "hmer", str(new_in), "--out-dir", str(out)],
        classify,
    )
    assert "old" in outcomes and "new" in outcomes  # the kill points span the publication


def _results_n(files: dict[str, bytes]) -> int:
    """N from upstream's results.txt: 1 of 3 correct is ExpRate 33.33, 1 of 2 is 50.00."""
    text = files["set_results.txt"].decode()
    return 3 if "33.33" in text else 2 if "50.00" in text else -1


def _sharegpt(folder: Path, labels: list[str]) -> Path:
    folder.mkdir(parents=True)
    records = []
    for i, label in enumerate(labels):
        Image.new("RGB", (16, 8), (255, 255, 255)).save(folder / f"h{i}.png")
        records.append(
            {
                "images": [f"h{i}.png"],
                "messages": [{"from": "human", "value": "<image>Read it."}, {"from": "gpt", "value": label}],
            }
        )
    path = folder / "in.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_data_hmer_killed_at_10_points_leaves_old_or_new_set(tmp_path):
    out_dir = tmp_path / "data"
    output = out_dir / "train_tree.json"
    old_in = _sharegpt(tmp_path / "a", ["x ^ { 2 }", "y", "x ^ 2"])  # the bare `^ 2` is rejected
    new_in = _sharegpt(tmp_path / "b", ["a", "b", "c"])

    def classify(files: dict[str, bytes]) -> str:
        if "train_tree.json" not in files:
            return "incomplete"
        n = len(json.loads(files["train_tree.json"]))
        rejected = "train_tree.rejected.jsonl" in files
        if (n, rejected) == (2, True):
            return "old"
        if (n, rejected) == (3, False):
            return "new"
        return f"mixed: {n} records, rejected file {rejected}"

    common = ["data", "hmer", "--task", "tree", "--no-progress"]
    outcomes = _kill_test(
        out_dir,
        [*common, str(old_in), str(output)],
        [*common, str(new_in), str(output)],
        classify,
    )
    assert "old" in outcomes and "new" in outcomes


def _fer_results(path: Path, answers: list[str]) -> Path:
    labels = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    rows = [
        {"image_path": f"/f{i}.png", "true_label": "sadness", "prompt": "p", "candidate_labels": labels,
         "model_response": f"<think>t</think><answer>{label}</answer>"}
        for i, label in enumerate(answers)
    ]  # fmt: skip
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_eval_fer_killed_at_10_points_leaves_old_or_new_set(tmp_path):
    """The old run plotted, the new one does not: its set removes the old plot, at once with the rest."""
    out = tmp_path / "out"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old_in = _fer_results(tmp_path / "a" / "rafdb_results.json", ["sadness", "anger"])
    new_in = _fer_results(tmp_path / "b" / "rafdb_results.json", ["sadness", "sadness", "fear"])

    def classify(files: dict[str, bytes]) -> str:
        if not {"rafdb_metrics.json", "rafdb_samples.jsonl"} <= set(files):
            return f"incomplete: {sorted(files)}"
        sizes = {
            json.loads(files["rafdb_metrics.json"])["counts"]["total"],
            files["rafdb_samples.jsonl"].count(b"\n"),
            2 if "rafdb_confusion.png" in files else 3,
        }
        return {frozenset({2}): "old", frozenset({3}): "new"}.get(frozenset(sizes), f"mixed {sizes}")

    outcomes = _kill_test(
        out,
        ["eval", "fer", str(old_in), "--plots", "--out-dir", str(out)],
        ["eval", "fer", str(new_in), "--out-dir", str(out)],
        classify,
    )
    assert "old" in outcomes and "new" in outcomes


def test_data_fer_sft_killed_at_10_points_leaves_old_or_new_set(tmp_path):
    out_dir = tmp_path / "data"
    output = out_dir / "fer.json"
    question = "Which expression? candidate labels: sad, happy."

    def cot(folder: Path, answers: list[str]) -> Path:
        folder.mkdir()
        Image.new("RGB", (8, 8)).save(folder / "f.png")
        rows = [{"image_path": "/f.png", "question": question, "response": f"<think>t</think><answer>{a}</answer>"}
                for a in answers]  # fmt: skip
        (folder / "cot.json").write_text(json.dumps(rows), encoding="utf-8")
        return folder

    old_dir = cot(tmp_path / "a", ["sad", "angry"])  # "angry" is not a candidate: rejected
    new_dir = cot(tmp_path / "b", ["sad", "happy", "sad"])

    def classify(files: dict[str, bytes]) -> str:
        if "fer.json" not in files:
            return "incomplete"
        n, rejected = len(json.loads(files["fer.json"])), "fer.rejected.jsonl" in files
        return {(1, True): "old", (3, False): "new"}.get(
            (n, rejected), f"mixed: {n} records, rejected {rejected}"
        )

    common = ["data", "fer-sft", "--no-progress", "--workers", "1", "--output", str(output)]
    outcomes = _kill_test(
        out_dir,
        [*common, str(old_dir / "cot.json"), "--image-root", str(old_dir)],
        [*common, str(new_dir / "cot.json"), "--image-root", str(new_dir)],
        classify,
    )
    assert "old" in outcomes and "new" in outcomes


class _Echo:
    """A stand-in inference backend: one fixed text per sample, no model."""

    chunk_size = 2

    def generate(self, requests, sampling):
        return [[f"x _ {{ {request.record.id} }}"] * sampling.n for request in requests]


def test_infer_killed_at_10_points_publishes_pred_and_missing_together(tmp_path, tiny_model_dir):
    """The old run could not read one image (an error row and a missing list); the new run can."""
    from transformers import AutoProcessor  # noqa: F401  (imported here, not in every forked child)

    from evaluators.inference.runner import InferenceSettings, run_inference

    data_dir = tmp_path / "in"
    data_dir.mkdir()
    records = []
    for i in range(3):
        Image.new("RGB", (64, 32), (255, 255 - 40 * i, 255)).save(data_dir / f"h{i}.png")
        records.append(
            {"images": [f"h{i}.png"], "messages": [{"from": "human", "value": "<image>Read it."}, {"from": "gpt", "value": "x"}]}
        )  # fmt: skip
    data = data_dir / "set.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    hidden = data_dir / "h2.png"
    kept = hidden.read_bytes()
    out = tmp_path / "out"
    settings = InferenceSettings(model=str(tiny_model_dir), progress=False)

    def run(image_readable: bool) -> Callable[[], int]:
        def infer() -> int:
            if image_readable:
                hidden.write_bytes(kept)
            else:
                hidden.unlink(missing_ok=True)
            run_inference([data], out, settings, backend_factory=lambda *a: _Echo())
            return 0

        return infer

    def classify(files: dict[str, bytes]) -> str:
        if "set_pred.json" not in files:
            return "incomplete"
        errors = sum(bool(row.get("error")) for row in json.loads(files["set_pred.json"]))
        listed = "set_missing.json" in files
        return {(1, True): "old", (0, False): "new"}.get(
            (errors, listed), f"mixed: {errors} errors, listed {listed}"
        )

    outcomes = _kill_test(out, run(False), run(True), classify, only={"set_pred.json", "set_missing.json"})
    assert "old" in outcomes and "new" in outcomes


def _tree(folder: Path) -> dict[str, bytes]:
    """Every visible file below ``folder`` by relative path (the set spans ``recipes/``)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def test_data_hmer_folds_killed_at_10_points_leaves_old_or_new_folds(tmp_path):
    """Old run: 3 folds; new run: 2 folds of another seed. The data, recipes and folds.json change together,
    and the third fold of the old run goes with the new set."""
    corpus = _sharegpt(tmp_path / "in", [f"x ^ {{ {i} }}" for i in range(6)])
    out = tmp_path / "folds"
    common = ["data", "hmer-folds", str(corpus), "--out-dir", str(out), "--no-register", "--base-recipe", ""]
    old_run, new_run = [*common, "--k", "3"], [*common, "--k", "2", "--seed", "1"]

    def names(k: int) -> set[str]:
        per_fold = (
            "local_crohme_train_fold{}_train.json",
            "local_crohme_train_fold{}_heldout.json",
            "recipes/local_crohme_train_fold{}.yaml",
        )
        return {"folds.json"} | {name.format(i) for i in range(k) for name in per_fold}

    def classify(files: dict[str, bytes]) -> str:
        if "folds.json" not in files:
            return "incomplete"
        manifest = json.loads(files["folds.json"])
        k, seed = manifest["k"], manifest["seed"]
        heldout = {
            f"local_crohme_train_fold{f['fold']}_heldout.json": f["n_heldout"] for f in manifest["folds"]
        }
        consistent = set(files) == names(k) and all(
            len(json.loads(files[name])) == n for name, n in heldout.items()
        )
        if consistent and (k, seed) == (3, 0):
            return "old"
        if consistent and (k, seed) == (2, 1):
            return "new"
        return f"mixed: k {k}, seed {seed}, files {sorted(files)}"

    assert _run_child(old_run, None) > 0
    old = _tree(out)
    keep = tmp_path / "kept"
    shutil.copytree(out, keep)
    steps = _run_child(new_run, None)
    assert classify(old) == "old" and classify(_tree(out)) == "new"
    outcomes = []
    for kill_at in _kill_points(steps):
        shutil.rmtree(out)
        shutil.copytree(keep, out)
        _run_child(new_run, kill_at)
        recover_output_sets(out)
        assert not list(out.glob(f"{STAGING_PREFIX}*")), kill_at
        outcome = classify(_tree(out))
        assert outcome in ("old", "new"), (kill_at, outcome)
        if outcome == "old":
            assert _tree(out) == old, kill_at
        outcomes.append(outcome)
    assert "old" in outcomes and "new" in outcomes


def test_data_fer_rlvr_killed_at_10_points_leaves_old_or_new_dataset(tmp_path):
    """Old run: train (3 rows) + test (--eval); new run: train only (2 rows). The splits and the card are one set."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trl_grpo.rlvr_data import grpo_features, write_synthetic_rlvr

    grpo_features()  # imports datasets here, once, not in every forked child
    raw = write_synthetic_rlvr(tmp_path / "raw", task="fer", n=3)
    rows = json.loads(raw.read_text())
    fewer = raw.with_name("two.json")
    fewer.write_text(json.dumps(rows[:2]))
    out = tmp_path / "grpo"
    common = ["data", "fer-rlvr", "--image-root", str(raw.parent), "--out-dir", str(out), "--no-progress"]
    old_run, new_run = [*common, str(raw), "--eval", str(raw)], [*common, str(fewer)]
    train, test = "data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"

    def classify(files: dict[str, bytes]) -> str:
        if train not in files or "README.md" not in files:
            return f"incomplete: {sorted(files)}"
        n = pq.read_metadata(pa.BufferReader(files[train])).num_rows
        card = files["README.md"].decode()
        if n == 3 and test in files and "Splits: test, train." in card:
            return "old"
        if n == 2 and test not in files and "Splits: train." in card:
            return "new"
        return f"mixed: train {n} rows, test {test in files}"

    assert _run_child(old_run, None) > 0
    old = _tree(out)
    keep = tmp_path / "kept"
    shutil.copytree(out, keep)
    steps = _run_child(new_run, None)
    assert classify(old) == "old" and classify(_tree(out)) == "new"
    outcomes = []
    for kill_at in _kill_points(steps):
        shutil.rmtree(out)
        shutil.copytree(keep, out)
        _run_child(new_run, kill_at)
        recover_output_sets(out)
        assert not list(out.glob(f"{STAGING_PREFIX}*")), kill_at
        outcome = classify(_tree(out))
        assert outcome in ("old", "new"), (kill_at, outcome)
        if outcome == "old":
            assert _tree(out) == old, kill_at
        outcomes.append(outcome)
    assert "old" in outcomes and "new" in outcomes
