"""The GRPO entry point: TRL-native recipes and CLI, data/rewards/freezing, the compat shim, real GRPO runs."""

from __future__ import annotations

import json
import math
import os
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
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def parse(*argv):
    return T.parse_args([str(a) for a in argv])


def parse_cpu(recipe, *argv):
    """A recipe parsed on this CPU machine: bf16 and DeepSpeed off (TrainingArguments checks both at parse time)."""
    return parse("--config", recipe, "--bf16", "false", "--deepspeed", "None", *argv)


# --------------------------------------------------------------------------------------------------------------
# Recipes and configuration (fast)
# --------------------------------------------------------------------------------------------------------------


def test_unifer_recipe_reproduces_unifers_step():
    script, args, model, _ = parse_cpu(UNIFER)
    raw = yaml.safe_load(UNIFER.read_text())
    assert raw["bf16"] is True and raw["deepspeed"] == "recipes/deepspeed/ds_z3.json"
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
        "gradient_checkpointing": True,
        "max_prompt_length": None,
        "use_vllm": True,
        "vllm_importance_sampling_correction": False,  # R1-V has none
        "save_only_model": False,  # resume needs the optimizer state
        "reward_weights": [1.0, 1.0],
    }
    assert {k: getattr(args, k) for k in expected} == expected
    # UniFER: 7 GPUs x 1 prompt x G 8 x grad-accum 4 = 28 prompts = 224 completions per optimizer step.
    completions = args.per_device_train_batch_size * 7 * args.gradient_accumulation_steps
    assert completions == 224 and completions // args.num_generations == 28
    assert (
        args.generation_batch_size == args.per_device_train_batch_size * args.steps_per_generation
    )  # 1 process
    text = UNIFER.read_text()
    for n, per_device, accum in [(8, 4, 7), (4, 8, 7), (2, 8, 14), (1, 8, 28), (16, 2, 7)]:
        assert per_device * n * accum == 224
        assert f"N={n}: {per_device} x {n} x {accum}" in text  # the formula table in the recipe
    assert script.reward_funcs == [
        "trl_grpo.rewards.fer_accuracy_reward",
        "trl_grpo.rewards.think_answer_format_reward",
    ]
    assert script.task == "fer" and model.dtype == "bfloat16" and model.use_peft is False
    assert args.resume_from_checkpoint is True


def test_unimumer_recipe_trains_on_the_edit_score():
    script, args, _, _ = parse_cpu(UNIMUMER)
    weights = dict(zip((n.rpartition(".")[2] for n in script.reward_funcs), args.reward_weights, strict=True))
    assert weights == {"hmer_edit_score_reward": 1.0, "hmer_exact_match_reward": 0.0}
    assert script.task == "hmer" and script.image_max_pixels == 262144


@pytest.mark.parametrize("recipe", [UNIFER, UNIMUMER], ids=lambda p: p.name)
def test_recipe_keys_are_trl_fields_and_rewards_load(recipe):
    from trl import GRPOConfig, ModelConfig
    from trl.scripts.grpo import GRPOScriptArguments as TrlScriptArguments

    fields = set()
    for cls in (GRPOConfig, ModelConfig, T.GRPOScriptArguments):
        fields |= set(cls.__dataclass_fields__)
    cfg = yaml.safe_load(recipe.read_text())
    assert set(cfg) <= fields
    # Only unitune's own fields are outside `trl grpo`'s dataclasses (it ignores them).
    trl_fields = set(GRPOConfig.__dataclass_fields__) | set(ModelConfig.__dataclass_fields__)
    trl_fields |= set(TrlScriptArguments.__dataclass_fields__)
    assert set(cfg) - trl_fields <= {"task", "freeze_vision_tower", "freeze_projector", "image_max_pixels"}
    for name in cfg["reward_funcs"]:
        assert callable(T.load_reward(name))
    ds = json.loads((REPO / cfg["deepspeed"]).read_text())
    assert ds["zero_optimization"]["stage"] == 3


def test_smoke_then_command_line_precedence(tmp_path):
    script, args, model, _ = parse(
        "--config",
        UNIFER,
        "--smoke",
        "--max_steps",
        "5",
        "--output_dir",
        tmp_path,
        "--max_prompt_length",
        "None",
    )
    assert script.tiny_model and script.synthetic_data and args.use_cpu and not args.use_vllm
    assert args.deepspeed is None and args.bf16 is False and model.dtype == "float32"
    assert args.max_steps == 5  # the command line wins over --smoke
    assert args.num_generations == 2 and args.beta == 0.04  # smoke's, then the recipe's
    assert args.output_dir == str(tmp_path) and args.max_prompt_length is None
    _, args, _, _ = parse("--config", UNIFER, "--smoke")
    assert args.output_dir == "saves/smoke/unifer_grpo" and args.max_steps == 2
    assert (
        args.report_to == []
    )  # smoke's `--report_to none` is the word, not None (transformers refuses [None])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--not_a_field", "1"], r"unknown field\(s\) \['--not_a_field'\]"),
        (["grpo.max_steps=2"], "use TRL's form --max_steps 2"),
        (["--num_generations", "1"], "at least 2 generations"),  # GRPOConfig's own check
        (["--task", "ocr"], "task: expected one of"),
        (["--reward_kwargs", "{trl_grpo.rewards.nope: {a: 1}}"], "is not one of reward_funcs"),
        (["--dataset_weights", "-1"], "non-negative"),
    ],
)
def test_config_errors_are_user_errors(argv, message):
    with pytest.raises(UserError, match=message):
        parse("--config", UNIFER, "--smoke", *argv)


def test_recipe_file_errors(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("grpo: {beta: 0.1}\nrewards: [trl_grpo.rewards.fer_accuracy_reward]\n")
    with pytest.raises(UserError, match=r"sections \['rewards', 'grpo'\] are the old trl_grpo layout"):
        parse("--config", old)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("bf16: false\nbeta: 0.1\nbetta: 0.2\n")
    with pytest.raises(UserError, match=r"unknown field\(s\) \['--betta'\]"):
        parse("--config", unknown)
    with pytest.raises(UserError, match="no such file"):
        parse("--config", tmp_path / "missing.yaml")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("beta: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="invalid YAML"):  # yaml.safe_load refuses python tags
        parse("--config", unsafe)


def test_load_reward_and_factories():
    func = T.load_reward(
        "trl_grpo.rewards.make_hmer_edit_score_reward", {"extract_mode": "raw", "name": "ed"}
    )
    assert func.__name__ == "ed" and func(["a b"], ["a b"]) == [1.0]
    assert T.load_reward("think_format_reward").__name__ == "think_format_reward"  # a trl.rewards name
    for name, message in [
        ("trl_grpo.rewards.no_such_reward", "cannot import"),
        ("no_such_module.reward", "cannot import"),
        ("trl_grpo.rewards.TASK_FER", "not a callable"),
    ]:
        with pytest.raises(UserError, match=message):
            T.load_reward(name)
    with pytest.raises(UserError, match="reward_kwargs of"):
        T.load_reward("trl_grpo.rewards.make_hmer_edit_score_reward", {"bogus": 1})
    script, _, _, _ = parse_cpu(
        UNIMUMER,
        "--reward_kwargs",
        '{"trl_grpo.rewards.hmer_edit_score_reward": {}}',
    )
    assert script.reward_kwargs == {"trl_grpo.rewards.hmer_edit_score_reward": {}}


def test_resolve_checkpoint(tmp_path):
    assert T.resolve_checkpoint(True, tmp_path / "none") is None
    (tmp_path / "checkpoint-3").mkdir()
    assert T.resolve_checkpoint("true", tmp_path) == str(tmp_path / "checkpoint-3")
    assert T.resolve_checkpoint(str(tmp_path / "checkpoint-3"), "x") == str(tmp_path / "checkpoint-3")
    with pytest.raises(UserError, match="not a checkpoint folder"):
        T.resolve_checkpoint(str(tmp_path / "checkpoint-9"), tmp_path)


def test_main_returns_2_on_a_user_error(tmp_path, caplog):
    assert T.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in caplog.text


# --------------------------------------------------------------------------------------------------------------
# Data mixtures, eval sets, freezing (fast)
# --------------------------------------------------------------------------------------------------------------


def _folder(tmp_path, name, task, n, eval_rows=0):
    """A dataset folder written by the real converter (synthetic rows of ``task``)."""
    from evaluators.io_utils import read_records
    from trl_grpo.rlvr_data import convert_records, write_synthetic_rlvr

    out = tmp_path / name
    raw = write_synthetic_rlvr(tmp_path / f"raw_{name}", task=task, n=n)
    convert_records(read_records(raw), out, raw.parent, task=task, image_size=32)
    if eval_rows:
        raw = write_synthetic_rlvr(tmp_path / f"raw_{name}_eval", task=task, n=eval_rows, seed=3)
        convert_records(read_records(raw), out, raw.parent, task=task, image_size=32, split="test")
    return out


def test_weighted_mixture_and_eval_sets(tmp_path):
    fer = _folder(tmp_path, "fer", "fer", 6, eval_rows=2)
    hmer = _folder(tmp_path, "hmer", "hmer", 4)
    script, _, _, mixture = parse(
        "--config", UNIFER, "--smoke", "--dataset_weights", "0.5", "2.5", "--eval_datasets", hmer
    )
    mixture.datasets = [T.DatasetConfig(path=str(fer)), T.DatasetConfig(path=str(hmer))]
    train, evals = T.load_datasets(script, mixture, seed=0)
    assert train.num_rows == 3 + 10  # round(0.5 x 6) + round(2.5 x 4)
    assert train["task"].count("fer") == 3 and train["task"].count("hmer") == 10
    assert len(set(train.filter(lambda r: r["task"] == "hmer")["solution"])) == 4  # every HMER row, repeated
    assert evals.num_rows == 4 and set(evals["task"]) == {"hmer"}  # eval_datasets
    # dataset_name: its `test` split is the eval set.
    script, _, _, mixture = parse_cpu(UNIFER, "--dataset_name", fer)
    train, evals = T.load_datasets(script, mixture)
    assert (train.num_rows, evals.num_rows) == (6, 2)
    # test_split_size splits the mixture.
    script, _, _, mixture = parse_cpu(UNIFER, "--test_split_size", "0.5")
    mixture.datasets = [T.DatasetConfig(path=str(fer))]
    train, evals = T.load_datasets(script, mixture)
    assert (train.num_rows, evals.num_rows) == (3, 3)


def test_mixture_errors(tmp_path):
    fer = _folder(tmp_path, "fer", "fer", 2)
    script, _, _, mixture = parse_cpu(UNIFER, "--dataset_weights", "1", "1")
    mixture.datasets = [T.DatasetConfig(path=str(fer))]
    with pytest.raises(UserError, match="2 weight"):
        T.load_datasets(script, mixture)
    mixture.datasets = [T.DatasetConfig(path=str(fer)), T.DatasetConfig(path=str(fer), columns=["prompt"])]
    with pytest.raises(UserError, match=r"other columns or types .*differ: \["):
        T.load_datasets(script, mixture)
    script, _, _, mixture = parse_cpu(UNIFER, "--dataset_name", tmp_path / "nope")
    with pytest.raises(UserError, match="dataset_name: cannot load"):
        T.load_datasets(script, mixture)
    script, _, _, mixture = parse_cpu(UNIFER, "--dataset_name", fer, "--dataset_train_split", "dev")
    with pytest.raises(UserError, match=r"'dev' is not a split .*\['train'\]"):
        T.load_datasets(script, mixture)


def test_freeze_vision(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    frozen = T.freeze_vision(model, tower=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert frozen > 0
    assert not any("visual" in n and "merger" not in n for n in trainable)
    assert any("visual.merger" in n for n in trainable) and any("language_model" in n for n in trainable)
    T.freeze_vision(model, projector=True)
    assert not any("visual" in n for n, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(UserError, match="has no `visual` module"):
        T.freeze_vision(model.model.language_model, tower=True)


def test_default_lora_targets_only_the_language_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=T._LM_LINEAR))
    lora = {name.rpartition(".lora_A")[0] for name, _ in peft_model.named_parameters() if ".lora_A." in name}
    assert lora and all("language_model" in name and "visual" not in name for name in lora)
    assert len(lora) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)


def test_vision_placeholders_are_never_sampled(tiny_model_dir, tmp_path):
    """transformers generation gets the image / video pad ids as suppress_tokens; the user's own stay; vLLM untouched."""
    from transformers import AutoTokenizer

    from evaluators.model_family import DEFAULT_FAMILY

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pads = [tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")]
    _, args, _, _ = parse("--config", UNIMUMER, "--smoke", "--output_dir", tmp_path)
    args.generation_kwargs = {"suppress_tokens": [5], "num_beams": 1}
    assert T.suppress_placeholders(args, tokenizer, DEFAULT_FAMILY) == pads
    assert args.generation_kwargs == {"suppress_tokens": [5, *pads], "num_beams": 1}
    assert T.suppress_placeholders(args, tokenizer, DEFAULT_FAMILY) == []  # already there
    args.use_vllm, args.generation_kwargs = True, None
    assert T.suppress_placeholders(args, tokenizer, DEFAULT_FAMILY) == [] and args.generation_kwargs is None


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


def test_compat_warnings_issued_lets_trl_024_build_the_trainer(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import PreTrainedModel
    from trl import GRPOTrainer

    from trl_grpo.compat import give_models_warnings_issued
    from trl_grpo.rewards import fer_accuracy_reward

    monkeypatch.delattr(PreTrainedModel, "warnings_issued", raising=False)  # what `import trl_grpo` adds
    model, args, data = _tiny_grpo_parts(tiny_model_dir, tmp_path)
    assert not hasattr(model, "warnings_issued")  # transformers >= 5.1 (the pinned 5.2) dropped it
    with pytest.raises(AttributeError, match="warnings_issued"):
        GRPOTrainer(model=model, reward_funcs=fer_accuracy_reward, args=args, train_dataset=data)
    assert ensure_warnings_issued(model) is True
    trainer = GRPOTrainer(model=model, reward_funcs=fer_accuracy_reward, args=args, train_dataset=data)
    assert trainer.model.warnings_issued == {"estimate_tokens": True}
    assert ensure_warnings_issued(trainer.model) is False  # already there: nothing to do

    # a model GRPOTrainer loads itself (`trl grpo`, a model id): the class-level attribute `import trl_grpo` adds
    other, _, _ = _tiny_grpo_parts(tiny_model_dir, tmp_path)
    assert give_models_warnings_issued() is True and give_models_warnings_issued() is False
    assert GRPOTrainer(model=other, reward_funcs=fer_accuracy_reward, args=args, train_dataset=data)


# --------------------------------------------------------------------------------------------------------------
# Real GRPO runs (slow): accelerate launch + the recipe, TRL's own `trl grpo` CLI, a weighted FER+HMER mixture
# --------------------------------------------------------------------------------------------------------------


def _log_steps(state):
    return [log for log in state["log_history"] if "loss" in log]


@pytest.mark.slow
def test_accelerate_launch_recipe_eval_frozen_tower_then_resume(tmp_path, monkeypatch):
    """`accelerate launch -m trl_grpo.train --config recipes/unifer_grpo.yaml --smoke` with eval and a frozen
    vision tower; then a re-run with resume_from_checkpoint: true continues at step 3 with the saved optimizer."""
    import torch
    from safetensors.torch import load_file
    from trl import GRPOTrainer

    out = tmp_path / "run"
    common = ["--config", UNIFER, "--smoke", "--output_dir", out, "--freeze_vision_tower", "true"]
    common += [
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "2",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "-m", "trl_grpo.train"]
        + [str(a) for a in common],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    steps = _log_steps(state)
    assert [log["step"] for log in steps] == [1, 2] and all(math.isfinite(log["loss"]) for log in steps)
    assert {"rewards/fer_accuracy_reward/mean", "rewards/think_answer_format_reward/mean"} <= set(steps[0])
    evals = [log for log in state["log_history"] if "eval_loss" in log]
    assert len(evals) == 1 and evals[0]["step"] == 2
    assert {"eval_rewards/fer_accuracy_reward/mean", "eval_rewards/think_answer_format_reward/mean"} <= set(
        evals[0]
    )

    before = load_file(out / "tiny_model" / "model.safetensors")
    after = load_file(out / "model.safetensors")
    vision = [k for k in before if "visual" in k and "merger" not in k]
    language = [k for k in before if "visual" not in k and "lm_head" not in k]  # saved as model.layers.*
    assert vision and all(torch.equal(before[k], after[k]) for k in vision), "the frozen vision tower changed"
    assert any(not torch.equal(before[k], after[k]) for k in language), "no language weight changed"

    # Resume: same command, one more step. Spy on what the trainer restores and how many steps it runs.
    seen = {"optimizer_equal": None, "steps": 0}
    load, step = GRPOTrainer._load_optimizer_and_scheduler, GRPOTrainer.training_step

    def spy_load(self, checkpoint):
        load(self, checkpoint)
        saved = torch.load(os.path.join(checkpoint, "optimizer.pt"), weights_only=True)["state"]
        live = self.optimizer.state_dict()["state"]
        seen["checkpoint"] = checkpoint
        seen["optimizer_equal"] = bool(saved) and all(
            torch.equal(saved[i]["exp_avg"], live[i]["exp_avg"].cpu()) for i in saved
        )

    def spy_step(self, *args, **kwargs):
        seen["steps"] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "_load_optimizer_and_scheduler", spy_load)
    monkeypatch.setattr(GRPOTrainer, "training_step", spy_step)
    monkeypatch.chdir(REPO)
    trainer = T.train(*parse(*common, "--max_steps", "3", "--eval_strategy", "no"))
    assert seen["checkpoint"] == str(out / "checkpoint-2")
    assert seen["optimizer_equal"] is True, "the optimizer state was not restored"
    assert seen["steps"] == 1 and trainer.state.global_step == 3  # steps 1-2 were not re-run
    assert [log["step"] for log in trainer.state.log_history if "loss" in log] == [1, 2, 3]


@pytest.mark.slow
def test_trl_grpo_cli_on_a_fer_rlvr_folder_with_the_recipe(tmp_path, tiny_model_dir):
    """TRL's own `trl grpo --config recipes/unifer_grpo.yaml` on a `unitune data fer-rlvr` folder, rewards by path."""
    from evaluators.cli import main as unitune
    from trl_grpo.rlvr_data import write_synthetic_rlvr

    raw = write_synthetic_rlvr(tmp_path / "raw", task="fer", n=4)
    qa = [  # a held-out FERBench QA file becomes the `test` split
        {
            "image_path": "/images/fer_000.png",
            "true_label": "happiness",
            "prompt": "Which expression? candidate labels: happiness, sadness. Answer in <answer></answer>.",
            "candidate_labels": ["happiness", "sadness"],
        }
    ] * 2
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    data = tmp_path / "grpo_data"
    argv = ["data", "fer-rlvr", str(raw), "--image-root", str(raw.parent), "--out", str(data)]
    assert unitune([*argv, "--eval", str(tmp_path / "qa.json")]) == 0

    out = tmp_path / "out"
    overrides = {
        "model_name_or_path": tiny_model_dir,
        "dataset_name": data,
        "output_dir": out,
        "deepspeed": "",
        "use_cpu": "true",
        "bf16": "false",
        "use_vllm": "false",
        "gradient_checkpointing": "false",
        "max_steps": 2,
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 8,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "save_steps": 2,
    }
    cli = [str(REPO / ".venv" / "bin" / "trl")] if (REPO / ".venv" / "bin" / "trl").exists() else ["trl"]
    cmd = [*cli, "grpo", "--config", str(UNIFER)] + [
        str(x) for k, v in overrides.items() for x in (f"--{k}", v)
    ]
    result = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    steps = _log_steps(state)
    assert len(steps) == 2 and "rewards/fer_accuracy_reward/mean" in steps[0]
    evals = [log for log in state["log_history"] if "eval_loss" in log]
    assert evals and "eval_rewards/think_answer_format_reward/mean" in evals[0]
    assert (out / "model.safetensors").is_file()


# Gold LaTeX built from the few tokens generation is restricted to, so rewards differ between completions.
_HMER_GOLD = ["x ^ { 2 }", "x ^ { x }", "{ 2 } ^ x", "x x 2"]
_ALLOWED_TEXT = [
    " x",
    " ^",
    " {",
    " ",
    "2",
    " }",
    "x",
]  # Qwen's pre-tokenizer splits digits: " 2" is " ", "2"


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


def _convert_mixed(tmp_path):
    """The mixed records, converted per task by the real converter into two dataset folders."""
    from trl_grpo.rlvr_data import convert_records

    records = _mixed_rlvr(tmp_path)
    return [
        convert_records([r for r in records if r["task"] == task], tmp_path / task, tmp_path, task=task)
        for task in ("hmer", "fer")
    ]


@pytest.mark.slow
def test_real_grpo_on_a_weighted_fer_hmer_mixture(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    allowed = {tok.convert_tokens_to_ids("<|im_end|>")}
    for text in _ALLOWED_TEXT:
        ids = tok.encode(text)
        assert len(ids) == 1, text
        allowed |= set(ids)
    suppress = [i for i in range(len(tok)) if i not in allowed]

    hmer, fer = _convert_mixed(tmp_path)
    script, args, model, mixture = parse(
        "--config", UNIMUMER, "--smoke", "--tiny_model", "false", "--model_name_or_path", tiny_model_dir,
        "--synthetic_data", "false", "--output_dir", tmp_path / "out", "--dataset_weights", "1", "1",
        "--per_device_train_batch_size", "8", "--max_completion_length", "8",
        "--reward_funcs", "trl_grpo.rewards.hmer_edit_score_reward", "trl_grpo.rewards.hmer_exact_match_reward",
        "trl_grpo.rewards.fer_accuracy_reward", "trl_grpo.rewards.think_answer_format_reward",
        "--reward_weights", "1", "0.5", "1", "1",
    )  # fmt: skip
    mixture.datasets = [T.DatasetConfig(path=str(hmer)), T.DatasetConfig(path=str(fer))]
    args.generation_kwargs = {"suppress_tokens": suppress}
    trainer = T.train(script, args, model, mixture)

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
    assert [n for n, p in after.items() if not torch.equal(p, before[n])], (
        "no weight changed after 2 GRPO steps"
    )
    assert json.loads((tmp_path / "out" / "trainer_state.json").read_text())["global_step"] == 2


def test_readme_launch_lines_parse():
    """Every `-m trl_grpo.train` line of the README parses (CPU adjustments appended: no bf16/DeepSpeed here)."""
    import re
    import shlex

    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = [" ".join(line.split()) for line in re.sub(r"\\\n\s*", " ", text).splitlines()]
    launches = [
        line.split("-m trl_grpo.train", 1)[1].split("#")[0] for line in lines if "-m trl_grpo.train " in line
    ]
    assert len(launches) >= 5
    for line, args in zip([line for line in lines if "-m trl_grpo.train " in line], launches, strict=True):
        argv = shlex.split(args) + ["--bf16", "false", "--deepspeed", "None", "--load_in_4bit", "false"]
        gpus = int(re.search(r"--num_processes (\d+)", line).group(1)) if "--num_processes" in line else 7
        if gpus > 1:  # this machine has one process: pin the generation batch the real GPU count gives
            argv += ["--generation_batch_size", "224"]
        _, training, model, _ = T.parse_args(argv)
        assert training.num_generations == 8, args
        if gpus > 1:  # UniFER's step: 224 completions = 28 prompts x G 8
            assert (
                training.per_device_train_batch_size * gpus * training.gradient_accumulation_steps == 224
            ), line
