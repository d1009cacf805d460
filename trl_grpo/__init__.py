"""GRPO rewards for FER and HMER in TRL's reward-function layout, and the GRPO entry point."""

from trl_grpo.compat import give_models_warnings_issued
from trl_grpo.rewards import (
    TASK_FER,
    TASK_HMER,
    fer_accuracy_reward,
    hmer_edit_score_reward,
    hmer_exact_match_reward,
    make_fer_accuracy_reward,
    make_hmer_edit_score_reward,
    make_hmer_exact_match_reward,
    make_hmer_within_edits_reward,
    think_answer_format_reward,
    unifer_accuracy_reward,
)

give_models_warnings_issued()  # trl <= 0.24 + transformers >= 5.1: see trl_grpo.compat

__all__ = [
    "TASK_FER",
    "TASK_HMER",
    "fer_accuracy_reward",
    "hmer_edit_score_reward",
    "hmer_exact_match_reward",
    "make_fer_accuracy_reward",
    "make_hmer_edit_score_reward",
    "make_hmer_exact_match_reward",
    "make_hmer_within_edits_reward",
    "think_answer_format_reward",
    "unifer_accuracy_reward",
]
