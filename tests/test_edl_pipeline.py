"""``unitune edl run|plan``: folds -> LLaMA-Factory fold models -> sampled errors -> registered EDL sets.

The slow tests share one uninterrupted run (k = 2, one QLoRA step per fold, merged with ``llamafactory-cli
export``, 2 samples per held-out image) and compare every other run with its bytes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evaluators.cli import main as unitune
from evaluators.errors import UserError

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAIN = {
    "bf16": False,
    "max_steps": 1,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "image_max_pixels": 12544,
    "image_min_pixels": 3136,
    "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
    "logging_steps": 1,
    "save_steps": 100,
    "cutoff_len": 512,
    "warmup_ratio": 0,
    "plot_loss": False,
}
#: Files whose bytes must not depend on how the run was interrupted or sharded.
FINAL = [
    "fold0/predictions/predictions.jsonl",
    "fold1/predictions/predictions.jsonl",
    "edl/edl_demo_error_find.json",
    "edl/edl_demo_error_fix.json",
    "edl/summary.json",
]


def _config(base: Path, model: Path | str, **changes) -> Path:
    config = {
        "input": str(base / "hmer" / "hmer_demo_train.json"),
        "name": "edl_demo",
        "out_dir": str(base / "run"),
        "k": 2,
        "model_name_or_path": str(model),
        "recipe": str(REPO / "recipes" / "unimumer_qlora.yaml"),
        "export_recipe": str(REPO / "recipes" / "unimumer_merge_lora.yaml"),
        "train": TRAIN,
        "sampling": {"n": 2, "temperature": 1.0, "max_new_tokens": 16},
        "infer_args": ["--backend", "hf", "--batch-size", "1"],
        "dataset_dir": str(base / "lf"),
        **changes,
    }
    path = base / "edl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _snapshot(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in FINAL}


def _restore(edl_run: dict, *remove: str) -> Path:
    """Put the uninterrupted run back in place, minus the folders in ``remove``."""
    run = edl_run["run"]
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(edl_run["golden"], run)
    for name in remove:
        shutil.rmtree(run / name)
    return run


@pytest.fixture(scope="module")
def edl_run(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("edl")
    assert unitune(["demo-data", "hmer", "--n", "10", "--out-dir", str(base / "hmer")]) == 0
    config = _config(base, tiny_model_dir)
    assert unitune(["edl", "run", str(config)]) == 0
    run = base / "run"
    shutil.copytree(run, base / "golden")
    return {"base": base, "config": config, "run": run, "golden": base / "golden", "bytes": _snapshot(run)}


def test_config_errors_name_the_key(tmp_path):
    from llamafactory_ext.hmer.edl_config import load_config

    path = tmp_path / "edl.yaml"
    path.write_text("input: a.json\nmodel_name_or_path: m\nrecipe: r.yaml\nshard: 2\n")
    with pytest.raises(UserError, match="unknown key 'shard'"):
        load_config(path)
    path.write_text(
        "input: a.json\nmodel_name_or_path: m\nrecipe: r.yaml\nsampling: {n: 4, temperature: 0}\n"
    )
    with pytest.raises(UserError, match="needs `sampling.temperature` > 0"):
        load_config(path)


def test_readme_commands_on_the_example_config(capsys, monkeypatch):
    """`unitune edl plan recipes/unimumer_edl.yaml` prints; `run` stops at once on the absent corpus."""
    monkeypatch.chdir(REPO)
    assert unitune(["edl", "plan", "recipes/unimumer_edl.yaml"]) == 0
    plan = capsys.readouterr().out
    assert "k=3 folds" in plan and "llamafactory-cli train" in plan and "-n 4 --temperature 1.0" in plan
    assert not (REPO / "runs" / "edl" / "local_crohme_train").exists()  # plan writes nothing by default
    assert unitune(["edl", "run", "recipes/unimumer_edl.yaml"]) == 2
    assert not (REPO / "runs" / "edl" / "local_crohme_train").exists()


def test_plan_prints_every_step_command(tmp_path, capsys):
    (tmp_path / "train.json").write_text("[]")
    config = _config(tmp_path, "Qwen/Qwen2.5-VL-3B-Instruct", shards=3, input=str(tmp_path / "train.json"))
    assert unitune(["edl", "plan", str(config), "--write-recipes"]) == 0
    plan = capsys.readouterr().out
    run = tmp_path / "run"
    for fold in (0, 1):
        assert f"llamafactory-cli train {run}/recipes/fold{fold}_train.yaml" in plan
        assert f"llamafactory-cli export {run}/recipes/fold{fold}_export.yaml" in plan
        for shard in range(3):
            assert f"--only sample --fold {fold} --shard {shard}\n" in plan
            assert f"--out-dir {run}/fold{fold}/samples/shard{shard}of3 -n 2 --temperature 1.0" in plan
            assert f"--shard {shard}/3 --backend hf" in plan
    recipe = yaml.safe_load((run / "recipes" / "fold1_train.yaml").read_text())
    assert recipe["dataset"] == "edl_demo_fold1_train" and recipe["output_dir"] == str(
        run / "fold1" / "train"
    )
    assert recipe["max_steps"] == 1 and recipe["quantization_bit"] == 4  # config over recipe
    export = yaml.safe_load((run / "recipes" / "fold1_export.yaml").read_text())
    assert export["adapter_name_or_path"] == str(run / "fold1" / "train")
    assert export["export_dir"] == str(run / "fold1" / "merged")


@pytest.mark.slow
def test_edl_sets_are_registered_valid_and_train(edl_run, tmp_path):
    base, run = edl_run["base"], edl_run["run"]
    summary = json.loads(edl_run["bytes"]["edl/summary.json"])
    assert [row["heldout_images"] for row in summary["folds"]] == [5, 5]
    assert [row["predictions"] for row in summary["folds"]] == [10, 10]
    for row in summary["folds"]:
        assert row["error_find_rows"] == row["error_fix_rows"]
        wrong = row["predictions"] - row["correct_dropped"] - row["duplicates_dropped"] - row["rejected"]
        assert row["error_find_rows"] == wrong
    info = json.loads((base / "lf" / "dataset_info.json").read_text())
    assert set(info) == {"edl_demo_error_find", "edl_demo_error_fix"}
    for task in ("error_find", "error_fix"):
        assert info[f"edl_demo_{task}"]["file_name"] == f"data/edl_demo_{task}.json"
        copy = (base / "lf" / "data" / f"edl_demo_{task}.json").read_bytes()
        assert copy == edl_run["bytes"][f"edl/edl_demo_{task}.json"]
    for name in info:
        assert unitune(["data", "validate", name, "--dataset-dir", str(base / "lf")]) == 0
    rows = json.loads(edl_run["bytes"]["edl/edl_demo_error_fix.json"])
    assert rows and all(Path(r["images"][0]).is_absolute() for r in rows)

    out = tmp_path / "sft"
    result = subprocess.run(
        [
            str(BIN / "llamafactory-cli"),
            "train",
            "recipes/unimumer_qlora.yaml",
            f"model_name_or_path={run / 'fold0' / 'merged'}",
            f"dataset_dir={base / 'lf'}",
            "dataset=edl_demo_error_find,edl_demo_error_fix",
            f"output_dir={out}",
            *[f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in TRAIN.items()],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    logs = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in logs if "loss" in row]
    assert len(losses) == 1 and math.isfinite(losses[0])


def _start(config: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "evaluators.cli", "edl", "run", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


@pytest.mark.slow
def test_kill_inside_sampling_resumes_to_the_same_bytes(edl_run, capsys):
    run = _restore(edl_run, "fold0/samples", "fold0/predictions", "fold1/samples", "fold1/predictions", "edl")
    jsonl = run / "fold0" / "samples" / "shard0of1" / "edl_demo_fold0_heldout_infer.jsonl"
    _kill_when(_start(edl_run["config"]), lambda: _lines(jsonl) >= 2)
    done = _lines(jsonl)
    assert 2 <= done < 10, f"the kill was not inside sampling ({done} of 10 samples written)"
    capsys.readouterr()
    assert unitune(["edl", "run", str(edl_run["config"])]) == 0
    out = capsys.readouterr().out
    assert "[edl] sample fold 0 shard 0: resumed" in out and "[edl] train fold 0: reused" in out
    assert _snapshot(run) == edl_run["bytes"]


@pytest.mark.slow
def test_kill_between_steps_resumes_to_the_same_bytes(edl_run, capsys):
    # The kill comes right after fold 0's merge is marked done. The step after it that takes time is fold 1's
    # sampling (a model load in a subprocess), so the kill lands before fold 1's samples are marked done. The
    # steps after the last sampling (merge, build) take milliseconds, too short a window to aim a kill at.
    run = _restore(edl_run, "fold0/predictions", "fold1/samples", "fold1/predictions", "edl")
    marker = run / "fold0" / "predictions" / ".edl_step.json"
    fold1_samples = run / "fold1" / "samples" / "shard0of1" / ".edl_step.json"
    _kill_when(_start(edl_run["config"]), lambda: marker.is_file() and '"done"' in marker.read_text())
    assert not (fold1_samples.is_file() and '"done"' in fold1_samples.read_text())
    assert not (run / "edl").exists()
    capsys.readouterr()
    assert unitune(["edl", "run", str(edl_run["config"])]) == 0
    out = capsys.readouterr().out
    assert "[edl] merge fold 0: reused" in out and "[edl] sample fold 1 shard 0: " in out
    assert "[edl] build: done" in out
    assert _snapshot(run) == edl_run["bytes"]


@pytest.mark.slow
def test_two_shards_merge_to_one_unsharded_run(edl_run, capsys):
    run = _restore(edl_run)
    config = _config(edl_run["base"], _config_model(edl_run), shards=2)
    capsys.readouterr()
    assert unitune(["edl", "run", str(config)]) == 0
    out = capsys.readouterr().out
    # a changed setting redoes sampling and what follows, not the fold models
    assert "[edl] export fold 1: reused" in out and "[edl] sample fold 1 shard 1: done" in out
    shard = run / "fold0" / "samples" / "shard1of2" / "edl_demo_fold0_heldout_infer.jsonl"
    assert 0 < _lines(shard) < 10
    assert _snapshot(run) == edl_run["bytes"]
    _config(edl_run["base"], _config_model(edl_run))  # back to the shared config


def _config_model(edl_run: dict) -> str:
    return yaml.safe_load(edl_run["config"].read_text())["model_name_or_path"]
