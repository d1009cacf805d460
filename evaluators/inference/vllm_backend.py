"""vLLM backend (GPU): every request of a chunk is submitted in one ``LLM.generate`` call.

Upstream Uni-MuMER's recipe runs vLLM with ``--batch-size 1``, one request at a time, which leaves the GPU
mostly idle; here the whole chunk (default 2048 requests, ``--chunk-size 0`` = the whole file) goes to the
engine at once and its continuous batching keeps the GPU full. Chunks only bound how much finished work a
crash can lose: each chunk's results are written before the next one starts.

The requests are :class:`~evaluators.inference.prompts.PreparedRequest` objects built by the same code as
for the transformers backend; :func:`build_vllm_inputs` and :func:`sampling_params_kwargs` are pure and do
not import vLLM, so they are tested where vLLM is not installed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from evaluators.errors import UserError
from evaluators.inference.prompts import PreparedRequest
from evaluators.inference.sampling import Sampling, clean_output, record_seed

__all__ = ["VLLMBackend", "build_vllm_inputs", "import_vllm", "sampling_params_kwargs"]

logger = logging.getLogger(__name__)


def import_vllm() -> Any:
    """Import vLLM, or raise a :class:`UserError` that says how to install it or use ``--backend hf``."""
    try:
        import vllm
    except ImportError as err:
        raise UserError(
            f"--backend vllm needs the vLLM package, which is not importable here ({err}). "
            "Install the GPU extra (pip install -e '.[vllm]') on a CUDA machine, or use --backend hf."
        ) from None
    return vllm


def build_vllm_inputs(requests: Sequence[PreparedRequest]) -> list[dict[str, Any]]:
    """The prompt dicts ``LLM.generate`` takes: the shared rendered prompt and the shared decoded images.

    Example:

    >>> from evaluators.inference.prompts import InferenceRecord
    >>> rec = InferenceRecord(0, "a", "hmer", "<image>x", ["a.png"], [], None, {})
    >>> req = PreparedRequest(rec, [], "x", "<|im_start|>user\\n...", ["IMG"])
    >>> build_vllm_inputs([req])
    [{'prompt': '<|im_start|>user\\n...', 'multi_modal_data': {'image': 'IMG'}}]
    """
    inputs = []
    for request in requests:
        images = request.images
        entry: dict[str, Any] = {"prompt": request.prompt}
        if images:
            entry["multi_modal_data"] = {"image": images[0] if len(images) == 1 else list(images)}
        inputs.append(entry)
    return inputs


def sampling_params_kwargs(sampling: Sampling) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ``sampling`` (seeded per request).

    Example:

    >>> kw = sampling_params_kwargs(Sampling(temperature=0.2, top_p=0.8, top_k=50, max_new_tokens=2048, n=4))
    >>> kw["temperature"], kw["top_p"], kw["top_k"], kw["max_tokens"], kw["n"], kw["stop"]
    (0.2, 0.8, 50, 2048, 4, ['<|im_end|>', '<|endoftext|>'])
    """
    return {
        "n": sampling.n,
        "temperature": max(0.0, sampling.temperature),
        "top_p": sampling.top_p if not sampling.greedy else 1.0,
        "top_k": sampling.top_k if sampling.top_k > 0 and not sampling.greedy else -1,
        "max_tokens": sampling.max_new_tokens,
        "stop": list(sampling.stop),
        "seed": sampling.seed,
        "repetition_penalty": sampling.repetition_penalty,
    }


class VLLMBackend:
    """``vllm.LLM`` wrapper.

    Args:
        model (`str`): merged checkpoint folder.
        processor: the processor the runner loaded (prompts are rendered with its chat template).
        tensor_parallel_size (`int`): GPUs to shard the model over.
        load_in_4bit (`bool`): bitsandbytes 4-bit weights (``quantization="bitsandbytes"``).
        gpu_memory_utilization (`float`), max_model_len (`int` or `None`), dtype (`str`): passed to ``LLM``.
        seed (`int`): engine seed (each request is also seeded through ``SamplingParams``).
        max_images (`int`): images per prompt (``limit_mm_per_prompt``).
        chunk_size (`int`): requests per ``generate`` call, ``0`` = all of them (the runner chunks).
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        processor: Any,
        tensor_parallel_size: int = 1,
        load_in_4bit: bool = False,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        max_images: int = 1,
        chunk_size: int = 2048,
    ) -> None:
        vllm = import_vllm()
        from evaluators.model_family import model_family, require_vllm_architecture

        require_vllm_architecture(
            model_family(model),
            vllm.ModelRegistry.get_supported_archs(),
            vllm.__version__,
            f"--model {model}",
        )
        kwargs: dict[str, Any] = {
            "model": model,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "dtype": dtype,
            "seed": seed,
            "trust_remote_code": False,
            "limit_mm_per_prompt": {"image": max_images},
        }
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if load_in_4bit:
            kwargs["quantization"] = "bitsandbytes"
            kwargs["load_format"] = "bitsandbytes"  # required by vLLM < 0.7, accepted by later versions
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)
        self.processor = processor
        self.chunk_size = chunk_size
        logger.info("vLLM backend: %s, tensor_parallel_size %d", model, tensor_parallel_size)

    def generate(self, requests: Sequence[PreparedRequest], sampling: Sampling) -> list[list[str]]:
        """All ``requests`` in one ``LLM.generate`` call; ``sampling.n`` outputs each, in request order.

        When sampling, each request gets its own seed (:func:`~evaluators.inference.sampling.record_seed`).
        """
        kwargs = sampling_params_kwargs(sampling)
        if sampling.greedy:
            params: Any = self._vllm.SamplingParams(**kwargs)
        else:  # one seed per record: its samples do not depend on the chunk or shard it falls in
            params = [
                self._vllm.SamplingParams(**{**kwargs, "seed": record_seed(sampling.seed, r.record.id)})
                for r in requests
            ]
        results = self.llm.generate(build_vllm_inputs(requests), params, use_tqdm=True)
        return [[clean_output(o.text, sampling.stop) for o in result.outputs] for result in results]
