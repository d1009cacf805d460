"""The vLLM backend without vLLM: the streaming step loop, the runner writing as requests finish, the
model-folder checks made before vLLM loads, and the backend options of the CLI.

The same code against the real engine runs in ``tests/test_vllm_engine.py`` (the ``.venv-vllm`` tier).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from evaluators.errors import UserError
from evaluators.inference import cli as infer_cli
from evaluators.inference.model_dir import vllm_hf_overrides
from evaluators.inference.runner import InferenceSettings, run_inference
from evaluators.inference.sampling import Sampling
from evaluators.inference.vllm_backend import VLLMBackend

PROMPT = "<image>Write the formula in LaTeX."


class _FakeEngine:
    """A stand-in for ``vllm.LLM`` + ``llm_engine``: request k finishes after ``lengths[k]`` steps.

    Ids follow vLLM 0.32: ``enqueue`` returns ``"<n>-<suffix>"``, outputs carry ``"<n>"``.
    """

    def __init__(self, lengths: dict[str, int], log: list) -> None:
        self.lengths, self.log, self.counter, self.running = lengths, log, 0, {}
        self.llm_engine = self

    def enqueue(self, inputs, params, use_tqdm):
        (entry,) = inputs
        external = str(self.counter)
        self.counter += 1
        self.running[external] = [entry["prompt"], self.lengths[entry["prompt"]], params["n"]]
        self.log.append(("add", entry["prompt"], len(self.running)))
        return [f"{external}-abcd1234"]

    def step(self):
        outputs = []
        for external, state in list(self.running.items()):
            state[1] -= 1
            finished = state[1] <= 0
            ids = [[ord(c) for c in state[0]] + [k] for k in range(state[2])]
            outputs.append(
                SimpleNamespace(
                    request_id=external,
                    finished=finished,
                    outputs=[SimpleNamespace(token_ids=i) for i in ids],
                )
            )
            if finished:
                del self.running[external]
                self.log.append(("done", state[0]))
        return outputs


class _Tokenizer:
    def batch_decode(self, ids, skip_special_tokens):
        return [f"{''.join(map(chr, x[:-1]))}#{x[-1]}<|im_end|>tail" for x in ids]


def _backend(lengths: dict[str, int], log: list, max_pending: int) -> VLLMBackend:
    backend = object.__new__(VLLMBackend)
    backend._vllm = SimpleNamespace(SamplingParams=lambda **kw: kw)
    backend.llm = _FakeEngine(lengths, log)
    backend.processor = SimpleNamespace(tokenizer=_Tokenizer())
    backend.max_pending = max_pending
    return backend


def _request(name: str) -> SimpleNamespace:
    return SimpleNamespace(prompt=name, images=["IMG"], record=SimpleNamespace(id=name))


def test_stream_yields_in_finish_order_and_bounds_pending():
    lengths = {"a": 5, "b": 1, "c": 2, "d": 1}
    log: list = []
    backend = _backend(lengths, log, max_pending=2)
    pulled = []

    def source():
        for name in "abcd":
            pulled.append(name)
            yield _request(name)

    results = [(r.prompt, texts) for r, texts in backend.stream(source(), Sampling(n=2))]
    # b (1 step) finishes before a (5 steps); each result is decoded by the tokenizer and cut at the stop.
    assert [name for name, _ in results] == ["b", "c", "d", "a"]
    assert dict(results)["a"] == ["a#0", "a#1"]
    assert max(entry[2] for entry in log if entry[0] == "add") == 2  # never more than max_pending queued
    # c is queued only after b finished: requests are pulled lazily, not all at once
    assert log.index(("done", "b")) < log.index(("add", "c", 2))


def test_runner_writes_each_result_before_the_next_finishes(tmp_path, tiny_model_dir):
    """No chunk barrier: a line is in the JSONL as soon as its request finishes, while others still run."""
    (tmp_path / "img").mkdir()
    records = []
    for i in range(4):
        Image.new("RGB", (56, 56), (i * 40, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        records.append(
            {"id": f"r{i}", "images": [f"img/{i}.png"], "messages": [{"from": "human", "value": PROMPT}]}
        )
    data = tmp_path / "in.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "out"
    jsonl = out / "in_infer.jsonl"
    seen_on_disk = []

    class _Watching:
        def stream(self, requests, sampling):
            for request in sorted(requests, key=lambda r: r.record.id, reverse=True):
                seen_on_disk.append(jsonl.read_text().count("\n"))
                yield request, [f"pred-{request.record.id}"]

    settings = InferenceSettings(model=str(tiny_model_dir), sampling={"max_new_tokens": 4}, progress=False)
    run_inference([data], out, settings, backend_factory=lambda *a: _Watching())
    assert seen_on_disk == [0, 1, 2, 3]
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["r3", "r2", "r1", "r0"]
    assert all(x["pred"] == f"pred-{x['id']}" for x in lines)


def _config(folder: Path, **config) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_vllm_overrides_fill_missing_architectures_and_refuse_wrong_ones(tmp_path, caplog):
    text = {
        "hidden_size": 64,
        "num_attention_heads": 2,
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    }
    # transformers 4.57 / llamafactory-cli export: architectures only inside text_config
    gap = _config(tmp_path / "gap", model_type="qwen2_5_vl", text_config=text)
    assert vllm_hf_overrides(gap) == {"architectures": ["Qwen2_5_VLForConditionalGeneration"]}
    assert "no top-level `architectures`" in caplog.text
    good = _config(
        tmp_path / "good",
        model_type="qwen2_5_vl",
        architectures=["Qwen2_5_VLForConditionalGeneration"],
        text_config=text,
    )
    assert vllm_hf_overrides(good, cpu=True) == {}
    assert vllm_hf_overrides(good, {"max_position_embeddings": 8}) == {"max_position_embeddings": 8}
    wrong = _config(tmp_path / "wrong", model_type="qwen2_5_vl", architectures=["Qwen2_5_VLModel"])
    with pytest.raises(UserError, match=r"declares architectures \['Qwen2_5_VLModel'\].*--hf-overrides"):
        vllm_hf_overrides(wrong)
    fixed = {"architectures": ["Qwen2_5_VLForConditionalGeneration"]}
    assert vllm_hf_overrides(wrong, fixed) == fixed  # the user's override is what vLLM will read
    small_heads = _config(
        tmp_path / "heads",
        model_type="qwen2_5_vl",
        architectures=["Qwen2_5_VLForConditionalGeneration"],
        text_config={"hidden_size": 64, "num_attention_heads": 4},
    )
    assert vllm_hf_overrides(small_heads) == {}  # on a GPU any head size runs
    with pytest.raises(UserError, match="head size 16 .* not supported by vLLM on the CPU"):
        vllm_hf_overrides(small_heads, cpu=True)
    # Qwen3.5: vLLM's CPU Gated DeltaNet kernel runs in bfloat16 only
    linear = {"head_dim": 32, "num_attention_heads": 2, "layer_types": ["linear_attention", "full_attention"]}
    qwen3_5 = _config(
        tmp_path / "qwen3_5",
        model_type="qwen3_5",
        architectures=["Qwen3_5ForConditionalGeneration"],
        dtype="float32",
        text_config=linear,
    )
    with pytest.raises(UserError, match="only in bfloat16, got dtype float32; pass --dtype bfloat16"):
        vllm_hf_overrides(qwen3_5, cpu=True)
    assert vllm_hf_overrides(qwen3_5, cpu=True, dtype="bfloat16") == {}
    assert vllm_hf_overrides(qwen3_5, dtype="float32") == {}  # a GPU runs it in float32


def _infer_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    infer_cli.add_arguments(parser)
    return parser


def test_cli_backend_options_reach_the_vllm_backend(monkeypatch):
    monkeypatch.setattr(infer_cli, "pick_backend", lambda name: "vllm" if name == "auto" else name)
    args = _infer_parser().parse_args(
        [
            "--model",
            "m",
            "--out-dir",
            "o",
            "x.json",
            "--enforce-eager",
            "--max-num-seqs",
            "8",
            "--hf-overrides",
            '{"architectures": ["Qwen2_5_VLForConditionalGeneration"]}',
            "--limit-mm-per-prompt",
            '{"image": 2}',
            "--max-pending",
            "64",
        ]
    )
    settings = infer_cli.settings_from_args(args)
    assert settings.backend == "vllm"
    assert settings.backend_options == {
        "tensor_parallel_size": 1,
        "load_in_4bit": False,
        "gpu_memory_utilization": 0.9,
        "max_model_len": None,
        "dtype": "auto",
        "max_pending": 64,
        "enforce_eager": True,
        "max_num_seqs": 8,
        "hf_overrides": {"architectures": ["Qwen2_5_VLForConditionalGeneration"]},
        "limit_mm_per_prompt": {"image": 2},
    }
    with pytest.raises(argparse.ArgumentError, match="expected a JSON object"):
        _infer_parser().parse_args(["--model", "m", "--out", "o", "x", "--hf-overrides", "a=b"])


def test_auto_backend_follows_the_vllm_platform(monkeypatch):
    """auto = vLLM when it imports and its platform is a GPU or the CPU build; else transformers."""
    import importlib.util

    assert infer_cli.pick_backend("hf") == "hf"
    real_find_spec = importlib.util.find_spec
    for is_cpu, is_cuda, expected in ((True, False, "vllm"), (False, True, "vllm"), (False, False, "hf")):
        platform = SimpleNamespace(is_cpu=lambda v=is_cpu: v, is_cuda_alike=lambda v=is_cuda: v)
        fake = SimpleNamespace(platforms=SimpleNamespace(current_platform=platform))
        monkeypatch.setitem(sys.modules, "vllm", fake)
        monkeypatch.setitem(sys.modules, "vllm.platforms", fake.platforms)
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real_find_spec(name)
        )
        assert infer_cli.pick_backend("auto") == expected
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert infer_cli.pick_backend("auto") == "hf"
