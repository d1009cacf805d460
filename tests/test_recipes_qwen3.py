"""The Qwen3-VL and Qwen3.5 recipes against upstream Uni-MuMER's train/Uni-MuMER-Qwen3-VL-{2B,4B}.yaml and
train/Uni-MuMER-Qwen3.5-{2B,4B}.yaml, key by key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from evaluators.model_family import get_family

REPO = Path(__file__).resolve().parents[1]

# Upstream's train/Uni-MuMER-Qwen3-VL-2B.yaml and -4B.yaml (BFlameSwift/Uni-MuMER, commit 9feeb29); the two differ
# only in the model and output_dir. `deepspeed: examples/deepspeed/ds_z3_config.json` is ZeRO-3. The Qwen3.5 files
# (same commit) hold the same values except `template: qwen3_5_nothink` (UPSTREAM_TEMPLATE).
UPSTREAM = {
    "image_max_pixels": 262144,
    "video_max_pixels": 16384,
    "trust_remote_code": True,
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "full",
    "freeze_vision_tower": False,
    "freeze_multi_modal_projector": False,
    "freeze_language_model": False,
    "deepspeed_stage": 3,
    "dataset": ",".join(
        [
            *(f"crohme2023{t}" for t in ("", "_can", "_error_find", "_error_fix", "_tree")),
            *(f"crohme_train{t}" for t in ("", "_can", "_error_find", "_error_fix", "_tree")),
            *(
                "hme100k_error_find",
                "hme100k_error_fix",
                "hme100k_train",
                "hme100k_train_can",
                "hme100k_train_tree",
            ),
            *(
                "im2latex_v2_error_find",
                "im2latex_v2_error_fix",
                "im2latex_v2_train",
                "im2latex_v2_train_can",
            ),
            *("im2latex_v2_train_tree", "mathwriting_symbols", "mathwriting_train", "mathwriting_train_can"),
            *("mathwriting_train_error_find", "mathwriting_train_error_fix", "mathwriting_train_tree"),
        ]
    ),
    "cutoff_len": 2048,
    "max_samples": 20000000,
    "overwrite_cache": False,
    "preprocessing_num_workers": 64,
    "dataloader_num_workers": 16,
    "logging_steps": 1,
    "save_steps": 1000,
    "plot_loss": True,
    "overwrite_output_dir": True,
    "report_to": "tensorboard",
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 16,
    "learning_rate": 1.0e-5,
    "num_train_epochs": 1.0,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "bf16": True,
    "ddp_timeout": 180000000,
    "save_only_model": True,
    "resume_from_checkpoint": None,
}
UPSTREAM_TEMPLATE = {"qwen3_vl": "qwen3_vl_nothink", "qwen3_5": "qwen3_5_nothink"}
UPSTREAM_MODEL = {
    ("qwen3_vl", "2b"): "Qwen/Qwen3-VL-2B-Instruct",
    ("qwen3_vl", "4b"): "Qwen/Qwen3-VL-4B-Instruct",
    ("qwen3_5", "2b"): "Qwen/Qwen3.5-2B",
    ("qwen3_5", "4b"): "Qwen/Qwen3.5-4B",
}
#: Keys where ours differ on purpose (explained in the recipe header); none changes the training.
OURS = {"trust_remote_code": False, "report_to": "none", "overwrite_output_dir": "<absent>"}
RECIPES = {
    ("qwen3_vl", "2b"): "unimumer_qwen3vl_2b.yaml",
    ("qwen3_vl", "4b"): "unimumer_qwen3vl_4b.yaml",
    ("qwen3_5", "2b"): "unimumer_qwen35_2b.yaml",
    ("qwen3_5", "4b"): "unimumer_qwen35_4b.yaml",
}
EXPORTS = {"qwen3_vl": "unimumer_qwen3vl_export.yaml", "qwen3_5": "unimumer_qwen35_export.yaml"}


def _lf_fields() -> set[str]:
    from llamafactory.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    classes = [
        DataArguments,
        FinetuningArguments,
        GeneratingArguments,
        ModelArguments,
        Seq2SeqTrainingArguments,
    ]
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / "recipes" / name).read_text())


def _ours(recipe: dict) -> dict:
    """The recipe in the table's terms: the DeepSpeed file becomes its ZeRO stage, absent keys are marked."""
    out = {k: recipe.get(k, "<absent>") for k in UPSTREAM}
    out["deepspeed_stage"] = json.loads((REPO / recipe["deepspeed"]).read_text())["zero_optimization"][
        "stage"
    ]
    return out


@pytest.mark.parametrize(("family", "size"), sorted(RECIPES))
def test_hyperparameters_match_upstream(family, size):
    name = RECIPES[family, size]
    recipe = _load(name)
    ours = _ours(recipe)
    differ = {k: (ours[k], v) for k, v in UPSTREAM.items() if ours[k] != v and k not in OURS}
    assert not differ, f"{name} differs from upstream (ours, upstream): {differ}"
    assert {k: ours[k] for k in OURS} == OURS
    assert recipe["model_name_or_path"] == UPSTREAM_MODEL[family, size]
    assert recipe["template"] == UPSTREAM_TEMPLATE[family] == get_family(family).template
    assert recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"] * 8 == 512


@pytest.mark.parametrize(
    ("family", "name"), [*((f, n) for (f, _), n in sorted(RECIPES.items())), *sorted(EXPORTS.items())]
)
def test_keys_are_llamafactory_arguments_and_datasets_registered(family, name):
    recipe = _load(name)
    unknown = set(recipe) - _lf_fields()
    assert not unknown, f"{name}: keys LLaMA-Factory does not know: {sorted(unknown)}"
    assert recipe["trust_remote_code"] is False
    assert recipe["template"] == get_family(family).template
    info = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text())
    for dataset in recipe.get("dataset", "").split(","):
        assert not dataset or dataset.strip() in info, f"{name} names {dataset!r}, not in dataset_info.json"
