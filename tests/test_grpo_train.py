"""The GRPO entry point: recipes, overrides, the compat shim, and real GRPOTrainer runs on the tiny model."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from evaluators.errors import UserError
from trl_grpo import train as T
from trl_grpo.compat import ensure_warnings_issued

REPO = T.REPO_ROOT
UNIFER = REPO / "recipes" / "unifer_grpo.yaml"
UNIMUMER = REPO / "recipes" / "unimumer_grpo.yaml"


# --------------------------------------------------------------------------------------------------------------
# Recipes and config handling (fast)
# --------------------------------------------------------------------------------------------------------------


def test_unifer_recipe_holds_unifers_hyperparameters():
    grpo = T.resolve_config(UNIFER)["grpo"]
    expected = {
        "num_generations": 8,
        "temperature": 1.0,
        "beta": 0.04,
        "learning_rate": 1e-6,
        "lr_scheduler_type": "cosine",
        "weight_decay": 0.01,
        "max_grad_norm": 5.0,
        "max_completion_length": 1024,
        "num_train_epochs": 1,
        "loss_type": "grpo",
        "bf16": True,
        "gradient_checkpointing": True,
        "deepspeed": "recipes/deepspeed/ds_z3.json",
        "max_prompt_length": None,
        "use_vllm": True,
    }
    assert {k: grpo[k] for k in expected} == expected
    assert grpo["vllm_mode"] in ("colocate", "server")


@pytest.mark.parametrize("recipe", [UNIFER, UNIMUMER], ids=lambda p: p.name)
def test_recipe_fields_are_grpo_config_fields_and_rewards_load(recipe):
    from trl import GRPOConfig

    cfg = T.resolve_config(recipe)
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(cfg["grpo"]) <= fields
    assert set(T.resolve_config(recipe, smoke=True)["grpo"]) <= fields
    for spec in cfg["rewards"]:
        func, _ = T.load_reward(spec)
        assert callable(func)
    ds = json.loads((REPO / cfg["grpo"]["deepspeed"]).read_text())
    assert ds["zero_optimization"]["stage"] == 3


def test_unimumer_recipe_trains_on_the_edit_score():
    cfg = T.resolve_config(UNIMUMER)
    weights = {spec["func"].rpartition(".")[2]: spec["weight"] for spec in cfg["rewards"]}
    assert weights == {"hmer_edit_score_reward": 1.0, "hmer_exact_match_reward": 0.0}


def test_smoke_then_overrides_are_applied_in_order():
    cfg = T.resolve_config(UNIFER, smoke=True, overrides=["grpo.max_steps=5", "data.synthetic_rows=4"])
    assert (
        cfg["model"]["tiny"] is True and cfg["grpo"]["use_vllm"] is False and cfg["grpo"]["use_cpu"] is True
    )
    assert cfg["grpo"]["max_steps"] == 5 and cfg["data"]["synthetic_rows"] == 4
    assert "smoke" not in cfg
    assert "max_steps" not in T.resolve_config(UNIFER)["grpo"]


def test_build_grpo_config_smoke(tmp_path):
    cfg = T.resolve_config(
        UNIFER, smoke=True, overrides=[f"grpo.output_dir={tmp_path}", "grpo.learning_rate=1e-6"]
    )
    args = T.build_grpo_config(cfg)
    assert args.learning_rate == 1e-6  # "1e-6" is a str to PyYAML; coerced for float fields
    assert args.reward_weights == [1.0, 1.0]
    assert args.max_prompt_length is None
    assert args.num_generations == 2 and args.beta == 0.04 and args.loss_type == "grpo"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grpo.not_a_field=1"], r"unknown GRPOConfig field\(s\) \['not_a_field'\]"),
        (["grpo.reward_weights=[1, 2]"], "set `weight` on each entry"),
        (["rewards=[]"], "SECTION.KEY"),
        (["nonsense"], "expected KEY=VALUE"),
        (["trainer.x=1"], "expected SECTION.KEY"),
        (["grpo.num_generations=1"], "at least 2 generations"),
    ],
)
def test_config_errors_are_user_errors(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        cfg = T.resolve_config(UNIFER, smoke=True, overrides=[f"grpo.output_dir={tmp_path}", *overrides])
        T.build_grpo_config(cfg)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo: {beta: 0.1}\ntrainer: {}\n")
    with pytest.raises(UserError, match=r"unknown section\(s\) \['trainer'\]"):
        T.load_config(bad)
    bad.write_text("grpo: [unclosed\n")
    with pytest.raises(UserError, match="invalid YAML"):
        T.load_config(bad)
    with pytest.raises(UserError, match="no such file"):
        T.load_config(tmp_path / "missing.yaml")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("grpo: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="invalid YAML"):  # yaml.safe_load refuses python tags
        T.load_config(unsafe)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"func": "trl_grpo.rewards.no_such_reward"}, "cannot import"),
        ({"func": "no_such_module.reward"}, "cannot import"),
        ({"func": "trl_grpo.rewards.TASK_FER"}, "not a callable"),
        ({"func": "trl_grpo.rewards.fer_accuracy_reward", "weight": "heavy"}, "must be a number"),
        ({"func": "trl_grpo.rewards.fer_accuracy_reward", "wieght": 1}, r"unknown key\(s\) \['wieght'\]"),
        ({"weight": 1}, "needs `func: dotted.path`"),
    ],
)
def test_load_reward_errors(spec, message):
    with pytest.raises(UserError, match=message):
        T.load_reward(spec)


def test_main_returns_2_on_a_user_error(tmp_path, caplog):
    assert T.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in caplog.text


# --------------------------------------------------------------------------------------------------------------
# compat: trl <= 0.24 + transformers >= 5.1 (no `warnings_issued`)
# --------------------------------------------------------------------------------------------------------------


def _tiny_grpo_parts(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText
    from trl import GRPOConfig

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=4,
        report_to="none",
    )
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}], "solution": "sad"}] * 2)
    return model, args, data


def test_compat_warnings_issued_lets_trl_024_build_the_trainer(tiny_model_dir, tmp_path):
    from trl import GRPOTrainer

    from trl_grpo.rewards import fer_accuracy_reward

    model, args, data = _tiny_grpo_parts(tiny_model_dir, tmp_path)
    assert ensure_warnings_issued(model) is False  # transformers 4.57 sets it: nothing to do
    del model.warnings_issued  # what transformers >= 5.1 gives
    with pytest.raises(AttributeError, match="warnings_issued"):
        GRPOTrainer(model=model, reward_funcs=fer_accuracy_reward, args=args, train_dataset=data)
    assert ensure_warnings_issued(model) is True
    trainer = GRPOTrainer(model=model, reward_funcs=fer_accuracy_reward, args=args, train_dataset=data)
    assert trainer.model.warnings_issued == {"estimate_tokens": True}


# --------------------------------------------------------------------------------------------------------------
# Real GRPO runs
# --------------------------------------------------------------------------------------------------------------

# Gold LaTeX built from the few tokens generation is restricted to, so rewards differ between completions.
_HMER_GOLD = ["x ^ { 2 }", "x ^ { x }", "{ 2 } ^ x", "x x 2"]
_ALLOWED_TEXT = [" x", " ^", " {", " 2", " }", "x"]


def _mixed_rlvr(tmp_path):
    """4 HMER rows + 2 FER rows (a mixed batch), with tiny PIL images of assorted sizes."""
    from trl_grpo.rlvr_data import FER_PROBLEM, HMER_PROBLEM

    (tmp_path / "img").mkdir()
    records = []
    for i, gold in enumerate(_HMER_GOLD):
        Image.new("RGB", (40 + 30 * i, 50), (20 * i, 100, 200)).save(tmp_path / "img" / f"h{i}.png")
        records.append(
            {"problem": HMER_PROBLEM, "solution": gold, "image_path": f"img/h{i}.png", "task": "hmer"}
        )
    for i, label in enumerate(["happy", "sad"]):
        Image.new("RGB", (64, 64), (200, 50 * i, 0)).save(tmp_path / "img" / f"f{i}.png")
        problem = FER_PROBLEM.format(labels="angry, happy, sad")
        records.append(
            {
                "problem": problem,
                "solution": f"<answer>{label}</answer>",
                "image_path": f"img/f{i}.png",
                "task": "fer",
            }
        )
    return records


def _prepare_mixed(tmp_path):
    """Convert the mixed records with the real converter (per task), and merge them into one GRPO file."""
    from evaluators.io_utils import read_records, write_jsonl_atomic
    from trl_grpo.rlvr_data import convert_records

    records = _mixed_rlvr(tmp_path)
    rows = []
    for task in ("hmer", "fer"):
        part = convert_records(
            [r for r in records if r["task"] == task], tmp_path / "grpo", tmp_path, task=task
        )
        rows += [{**row, "image": str(part.parent / row["image"])} for row in read_records(part)]
    for row in rows:  # one schema for the mixed file
        row.setdefault("candidate_labels", [])
    return write_jsonl_atomic(tmp_path / "mixed.jsonl", rows)


@pytest.mark.slow
def test_real_grpo_two_steps_on_the_tiny_model(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    allowed = {tok.convert_tokens_to_ids("<|im_end|>")}
    for text in _ALLOWED_TEXT:
        ids = tok.encode(text)
        assert len(ids) == 1, text
        allowed |= set(ids)
    suppress = [i for i in range(len(tok)) if i not in allowed]

    cfg = T.resolve_config(
        UNIMUMER,
        smoke=True,
        overrides={
            "model.tiny": False,
            "model.name_or_path": str(tiny_model_dir),
            "data.synthetic": None,
            "data.path": str(_prepare_mixed(tmp_path)),
            "grpo.output_dir": str(tmp_path / "out"),
            "grpo.per_device_train_batch_size": 8,  # 4 prompts x G=2 per step
            "grpo.max_completion_length": 8,
            "grpo.generation_kwargs": {"suppress_tokens": suppress},
            "grpo.log_completions": False,
        },
    )
    cfg["rewards"] = [
        {"func": "trl_grpo.rewards.hmer_edit_score_reward", "weight": 1.0},
        {"func": "trl_grpo.rewards.hmer_exact_match_reward", "weight": 0.5},
        {"func": "trl_grpo.rewards.fer_accuracy_reward", "weight": 1.0},
        {"func": "trl_grpo.rewards.think_answer_format_reward", "weight": 1.0},
    ]
    trainer = T.train(cfg)

    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert len(steps) == 2 and trainer.state.global_step == 2
    for log in steps:
        assert math.isfinite(log["loss"])
        assert "rewards/hmer_edit_score_reward/mean" in log
        assert "rewards/fer_accuracy_reward/mean" in log  # NaN when a step held no FER row
    assert any(log["rewards/hmer_edit_score_reward/std"] > 0 for log in steps)  # rewards vary within groups
    assert any(log["frac_reward_zero_std"] < 1 for log in steps)
    assert any(log["grad_norm"] > 0 for log in steps)
    images = list(trainer._logs["images"])  # the last generation batch: one image per completion
    assert len(images) == 8 and all(imgs[0].size == (224, 224) for imgs in images)

    before = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).state_dict()
    after = trainer.model.state_dict()
    changed = [name for name, p in after.items() if not torch.equal(p, before[name])]
    assert changed, "no weight changed after 2 GRPO steps"
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


@pytest.mark.slow
def test_make_grpo_fer_smoke_command(tmp_path):
    """`make grpo-fer ARGS=--smoke` runs exactly this command (plus an output folder here)."""
    out = tmp_path / "smoke"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trl_grpo.train",
            "--config",
            str(UNIFER),
            "--smoke",
            f"grpo.output_dir={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [log for log in state["log_history"] if "loss" in log]
    assert len(logs) == 2
    assert all(math.isfinite(log["loss"]) for log in logs)
    assert {"rewards/fer_accuracy_reward/mean", "rewards/think_answer_format_reward/mean"} <= set(logs[0])
    assert (out / "model.safetensors").is_file()
    assert "fer_accuracy_reward" in str(yaml.safe_load(UNIFER.read_text())["rewards"])


def test_default_lora_targets_only_the_language_model(tiny_model_dir):
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, T._peft_config({"r": 4}))
    lora = {name.rpartition(".lora_A")[0] for name, _ in peft_model.named_parameters() if ".lora_A." in name}
    assert lora and all("language_model" in name and "visual" not in name for name in lora)
    assert len(lora) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    with pytest.raises(UserError, match="needs model.lora"):
        T._quantization_config("4bit", {"lora": None}, None)
