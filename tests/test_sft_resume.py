"""SFT recipes resume: a re-run into an existing output_dir continues from its last checkpoint, optimizer included.

Real ``llamafactory-cli train recipes/unimumer_crohme.yaml`` on the tiny model (full fine-tune, CPU, float32):
run 3 steps saving every step, keep a copy of checkpoint-2, then remove everything after checkpoint-1 (what a run
killed after its first checkpoint leaves) and re-run the same command. The second run must say it resumes, end at
step 3, and its new checkpoint-2 must hold Adam's step count 2 and the uninterrupted run's moments and weights (up to
CPU float noise): that only happens when the optimizer state of checkpoint-1 was loaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluators.cli import main as unitune

REPO = Path(__file__).resolve().parents[1]


def _train(argv: list[str]) -> str:
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    return log


@pytest.mark.slow
def test_sft_recipe_resumes_step_and_optimizer(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    demo = tmp_path / "demo"
    assert unitune(["demo-data", "hmer", "--n", "6", "--n-test", "1", "--out-dir", str(demo)]) == 0
    records = json.loads((demo / "hmer_demo_train.json").read_text(encoding="utf-8"))
    for record in records:
        record["images"] = [str(demo / image) for image in record["images"]]
    dataset_dir = tmp_path / "di"
    dataset_dir.mkdir()
    (dataset_dir / "train.json").write_text(json.dumps(records), encoding="utf-8")
    entry = {
        "file_name": "train.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
    (dataset_dir / "dataset_info.json").write_text(json.dumps({"demo": entry}), encoding="utf-8")
    out = tmp_path / "out"
    overrides = {
        "model_name_or_path": tiny_model_dir,
        "dataset_dir": dataset_dir,
        "dataset": "demo",
        "output_dir": out,
        "deepspeed": "null",
        "bf16": "false",
        "gradient_checkpointing": "false",
        "max_steps": 3,
        "save_steps": 1,
        "logging_steps": 1,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "warmup_ratio": 0,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "image_max_pixels": 12544,
        "cutoff_len": 256,
        "plot_loss": "false",
    }
    cli = Path(sys.executable).parent / "llamafactory-cli"
    argv = [str(cli), "train", str(REPO / "recipes" / "unimumer_crohme.yaml")]
    argv += [f"{k}={v}" for k, v in overrides.items()]

    first = _train(argv)
    assert "Resuming training" not in first
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
        "checkpoint-3",
    ]
    assert (out / "checkpoint-1" / "optimizer.pt").is_file()  # the recipe saves optimizer state (resumable)
    reference = tmp_path / "uninterrupted-checkpoint-2"
    shutil.copytree(out / "checkpoint-2", reference)
    for path in out.iterdir():  # keep only checkpoint-1: a run killed after its first checkpoint
        if path.name != "checkpoint-1":
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    second = _train(argv)
    assert f"Resuming training from {out / 'checkpoint-1'}" in second, second[-4000:]
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 3
    assert [log["step"] for log in state["log_history"] if "loss" in log] == [
        1,
        2,
        3,
    ]  # step 1 kept from before

    resumed = torch.load(out / "checkpoint-2" / "optimizer.pt", map_location="cpu", weights_only=True)
    original = torch.load(reference / "optimizer.pt", map_location="cpu", weights_only=True)
    assert resumed["state"].keys() == original["state"].keys() and resumed["state"]
    # Adam's step count is 2 after one resumed step only when checkpoint-1's optimizer state was loaded (a fresh
    # optimizer would say 1), and the moments match the uninterrupted run's up to CPU float noise; a fresh
    # optimizer's first moment would lack the beta1 * m1 term, a relative difference of tens of per cent.
    for moment in ("exp_avg", "exp_avg_sq"):
        diff = sum(
            float((resumed["state"][k][moment] - v[moment]).norm() ** 2) for k, v in original["state"].items()
        )
        norm = sum(float(v[moment].norm() ** 2) for v in original["state"].values())
        assert (diff / norm) ** 0.5 < 0.02, f"{moment}: relative difference {(diff / norm) ** 0.5:.4f}"
    assert (
        {int(v["step"]) for v in resumed["state"].values()}
        == {int(v["step"]) for v in original["state"].values()}
        == {2}
    )
    weights, expected = (
        load_file(out / "checkpoint-2" / "model.safetensors"),
        load_file(reference / "model.safetensors"),
    )
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-2, atol=1e-4)
