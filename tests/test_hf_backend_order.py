"""The transformers backend batches requests largest first but returns outputs in the order given."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from evaluators.inference import hf_backend  # noqa: E402
from evaluators.inference.sampling import Sampling  # noqa: E402


class _Processor:
    """Tokenises each prompt to one id (its position in ``prompts``) and decodes ids back to prompts."""

    def __init__(self, prompts: list[str]) -> None:
        self.prompts = prompts
        self.tokenizer = SimpleNamespace(convert_tokens_to_ids=lambda t: 1, unk_token_id=None)
        self.calls: list[list[str]] = []

    def __call__(self, text, images, padding, return_tensors):
        self.calls.append(list(text))
        ids = torch.tensor([[self.prompts.index(t)] for t in text])
        return SimpleNamespace(to=lambda device: {"input_ids": ids})

    def batch_decode(self, tokens, skip_special_tokens):
        return [f"out:{self.prompts[int(row[0])]}" for row in tokens]


class _Model:
    def generate(self, input_ids, **kwargs):
        return torch.cat([input_ids, input_ids], dim=1)  # the "new token" repeats the prompt id


def test_batches_run_largest_first_and_outputs_keep_input_order() -> None:
    sizes = [(10, 10), (40, 40), (20, 20), (40, 40), (5, 5)]
    requests = [
        SimpleNamespace(prompt=f"p{i}", images=[SimpleNamespace(size=size)]) for i, size in enumerate(sizes)
    ]
    processor = _Processor([r.prompt for r in requests])
    backend = object.__new__(hf_backend.HFBackend)
    backend.processor, backend.model, backend.batch_size, backend.device = processor, _Model(), 2, "cpu"
    outputs = backend.generate(requests, Sampling())
    assert outputs == [[f"out:p{i}"] for i in range(5)]
    assert processor.calls == [["p1", "p3"], ["p2", "p0"], ["p4"]]


def test_default_batch_sizes() -> None:
    assert hf_backend.gpu_batch_size(78 * 2**30) == 64
    assert hf_backend.gpu_batch_size(12 * 2**30) == 8
    assert hf_backend.gpu_batch_size(40 * 2**30) == 32
