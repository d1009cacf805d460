"""Build a tiny random Qwen3-VL (model, tokenizer, processor) offline, for tests.

A real ``Qwen3VLForConditionalGeneration``: text hidden size 64, 2 layers, 2 query heads of size 32 (the
smallest head size vLLM's CPU attention accepts), 1 key/value head, interleaved M-RoPE; a 2-block vision tower
(hidden 32, one head of size 32) with 16 px patches, 2x2 merge and one DeepStack feature. The tokenizer is the same built-in byte-level BPE as
the tiny Qwen2.5-VL (Qwen's special tokens) with a Qwen3-VL-style chat template: no default system turn, the
same ``<|vision_start|><|image_pad|><|vision_end|>`` image parts. The same call writes the same bytes every time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluators.model_family import QWEN3_VL, ModelFamily
from llamafactory_ext.tiny_model import (
    DEFAULT_INITIALIZER_RANGE,
    build_tokenizer,
    qwen_vl_config_kwargs,
    save_tiny_checkpoint,
)

__all__ = [
    "QWEN3_VL_CHAT_TEMPLATE",
    "build_tiny_qwen3_vl",
    "qwen3_vl_config",
    "qwen3_vl_processor",
    "tiny_vision_config",
]

#: Qwen3-VL Instruct's chat format without tools: no default system turn, image/video parts as pad tokens.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_PATCH = QWEN3_VL.patch_size
_FACTOR = QWEN3_VL.patch_size * QWEN3_VL.merge_size  # 32 px per vision token side
_MIN_PIXELS = 2 * _FACTOR * 2 * _FACTOR  # 64 x 64
_MAX_PIXELS = 4 * _FACTOR * 4 * _FACTOR  # 128 x 128: at most 16 vision tokens per image


def qwen3_vl_config(tokenizer, text_config: dict, vision_config: dict, **kwargs):
    """A ``Qwen3VLConfig`` of the given sizes whose special-token ids point at ``tokenizer``'s Qwen tokens."""
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        **qwen_vl_config_kwargs(tokenizer, text_config, vision_config),
        architectures=[QWEN3_VL.hf_class],
        **kwargs,
    )


def _build_config(tokenizer, initializer_range: float = DEFAULT_INITIALIZER_RANGE):
    head_dim = 32
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": head_dim,
        "max_position_embeddings": 4096,
        "rope_theta": 5000000.0,
        # interleaved M-RoPE: (t, h, w) sections sum to head_dim / 2
        "rope_scaling": {"rope_type": "default", "mrope_section": [6, 5, 5], "mrope_interleaved": True},
        "tie_word_embeddings": True,
        "initializer_range": initializer_range,
    }
    assert sum(text_config["rope_scaling"]["mrope_section"]) == head_dim // 2
    vision_config = tiny_vision_config(QWEN3_VL, initializer_range, deepstack_visual_indexes=[1])
    return qwen3_vl_config(tokenizer, text_config, vision_config)


def tiny_vision_config(family: ModelFamily, initializer_range: float, **extra: Any) -> dict[str, Any]:
    """The tiny vision tower of Qwen3-VL and Qwen3.5 (the same encoder): two blocks of width 32, learned positions.

    Args:
        family (`ModelFamily`): gives the patch and merge sizes.
        initializer_range (`float`): std of the random weights.
        **extra: family-only keys (Qwen3-VL's ``deepstack_visual_indexes``).

    Example:

    >>> config = tiny_vision_config(QWEN3_VL, 0.02, deepstack_visual_indexes=[1])
    >>> config["patch_size"], config["spatial_merge_size"], config["deepstack_visual_indexes"]
    (16, 2, [1])
    """
    return {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 1,  # head size 32
        "out_hidden_size": 64,
        "patch_size": family.patch_size,
        "spatial_merge_size": family.merge_size,
        "temporal_patch_size": 2,
        "num_position_embeddings": 64,  # an 8 x 8 grid of learned positions, interpolated per image
        **extra,
        "initializer_range": initializer_range,
    }


def build_tiny_qwen3_vl(out_dir: str | Path, initializer_range: float = DEFAULT_INITIALIZER_RANGE) -> Path:
    """Write a tiny random Qwen3-VL checkpoint (weights, config, tokenizer, processor) to ``out_dir``.

    Args:
        out_dir (`str` or `Path`): folder to create or overwrite; under 1 MB is written.
        initializer_range (`float`): std of the random weights (``0.2``: greedy outputs depend on the input,
            see :data:`~llamafactory_ext.tiny_model.DEFAULT_INITIALIZER_RANGE`).

    Returns:
        `Path`: ``out_dir``, loadable with ``AutoProcessor`` and ``AutoModelForImageTextToText``.

    Example:

    >>> import tempfile
    >>> from transformers import AutoConfig
    >>> path = build_tiny_qwen3_vl(tempfile.mkdtemp())
    >>> config = AutoConfig.from_pretrained(path)
    >>> config.model_type, config.architectures, config.text_config.head_dim
    ('qwen3_vl', ['Qwen3VLForConditionalGeneration'], 32)
    """
    from transformers import Qwen3VLForConditionalGeneration

    tokenizer = build_tokenizer()
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    config = _build_config(tokenizer, initializer_range)
    return save_tiny_checkpoint(
        out_dir, Qwen3VLForConditionalGeneration, config, qwen3_vl_processor(tokenizer), QWEN3_VL.display
    )


def qwen3_vl_processor(tokenizer):
    """A ``Qwen3VLProcessor`` for 16 px patches merged 2x2 and images of 64x64 to 128x128 px (1 to 16 tokens).

    Qwen3.5 checkpoints use the same processor classes, so the tiny Qwen3.5 shares this one.
    """
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    half = [0.5, 0.5, 0.5]
    image_processor = Qwen2VLImageProcessor(
        min_pixels=_MIN_PIXELS,
        max_pixels=_MAX_PIXELS,
        patch_size=_PATCH,
        temporal_patch_size=2,
        merge_size=QWEN3_VL.merge_size,
        image_mean=half,
        image_std=half,
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": _MIN_PIXELS, "longest_edge": _MAX_PIXELS},
        patch_size=_PATCH,
        temporal_patch_size=2,
        merge_size=QWEN3_VL.merge_size,
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
