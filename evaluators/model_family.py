"""Model families: everything that differs between Qwen2.5-VL, Qwen3-VL and Qwen3.5, in one place.

Recipes (their LLaMA-Factory ``template``), ``unitune infer`` (accepted ``model_type``, default system turn,
stop strings, image token, model class), the GRPO entry (model loading) and ``unitune tiny-model`` read these
facts from here. Qwen2.5-VL is the default family.

=============  ==================  ===================  ====================  ==========  ============
family         config model_type    LLaMA-Factory         default system turn   patch px    transformers
=============  ==================  ===================  ====================  ==========  ============
qwen2_5_vl     qwen2_5_vl, qwen2_vl  qwen2_vl            "You are a helpful    14 (x2x2)   >= 4.49
                                                          assistant."
qwen3_vl       qwen3_vl             qwen3_vl_nothink     none                  16 (x2x2)   >= 4.57
qwen3_5        qwen3_5              qwen3_5_nothink      none                  16 (x2x2)   >= 5.2
=============  ==================  ===================  ====================  ==========  ============

The ``*_nothink`` templates are the ones upstream Uni-MuMER trains Qwen3-VL and Qwen3.5 with; they add no
system turn, so inference sends none either (the prompt then matches training token for token).

Example:

>>> get_family("qwen3_vl").template
'qwen3_vl_nothink'
>>> family_for_model_type("qwen2_vl").name
'qwen2_5_vl'
>>> DEFAULT_FAMILY.stop
('<|im_end|>', '<|endoftext|>')
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.errors import UserError

__all__ = [
    "DEFAULT_FAMILY",
    "FAMILIES",
    "ModelFamily",
    "family_for_model_type",
    "get_family",
    "load_hf_model",
    "model_family",
    "read_model_type",
    "require_transformers",
    "require_vllm_architecture",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFamily:
    """What the tools need to know about one backbone family.

    Args:
        name (`str`): the family name used on command lines (``--family``) and in recipes.
        display (`str`): human name for messages.
        model_types (`tuple[str, ...]`): ``config.json`` ``model_type`` values of this family.
        template (`str`): LLaMA-Factory chat template the recipes train with.
        default_system (`str` or `None`): system turn inference sends by default (``None``: no system turn),
            the same as the template's default during training.
        hf_class (`str`): transformers class of the checkpoint (``architectures[0]`` in ``config.json``).
        vllm_architecture (`str`): the architecture name vLLM registers for it.
        min_transformers (`str`): first transformers release that ships the model code.
        patch_size (`int`): vision patch size in pixels; ``merge_size`` x ``merge_size`` patches make one token.
        merge_size (`int`): spatial merge of the vision tower.
        image_token (`str`), video_token (`str`): the pad tokens the processor expands per image / video.
        stop (`tuple[str, ...]`): end-of-turn and end-of-text strings generation stops at.
        projector_prefixes (`tuple[str, ...]`): parameter-name prefixes, inside the ``visual`` module, of the
            vision-to-language projector (Qwen3-VL adds the DeepStack mergers; Qwen3.5 has none).
    """

    name: str
    display: str
    model_types: tuple[str, ...]
    template: str
    default_system: str | None
    hf_class: str
    vllm_architecture: str
    min_transformers: str
    patch_size: int
    merge_size: int = 2
    image_token: str = "<|image_pad|>"
    video_token: str = "<|video_pad|>"
    stop: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")
    projector_prefixes: tuple[str, ...] = ("merger.",)

    @property
    def pixels_per_token(self) -> int:
        """Image pixels one vision token covers: ``(patch_size * merge_size) ** 2``.

        Example:

        >>> get_family("qwen2_5_vl").pixels_per_token, get_family("qwen3_vl").pixels_per_token
        (784, 1024)
        """
        return (self.patch_size * self.merge_size) ** 2

    def processor_pixel_kwargs(self, min_pixels: int | None = None, max_pixels: int | None = None) -> dict:
        """``AutoProcessor.from_pretrained`` kwargs bounding image sizes (``None`` keeps the checkpoint's).

        Both families' image processors (``Qwen2VLImageProcessor``) take ``min_pixels`` / ``max_pixels`` and
        round sizes to multiples of ``patch_size * merge_size``.

        Example:

        >>> get_family("qwen3_vl").processor_pixel_kwargs(max_pixels=262144)
        {'max_pixels': 262144}

        Raises:
            UserError: a bound below one vision token, or ``min_pixels > max_pixels``.
        """
        out = {}
        for key, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
            if value is None:
                continue
            if int(value) < self.pixels_per_token:
                raise UserError(
                    f"{key}: expected at least {self.pixels_per_token} (one {self.display} vision token), "
                    f"got {value}."
                )
            out[key] = int(value)
        if len(out) == 2 and out["min_pixels"] > out["max_pixels"]:
            raise UserError(f"min_pixels {min_pixels} is larger than max_pixels {max_pixels}.")
        return out


QWEN2_5_VL = ModelFamily(
    name="qwen2_5_vl",
    display="Qwen2.5-VL",
    model_types=("qwen2_5_vl", "qwen2_vl"),
    template="qwen2_vl",
    default_system="You are a helpful assistant.",
    hf_class="Qwen2_5_VLForConditionalGeneration",
    vllm_architecture="Qwen2_5_VLForConditionalGeneration",
    min_transformers="4.49.0",
    patch_size=14,
)
QWEN3_VL = ModelFamily(
    name="qwen3_vl",
    display="Qwen3-VL",
    model_types=("qwen3_vl",),
    template="qwen3_vl_nothink",
    default_system=None,
    hf_class="Qwen3VLForConditionalGeneration",
    vllm_architecture="Qwen3VLForConditionalGeneration",
    min_transformers="4.57.0",
    patch_size=16,
    projector_prefixes=("merger.", "deepstack_merger_list."),
)
QWEN3_5 = ModelFamily(
    name="qwen3_5",
    display="Qwen3.5",
    model_types=("qwen3_5",),
    template="qwen3_5_nothink",
    default_system=None,
    hf_class="Qwen3_5ForConditionalGeneration",
    vllm_architecture="Qwen3_5ForConditionalGeneration",
    min_transformers="5.2.0",
    patch_size=16,  # no DeepStack: the projector is the merger alone
)

#: Every known family, by name; the first is the default.
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (QWEN2_5_VL, QWEN3_VL, QWEN3_5)}
DEFAULT_FAMILY = QWEN2_5_VL


def get_family(name: str) -> ModelFamily:
    """The family called ``name``.

    Example:

    >>> get_family("qwen2_5_vl").display
    'Qwen2.5-VL'
    >>> get_family("llava")
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: --family: expected one of qwen2_5_vl, qwen3_vl, qwen3_5, got 'llava'.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"--family: expected one of {', '.join(FAMILIES)}, got {name!r}.") from None


def family_for_model_type(model_type: str | None, what: str = "the model") -> ModelFamily:
    """The family whose checkpoints have ``config.json`` ``model_type`` equal to ``model_type``.

    Example:

    >>> family_for_model_type("qwen3_vl").template
    'qwen3_vl_nothink'
    >>> family_for_model_type("llama", "--model m")
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: --model m: model_type 'llama' is not a supported vision-language family (expected one of qwen2_5_vl, qwen2_vl, qwen3_vl, qwen3_5).
    """
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise UserError(
        f"{what}: model_type {model_type!r} is not a supported vision-language family (expected one of {known})."
    )


def read_model_type(model: str | Path) -> str | None:
    """``model_type`` of a local checkpoint folder's ``config.json`` (``None`` when there is no such file).

    Raises:
        UserError: ``config.json`` is not valid JSON.
    """
    config = Path(model) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{config}: malformed JSON ({err.msg}).") from None
    return data.get("model_type") if isinstance(data, dict) else None


def model_family(model: str | Path) -> ModelFamily:
    """The family of a checkpoint: read from a local folder's ``config.json``, else from the hub cache.

    Raises:
        UserError: the model type is not a known family, or the config cannot be found.
    """
    model_type = read_model_type(model)
    if model_type is None:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(str(model), trust_remote_code=False).model_type
        except (OSError, ValueError, KeyError) as err:
            raise UserError(
                f"--model {model}: its config does not load ({type(err).__name__}: {err})."
            ) from None
    return family_for_model_type(model_type, f"--model {model}")


def require_transformers(family: ModelFamily, what: str = "the model") -> None:
    """Check the installed transformers ships ``family`` (read from package metadata; nothing is imported).

    Raises:
        UserError: the installed transformers is older than ``family.min_transformers``.
    """
    from importlib.metadata import version

    from packaging.version import Version

    installed = version("transformers")
    if Version(installed) < Version(family.min_transformers):
        raise UserError(
            f"{what} is a {family.display} model ({family.name}); it needs transformers >= "
            f"{family.min_transformers}, but {installed} is installed."
        )


def require_vllm_architecture(
    family: ModelFamily, supported: Any, vllm_version: str, what: str = "the model"
) -> None:
    """Check vLLM registers ``family``'s architecture (``supported``: ``vllm.ModelRegistry.get_supported_archs()``).

    Example:

    >>> require_vllm_architecture(get_family("qwen3_vl"), ["Qwen2_5_VLForConditionalGeneration"], "0.10.1", "--model m")
    Traceback (most recent call last):
    ...
    evaluators.errors.UserError: --model m is a Qwen3-VL model but vLLM 0.10.1 has no Qwen3VLForConditionalGeneration; install a vLLM that supports Qwen3-VL or use --backend hf.

    Raises:
        UserError: the architecture is not among ``supported``.
    """
    if family.vllm_architecture not in set(supported):
        raise UserError(
            f"{what} is a {family.display} model but vLLM {vllm_version} has no {family.vllm_architecture}; "
            f"install a vLLM that supports {family.display} or use --backend hf."
        )


def load_hf_model(model: str | Path, **kwargs: Any) -> Any:
    """Load a checkpoint of a known family with transformers (``AutoModelForImageTextToText``).

    The family is checked first, so an unsupported or too-new model fails with one clear line instead of a
    transformers stack trace. ``kwargs`` go to ``from_pretrained`` (``dtype``, ``quantization_config``...);
    ``trust_remote_code`` defaults to ``False`` (every family is native to transformers).

    Raises:
        UserError: unknown family, or a family the installed transformers does not ship.
    """
    from transformers import AutoModelForImageTextToText

    family = model_family(model)
    require_transformers(family, f"--model {model}")
    kwargs.setdefault("trust_remote_code", False)
    loaded = AutoModelForImageTextToText.from_pretrained(str(model), **kwargs)
    logger.info("loaded %s (%s) as %s", model, family.display, type(loaded).__name__)
    return loaded
