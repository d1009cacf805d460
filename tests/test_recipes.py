"""Recipes and dataset_info.json are checked against LLaMA-Factory's own argument classes."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LF_RECIPES = [
    "unimumer_paper.yaml",
    "unimumer_qlora.yaml",
    "unimumer_crohme.yaml",
    "unimumer_merge_lora.yaml",
    "unifer_sft.yaml",
]
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
        pytest.fail(f"recipes/{name} is missing")
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


def test_deepspeed_configs_parse():
    stages = {
        p.name: json.loads(p.read_text())["zero_optimization"]["stage"]
        for p in (REPO / "recipes/deepspeed").glob("*.json")
    }
    assert stages.get("ds_z2.json") == 2
    if "ds_z3.json" in stages:
        assert stages["ds_z3.json"] == 3


def _keys_llamafactory_reads() -> set[str]:
    """The dataset_info keys LLaMA-Factory 0.9.5's parser reads, taken from its source."""
    import inspect

    from llamafactory.data import parser

    source = inspect.getsource(parser)
    keys = set(re.findall(r'"(\w+)" in dataset_info\[name\]', source))
    keys |= set(re.findall(r'self\.set_attr\("(\w+)"', source))
    keys |= {
        "file_name",
        "columns",
        "tags",
    }  # read as dataset_info[name]["file_name"], attr["columns"], attr["tags"]
    return keys


def test_registry_keys_are_the_ones_llamafactory_reads():
    from llamafactory_ext.dataset_registry import ENTRY_KEYS

    lf_keys = _keys_llamafactory_reads()
    assert {"hf_hub_url", "subset", "split", "file_name"} <= lf_keys
    assert ENTRY_KEYS <= lf_keys, sorted(ENTRY_KEYS - lf_keys)


RELEASED = [
    "crohme2023",
    "crohme2023_can",
    "crohme2023_error_find",
    "crohme2023_error_fix",
    "crohme2023_tree",
    "crohme_train",
    "crohme_train_can",
    "crohme_train_error_find",
    "crohme_train_error_fix",
    "crohme_train_tree",
    "hme100k_error_find",
    "hme100k_error_fix",
    "hme100k_train",
    "hme100k_train_can",
    "hme100k_train_tree",
    "im2latex_v2_error_find",
    "im2latex_v2_error_fix",
    "im2latex_v2_train",
    "im2latex_v2_train_can",
    "im2latex_v2_train_tree",
    "mathwriting_symbols",
    "mathwriting_train",
    "mathwriting_train_can",
    "mathwriting_train_error_find",
    "mathwriting_train_error_fix",
    "mathwriting_train_tree",
]
SHAREGPT_FROM_VALUE = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
}


def test_dataset_info_has_every_released_config():
    info = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text())
    for name in RELEASED:
        assert info[name] == {
            "hf_hub_url": "phxember/Uni-MuMER-Data",
            "subset": name,
            "split": "train",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "images": "image"},
            "tags": SHAREGPT_FROM_VALUE,
        }, name


def test_dataset_info_entries_are_read_fully_by_llamafactory():
    from llamafactory_ext.dataset_registry import check_entry

    info = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text())
    lf_keys = _keys_llamafactory_reads()
    for name, entry in info.items():
        check_entry(name, entry)
        assert set(entry) <= lf_keys, f"{name}: keys LLaMA-Factory ignores: {set(entry) - lf_keys}"
        assert entry["formatting"] == "sharegpt" and entry["tags"] == SHAREGPT_FROM_VALUE
        if (
            "file_name" in entry
        ):  # data built here: LLaMA-Factory's mllm_demo layout, names distinct from hub ones
            assert entry["columns"] == {"messages": "messages", "images": "images"}
            assert name not in RELEASED


def test_recipe_datasets_are_registered():
    info = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text())
    for name in ["unimumer_paper.yaml", "unimumer_qlora.yaml", "unimumer_crohme.yaml", "unifer_sft.yaml"]:
        for dataset in _recipe(name)["dataset"].split(","):
            assert dataset.strip() in info, f"{name} names {dataset!r}, missing from dataset_info.json"


# -- upstream's hyperparameters ----------------------------------------------------------------------------------
#: Uni-MuMER's train/Uni-MuMER-train.yaml as the authors released it (NhatPot/Uni-MuMER-project, commit 4f30df3,
#: BaseLine/train/Uni-MuMER-train.yaml; `deepspeed: examples/deepspeed/ds_z2_config.json` is ZeRO-2).
UNIMUMER_UPSTREAM = {
    "model_name_or_path": "Qwen/Qwen2.5-VL-3B-Instruct",
    "image_max_pixels": 262144,
    "video_max_pixels": 16384,
    "trust_remote_code": True,
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "full",
    "freeze_vision_tower": False,
    "freeze_multi_modal_projector": False,
    "freeze_language_model": False,
    "deepspeed_stage": 2,
    "dataset": RELEASED,
    "template": "qwen2_vl",
    "cutoff_len": 2048,
    "max_samples": 20000000,
    "overwrite_cache": True,
    "preprocessing_num_workers": 128,
    "dataloader_num_workers": 128,
    "logging_steps": 1,
    "save_steps": 1000,
    "plot_loss": True,
    "overwrite_output_dir": True,
    "report_to": "tensorboard",
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 32,
    "learning_rate": 1.0e-5,
    "num_train_epochs": 1.0,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "bf16": True,
    "ddp_timeout": 180000000,
    "save_only_model": True,
    "resume_from_checkpoint": None,
}
#: UniFER stage 1 (train_unifer/src/scripts/run_sft_fer.sh + sft_fer.py, as cited in recipes/unifer_sft.yaml).
UNIFER_SFT_UPSTREAM = {
    "model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct",
    "finetuning_type": "full",
    "freeze_vision_tower": False,
    "deepspeed_stage": 2,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 4,
    "learning_rate": 2.0e-5,
    "num_train_epochs": 2.0,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.0,
    "max_grad_norm": 5.0,
    "bf16": True,
    "gradient_checkpointing": True,
    "save_only_model": True,
}
_ABSENT = "<absent>"
#: Each recipe, the upstream table it follows, and the keys where it differs on purpose (explained in its header).
EXPECTED_DIFFERENCES = {
    # none of these changes the training: remote code, logging backend, and resuming (overwrite_output_dir dropped)
    "unimumer_paper.yaml": (UNIMUMER_UPSTREAM, {"trust_remote_code", "report_to", "overwrite_output_dir"}),
    "unimumer_crohme.yaml": (
        UNIMUMER_UPSTREAM,
        {
            "trust_remote_code",
            "report_to",
            "overwrite_output_dir",
            "dataset",  # CROHME only
            "max_samples",
            "preprocessing_num_workers",
            "dataloader_num_workers",
            "logging_steps",
            "save_steps",
            "save_only_model",  # false: resumable
        },
    ),
    "unimumer_qlora.yaml": (
        UNIMUMER_UPSTREAM,
        {
            "trust_remote_code",
            "report_to",
            "overwrite_output_dir",
            "deepspeed_stage",  # one GPU, no DeepSpeed
            "finetuning_type",  # lora on a 4-bit base
            "freeze_vision_tower",
            "freeze_multi_modal_projector",
            "freeze_language_model",
            "video_max_pixels",
            "max_samples",
            "preprocessing_num_workers",
            "dataloader_num_workers",
            "logging_steps",
            "save_steps",
            "save_only_model",
            "per_device_train_batch_size",  # 2 x 8: fits a 24 GB GPU
            "gradient_accumulation_steps",
            "learning_rate",  # 1e-4: a LoRA learning rate
        },
    ),
    "unifer_sft.yaml": (UNIFER_SFT_UPSTREAM, set()),
}


def _comparable(recipe: dict) -> dict:
    out = dict(recipe)
    if "dataset" in out:
        out["dataset"] = [d.strip() for d in str(out["dataset"]).split(",")]
    deepspeed = out.pop("deepspeed", None)
    if deepspeed:
        out["deepspeed_stage"] = json.loads((REPO / deepspeed).read_text())["zero_optimization"]["stage"]
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED_DIFFERENCES))
def test_recipe_hyperparameters_match_upstream(name):
    upstream, expected = EXPECTED_DIFFERENCES[name]
    recipe = _comparable(_recipe(name))
    differ = {key for key, value in upstream.items() if recipe.get(key, _ABSENT) != value}
    assert differ == expected, {
        "unexpected differences": {
            key: (recipe.get(key, _ABSENT), upstream[key]) for key in differ - expected
        },
        "expected differences now equal to upstream": sorted(expected - differ),
    }


def test_paper_recipe_effective_batch_is_512_on_4_gpus():
    recipe = _recipe("unimumer_paper.yaml")
    assert recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"] * 4 == 512


def test_sft_recipes_resume():
    """No recipe overwrites its output_dir: LLaMA-Factory then resumes from the last checkpoint."""
    for name in LF_RECIPES:
        assert "overwrite_output_dir" not in _recipe(name), name
