"""``unitune infer`` on the tiny Qwen2.5-VL: HF backend, resume, kill -9 mid-run, upstream exports, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from evaluators.cli import main as unitune
from evaluators.errors import UserError
from evaluators.inference.runner import InferenceSettings, run_inference
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS

HMER_PROMPT = (
    "<image>I have an image of a handwritten mathematical expression. Please write out the expression of "
    "the formula in the image using LaTeX format."
)
FER_PROMPT = (
    "As an expert in facial expression recognition, which expression is most prominent in this image? "
    "Please select your answer from the following candidate labels: {}. Provide your detailed reasoning "
    "between the <think></think> tags, and then give your final answer between the <answer></answer> tags."
)


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (64 + 8 * (i % 3), 32), (255 - i % 200, 255, 255)).save(folder / name)


def _hmer(tmp_path: Path, n: int, missing: int = 0) -> Path:
    names = [f"h{i:03d}.png" for i in range(n)]
    _images(tmp_path / "img", names)
    records = [
        {
            "images": [f"img/{name}"],
            "messages": [{"from": "human", "value": HMER_PROMPT}, {"from": "gpt", "value": f"x _ {{ {i} }}"}],
        }
        for i, name in enumerate(names + [f"gone{j}.png" for j in range(missing)])
    ]
    path = tmp_path / "hmer_demo_test.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def _fer(tmp_path: Path, n: int) -> Path:
    labels = list(CANDIDATE_LABELS["rafdb"])
    names = [f"face{i}.png" for i in range(n)]
    _images(tmp_path / "root" / "faces", names)
    qa = [
        {
            "image_path": f"/faces/{name}",
            "true_label": labels[i % len(labels)],
            "prompt": FER_PROMPT.format(", ".join(labels)),
            "candidate_labels": labels,
        }
        for i, name in enumerate(names)
    ]
    path = tmp_path / "demo_qa.json"
    path.write_text(json.dumps(qa), encoding="utf-8")
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_hf_backend_hmer_and_fer_then_resume(tiny_model_dir, tmp_path):
    hmer, fer = _hmer(tmp_path, 5, missing=1), _fer(tmp_path, 3)
    out = tmp_path / "out"
    settings = InferenceSettings(
        model=str(tiny_model_dir),
        backend="hf",
        image_root=None,
        sampling={"max_new_tokens": 6, "temperature": 0.0},
        backend_options={"batch_size": 2},
        progress=False,
    )
    # FERBench paths (/faces/...) do not resolve without --image-root: every record is listed, the run goes on.
    (noroot,) = run_inference([fer], out / "noroot", settings)
    assert (noroot.generated, len(noroot.missing)) == (0, 3)
    failed = json.loads((out / "noroot" / "demo_results.json").read_text(encoding="utf-8"))
    assert [r["error"] for r in failed] == [True] * 3
    assert failed[0]["model_response"].startswith("ERROR: image not found")

    (h,) = run_inference([hmer], out, settings)
    settings.image_root = str(tmp_path / "root")
    (f,) = run_inference([fer], out, settings)
    assert (h.task, h.records, h.generated, len(h.missing)) == ("hmer", 6, 5, 1)
    assert (f.task, f.records, f.generated, len(f.missing)) == ("fer", 3, 3, 0)

    lines = _lines(out / "hmer_demo_test_infer.jsonl")
    assert [x["id"] for x in lines] == [f"h{i:03d}" for i in range(5)]
    assert set(lines[0]) == {"id", "sample_index", "prompt", "key", "pred", "gt", "image_path"}
    assert lines[0]["prompt"].startswith("I have an image") and lines[0]["gt"] == "x _ { 0 }"
    pred_json = json.loads((out / "hmer_demo_test_pred.json").read_text(encoding="utf-8"))
    assert [set(p) for p in pred_json] == [{"gt", "pred", "image_path", "img_id"}] * 5 + [
        {"gt", "pred", "image_path", "img_id", "error"}
    ]
    assert pred_json[-1] == {
        "gt": "x _ { 5 }",
        "pred": "",
        "image_path": "img/gone0.png",
        "img_id": "gone0",
        "error": True,
    }
    assert json.loads((out / "hmer_demo_test_missing.json").read_text())[0]["id"] == "gone0"

    fer_lines = _lines(out / "demo_qa_infer.jsonl")
    assert set(fer_lines[0]) == {
        "id",
        "sample_index",
        "prompt",
        "key",
        "model_response",
        "true_label",
        "image_path",
    }
    results_json = json.loads((out / "demo_results.json").read_text(encoding="utf-8"))
    assert len(results_json) == 3 and all(isinstance(r["model_response"], str) for r in results_json)
    assert results_json[0]["candidate_labels"] == list(CANDIDATE_LABELS["rafdb"])

    # Re-run: nothing left to generate (the missing image is retried and still missing).
    assert run_inference([fer], out, settings)[0].generated == 0
    settings.image_root = None
    assert run_inference([hmer], out, settings)[0].generated == 0
    assert _lines(out / "hmer_demo_test_infer.jsonl") == lines

    # Resuming with other decoding settings is refused.
    settings.sampling = {"max_new_tokens": 7, "temperature": 0.0}
    with pytest.raises(UserError, match="other settings.*max_new_tokens"):
        run_inference([hmer], out, settings)


@pytest.mark.slow
def test_hf_backend_n_samples(tiny_model_dir, tmp_path):
    hmer = _hmer(tmp_path, 2)
    settings = InferenceSettings(
        model=str(tiny_model_dir),
        backend="hf",
        sampling={"max_new_tokens": 4, "temperature": 1.0, "n": 3, "seed": 1},
        progress=False,
    )
    run_inference([hmer], tmp_path / "out", settings)
    lines = _lines(tmp_path / "out" / "hmer_demo_test_infer.jsonl")
    assert Counter((x["id"], x["sample_index"]) for x in lines) == {
        (i, k): 1 for i in ("h000", "h001") for k in range(3)
    }
    settings.sampling = {"max_new_tokens": 4, "temperature": 0.0, "n": 2}
    with pytest.raises(UserError, match="needs sampling"):
        run_inference([hmer], tmp_path / "out2", settings)


def test_torn_line_and_partial_samples_are_redone(tmp_path, tiny_model_dir):
    """A torn last line is cut; an id with only some of its samples gets just the missing ones."""
    hmer = _hmer(tmp_path, 3)
    out = tmp_path / "out"
    jsonl = out / "hmer_demo_test_infer.jsonl"
    seen = []

    class _Echo:
        chunk_size = 2

        def generate(self, requests, sampling):
            seen.extend(r.record.id for r in requests)
            return [[f"{r.record.id}-{k}-{len(seen)}" for k in range(sampling.n)] for r in requests]

    settings = InferenceSettings(
        model=str(tiny_model_dir), sampling={"n": 2, "temperature": 1.0}, progress=False
    )
    run_inference([hmer], out, settings, backend_factory=lambda *a: _Echo())
    first = _lines(jsonl)
    # Keep h000's two samples and h001's first; then a line torn by a kill.
    kept = [x for x in first if x["id"] == "h000" or (x["id"], x["sample_index"]) == ("h001", 0)]
    jsonl.write_text(
        "".join(json.dumps(x) + "\n" for x in kept) + '{"id": "h002", "sample_ind', encoding="utf-8"
    )
    seen.clear()
    run_inference([hmer], out, settings, backend_factory=lambda *a: _Echo())
    assert seen == ["h001", "h002"]
    pairs = Counter((x["id"], x["sample_index"]) for x in _lines(jsonl))
    assert pairs == {(i, k): 1 for i in ("h000", "h001", "h002") for k in range(2)}
    assert _lines(jsonl)[:3] == kept  # finished samples are kept, not regenerated


def test_model_folder_errors(tmp_path, tiny_model_dir, caplog):
    hmer = _hmer(tmp_path, 1)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    no_proc = tmp_path / "noproc"
    no_proc.mkdir()
    (no_proc / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    cases = {
        str(tmp_path / "absent"): "no such folder",
        str(adapter): "is a LoRA adapter",
        str(other): "'llama' is not a supported vision-language family",
        str(no_proc): "processor",
    }
    for model, message in cases.items():
        caplog.clear()
        status = unitune(
            ["infer", "--model", model, "--out", str(tmp_path / "o"), str(hmer), "--no-progress"]
        )
        assert status == 2, model
        assert message in caplog.text, (model, caplog.text)


@pytest.mark.slow
def test_kill_mid_run_then_resume_gives_every_id_once(tiny_model_dir, tmp_path):
    """SIGKILL `unitune infer` after some lines are written; the re-run completes with each id exactly once."""
    n = 30
    hmer = _hmer(tmp_path, n)
    out = tmp_path / "out"
    jsonl = out / "hmer_demo_test_infer.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "evaluators.cli",
        "infer",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        str(hmer),
        "--backend",
        "hf",
        "--batch-size",
        "1",
        "--temperature",
        "0",
        "--max-new-tokens",
        "8",
        "--no-progress",
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.is_file():
            written = jsonl.read_bytes().count(b"\n")
            if written >= 3:
                break
        time.sleep(0.02)
    assert proc.poll() is None, (
        f"infer ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = jsonl.read_bytes().count(b"\n")
    assert 3 <= before < n, before

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ids = Counter(line["id"] for line in _lines(jsonl))
    assert ids == {f"h{i:03d}": 1 for i in range(n)}
    assert f"{before} done earlier" in rerun.stderr or f"({before} done earlier" in rerun.stderr
    assert len(json.loads((out / "hmer_demo_test_pred.json").read_text())) == n


def test_qwen3_5_model_names_the_transformers_it_needs(tmp_path, caplog, monkeypatch):
    """A user on transformers < 5.2 gets one line naming the release Qwen3.5 needs."""
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "4.57.6" if name == "transformers" else real(name)
    )
    model = tmp_path / "qwen3_5"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen3_5"}))
    status = unitune(
        ["infer", "--model", str(model), "--out-dir", str(tmp_path / "o"), str(_hmer(tmp_path, 1))]
    )
    assert status == 2
    assert "is a Qwen3.5 model (qwen3_5); it needs transformers >= 5.2.0" in caplog.text


def test_shards_and_batch_size_do_not_change_samples(tiny_model_dir, tmp_path):
    """Each record is seeded from (seed, id): two shards, or another batch size, give the same samples."""
    hmer = _hmer(tmp_path, 5)

    def samples(out: str, shard=None, batch_size=8) -> dict:
        settings = InferenceSettings(
            model=str(tiny_model_dir),
            backend="hf",
            sampling={"max_new_tokens": 6, "temperature": 1.0, "n": 2, "seed": 3},
            shard=shard,
            backend_options={"batch_size": batch_size},
            progress=False,
        )
        run_inference([hmer], tmp_path / out, settings)
        return {
            (x["id"], x["sample_index"]): x["pred"]
            for x in _lines(tmp_path / out / "hmer_demo_test_infer.jsonl")
        }

    whole = samples("whole")
    first, second = samples("s0", (0, 2)), samples("s1", (1, 2), batch_size=1)
    assert sorted({i for i, _ in first}) == ["h000", "h002", "h004"]
    assert {**first, **second} == whole and len(whole) == 10
    assert len(set(whole.values())) > 1  # really sampled
    with pytest.raises(UserError, match="other settings.*shard"):
        samples("s0", (1, 2))
