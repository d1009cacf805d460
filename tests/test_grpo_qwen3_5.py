"""GRPO (TRL) on the tiny Qwen3.5 through the same entry point, recipes and rewards as Qwen2.5-VL."""

from __future__ import annotations

import pytest
from test_grpo_qwen3_vl import two_grpo_steps

from trl_grpo import train as T


def test_freezing_the_projector_freezes_the_merger_alone(tiny_qwen3_5_dir):
    """Qwen3.5's vision tower has no DeepStack mergers: the projector is ``visual.merger``."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen3_5_dir)
    frozen = T.freeze_vision(model, projector=True)
    names = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == len(names) and names
    assert all(".visual.merger." in n for n in names), sorted(names)
    assert not any("deepstack" in n for n, _ in model.named_parameters())


@pytest.mark.slow
def test_two_grpo_steps_on_tiny_qwen3_5(tmp_path):
    two_grpo_steps("qwen3_5", tmp_path)
