"""Build a tiny random Qwen2.5-VL (model, tokenizer, processor) offline, for tests and the demo.

The model is a real ``Qwen2_5_VLForConditionalGeneration`` with hidden size 64 (2 heads of 32, the
smallest head size vLLM's CPU attention runs), 2 text layers and a 2-block vision tower, and a
``config.json`` that names its class at the top level as hub checkpoints do (vLLM reads it there); the tokenizer is a byte-level BPE trained here on a small built-in corpus, with
Qwen's 14 special tokens and Qwen2-VL's chat template. Everything LLaMA-Factory, TRL, transformers and
vLLM read from a Qwen2.5-VL checkpoint folder is written, so their real loading code runs on it.
The same call writes the same bytes every time (fixed seed, fixed corpus, sorted JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "QWEN2_VL_CHAT_TEMPLATE",
    "build_tiny_model",
    "build_tokenizer",
    "qwen2_5_vl_config",
    "qwen_vl_config_kwargs",
    "save_tiny_checkpoint",
]

logger = logging.getLogger(__name__)

#: Qwen2.5's special tokens, in Qwen's id order (ids follow the byte-level BPE vocabulary here).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Qwen2-VL's chat template (default system prompt "You are a helpful assistant.").
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Image sizes: patches of 14 px merged 2x2, so an image becomes (h/28)*(w/28) vision tokens.
_MIN_PIXELS = 56 * 56
_MAX_PIXELS = 112 * 112
_BPE_VOCAB_SIZE = 640
_SEED = 0

#: transformers' default weight std: the text model is then nearly uniform (greedy decoding prints the same
#: token for every input), which keeps the training tests' losses near log(vocab) and sampled completions
#: free of any one token. ``0.2`` makes greedy outputs depend on the image and prompt, which the backend
#: comparison tests need (``unitune tiny-model DIR --initializer-range 0.2``).
DEFAULT_INITIALIZER_RANGE = 0.02

_CORPUS = [
    "I have an image of a handwritten mathematical expression. Please write out the expression of the "
    "formula in the image using LaTeX format.",
    "Please generate the abstract syntax tree (AST) of the formula in the image, and then provide its "
    "corresponding LaTeX format.",
    "Please identify and count each distinct visible mathematical symbol in the image, and then provide "
    "its corresponding LaTeX format.",
    "As an expert in facial expression recognition, which expression is most prominent in this image? "
    "Please select your answer from the following candidate labels: surprise, fear, disgust, happiness, "
    "sadness, anger, neutral, angry, contempt, happy, sad. Provide your detailed reasoning between the "
    "<think></think> tags, and then give your final answer between the <answer></answer> tags.",
    "\\frac { a ^ { 2 } + 1 } { b } \\sqrt [ 3 ] { x } \\sum _ { i = 1 } ^ { n } x _ { i } "
    "\\int _ { 0 } ^ { 1 } f ( x ) d x \\lim _ { x \\rightarrow \\infty } \\alpha \\beta \\gamma \\theta "
    "\\pi \\sin \\cos \\tan \\log \\times \\div \\pm \\leq \\geq \\neq \\ldots \\cdots \\infty",
    "\\begin {matrix} 1 & 2 \\\\ 3 & 4 \\end {matrix} ( above ) ( below ) ( right ) ( sub ) ( sup ) "
    "( nextline ) <error_start> <error_end> <deleted> REPLACE: INSERT: DELETE:",
    "You are a helpful assistant. The face shows raised eyebrows and an open mouth, so the answer is "
    "surprise. The corners of the mouth turn up: happiness. A frown with lowered brows: anger.",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M "
    "N O P Q R S T U V W X Y Z + - = ( ) [ ] { } | , . ; : ! ? ' \" / < > _ ^ * \\ \n\t",
]


def build_tokenizer():
    """Train the byte-level BPE on the built-in corpus and wrap it as a Qwen2 fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


def qwen_vl_config_kwargs(tokenizer, text_config: dict, vision_config: dict) -> dict:
    """The config arguments every Qwen-VL family shares: sizes plus special-token ids read from ``tokenizer``.

    One wiring for :func:`qwen2_5_vl_config` and ``tiny_qwen3_vl.qwen3_vl_config``: the text model's
    bos/eos/pad ids and the image/video/vision-span ids all point at the tokenizer's Qwen special tokens.
    """
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIAL_TOKENS}
    special = {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    return {
        "text_config": {**text_config, **special},
        "vision_config": vision_config,
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": True,
        **special,
    }


def qwen2_5_vl_config(tokenizer, text_config: dict, vision_config: dict, **kwargs):
    """A ``Qwen2_5_VLConfig`` of the given sizes whose special-token ids point at ``tokenizer``'s Qwen tokens.

    Used for the tiny model and for the real-size random model of ``benchmarks/gpu_check.py``; ``kwargs``
    go to the config (e.g. ``torch_dtype``).
    """
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(**qwen_vl_config_kwargs(tokenizer, text_config, vision_config), **kwargs)


def _build_config(tokenizer, initializer_range: float = DEFAULT_INITIALIZER_RANGE):
    # hidden 64 / 2 heads = head size 32, the smallest vLLM's CPU attention supports (32, 64, 80, ...);
    # mrope sections must sum to head_dim / 2.
    head_dim = 32
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "max_window_layers": 2,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [4, 6, 6]},
        "tie_word_embeddings": True,
        "initializer_range": initializer_range,
    }
    assert sum(text_config["rope_scaling"]["mrope_section"]) == head_dim // 2
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
    }
    return qwen2_5_vl_config(tokenizer, text_config, vision_config, initializer_range=initializer_range)


def build_tiny_model(out_dir: str | Path, initializer_range: float = DEFAULT_INITIALIZER_RANGE) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint (weights, config, tokenizer, processor) to ``out_dir``.

    Args:
        out_dir (`str` or `Path`): folder to create or overwrite; about 0.8 MB is written.
        initializer_range (`float`): std of the random text weights (see ``DEFAULT_INITIALIZER_RANGE``).

    Returns:
        `Path`: ``out_dir``, loadable with ``AutoProcessor`` and ``AutoModelForImageTextToText``.

    Example:

    >>> import tempfile
    >>> from transformers import AutoConfig
    >>> path = build_tiny_model(tempfile.mkdtemp())
    >>> AutoConfig.from_pretrained(path).model_type
    'qwen2_5_vl'
    """
    from transformers import (
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = build_tokenizer()
    config = _build_config(tokenizer, initializer_range)
    image_processor = Qwen2VLImageProcessor(
        min_pixels=_MIN_PIXELS,
        max_pixels=_MAX_PIXELS,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=_MIN_PIXELS, max_pixels=_MAX_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    return save_tiny_checkpoint(out_dir, Qwen2_5_VLForConditionalGeneration, config, processor, "Qwen2.5-VL")


def save_tiny_checkpoint(
    out_dir: str | Path, model_class: type, config: Any, processor: Any, display: str
) -> Path:
    """Write a random ``model_class(config)`` and ``processor`` to ``out_dir``, the same bytes on every call.

    The sequence every tiny family shares: a fixed seed, the model in float32, a greedy generation config that
    stops at ``<|im_end|>`` or ``<|endoftext|>`` (the text config's eos / pad ids), weights as safetensors,
    processor and tokenizer files, the model class as top-level ``architectures`` (what vLLM and hub checkpoints
    read), every JSON file with sorted keys.

    Args:
        out_dir (`str` or `Path`): folder to create or overwrite.
        model_class (`type`): the transformers model class, e.g. ``Qwen3VLForConditionalGeneration``.
        config: its config; ``config.get_text_config()`` holds the bos / eos / pad ids.
        processor: the processor to save beside the weights (tokenizer and chat template included).
        display (`str`): family name for the log line.

    Returns:
        `Path`: ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = config.get_text_config()
    torch.manual_seed(_SEED)
    model = model_class(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id,
        eos_token_id=[text.eos_token_id, text.pad_token_id],
        pad_token_id=text.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    _declare_architecture(out / "config.json", model_class.__name__)
    _canonicalise_json(out)
    logger.info("tiny %s written to %s (%.1f kB)", display, out, _folder_kb(out))
    return out


def _declare_architecture(config_path: Path, class_name: str) -> None:
    """Make the top-level ``architectures`` name ``class_name`` (transformers 4.57 put a Qwen2.5-VL's only inside
    ``text_config``).

    vLLM (and the hub's real checkpoints) read the model class from the top level; without it vLLM resolves
    ``Qwen2_5_VLModel`` and refuses to generate.
    """
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["architectures"] = [class_name]
    config_path.write_text(json.dumps(config), encoding="utf-8")


def _canonicalise_json(folder: Path) -> None:
    """Rewrite every JSON file with sorted keys so repeated builds give identical bytes."""
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(
            json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )


def _folder_kb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1024


#: ``unitune tiny-model --family`` choices and their builders (dotted paths, imported on use).
TINY_BUILDERS = {
    "qwen2_5_vl": "llamafactory_ext.tiny_model.build_tiny_model",
    "qwen3_vl": "llamafactory_ext.tiny_qwen3_vl.build_tiny_qwen3_vl",
    "qwen3_5": "llamafactory_ext.tiny_qwen3_5.build_tiny_qwen3_5",
}


def build_tiny(
    out_dir: str | Path, family: str = "qwen2_5_vl", initializer_range: float = DEFAULT_INITIALIZER_RANGE
) -> Path:
    """Write the tiny random checkpoint of ``family`` (see :data:`TINY_BUILDERS`) to ``out_dir``.

    ``initializer_range`` is the std of the random weights (see :data:`DEFAULT_INITIALIZER_RANGE`).

    Raises:
        UserError: a family without a tiny builder.
    """
    import importlib

    from evaluators.errors import UserError

    if family not in TINY_BUILDERS:
        raise UserError(f"--family: expected one of {', '.join(TINY_BUILDERS)}, got {family!r}.")
    module, _, name = TINY_BUILDERS[family].rpartition(".")
    return getattr(importlib.import_module(module), name)(out_dir, initializer_range)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune tiny-model``."""
    parser.add_argument("out_dir", type=Path, help="folder to write the tiny checkpoint into")
    parser.add_argument(
        "--family",
        choices=sorted(TINY_BUILDERS),
        default="qwen2_5_vl",
        help="backbone family of the tiny model (default: qwen2_5_vl)",
    )
    parser.add_argument(
        "--initializer-range",
        type=float,
        default=DEFAULT_INITIALIZER_RANGE,
        help=f"std of the random weights (default {DEFAULT_INITIALIZER_RANGE}; 0.2 gives "
        "input-dependent greedy outputs, for comparing inference backends)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``unitune tiny-model OUT_DIR [--family FAMILY] [--initializer-range STD]``."""
    if not 0 < args.initializer_range <= 1:
        from evaluators.errors import UserError

        raise UserError(f"--initializer-range must be in (0, 1], got {args.initializer_range}.")
    build_tiny(args.out_dir, args.family, args.initializer_range)
    return 0
