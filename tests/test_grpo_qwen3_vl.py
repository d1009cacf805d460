"""GRPO (TRL) on the tiny Qwen3-VL through the same entry point, recipes and rewards as Qwen2.5-VL.

:func:`two_grpo_steps` is the run for one family; tests/test_grpo_qwen3_5.py runs it on Qwen3.5."""

from __future__ import annotations

import math

import pytest

from evaluators.errors import UserError
from trl_grpo import train as T

UNIMUMER = T.REPO_ROOT / "recipes" / "unimumer_grpo.yaml"


def test_freezing_the_projector_includes_the_deepstack_mergers(tiny_qwen3_vl_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen3_vl_dir)
    frozen = T.freeze_vision(model, projector=True)
    names = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == len(names) and names
    assert any("deepstack_merger_list" in n for n in names) and any(".merger." in n for n in names)
    assert not any(".blocks." in n for n in names)  # the tower itself still trains


def test_unknown_tiny_family_is_a_user_error():
    with pytest.raises(UserError, match="tiny_model_family: expected one of"):
        T.parse_args(["--config", str(UNIMUMER), "--smoke", "--tiny_model_family", "llava"])


def two_grpo_steps(family_name: str, tmp_path) -> None:
    """2 GRPO steps (smoke settings) on the tiny model of ``family_name``: finite losses, rewards, moved weights."""
    import torch
    from safetensors.torch import load_file

    from evaluators.model_family import get_family

    script, args, model_args, mixture = T.parse_args(
        [str(a) for a in ("--config", UNIMUMER, "--smoke", "--tiny_model_family", family_name,
                          "--output_dir", tmp_path / "out")]
    )  # fmt: skip
    trainer = T.train(script, args, model_args, mixture)

    assert type(trainer.model).__name__ == get_family(family_name).hf_class
    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert len(steps) == 2 and trainer.state.global_step == 2
    assert all(math.isfinite(log["loss"]) for log in steps)
    assert all("rewards/hmer_edit_score_reward/mean" in log for log in steps)
    assert any(log["grad_norm"] > 0 for log in steps), steps  # a learning signal, not weight decay alone
    before = load_file(tmp_path / "out" / "tiny_model" / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "no weight changed after 2 GRPO steps"


@pytest.mark.slow
def test_two_grpo_steps_on_tiny_qwen3_vl(tmp_path):
    two_grpo_steps("qwen3_vl", tmp_path)
