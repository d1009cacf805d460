"""Build a tiny random Qwen3.5 (model, tokenizer, processor) offline, for tests.

A real ``Qwen3_5ForConditionalGeneration`` (transformers >= 5.2): text hidden size 64 in 2 layers, one of each
kind Qwen3.5 mixes: a Gated DeltaNet (linear attention, one key and one value head of size 128, the size vLLM's
CPU kernel for it accepts) and a full attention layer (2 query heads of size 32, the smallest head size vLLM's
CPU attention accepts, 1 key/value head), interleaved M-RoPE on a quarter of each head as in Qwen3.5; a 2-block
vision tower (hidden 32, one head of size 32) with 16 px patches and 2x2 merge, no DeepStack. The tokenizer,
chat template and processor are the tiny Qwen3-VL's (LLaMA-Factory's ``qwen3_5_nothink`` and
``qwen3_vl_nothink`` templates render the same prompt). The same call writes the same bytes every time.
"""

from __future__ import annotations

from pathlib import Path

from evaluators.model_family import QWEN3_5, require_transformers
from llamafactory_ext.tiny_model import (
    DEFAULT_INITIALIZER_RANGE,
    build_tokenizer,
    qwen_vl_config_kwargs,
    save_tiny_checkpoint,
)
from llamafactory_ext.tiny_qwen3_vl import QWEN3_VL_CHAT_TEMPLATE, qwen3_vl_processor, tiny_vision_config

__all__ = ["build_tiny_qwen3_5", "qwen3_5_config"]

#: Layer kinds, in order: Qwen3.5 puts three linear-attention layers before each full-attention one.
_LAYER_TYPES = ["linear_attention", "full_attention"]


def qwen3_5_config(tokenizer, text_config: dict, vision_config: dict, **kwargs):
    """A ``Qwen3_5Config`` of the given sizes whose special-token ids point at ``tokenizer``'s Qwen tokens."""
    from transformers import Qwen3_5Config

    return Qwen3_5Config(
        **qwen_vl_config_kwargs(tokenizer, text_config, vision_config),
        architectures=[QWEN3_5.hf_class],
        **kwargs,
    )


def _build_config(tokenizer, initializer_range: float = DEFAULT_INITIALIZER_RANGE):
    head_dim = 32
    partial_rotary_factor = 0.25  # Qwen3.5 rotates a quarter of each head
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": len(_LAYER_TYPES),
        "layer_types": _LAYER_TYPES,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": head_dim,
        # one key and one value head of 128, Qwen3.5's size: vLLM 0.32's CPU Gated DeltaNet kernel refuses 32
        "linear_num_key_heads": 1,
        "linear_num_value_heads": 1,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4,
        "max_position_embeddings": 4096,
        # interleaved M-RoPE: (t, h, w) sections sum to the rotated half-dimension
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000000.0,
            "partial_rotary_factor": partial_rotary_factor,
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": True,
        "initializer_range": initializer_range,
    }
    rotated = int(head_dim * partial_rotary_factor)
    assert sum(text_config["rope_parameters"]["mrope_section"]) == rotated // 2
    return qwen3_5_config(tokenizer, text_config, tiny_vision_config(QWEN3_5, initializer_range))


def build_tiny_qwen3_5(out_dir: str | Path, initializer_range: float = DEFAULT_INITIALIZER_RANGE) -> Path:
    """Write a tiny random Qwen3.5 checkpoint (weights, config, tokenizer, processor) to ``out_dir``.

    Args:
        out_dir (`str` or `Path`): folder to create or overwrite; under 1 MB is written.
        initializer_range (`float`): std of the random weights (``0.2``: greedy outputs depend on the input,
            see :data:`~llamafactory_ext.tiny_model.DEFAULT_INITIALIZER_RANGE`).

    Returns:
        `Path`: ``out_dir``, loadable with ``AutoProcessor`` and ``AutoModelForImageTextToText``.

    Raises:
        UserError: the installed transformers has no Qwen3.5 (older than 5.2.0).

    Example:

    >>> import tempfile
    >>> from transformers import AutoConfig
    >>> path = build_tiny_qwen3_5(tempfile.mkdtemp())
    >>> config = AutoConfig.from_pretrained(path)
    >>> config.model_type, config.architectures, config.text_config.layer_types
    ('qwen3_5', ['Qwen3_5ForConditionalGeneration'], ['linear_attention', 'full_attention'])
    """
    require_transformers(QWEN3_5, "unitune tiny-model --family qwen3_5")
    from transformers import Qwen3_5ForConditionalGeneration

    tokenizer = build_tokenizer()
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    config = _build_config(tokenizer, initializer_range)
    return save_tiny_checkpoint(
        out_dir, Qwen3_5ForConditionalGeneration, config, qwen3_vl_processor(tokenizer), QWEN3_5.display
    )
