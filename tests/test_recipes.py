"""Recipes and dataset_info.json are checked against LLaMA-Factory's own argument classes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LF_RECIPES = ["unimumer_qlora.yaml", "unimumer_full.yaml", "unimumer_merge_lora.yaml", "unifer_sft.yaml"]
DATASET_KEYS = {
    "file_name",
    "formatting",
    "columns",
    "tags",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
}
SHAREGPT_TAGS = {
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
}


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


def _recipe(name: str) -> dict:
    path = REPO / "recipes" / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("name", LF_RECIPES)
def test_recipe_keys_are_llamafactory_arguments(name):
    recipe = _recipe(name)
    unknown = set(recipe) - _lf_fields()
    assert not unknown, f"{name}: keys LLaMA-Factory does not know: {sorted(unknown)}"
    assert recipe.get("trust_remote_code", False) is False


@pytest.mark.parametrize("name", LF_RECIPES)
def test_recipe_layout_follows_llamafactory_examples(name):
    text = (REPO / "recipes" / name).read_text() if (REPO / "recipes" / name).exists() else pytest.skip()
    assert "### model" in text and "### method" in text


def test_qlora_recipe_is_the_seed_setup():
    r = _recipe("unimumer_qlora.yaml")
    assert r["template"] == "qwen2_vl" and r["dataset_dir"] == "dataset_info"
    assert (r["quantization_bit"], r["quantization_type"], r["double_quantization"]) == (4, "nf4", True)
    assert (r["lora_rank"], r["lora_alpha"], r["per_device_train_batch_size"]) == (64, 16, 2)
    assert r["model_name_or_path"] == "Qwen/Qwen2.5-VL-3B-Instruct"


def test_full_recipe_matches_paper():
    r = _recipe("unimumer_full.yaml")
    assert r["learning_rate"] == 1e-5 and r["num_train_epochs"] == 1.0 and r["lr_scheduler_type"] == "cosine"
    assert r["warmup_ratio"] == 0.1 and r["cutoff_len"] == 2048 and r["image_max_pixels"] == 262144
    assert r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] * 8 == 512
    assert (REPO / r["deepspeed"]).is_file()
    assert json.loads((REPO / r["deepspeed"]).read_text())["zero_optimization"]["stage"] == 2


def test_deepspeed_configs_parse():
    stages = {
        p.name: json.loads(p.read_text())["zero_optimization"]["stage"]
        for p in (REPO / "recipes/deepspeed").glob("*.json")
    }
    assert stages.get("ds_z2.json") == 2
    if "ds_z3.json" in stages:
        assert stages["ds_z3.json"] == 3


def test_dataset_info_entries_follow_mllm_demo():
    info = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text())
    assert info, "dataset_info.json is empty"
    for name, entry in info.items():
        assert set(entry) <= DATASET_KEYS, (
            f"{name}: unknown keys {set(entry) - DATASET_KEYS} (LLaMA-Factory ignores them)"
        )
        assert entry["formatting"] == "sharegpt"
        assert entry["columns"] == {"messages": "messages", "images": "images"}
        assert set(entry["tags"]) <= SHAREGPT_TAGS
        assert entry["tags"]["user_tag"] == "human" and entry["tags"]["assistant_tag"] == "gpt"


def test_recipe_datasets_are_registered():
    info = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text())
    for name in ["unimumer_qlora.yaml", "unimumer_full.yaml", "unifer_sft.yaml"]:
        for dataset in _recipe(name)["dataset"].split(","):
            assert dataset.strip() in info, f"{name} names {dataset!r}, missing from dataset_info.json"
