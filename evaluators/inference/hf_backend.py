"""transformers backend: batched ``generate`` on CPU or GPU, fed by the shared prepared requests."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from evaluators.inference.prompts import PreparedRequest
from evaluators.inference.sampling import Sampling, clean_output

__all__ = ["HFBackend", "generate_kwargs"]

logger = logging.getLogger(__name__)


def generate_kwargs(sampling: Sampling, tokenizer: Any = None) -> dict[str, Any]:
    """``model.generate`` keyword arguments for ``sampling``.

    Stop strings that are single tokens become ``eos_token_id`` entries; others go to ``stop_strings``.

    Example:

    >>> generate_kwargs(Sampling(temperature=0.0, max_new_tokens=8))
    {'max_new_tokens': 8, 'num_return_sequences': 1, 'do_sample': False}
    >>> kw = generate_kwargs(Sampling(temperature=0.2, top_p=0.8, top_k=50, max_new_tokens=8, n=2))
    >>> kw["do_sample"], kw["temperature"], kw["top_k"], kw["num_return_sequences"]
    (True, 0.2, 50, 2)
    """
    kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "num_return_sequences": sampling.n}
    if sampling.greedy:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        kwargs["top_k"] = sampling.top_k if sampling.top_k > 0 else 0
    if sampling.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = sampling.repetition_penalty
    if tokenizer is not None and sampling.stop:
        eos, strings = [], []
        for stop in sampling.stop:
            token_id = tokenizer.convert_tokens_to_ids(stop)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id is not None:
                eos.append(token_id)
            else:
                strings.append(stop)
        if eos:
            kwargs["eos_token_id"] = eos
        if strings:
            kwargs.update(stop_strings=strings, tokenizer=tokenizer)
    return kwargs


class HFBackend:
    """Batched transformers generation.

    Args:
        model (`str`): checkpoint folder (already checked by the runner).
        processor: the processor the runner loaded (the one that rendered the prompts).
        batch_size (`int`): prompts per ``generate`` call.
        device (`str`): ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype (`str`): ``"auto"`` (bfloat16 on GPU, float32 on CPU), ``"bfloat16"``, ``"float16"``, ``"float32"``.
        load_in_4bit (`bool`): bitsandbytes NF4 weights (GPU).
    """

    name = "hf"

    def __init__(
        self,
        model: str,
        processor: Any,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        load_in_4bit: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": False}
        if load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype
            )
            kwargs["device_map"] = device
        self.model = AutoModelForImageTextToText.from_pretrained(model, **kwargs).eval()
        if not load_in_4bit:
            self.model.to(device)
        self.device = device
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        self.batch_size = max(1, int(batch_size))
        self.chunk_size = self.batch_size  # the runner writes results after every generate call
        logger.info(
            "transformers backend: %s on %s (%s), batch size %d", model, device, torch_dtype, self.batch_size
        )

    def generate(self, requests: Sequence[PreparedRequest], sampling: Sampling) -> list[list[str]]:
        """Generate ``sampling.n`` outputs for each request, ``batch_size`` requests per call."""
        import torch

        outputs: list[list[str]] = []
        kwargs = generate_kwargs(sampling, self.processor.tokenizer)
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            images = [image for request in batch for image in request.images]
            inputs = self.processor(
                text=[request.prompt for request in batch],
                images=images or None,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                generated = self.model.generate(**inputs, **kwargs)
            new_tokens = generated[:, inputs["input_ids"].shape[1] :]
            texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
            for position in range(len(batch)):
                chunk = texts[position * sampling.n : (position + 1) * sampling.n]
                outputs.append([clean_output(text, sampling.stop) for text in chunk])
        return outputs
