"""Qwen3-VL end to end on the tiny model: the real `llamafactory-cli train` + `export` with the Qwen3-VL recipe,
then `unitune infer --backend hf`, `make eval-all` and a 2-step GRPO run on the exported folder.

:func:`train_export_serve` is the whole run for one family; tests/test_qwen3_5_pipeline.py runs it on Qwen3.5."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from test_llamafactory_train import REPO, _cli, _hmer_dataset

import trl_grpo.train as T
from evaluators.cli import main as unitune
from evaluators.model_family import get_family
from llamafactory_ext.hmer.prompts import human_prompt

# CPU-sized overrides of the 2B recipes; template, full fine-tune and the rest are the recipe's.
CPU_OVERRIDES = [
    "deepspeed=null",
    "bf16=false",
    "max_steps=2",
    "per_device_train_batch_size=2",
    "gradient_accumulation_steps=1",
    "image_max_pixels=16384",
    "preprocessing_num_workers=1",
    "dataloader_num_workers=0",
    "save_steps=100",
    "cutoff_len=512",
    "warmup_ratio=0",
    "learning_rate=1e-3",
    "overwrite_cache=true",
]


def _test_set(folder, n=2):
    from PIL import Image

    folder.mkdir()
    records = []
    for i in range(n):
        Image.new("RGB", (96, 48), "white").save(folder / f"t{i}.png")
        records.append(
            {
                "images": [f"t{i}.png"],
                "messages": [
                    {"from": "human", "value": human_prompt("vanilla")},
                    {"from": "gpt", "value": f"x ^ {{ {i} }}"},
                ],
            }
        )
    path = folder / "crohme_2014.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def train_export_serve(family_name: str, tiny_dir: Path, recipe: str, export_recipe: str, tmp_path: Path):
    """Train ``tiny_dir`` 2 steps with ``recipe``, export it with ``export_recipe``, then infer, eval-all and GRPO."""
    family = get_family(family_name)
    data = _hmer_dataset(tmp_path / "data", n=4)
    out = tmp_path / "sft"
    _cli(
        "train",
        recipe,
        f"model_name_or_path={tiny_dir}",
        f"dataset_dir={data}",
        "dataset=demo_vanilla,demo_tree",
        f"output_dir={out}",
        *CPU_OVERRIDES,
        cwd=REPO,
    )
    logs = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in logs if "loss" in row]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses

    exported = tmp_path / "exported"
    _cli(
        "export",
        export_recipe,
        f"model_name_or_path={out}",
        f"export_dir={exported}",
        cwd=REPO,
    )
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == family.model_types[0] and config["architectures"] == [family.hf_class]
    from safetensors.torch import load_file

    before, after = (
        load_file(tiny_dir / "model.safetensors"),
        load_file(exported / "model.safetensors"),
    )
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k].to(before[k].dtype)) for k in before), (
        "export holds untrained weights"
    )

    test_set = _test_set(tmp_path / "bench")
    infer_out = tmp_path / "infer"
    argv = ["infer", "--backend", "hf", "--model", str(exported), "--out-dir", str(infer_out), str(test_set)]
    assert unitune([*argv, "--max-new-tokens", "4", "--no-progress"]) == 0
    meta = json.loads((infer_out / "crohme_2014_infer.meta.json").read_text())
    # the family's default: no system turn, as the *_nothink template trained
    assert family.default_system is None and meta["system_prompt"] is None
    preds = json.loads((infer_out / "crohme_2014_pred.json").read_text())
    assert [p["gt"] for p in preds] == ["x ^ { 0 }", "x ^ { 1 }"]
    assert all(isinstance(p["pred"], str) for p in preds)

    suite = tmp_path / "bench" / "suite.yaml"
    suite.write_text(
        "paper_model: test\ninfer: {max_new_tokens: 4}\n"
        "datasets:\n  - {name: CROHME 2014, task: hmer, input: crohme_2014.json, paper: 82.05}\n",
        encoding="utf-8",
    )
    # the README's own command, on this interpreter's venv (-o: never reinstall)
    eval_out = tmp_path / "eval_all"
    venv = Path(sys.executable).parent.parent
    make = ["make", "-o", str(venv / ".unitune-installed"), f"VENV={venv}", "eval-all"]
    args = [f"MODEL={exported}", f"CONFIG={suite}", f"OUT={eval_out}", "ARGS=--no-progress"]
    done = subprocess.run([*make, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((eval_out / "summary.json").read_text())
    assert [(d["name"], d["status"]) for d in summary["datasets"]] == [("CROHME 2014", "ok")]

    # GRPO (2 steps, CPU smoke settings) starting from the exported model
    grpo_out = tmp_path / "grpo"
    script, targs, model_args, mixture = T.parse_args(
        [str(a) for a in ("--config", REPO / "recipes" / "unimumer_grpo.yaml", "--smoke", "--tiny_model", "false",
                          "--model_name_or_path", exported, "--output_dir", grpo_out)]
    )  # fmt: skip
    trainer = T.train(script, targs, model_args, mixture)
    assert type(trainer.model).__name__ == family.hf_class
    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert len(steps) == 2 and all(math.isfinite(log["loss"]) for log in steps), steps
    assert any(log["grad_norm"] > 0 for log in steps), steps


@pytest.mark.slow
def test_qwen3_vl_recipe_trains_exports_and_serves(tiny_qwen3_vl_dir, tmp_path):
    train_export_serve(
        "qwen3_vl",
        tiny_qwen3_vl_dir,
        "recipes/unimumer_qwen3vl_2b.yaml",
        "recipes/unimumer_qwen3vl_export.yaml",
        tmp_path,
    )
