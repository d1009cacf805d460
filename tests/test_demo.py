"""``unitune demo``: the whole pipeline on the tiny model, and the "not built yet" path."""

from __future__ import annotations

import json

import pytest
import yaml

from evaluators.cli import main as unitune
from llamafactory_ext import demo


def test_cpu_training_settings_have_one_source(tmp_path, monkeypatch):
    """The EDL config's ``train:`` section and the SFT step's llamafactory-cli overrides read one table."""
    settings = {"cutoff_len": 77, "bf16": False, "warmup_ratio": 0, "logging_steps": 1}
    monkeypatch.setattr(demo, "CPU_TRAIN_SETTINGS", settings)
    monkeypatch.setattr(demo, "_llamafactory_cli", lambda: "llamafactory-cli")
    commands = {}

    class Stop(Exception):
        pass

    def capture(kind):
        def run(self, argv, log):
            commands[kind] = argv
            raise Stop

        return run

    monkeypatch.setattr(demo._Demo, "unitune", capture("unitune"))
    monkeypatch.setattr(demo._Demo, "shell", capture("llamafactory-cli"))
    steps = demo._Demo(tmp_path, n_hmer=2, n_fer=2, train_steps=1, max_new_tokens=4)
    with pytest.raises(Stop):
        steps.edl()
    with pytest.raises(Stop):
        steps.train_sft()
    assert commands["unitune"][:2] == ["edl", "run"]
    train = yaml.safe_load((tmp_path / "edl.yaml").read_text())["train"]
    cli = dict(arg.split("=", 1) for arg in commands["llamafactory-cli"][3:])
    for key, value in settings.items():
        assert train[key] == value, key
        assert yaml.safe_load(cli[key]) == value, key  # spelt so LLaMA-Factory reads the same value back
    assert "image_max_pixels" not in train and "image_max_pixels" not in cli  # no second copy of the table


@pytest.mark.slow
def test_demo_skips_missing_pieces_and_exits_0(tmp_path, monkeypatch, capsys):
    """With LLaMA-Factory, GRPO and the evaluators absent, the demo runs what it can and says the rest is missing."""
    absent = {"trl_grpo.train", "evaluators.fer.cli"}
    monkeypatch.setattr(demo, "_module_available", lambda name: name not in absent)
    monkeypatch.setattr(demo, "_llamafactory_cli", lambda: None)
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--n-hmer", "3", "--n-fer", "2", "--max-new-tokens", "4"]
    assert unitune(argv) == 0
    report = capsys.readouterr().out
    status = {s["name"]: s["status"] for s in json.loads((out / "demo_summary.json").read_text())["steps"]}
    assert status["unitune demo-data hmer"] == "done"
    assert status["unitune data hmer (3 tasks)"] == "done"
    assert status[demo._EDL_STEP] == "not built yet"  # fold models need llamafactory-cli
    assert status["llamafactory-cli train (QLoRA)"] == "not built yet"
    assert status["unitune infer (HMER test, merged model)"] == "skipped"
    assert status["trl_grpo.train (GRPO, 2 steps)"] == "not built yet"
    assert status["unitune eval-all (demo suite)"] == "not built yet"
    assert "| llamafactory-cli train (QLoRA) | not built yet |" in report
    assert "tiny RANDOM Qwen2.5-VL" in report and "near zero" in report

    # Resuming: finished steps are reused, not redone.
    assert unitune(argv) == 0
    status = {s["name"]: s["status"] for s in json.loads((out / "demo_summary.json").read_text())["steps"]}
    assert status["unitune demo-data hmer"] == status["unitune tiny-model"] == "reused"


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    """Every step with the real commands: data, EDL pass, QLoRA SFT, merge, infer, eval, GRPO, eval-all."""
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--n-hmer",
        "4",
        "--n-fer",
        "4",
        "--train-steps",
        "1",
        "--max-new-tokens",
        "4",
    ]
    assert unitune(argv) == 0, (
        (out / "demo_summary.md").read_text() if (out / "demo_summary.md").exists() else ""
    )
    report = capsys.readouterr().out
    steps = json.loads((out / "demo_summary.json").read_text())["steps"]
    assert [s["status"] for s in steps] == ["done"] * len(steps), steps
    assert (out / "merged" / "model.safetensors").is_file()
    edl = json.loads((out / "edl" / "edl" / "summary.json").read_text())
    assert [fold["predictions"] for fold in edl["folds"]] == [4, 4]  # 2 held-out formulas x 2 samples
    info = json.loads((out / "lf_data" / "dataset_info.json").read_text())
    assert {"demo_hmer_error_find", "demo_hmer_error_fix"} <= set(info)
    assert (out / "grpo_fer" / "model.safetensors").is_file()
    assert "| Demo HMER test | hmer | 4 | ExpRate |" in report
    assert "| Demo FER test | fer | 7 | Acc (strict) |" in report
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert [d["status"] for d in summary["datasets"]] == ["ok", "ok"]
