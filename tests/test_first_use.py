"""First use without traps: file modes, --register safety, one CLI spelling, subcommand usage, plain help."""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat

import pytest

from evaluators.cli import COMMANDS, build_parser, main
from evaluators.errors import UserError
from evaluators.io_utils import atomic_write_json, atomic_write_text
from llamafactory_ext.dataset_registry import register_dataset


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o007, 0o660), (0o077, 0o600)])
def test_atomic_writes_keep_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        json_file = atomic_write_json(tmp_path / "m.json", {"a": 1})
        text_file = atomic_write_text(tmp_path / "sub" / "r.md", "x")
    finally:
        os.umask(old)
    assert _mode(json_file) == expected and _mode(text_file) == expected


def test_builders_keep_the_umask(tmp_path):
    (tmp_path / "caption.txt").write_text("a x\nb y\n")
    old = os.umask(0o022)
    try:
        assert main(["data", "hmer", str(tmp_path / "caption.txt"), str(tmp_path / "o.json"), "--task",
                     "vanilla", "--no-check-images", "--no-progress", "--register", "d",
                     "--dataset-dir", str(tmp_path / "di")]) == 0  # fmt: skip
    finally:
        os.umask(old)
    assert _mode(tmp_path / "o.json") == 0o644
    assert _mode(tmp_path / "di" / "dataset_info.json") == 0o644


def test_register_refuses_to_change_an_entry_without_force(tmp_path, caplog):
    register_dataset("crohme_train", tmp_path / "a.json", tmp_path)
    before = (tmp_path / "dataset_info.json").read_text()
    register_dataset("crohme_train", tmp_path / "a.json", tmp_path)  # the same entry again: a re-run
    with pytest.raises(UserError, match=r"already registered in .*dataset_info\.json.*--force"):
        register_dataset("crohme_train", tmp_path / "b.json", tmp_path)
    assert (tmp_path / "dataset_info.json").read_text() == before
    with caplog.at_level(logging.INFO):
        register_dataset("crohme_train", tmp_path / "b.json", tmp_path, force=True)
    assert json.loads((tmp_path / "dataset_info.json").read_text())["crohme_train"]["file_name"] == "b.json"
    assert f"replaced 'crohme_train' in {(tmp_path / 'dataset_info.json').resolve()}" in caplog.text


def test_register_says_where_and_warns_when_it_creates_a_file(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: ./dataset_info/dataset_info.json does not exist
    (tmp_path / "caption.txt").write_text("a x\n")
    argv = [
        "data",
        "hmer",
        "caption.txt",
        "o.json",
        "--task",
        "vanilla",
        "--no-check-images",
        "--no-progress",
    ]
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--register", "mine"]) == 0
    created = (tmp_path / "dataset_info" / "dataset_info.json").resolve()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"created a new {created}" in w for w in warnings)
    assert f"registered 'mine' in {created}" in caplog.text
    caplog.clear()
    assert main([*argv[:3], "other.json", *argv[4:], "--register", "mine"]) == 2  # refused before building
    assert "--force" in caplog.text and not (tmp_path / "other.json").exists()
    assert main([*argv[:3], "other.json", *argv[4:], "--register", "mine", "--force"]) == 0


def _leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    leaves = {}
    for name, target in COMMANDS.items():
        subs = {name: target} if isinstance(target, str) else {f"{name} {k}": v for k, v in target.items()}
        for label in subs:
            argv = label.split()
            parser = build_parser(argv)
            for word in argv:
                action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
                parser = action.choices[word]
            leaves[label] = parser
    return leaves


def test_one_spelling_for_the_output_folder_and_old_one_hidden():
    leaves = _leaf_parsers()
    with_out_dir = set()
    for label, parser in leaves.items():
        for action in parser._actions:
            if "--out" in action.option_strings:  # the old spelling survives only as an alias
                assert action.option_strings[0] in ("--out-dir", "--output"), label
            if "--out-dir" in action.option_strings:
                with_out_dir.add(label)
        assert "--out " not in parser.format_help().replace("--out-dir", ""), label
    assert {"infer", "eval-all", "eval hmer", "eval fer", "demo", "demo-data hmer", "demo-data fer",
            "data hmer-folds", "data fer-rlvr"} <= with_out_dir  # fmt: skip


def test_help_texts_have_no_rest_markup():
    for label, parser in _leaf_parsers().items():
        text = parser.format_help()
        assert "``" not in text and ":func:" not in text and ":class:" not in text, label
        assert "`" not in text, (label, [line for line in text.splitlines() if "`" in line][:3])


def test_a_bad_flag_prints_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "hmer", "in.json", "out.json", "--task", "vanilla", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: unitune data hmer" in err and "unrecognized arguments: --bogus" in err
    with pytest.raises(SystemExit):
        main(["eval", "hmer", "x.json", "--out-dir", "o", "--nope"])
    assert "usage: unitune eval hmer" in capsys.readouterr().err


def test_streamed_jsonl_keeps_the_umask(tmp_path):
    from evaluators.io_utils import write_jsonl_atomic

    old = os.umask(0o022)
    try:
        path = write_jsonl_atomic(tmp_path / "s.jsonl", ({"i": i} for i in range(3)))
    finally:
        os.umask(old)
    assert _mode(path) == 0o644


def _provenance_ok(doc: dict, model: str | None) -> None:
    import datetime

    assert doc["unitune_version"] and doc["model"] == model
    assert datetime.datetime.fromisoformat(doc["timestamp"]).tzinfo is not None
    assert doc["git_revision"] is None or len(doc["git_revision"].removesuffix("+dirty")) == 40
    assert isinstance(doc["config"], dict) and doc["higher_is_better"]


def test_hmer_metrics_json_is_in_fractions_with_provenance(tmp_path, capsys):
    preds = [{"gt": "x + 1", "pred": "x + 1", "img_id": "a"}, {"gt": "y", "pred": "z", "img_id": "b"}]
    (tmp_path / "set_pred.json").write_text(json.dumps(preds))
    (tmp_path / "set_infer.meta.json").write_text(json.dumps({"model": "/models/merged"}))
    assert main(["eval", "hmer", str(tmp_path / "set_pred.json"), "--out-dir", str(tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "set_metrics.json").read_text())
    assert doc["metrics"]["exprate"] == 0.5 and doc["metrics"]["mean_edit_score"] == 0.5
    assert all(0 <= v <= 1 for v in doc["metrics"].values())
    assert all(0 <= g["exprate"] <= 1 for g in doc["analysis"]["by_length"].values())
    _provenance_ok(doc, "/models/merged")
    assert "| set | 2 | 50.00 |" in capsys.readouterr().out  # percent only in the printed table
    assert "50.00%" in (tmp_path / "o" / "set_results.txt").read_text()  # upstream's percent text, unchanged


def test_fer_metrics_json_has_provenance_and_samples_keep_the_response(tmp_path):
    labels = ["angry", "happy", "sad"]
    question = f"Which expression? Please select your answer from the following candidate labels: {', '.join(labels)}."
    recs = [
        {"true_label": "happy", "prompt": question, "model_response": "<answer>happy</answer>"},
        {"true_label": "sad", "prompt": question, "model_response": "no idea"},
    ]
    for rec in recs:
        rec["candidate_labels"] = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
        rec["true_label"] = {"happy": "happiness", "sad": "sadness"}[rec["true_label"]]
    (tmp_path / "rafdb_results.json").write_text(json.dumps(recs))
    argv = ["eval", "fer", str(tmp_path / "rafdb_results.json"), "--out-dir", str(tmp_path / "o"), "--plots"]
    assert main([*argv, "--model", "m7b"]) == 0
    doc = json.loads((tmp_path / "o" / "rafdb_metrics.json").read_text())
    _provenance_ok(doc, "m7b")
    assert doc["higher_is_better"]["accuracy"] is True and doc["config"]["protocol"] == "strict"
    assert doc["overall"]["accuracy"] == 0.5
    samples = [json.loads(line) for line in (tmp_path / "o" / "rafdb_samples.jsonl").read_text().splitlines()]
    assert [s["model_response"] for s in samples] == ["<answer>happy</answer>", "no idea"]


def test_confusion_plot_has_an_invalid_column_so_rows_sum_to_support(tmp_path, monkeypatch):
    from evaluators.fer import plots
    from evaluators.fer.evaluate import load_results_records, score_file

    labels = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    recs = [
        {"true_label": t, "candidate_labels": labels, "model_response": r}
        for t, r in [
            ("sadness", "<answer>sadness</answer>"),
            ("sadness", "??"),
            ("anger", "<answer>x</answer>"),
        ]
    ]
    drawn = {}
    real = plots.plot_confusion_matrix

    def spy(matrix, rows, path, title="", columns=None):
        drawn.update(matrix=matrix, rows=rows, columns=columns)
        return real(matrix, rows, path, title, columns)

    monkeypatch.setattr(plots, "plot_confusion_matrix", spy)
    (tmp_path / "rafdb_results.json").write_text(json.dumps(recs))
    argv = ["eval", "fer", str(tmp_path / "rafdb_results.json"), "--out-dir", str(tmp_path / "o"), "--plots"]
    assert main(argv) == 0
    assert drawn["columns"] == [*labels, "invalid"]
    support = {row["emotion"]: row["support"] for row in score_file(
        load_results_records(recs, "m"), "strict").metrics["per_class"]}  # fmt: skip
    assert [sum(row) for row in drawn["matrix"]] == [support[label] for label in labels]
    assert drawn["matrix"][labels.index("sadness")][-1] == 1
    assert (tmp_path / "o" / "rafdb_confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_all_report_is_markdown():
    from evaluators.suite import markdown_report

    text = "== rafdb · protocol strict ==\naccuracy 0.5000\n\n| file | acc |\n|---|---|\n| r | 0.5 |\n"
    report = markdown_report("RAF-DB: unitune eval fer", text)
    assert report.startswith("# RAF-DB: unitune eval fer\n\n```text\n== rafdb")
    assert "```\n\n| file | acc |\n|---|---|\n| r | 0.5 |\n" in report


def test_grpo_recipe_on_this_machine_names_the_overrides_in_one_line():
    """`make grpo-fer` on a machine without a GPU: one line naming each override, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "trl_grpo.train", "--config", "recipes/unifer_grpo.yaml"],
        cwd=repo, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the recipe may run as written")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1
    assert "--bf16 false" in errors[0] and "--deepspeed None" in errors[0] and "--smoke" in errors[0]


def test_preflight_names_missing_engines():
    from trl_grpo.preflight import effective_fields, machine_problems

    recipe = {
        "deepspeed": "ds.json",
        "use_vllm": True,
        "bf16": True,
        "attn_implementation": "flash_attention_2",
    }
    fields = effective_fields(recipe, ["--bf16", "false"])
    problems = machine_problems(fields, installed=lambda m: False, cuda=lambda: True, bf16_gpu=lambda: True)
    assert [p.rsplit(": pass ", 1)[1] for p in problems] == [
        "--deepspeed None",
        "--use_vllm false",
        "--attn_implementation sdpa",
    ]
    assert machine_problems(fields, installed=lambda m: True, cuda=lambda: True, bf16_gpu=lambda: True) == []
    smoke_like = effective_fields(recipe, ["--deepspeed", "None", "--use_vllm", "false", "--bf16", "false"])
    assert machine_problems({**smoke_like, "attn_implementation": "sdpa"}, installed=lambda m: False) == []


def test_unitune_recipes_lists_and_copies_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert "unifer_grpo.yaml" in listing and "deepspeed/ds_z3.json" in listing and "dataset_info/" in listing
    assert main(["recipes", "--copy", "mine"]) == 0
    assert (tmp_path / "mine" / "recipes" / "unimumer_qlora.yaml").is_file()
    assert (tmp_path / "mine" / "dataset_info" / "dataset_info.json").is_file()
    assert main(["recipes", "--copy", "mine"]) == 2  # refuses to overwrite
    assert main(["recipes", "--copy", "mine", "--force"]) == 0


def test_grpo_config_resolves_shipped_recipes_from_any_directory(tmp_path, monkeypatch):
    from trl_grpo.train import parse_args

    monkeypatch.chdir(tmp_path)
    script_args, training_args, _, _ = parse_args(["--config", "recipes/unifer_grpo.yaml", "--smoke"])
    assert (
        script_args.tiny_model is True and training_args.use_cpu is True and training_args.deepspeed is None
    )


class _Bar:
    """Records what a progress bar was asked to show."""

    def __init__(self, total, desc, unit, enabled=True):
        self.total, self.unit, self.updates = total, unit, []

    def update(self, n):
        self.updates.append(n)


def test_infer_progress_counts_samples_and_moves_per_batch(tmp_path, tiny_model_dir, monkeypatch):
    from contextlib import contextmanager

    from PIL import Image

    from evaluators.inference import runner
    from evaluators.inference.hf_backend import HFBackend
    from evaluators.inference.runner import InferenceSettings, run_inference

    bars = []

    @contextmanager
    def spy(total, desc, unit, enabled=True):
        bars.append(_Bar(total, desc, unit, enabled))
        yield bars[-1]

    monkeypatch.setattr(runner, "progress_bar", spy)
    (tmp_path / "img").mkdir()
    records = []
    for i in range(4):
        Image.new("RGB", (32, 32), "white").save(tmp_path / "img" / f"h{i}.png")
        prompt = "<image>I have an image of a handwritten mathematical expression. Please write out the expression."
        records.append({"images": [f"img/h{i}.png"], "messages": [{"from": "human", "value": prompt},
                                                                   {"from": "gpt", "value": "x"}]})  # fmt: skip
    data = tmp_path / "set.json"
    data.write_text(json.dumps(records))

    class _Batched:
        chunk_size = 4

        def generate(self, requests, sampling, on_batch=None):
            for request in requests:  # batches of one
                on_batch([request])
            return [[f"out{k}" for k in range(sampling.n)] for _ in requests]

    settings = InferenceSettings(model=str(tiny_model_dir), sampling={"n": 3, "temperature": 1.0})
    run_inference([data], tmp_path / "out", settings, backend_factory=lambda *a: _Batched())
    bar = bars[-1]
    assert (bar.total, bar.unit, bar.updates) == (12, "sample", [3, 3, 3, 3])  # samples, per batch
    jsonl = tmp_path / "out" / "set_infer.jsonl"
    lines = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join(lines[:7]) + "\n")  # resume: 5 samples left (2 of record 2, 3 of record 3)
    run_inference([data], tmp_path / "out", settings, backend_factory=lambda *a: _Batched())
    assert (bars[-1].total, sum(bars[-1].updates)) == (5, 5)
    assert runner._reports_batches(HFBackend.__new__(HFBackend))


def test_progress_bar_redraws_while_waiting(monkeypatch):
    import time

    from evaluators import progress

    monkeypatch.setattr(progress, "REFRESH_SECONDS", 0.05)
    with progress.progress_bar(10, "wait", "sample") as bar:
        calls = []
        real = bar.refresh
        bar.refresh = lambda *a, **k: (calls.append(1), real(*a, **k))
        time.sleep(0.4)
    assert len(calls) >= 3  # elapsed, rate and ETA move although no item finished
    assert bar.total == 10 and "remaining" in progress._FORMAT and "rate_fmt" in progress._FORMAT


def test_builder_progress_bars_have_a_total(tmp_path, monkeypatch):
    from contextlib import contextmanager

    from llamafactory_ext import fer_data
    from llamafactory_ext.hmer import build

    seen = {}
    real_tqdm = build.tqdm

    def tqdm_spy(iterable, **kwargs):
        seen[kwargs["desc"]] = kwargs.get("total")
        return real_tqdm(iterable, **{**kwargs, "disable": True})

    monkeypatch.setattr(build, "tqdm", tqdm_spy)
    (tmp_path / "caption.txt").write_text("a x\nb y\n\nc z\n")
    argv = ["data", "hmer", str(tmp_path / "caption.txt"), str(tmp_path / "o.json"), "--task", "vanilla"]
    assert main([*argv, "--no-check-images"]) == 0
    assert seen == {"vanilla": 3}

    bars = []

    @contextmanager
    def spy(total, desc, unit, enabled=True):
        bars.append(_Bar(total, desc, unit, enabled))
        yield bars[-1]

    monkeypatch.setattr(fer_data, "progress_bar", spy)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "f.png")
    q = "Pick one of the candidate labels: sad, happy. Answer in tags."
    recs = [{"image_path": "/f.png", "question": q, "response": "<think>t</think><answer>sad</answer>"}] * 3
    (tmp_path / "cot.json").write_text(json.dumps(recs))
    argv = ["data", "fer-sft", str(tmp_path / "cot.json"), "--image-root", str(tmp_path)]
    assert main([*argv, "--output", str(tmp_path / "fer.json")]) == 0
    assert (bars[0].total, bars[0].unit, sum(bars[0].updates)) == (3, "image", 3)


def test_fer_rlvr_progress_bars_have_a_total(tmp_path, monkeypatch):
    """``data fer-rlvr`` shows its two long loops (check + convert the images, write the parquet rows)."""
    from contextlib import contextmanager

    from trl_grpo import rlvr_data

    bars = {}

    @contextmanager
    def spy(total, desc, unit, enabled=True):
        bars[desc] = _Bar(total, desc, unit, enabled)
        bars[desc].enabled = enabled
        yield bars[desc]

    monkeypatch.setattr(rlvr_data, "progress_bar", spy)
    raw = rlvr_data.write_synthetic_rlvr(tmp_path / "raw", task="fer", n=3)
    argv = [
        "data",
        "fer-rlvr",
        str(raw),
        "--image-root",
        str(tmp_path / "raw"),
        "--out-dir",
        str(tmp_path / "g"),
    ]
    assert main(argv) == 0
    shown = {desc: (bar.total, bar.unit, sum(bar.updates), bar.enabled) for desc, bar in bars.items()}
    assert shown == {"train rows": (3, "row", 3, True), "train parquet": (3, "row", 3, True)}
    assert main([*argv, "--no-progress"]) == 0
    assert not any(bar.enabled for bar in bars.values())
