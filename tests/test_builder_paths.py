"""Every data builder writes image paths the trainer finds from anywhere; `validate` resolves like LLaMA-Factory.

Each builder runs from the user's data folder with paths relative to it; training then runs from another
working directory, as on a cluster, and must find every image through the registered ``dataset_dir``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from PIL import Image, ImageDraw

from evaluators.cli import main
from llamafactory_ext.hmer.build import make_record
from llamafactory_ext.media import media_path_for, resolve_media
from llamafactory_ext.validate import validate_dataset

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FER_QUESTION = (
    "Which expression is most prominent in this image? Please select your answer from the following candidate "
    "labels: angry, happy, sad."
)
# One real optimisation step on CPU; everything else is the recipe's or LLaMA-Factory's default.
LF_CPU = {
    "bf16": False,
    "max_steps": 1,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "image_max_pixels": 12544,
    "image_min_pixels": 3136,
    "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
    "cutoff_len": 256,
    "save_strategy": "steps",  # "no" would read as false on the command line
    "save_steps": 1000,
    "report_to": "none",
    "overwrite_cache": True,
    "plot_loss": False,
    "trust_remote_code": False,
}


def _user_data(root: Path, n: int = 4) -> Path:
    """A user's folder: images/*.png, train.json (sharegpt, relative paths), cot.json and rlvr.json (UniFER)."""
    (root / "images").mkdir(parents=True)
    hmer, cot, rlvr = [], [], []
    for i in range(n):
        image = Image.new("RGB", (64, 32), "white")
        ImageDraw.Draw(image).text((2, 10), f"x^{i}", fill="black")
        image.save(root / "images" / f"hmer_train_{i:04d}.png")
        hmer.append(make_record("vanilla", f"images/hmer_train_{i:04d}.png", f"x ^ {{ {i} }}"))
        label = ["angry", "happy", "sad"][i % 3]
        Image.new("RGB", (48, 48), ["red", "yellow", "blue"][i % 3]).save(root / "images" / f"face_{i}.png")
        cot.append(
            {
                "image_path": f"/images/face_{i}.png",
                "question": FER_QUESTION,
                "response": f"<think>looks {label}</think><answer>{label}</answer>",
            }
        )
        rlvr.append(
            {
                "problem": FER_QUESTION,
                "solution": f"<answer>{label}</answer>",
                "image_path": f"images/face_{i}.png",
            }
        )
    (root / "train.json").write_text(json.dumps(hmer))
    (root / "cot.json").write_text(json.dumps(cot))
    (root / "rlvr.json").write_text(json.dumps(rlvr))
    return root


def _llamafactory_train(config: Path, cwd: Path, *overrides: str) -> None:
    result = subprocess.run(
        [str(BIN / "llamafactory-cli"), "train", str(config), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"llamafactory-cli train failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    assert "train_loss" in result.stdout + result.stderr


def test_resolve_media_is_llamafactorys_rule(tmp_path, monkeypatch):
    """Compare with LLaMA-Factory's own converter on every kind of path."""
    from llamafactory.data.converter import DatasetConverter

    media, cwd = tmp_path / "media", tmp_path / "cwd"
    (media / "sub").mkdir(parents=True)
    cwd.mkdir()
    for path in (media / "in_media.png", media / "sub" / "deep.png", cwd / "in_cwd.png", cwd / "both.png"):
        path.write_bytes(b"")
    (media / "both.png").write_bytes(b"")
    monkeypatch.chdir(cwd)
    converter = DatasetConverter(
        dataset_attr=SimpleNamespace(load_from="file"), data_args=SimpleNamespace(media_dir=str(media))
    )
    paths = ["in_media.png", "sub/deep.png", "in_cwd.png", "both.png", "missing.png", str(cwd / "in_cwd.png")]
    expected = converter._find_medias(list(paths))
    assert [str(resolve_media(p, media)) for p in paths] == expected
    assert [os.path.isfile(p) for p in expected] == [True, True, True, True, False, True]


def test_media_path_for_is_found_from_any_working_directory(tmp_path, monkeypatch):
    dataset_dir = tmp_path / "ds"
    inside, outside = dataset_dir / "img" / "a.png", tmp_path / "elsewhere" / "b.png"
    for path in (inside, outside):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    written = [media_path_for(inside, dataset_dir), media_path_for(outside, dataset_dir)]
    assert written == ["img/a.png", str(outside)]
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert all(resolve_media(p, dataset_dir).is_file() for p in written)


def test_validate_resolves_a_file_like_llamafactory(tmp_path, monkeypatch):
    """Images relative to the data file's folder are *not* what LLaMA-Factory opens: validate says so."""
    data = _user_data(tmp_path / "raw")
    monkeypatch.chdir(tmp_path)
    count, problems = validate_dataset(data / "train.json", dataset_dir=tmp_path / "dataset_info")
    assert count == 4 and {p.kind for p in problems} == {"missing-image"}
    assert validate_dataset(data / "train.json", dataset_dir=data)[1] == []  # media_dir = the data folder


def test_data_hmer_paths_pass_validate_by_name(tmp_path, monkeypatch):
    data = _user_data(tmp_path / "raw")
    dataset_dir = tmp_path / "dataset_info"
    monkeypatch.chdir(data)
    argv = ["data", "hmer", "train.json", str(dataset_dir / "h.json"), "--task", "vanilla", "--no-progress"]
    assert main([*argv, "--register", "h", "--dataset-dir", str(dataset_dir)]) == 0
    monkeypatch.chdir(tmp_path)
    assert validate_dataset("h", dataset_dir=dataset_dir) == (4, [])
    assert main(["data", "validate", "h", "--dataset-dir", str(dataset_dir)]) == 0


@pytest.mark.slow
def test_data_hmer_and_fer_sft_outputs_train_with_llamafactory(tiny_model_dir, tmp_path, monkeypatch):
    data = _user_data(tmp_path / "raw")
    dataset_dir = tmp_path / "dataset_info"
    monkeypatch.chdir(data)  # the user builds in their data folder, with relative paths
    hmer = [
        "data",
        "hmer",
        "train.json",
        str(dataset_dir / "hmer.json"),
        "--task",
        "vanilla",
        "--no-progress",
    ]
    assert main([*hmer, "--register", "hmer_x", "--dataset-dir", str(dataset_dir)]) == 0
    fer = ["data", "fer-sft", "cot.json", "--image-root", ".", "--output", str(dataset_dir / "fer.json")]
    assert main([*fer, "--register", "fer_x", "--dataset-dir", str(dataset_dir)]) == 0

    run = tmp_path / "run"  # training runs elsewhere
    run.mkdir()
    recipe = {
        "model_name_or_path": str(tiny_model_dir),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "dataset": "hmer_x,fer_x",
        "dataset_dir": str(dataset_dir),
        "template": "qwen2_vl",
        "output_dir": str(tmp_path / "out"),
        **LF_CPU,
    }
    config = run / "sft.yaml"
    config.write_text(yaml.safe_dump(recipe))
    _llamafactory_train(config, run)


@pytest.mark.slow
def test_hmer_folds_recipe_trains_with_llamafactory(tiny_model_dir, tmp_path, monkeypatch):
    data = _user_data(tmp_path / "raw")
    monkeypatch.chdir(data)
    argv = ["data", "hmer-folds", "train.json", "--k", "2", "--out-dir", str(tmp_path / "folds")]
    assert main([*argv, "--dataset-dir", str(tmp_path / "dataset_info")]) == 0
    recipe = tmp_path / "folds" / "recipes" / "local_crohme_train_fold0.yaml"
    run = tmp_path / "run"
    run.mkdir()
    overrides = {"model_name_or_path": str(tiny_model_dir), "output_dir": str(tmp_path / "out"), **LF_CPU}
    _llamafactory_train(recipe, run, *(f"{k}={v}" for k, v in overrides.items()))


@pytest.mark.slow
def test_fer_rlvr_output_trains_one_grpo_step_from_another_directory(tmp_path, monkeypatch):
    """Also the --smoke run from any directory: recipes/unifer_grpo.yaml is the shipped recipe."""
    data = _user_data(tmp_path / "raw")
    monkeypatch.chdir(data)
    assert (
        main(["data", "fer-rlvr", "rlvr.json", "--image-root", ".", "--out-dir", str(tmp_path / "grpo")]) == 0
    )
    run = tmp_path / "run"
    run.mkdir()
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "trl_grpo.train", "--config", "recipes/unifer_grpo.yaml", "--smoke",
         "--synthetic_data", "false", "--dataset_name", str(tmp_path / "grpo"), "--max_steps", "1",
         "--output_dir", str(out)],
        cwd=run, capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 1
