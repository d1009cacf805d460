"""The tiny offline Qwen2.5-VL: real classes, Qwen's tokens and template, deterministic, small."""

from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image

from llamafactory_ext.tiny_model import QWEN_SPECIAL_TOKENS, build_tiny_model


def _digest(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def test_files_small_and_deterministic(tiny_model_dir, tmp_path):
    total = sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    assert total < 1024 * 1024, f"tiny model is {total} bytes"
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= {
        p.name for p in tiny_model_dir.iterdir()
    }
    again = build_tiny_model(tmp_path / "again")
    assert _digest(again) == _digest(tiny_model_dir)


def test_config_is_qwen2_5_vl_with_consistent_mrope(tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.model_type == "qwen2_5_vl"
    text = config.text_config if hasattr(config, "text_config") else config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_scaling["mrope_section"]) == head_dim // 2
    assert config.vision_config.depth == 2 and text.num_hidden_layers == 2


def test_config_is_what_vllm_reads_as_a_generation_model(tiny_model_dir):
    """vLLM takes the model class from the top-level ``architectures`` and needs a CPU-supported head size."""
    from evaluators.inference.model_dir import VLLM_CPU_HEAD_SIZES

    raw = json.loads((tiny_model_dir / "config.json").read_text())
    assert raw["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    text = raw["text_config"]
    assert text["hidden_size"] // text["num_attention_heads"] in VLLM_CPU_HEAD_SIZES


def test_tokenizer_has_qwen_special_tokens_and_template(tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    tok = processor.tokenizer
    assert len(QWEN_SPECIAL_TOKENS) == 14
    ids = [tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS]
    assert len(set(ids)) == 14 and tok.unk_token_id not in ids
    for special in QWEN_SPECIAL_TOKENS:  # each is one token, never split into bytes
        assert tok(special, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(special)]
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        add_generation_prompt=True,
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
    )
    latex = "\\frac { a } { b }"
    assert tok.decode(tok(latex)["input_ids"]) == latex


def test_generates_from_image_and_text(tiny_model_dir):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "LaTeX?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (120, 80), "white")], return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert image_tokens == int(inputs["image_grid_thw"].prod()) // 4  # 2x2 merge
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_cli_writes_model(tmp_path):
    from evaluators.cli import main

    assert main(["tiny-model", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "qwen2_5_vl"


@pytest.mark.parametrize("name", ["config.json", "generation_config.json"])
def test_no_remote_code(tiny_model_dir, name):
    assert "auto_map" not in json.loads((tiny_model_dir / name).read_text())
