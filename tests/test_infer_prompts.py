"""``unitune infer`` prompt building, record loading and the vLLM request objects (no model, no vLLM)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from evaluators.errors import UserError
from evaluators.inference import hf_backend, prompts, vllm_backend
from evaluators.inference.prompts import (
    ImageProblem,
    PromptOptions,
    build_messages,
    load_records,
    prepare_request,
    resolve_image,
)
from evaluators.inference.sampling import Sampling, record_seed, resolve_sampling
from evaluators.inference.vllm_backend import VLLMBackend, build_vllm_inputs, sampling_params_kwargs
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS

HMER_PROMPT = (
    "I have an image of a handwritten mathematical expression. Please write out the expression of the "
    "formula in the image using LaTeX format."
)


class _TemplateOnly:
    """A stand-in processor that renders messages like Qwen2-VL's chat template."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        out = []
        if messages[0]["role"] != "system":
            out.append("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
        for message in messages:
            content = message["content"]
            if not isinstance(content, str):
                content = "".join(
                    "<|vision_start|><|image_pad|><|vision_end|>" if p["type"] == "image" else p["text"]
                    for p in content
                )
            out.append(f"<|im_start|>{message['role']}\n{content}<|im_end|>\n")
        return "".join(out) + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _hmer_file(tmp_path: Path, n: int = 3, missing: bool = False) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    records = []
    for i in range(n):
        Image.new("RGB", (60, 30), "white").save(tmp_path / "images" / f"f{i}.png")
        records.append(
            {
                "images": [f"images/f{i}.png"],
                "messages": [
                    {"from": "human", "value": "<image>" + HMER_PROMPT},
                    {"from": "gpt", "value": f"x ^ {{ {i} }}"},
                ],
            }
        )
    if missing:
        records.append({"images": ["images/absent.png"], "messages": records[0]["messages"]})
    path = tmp_path / "hmer_test.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_default_prompt_replaces_placeholder_and_upstream_keeps_it():
    fixed = build_messages("<image>" + HMER_PROMPT, 1, PromptOptions())
    assert fixed == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": HMER_PROMPT}]},
    ]
    upstream = build_messages("<image>" + HMER_PROMPT, 1, PromptOptions(upstream_prompt=True))
    assert upstream[1]["content"] == [{"type": "image"}, {"type": "text", "text": "<image>" + HMER_PROMPT}]
    rendered = _TemplateOnly().apply_chat_template(upstream)
    assert "<|vision_end|><image>I have an image" in rendered
    assert "<image>" not in _TemplateOnly().apply_chat_template(fixed)


def test_placeholder_position_and_system_options():
    messages = build_messages("Look: <image> and <image>.", 2, PromptOptions(system_prompt=None))
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look: "},
                {"type": "image"},
                {"type": "text", "text": " and "},
                {"type": "image"},
                {"type": "text", "text": "."},
            ],
        }
    ]
    assert build_messages("q", 1, PromptOptions(system_prompt=""))[0] == {"role": "system", "content": ""}
    with pytest.raises(ImageProblem, match="2 <image> placeholders but 1 images"):
        build_messages("<image><image>q", 1, PromptOptions())


def test_load_hmer_and_fer_records(tmp_path):
    hmer = load_records(_hmer_file(tmp_path))
    assert [r.id for r in hmer] == ["f0", "f1", "f2"]
    assert hmer[1].task == "hmer" and hmer[1].gt == "x ^ { 1 }"
    assert hmer[1].image_paths == [tmp_path / "images" / "f1.png"]

    qa = [
        {
            "image_path": "/RAF-DB/aligned/test_0001_aligned.jpg",
            "true_label": "fear",
            "prompt": "which expression?",
            "candidate_labels": list(CANDIDATE_LABELS["rafdb"]),
        }
    ] * 2
    path = tmp_path / "rafdb_qa.json"
    path.write_text(json.dumps(qa), encoding="utf-8")
    fer = load_records(path, image_root=tmp_path / "root")
    assert [r.id for r in fer] == ["test_0001_aligned", "test_0001_aligned#2"]  # ids stay unique for resume
    assert fer[0].task == "fer" and fer[0].gt == "fear"
    assert fer[0].image_paths == [tmp_path / "root" / "RAF-DB" / "aligned" / "test_0001_aligned.jpg"]


def test_load_records_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"foo": 1}]), encoding="utf-8")
    with pytest.raises(UserError, match="record 0 has neither `messages`"):
        load_records(bad)
    empty = tmp_path / "empty.json"
    empty.write_text("[]", encoding="utf-8")
    with pytest.raises(UserError, match="no records"):
        load_records(empty)
    with pytest.raises(UserError, match="no such file"):
        load_records(tmp_path / "absent.json")


def test_resolve_image_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwd.png").write_bytes(b"")
    assert resolve_image("cwd.png", None, tmp_path / "elsewhere") == Path("cwd.png")
    assert resolve_image("nowhere.png", None, tmp_path / "in") == tmp_path / "in" / "nowhere.png"


def test_prepare_request_resizes_and_reports_missing_images(tmp_path):
    records = load_records(_hmer_file(tmp_path, n=1, missing=True))
    request = prepare_request(records[0], _TemplateOnly(), PromptOptions(image_size=28))
    assert request.images[0].size == (28, 28)
    assert request.user_text == HMER_PROMPT
    assert request.prompt.endswith(
        f"<|vision_start|><|image_pad|><|vision_end|>{HMER_PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ImageProblem, match="image not found"):
        prepare_request(records[1], _TemplateOnly(), PromptOptions())


def test_vllm_requests_are_the_shared_prepared_requests(tmp_path):
    """The vLLM inputs carry exactly the prompt text and image objects the HF backend gets."""
    records = load_records(_hmer_file(tmp_path, n=2))
    prepared = [prepare_request(r, _TemplateOnly(), PromptOptions()) for r in records]
    inputs = build_vllm_inputs(prepared)
    for request, entry in zip(prepared, inputs, strict=True):
        assert entry["prompt"] == request.prompt
        assert entry["multi_modal_data"]["image"] is request.images[0]

    # The HF backend feeds the same objects to the processor.
    captured = {}

    class _SpyProcessor:
        tokenizer = SimpleNamespace(convert_tokens_to_ids=lambda t: 1, unk_token_id=None)

        def __call__(self, text, images, padding, return_tensors):
            captured.update(text=text, images=images)
            raise RuntimeError("stop here")

    backend = object.__new__(hf_backend.HFBackend)
    backend.processor, backend.batch_size, backend.device = _SpyProcessor(), 8, "cpu"
    with pytest.raises(RuntimeError, match="stop here"):
        backend.generate(prepared, Sampling())
    assert captured["text"] == [entry["prompt"] for entry in inputs]
    assert all(a is b["multi_modal_data"]["image"] for a, b in zip(captured["images"], inputs, strict=True))


def test_vllm_backend_generate_path_without_vllm(tmp_path):
    """Drive VLLMBackend.generate with a fake engine: one call with every request, SamplingParams from CLI."""
    records = load_records(_hmer_file(tmp_path, n=3))
    prepared = [prepare_request(r, _TemplateOnly(), PromptOptions()) for r in records]
    calls = []

    class _FakeLLM:
        def generate(self, inputs, params, use_tqdm):
            calls.append((inputs, params))
            return [
                SimpleNamespace(outputs=[SimpleNamespace(token_ids=(i,))] * p["n"])
                for i, p in enumerate(params)
            ]

    backend = object.__new__(VLLMBackend)
    backend._vllm = SimpleNamespace(SamplingParams=lambda **kw: kw)
    backend.llm = _FakeLLM()
    backend.processor = SimpleNamespace(
        batch_decode=lambda ids, skip_special_tokens: [f" out{x[0]}<|im_end|>" for x in ids]
    )
    sampling = resolve_sampling("hmer", {"n": 2, "seed": 7})
    outputs = backend.generate(prepared, sampling)
    assert len(calls) == 1 and calls[0][0] == build_vllm_inputs(prepared)
    # sampling: one SamplingParams per request, seeded from (seed, record id)
    assert calls[0][1] == [
        {
            "n": 2,
            "temperature": 0.2,
            "top_p": 0.8,
            "top_k": 50,
            "max_tokens": 2048,
            "stop": ["<|im_end|>", "<|endoftext|>"],
            "seed": record_seed(7, r.id),
            "repetition_penalty": 1.0,
        }
        for r in records
    ]
    assert len({p["seed"] for p in calls[0][1]}) == 3
    assert outputs == [["out0", "out0"], ["out1", "out1"], ["out2", "out2"]]


def test_greedy_fer_sampling_kwargs():
    kw = sampling_params_kwargs(resolve_sampling("fer"))
    assert (kw["temperature"], kw["top_p"], kw["top_k"], kw["max_tokens"]) == (0.0, 1.0, -1, 1024)


def test_backends_do_not_build_prompts():
    """Prompt building lives in prompts.py only: neither backend renders templates or touches records."""
    for module in (hf_backend, vllm_backend):
        source = inspect.getsource(module)
        assert "apply_chat_template" not in source
        assert "build_messages" not in source
        assert "IMAGE_PLACEHOLDER" not in source
    assert "apply_chat_template" in inspect.getsource(prompts.render_prompt)


def test_missing_vllm_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"--backend vllm needs the vLLM package.*--backend hf"):
            vllm_backend.import_vllm()
    else:
        pytest.skip("vLLM is installed here")
