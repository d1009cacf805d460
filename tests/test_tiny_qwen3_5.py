"""The tiny offline Qwen3.5: real classes, both layer kinds, deterministic bytes, vLLM-compatible head size,
LF-identical prompts."""

from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image

from evaluators.errors import UserError
from evaluators.inference.model_dir import VLLM_CPU_HEAD_SIZES
from evaluators.model_family import get_family
from llamafactory_ext.tiny_qwen3_5 import build_tiny_qwen3_5


def _digest(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def test_small_deterministic_and_named(tiny_qwen3_5_dir, tmp_path):
    total = sum(p.stat().st_size for p in tiny_qwen3_5_dir.iterdir())
    assert total < 1024 * 1024, f"tiny Qwen3.5 is {total} bytes"
    again = build_tiny_qwen3_5(tmp_path / "again")
    assert _digest(again) == _digest(tiny_qwen3_5_dir)
    config = json.loads((tiny_qwen3_5_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3_5"
    assert config["architectures"] == [get_family("qwen3_5").hf_class]
    assert "auto_map" not in config


def test_both_layer_kinds_and_head_sizes_fit_vllm_cpu_attention(tiny_qwen3_5_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_qwen3_5_dir)
    text, vision = config.text_config, config.vision_config
    assert text.layer_types == ["linear_attention", "full_attention"]
    assert text.head_dim in VLLM_CPU_HEAD_SIZES
    assert vision.hidden_size // vision.num_heads in VLLM_CPU_HEAD_SIZES
    assert text.linear_key_head_dim == text.linear_value_head_dim == 128  # what vLLM's CPU GDN kernel takes
    rope = text.rope_parameters
    assert sum(rope["mrope_section"]) == int(text.head_dim * rope["partial_rotary_factor"]) // 2
    assert vision.patch_size == get_family("qwen3_5").patch_size


def test_chat_template_matches_llamafactory_qwen3_5_nothink(tiny_qwen3_5_dir):
    """The processor's prompt is what LLaMA-Factory's template trains on, token for token (no system turn)."""
    from llamafactory.data.template import TEMPLATES
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen3_5_dir)
    assert type(processor).__name__ == "Qwen3VLProcessor"
    template = TEMPLATES[get_family("qwen3_5").template]
    assert not template.default_system
    prompt_ids, _ = template.encode_oneturn(
        processor.tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]
    )
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert processor.tokenizer(rendered, add_special_tokens=False)["input_ids"] == prompt_ids


def test_generates_from_image_and_text(tiny_qwen3_5_dir):
    import torch
    from transformers import AutoProcessor

    from evaluators.model_family import load_hf_model

    processor = AutoProcessor.from_pretrained(tiny_qwen3_5_dir)
    model = load_hf_model(tiny_qwen3_5_dir)
    assert type(model).__name__ == "Qwen3_5ForConditionalGeneration"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "LaTeX?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (120, 80), "white")], return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert image_tokens == int(inputs["image_grid_thw"].prod()) // 4  # 2x2 merge of 16 px patches
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_cli_family_option(tmp_path):
    from evaluators.cli import main

    assert main(["tiny-model", str(tmp_path / "m"), "--family", "qwen3_5"]) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "qwen3_5"


def test_refused_on_a_transformers_without_qwen3_5(tmp_path, monkeypatch):
    """On transformers < 5.2 (no ``qwen3_5``) the builder stops with one line naming the version it needs."""
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "4.57.6" if name == "transformers" else real(name)
    )
    with pytest.raises(UserError, match=r"needs transformers >= 5\.2\.0, but 4\.57\.6 is installed"):
        build_tiny_qwen3_5(tmp_path / "m")
    assert not (tmp_path / "m").exists()
