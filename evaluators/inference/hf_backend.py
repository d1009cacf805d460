"""transformers backend: batched ``generate`` on CPU or GPU, fed by the shared prepared requests."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from evaluators.inference.prompts import PreparedRequest
from evaluators.inference.sampling import Sampling, clean_output, record_seed

__all__ = ["SORT_WINDOW", "HFBackend", "batch_order", "generate_kwargs", "gpu_batch_size"]

logger = logging.getLogger(__name__)

#: The runner hands the backend ``SORT_WINDOW`` batches at a time; they are sorted by size before batching.
SORT_WINDOW = 8


def gpu_batch_size(free_bytes: int) -> int:
    """Default prompts per ``generate`` call on a GPU: one per GiB free once the model is loaded, as a power
    of two between 8 and 64 (a Qwen2.5-VL-3B sequence of 2k tokens holds ~75 MB of KV cache, the vision
    tower's activations for one image a few hundred MB).

    Example:

    >>> gpu_batch_size(70 * 2**30), gpu_batch_size(20 * 2**30), gpu_batch_size(3 * 2**30)
    (64, 16, 8)
    """
    per_gib = max(1, free_bytes // 2**30)
    return max(8, min(64, 1 << (per_gib.bit_length() - 1)))


def batch_order(requests: Sequence[PreparedRequest]) -> list[int]:
    """Positions of ``requests`` from the largest (image pixels, then prompt length) to the smallest.

    Batches of similar size pad little (Qwen2.5-VL's image token count grows with the pixels), and the
    largest batch runs first, so an out-of-memory batch size fails at once. Equal sizes keep their order.

    Example:

    >>> from types import SimpleNamespace as R
    >>> small, wide = R(size=(10, 10)), R(size=(30, 10))
    >>> reqs = [R(images=[small], prompt="ab"), R(images=[wide], prompt="a"), R(images=[small], prompt="abc")]
    >>> batch_order(reqs)
    [1, 2, 0]
    """

    def size(position: int) -> tuple[int, int]:
        request = requests[position]
        pixels = sum(image.size[0] * image.size[1] for image in request.images)
        return pixels, len(request.prompt)

    return sorted(range(len(requests)), key=size, reverse=True)


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
        batch_size (`int`, *optional*): prompts per ``generate`` call; ``None`` = 8 on CPU, on a GPU
            :func:`gpu_batch_size` of the memory free after loading the model.
        device (`str`): ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype (`str`): ``"auto"`` (bfloat16 on GPU, float32 on CPU), ``"bfloat16"``, ``"float16"``, ``"float32"``.
        load_in_4bit (`bool`): bitsandbytes NF4 weights (GPU).
    """

    name = "hf"

    def __init__(
        self,
        model: str,
        processor: Any,
        batch_size: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        load_in_4bit: bool = False,
    ) -> None:
        import torch

        from evaluators.model_family import load_hf_model

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
        self.model = load_hf_model(model, **kwargs).eval()
        if not load_in_4bit:
            self.model.to(device)
        self.device = device
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        if batch_size is None:
            batch_size = (
                gpu_batch_size(torch.cuda.mem_get_info(device)[0]) if device.startswith("cuda") else 8
            )
        self.batch_size = max(1, int(batch_size))
        # The runner hands over SORT_WINDOW batches per call (results are written after each call, in input
        # order, so resume is unchanged); generate() sorts them by size first.
        self.chunk_size = self.batch_size * SORT_WINDOW
        # Sampling generates record by record (nothing to sort): results are written every batch_size records.
        self.sampling_chunk_size = self.batch_size
        logger.info(
            "transformers backend: %s on %s (%s), batch size %d", model, device, torch_dtype, self.batch_size
        )

    def generate(
        self,
        requests: Sequence[PreparedRequest],
        sampling: Sampling,
        on_batch: Callable[[Sequence[PreparedRequest]], None] | None = None,
    ) -> list[list[str]]:
        """Generate ``sampling.n`` outputs for each request, in the order given.

        Greedy: requests are batched ``batch_size`` at a time from the largest to the smallest
        (:func:`batch_order`). Sampling (temperature > 0): each request is generated on its own after seeding
        torch with :func:`~evaluators.inference.sampling.record_seed`, so its samples are the same whatever
        batch, chunk or shard it falls in and however often the run was resumed. ``on_batch`` is called with
        each finished batch (the progress bar).
        """
        if sampling.greedy:
            order = batch_order(requests)
            groups = [
                order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)
            ]
        else:
            groups = [[position] for position in range(len(requests))]
        outputs: list[list[str]] = [[] for _ in requests]
        for positions in groups:
            texts = self._generate_batch([requests[position] for position in positions], sampling)
            for position, samples in zip(positions, texts, strict=True):
                outputs[position] = samples
            if on_batch is not None:
                on_batch([requests[position] for position in positions])
        return outputs

    def _generate_batch(self, batch: Sequence[PreparedRequest], sampling: Sampling) -> list[list[str]]:
        import torch

        kwargs = generate_kwargs(sampling, self.processor.tokenizer)
        images = [image for request in batch for image in request.images]
        inputs = self.processor(
            text=[request.prompt for request in batch],
            images=images or None,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        if not sampling.greedy:
            torch.manual_seed(record_seed(sampling.seed, batch[0].record.id))
        with torch.inference_mode():
            generated = self.model.generate(**inputs, **kwargs)
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [
            [clean_output(text, sampling.stop) for text in texts[slot * sampling.n : (slot + 1) * sampling.n]]
            for slot in range(len(batch))
        ]
