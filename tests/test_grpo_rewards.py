"""Reward functions of trl_grpo: hand-worked tables, TRL's calling contract, pickling, dotted paths, fuzzing."""

from __future__ import annotations

import importlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trl_grpo
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS
from trl_grpo import rewards as R


def conv(text):
    """A conversational completion as TRL passes it."""
    return [{"role": "assistant", "content": text}]


# --------------------------------------------------------------------------------------------------------------
# Hand-worked tables
# --------------------------------------------------------------------------------------------------------------

GOLD = "<answer> happiness </answer>"

UNIFER_ACCURACY_CASES = [
    # completion, solution, expected
    ("<think>smiling</think><answer>happiness</answer>", GOLD, 1.0),
    ("<think>x</think>\n<answer>  happiness\n</answer>", GOLD, 1.0),  # stripped
    ("<answer>Happiness</answer>", GOLD, 0.0),  # case-sensitive
    ("<ANSWER>happiness</ANSWER>", GOLD, 0.0),  # tags are case-sensitive: whole text compared
    ("<answer>happy</answer>", GOLD, 0.0),  # no synonyms
    ("happiness", GOLD, 1.0),  # no tags: the whole completion
    ("  happiness \n", GOLD, 1.0),
    ("<answer>happiness</answer><answer>sad</answer>", GOLD, 1.0),  # the FIRST span
    ("<answer>sad</answer><answer>happiness</answer>", GOLD, 0.0),
    ("<answer>happiness", GOLD, 0.0),  # unclosed: whole text
    ("", GOLD, 0.0),
    ("<answer>sad</answer>", "sad", 1.0),  # gold without tags is taken whole
    ("<answer></answer>", "<answer>  </answer>", None),  # empty gold: not scorable (no 1.0 for nothing)
]

FORMAT_CASES = [
    ("<think>a</think><answer>b</answer>", 1.0),
    ("<think>a\nb</think>\n\n<answer>\nsad\n</answer>", 1.0),
    ("<think></think><answer></answer>", 1.0),
    ("<answer>sad</answer>", 0.0),
    ("<think>a</think>", 0.0),
    (" <think>a</think><answer>b</answer>", 0.0),  # leading text
    ("<think>a</think><answer>b</answer>\n", 0.0),  # trailing text
    ("<think>a</think>x<answer>b</answer>", 0.0),  # text between the blocks
    ("<THINK>a</THINK><ANSWER>b</ANSWER>", 0.0),
    ("<answer>b</answer><think>a</think>", 0.0),
    ("", 0.0),
]

FER_ACCURACY_CASES = [
    # completion, solution, candidate_labels, expected
    ("<answer>happiness</answer>", GOLD, None, 1.0),
    ("<answer> HAPPINESS </answer>", GOLD, None, 1.0),  # case-folded
    ("<ANSWER>happiness</ANSWER>", GOLD, None, 1.0),  # tags case-insensitive (shared extractor)
    ("<answer>happy</answer>", GOLD, None, 1.0),  # strict synonym pair
    ("<answer>joy</answer>", GOLD, None, 0.0),  # UniFER-only synonym: rejected
    ("<think>happiness</think>", GOLD, None, 0.0),  # nothing read from the think text
    ("happiness", GOLD, None, 0.0),  # no answer span
    ("<answer>sad</answer><answer>happiness</answer>", GOLD, None, 1.0),  # the LAST span
    ("<answer>happiness</answer><answer>sad</answer>", GOLD, None, 0.0),
    ("<answer>the answer is happiness</answer>", GOLD, None, 0.0),
    ("<answer>angry</answer>", "anger", None, 1.0),  # bare gold label, synonym
    ("<answer>happiness</answer>", "happy", list(CANDIDATE_LABELS["ferplus"]), 1.0),
    ("<answer>happy</answer>", "<answer>happy</answer>", list(CANDIDATE_LABELS["sfew"]), 1.0),
    ("<answer>contempt</answer>", "happy", list(CANDIDATE_LABELS["sfew"]), 0.0),  # not a candidate
    ("<answer>contempt</answer>", "contempt", list(CANDIDATE_LABELS["affectnet"]), 1.0),
    ("<answer>contempt</answer>", "contempt", list(CANDIDATE_LABELS["rafdb"]), None),  # gold not a candidate
    ("<answer>x ^ { 2 }</answer>", "x ^ { 2 }", None, None),  # not a FER gold: does not apply
    ("<answer>sad</answer>", "", None, None),  # empty gold
]

HMER_CASES = [
    # completion, solution, exact, edit score (1 - d / max(len(gt), len(pred)))
    ("x ^ { 2 }", "x ^ { 2 }", 1.0, 1.0),
    ("  x  ^ {   2 } \n", "x ^ { 2 }", 1.0, 1.0),  # whitespace tokens only
    ("x ^ { 3 }", "x ^ { 2 }", 0.0, 0.8),  # 1 substitution / 5
    ("x ^ 2", "x ^ { 2 }", 0.0, 0.6),  # 2 deletions / 5
    ("x ^ { 2 } + 1", "x ^ { 2 }", 0.0, 5 / 7),  # 2 insertions / 7
    ("", "x ^ { 2 }", 0.0, 0.0),
    ("a b c d e", "x ^ { 2 }", 0.0, 0.0),  # 5 substitutions / 5
    ("x^{2}", "x ^ { 2 }", 0.0, 0.0),  # one token vs five: 5 edits / 5
    (
        "\\frac\n\ta (above)\n\tb (below)\n\\frac { a } { b }",
        "\\frac { a } { b }",
        1.0,
        1.0,
    ),  # CoT: last line
    ("first line\nx ^ { 3 }", "tree\nx ^ { 2 }", 0.0, 0.8),  # gold CoT target: last line too
    ("", "", None, None),  # empty gold: not scorable (no 1.0 for nothing)
    ("x", "  ", None, None),
]


def test_unifer_accuracy_table():
    completions = [c for c, _, _ in UNIFER_ACCURACY_CASES]
    solutions = [s for _, s, _ in UNIFER_ACCURACY_CASES]
    expected = [e for _, _, e in UNIFER_ACCURACY_CASES]
    assert R.unifer_accuracy_reward(completions, solutions) == expected
    assert R.unifer_accuracy_reward([conv(c) for c in completions], solution=solutions) == expected


def test_think_answer_format_table():
    completions = [c for c, _ in FORMAT_CASES]
    expected = [e for _, e in FORMAT_CASES]
    assert R.think_answer_format_reward(completions) == expected
    assert R.think_answer_format_reward([conv(c) for c in completions]) == expected


def test_fer_accuracy_table():
    completions = [c for c, _, _, _ in FER_ACCURACY_CASES]
    solutions = [s for _, s, _, _ in FER_ACCURACY_CASES]
    candidates = [k for _, _, k, _ in FER_ACCURACY_CASES]
    expected = [e for _, _, _, e in FER_ACCURACY_CASES]
    assert R.fer_accuracy_reward(completions, solutions, candidate_labels=candidates) == expected
    assert R.fer_accuracy_reward(
        [conv(c) for c in completions], solution=solutions, candidate_labels=candidates
    ) == (expected)


def test_fer_accuracy_gold_spelling_list_equals_every_ferbench_list():
    """Without a candidate column the reward equals the evaluator's protocol for every FERBench list."""
    answers = [
        "happy",
        "happiness",
        "sad",
        "sadness",
        "anger",
        "angry",
        "contempt",
        "joy",
        "neutral",
        "",
        "x",
    ]
    for dataset, labels in CANDIDATE_LABELS.items():
        for gold in labels:
            completions = [f"<answer>{a}</answer>" for a in answers]
            with_list = R.fer_accuracy_reward(
                completions, [gold] * len(answers), [list(labels)] * len(answers)
            )
            without = R.fer_accuracy_reward(completions, [gold] * len(answers))
            assert with_list == without, (dataset, gold)


def test_fer_accuracy_factory_fixed_list():
    reward = R.make_fer_accuracy_reward("rafdb")
    assert reward.__name__ == "fer_accuracy_reward_rafdb"
    completions = ["<answer>happy</answer>", "<answer>contempt</answer>", "<answer>contempt</answer>"]
    # The fixed list wins over the column: contempt is not a RAF-DB label, so that gold cannot be scored.
    assert reward(
        completions, ["happiness", "happiness", "contempt"], candidate_labels=[["contempt"]] * 3
    ) == [
        1.0,
        0.0,
        None,
    ]
    custom = R.make_fer_accuracy_reward(["pos", "neg"])
    assert custom.__name__ == "fer_accuracy_reward_custom"
    assert custom(["<answer>POS</answer>", "<answer>neg</answer>"], ["pos", "pos"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unknown dataset 'kdef'"):
        R.make_fer_accuracy_reward("kdef")
    with pytest.raises(ValueError, match="empty"):
        R.make_fer_accuracy_reward([])


def test_hmer_tables():
    completions = [c for c, _, _, _ in HMER_CASES]
    solutions = [s for _, s, _, _ in HMER_CASES]
    exact = [e for _, _, e, _ in HMER_CASES]
    edit = [e for _, _, _, e in HMER_CASES]
    assert R.hmer_exact_match_reward(completions, solutions) == exact
    assert R.hmer_edit_score_reward(completions, solutions) == pytest.approx(edit)
    assert R.hmer_edit_score_reward([conv(c) for c in completions], solution=solutions) == pytest.approx(edit)


def test_hmer_factories():
    raw = R.make_hmer_exact_match_reward("raw")
    auto = R.make_hmer_exact_match_reward()
    # Raw mode keeps every line: the CoT tree is part of the prediction.
    cot = "\\frac\n\ta (above)\n\\frac { a } { b }"
    assert raw([cot], ["\\frac { a } { b }"]) == [0.0]
    assert auto([cot], ["\\frac { a } { b }"]) == [1.0]
    assert R.make_hmer_edit_score_reward("raw")(["a\nb"], ["a b"]) == [1.0]
    within = R.make_hmer_within_edits_reward(2)
    assert within.__name__ == "hmer_within_2_edits_reward"
    assert within(["x ^ { 2 }", "x ^ 2", "x"], ["x ^ { 2 }"] * 3) == [1.0, 1.0, 0.0]  # d = 0, 2, 4
    with pytest.raises(ValueError, match="extract_mode"):
        R.make_hmer_edit_score_reward("first-line")
    with pytest.raises(ValueError, match="max_edits"):
        R.make_hmer_within_edits_reward(-1)


def test_mixed_batch_task_column():
    completions = ["<think>a</think><answer>sad</answer>", "x ^ { 2 }", "<answer>sad</answer>"]
    solutions = ["<answer>sad</answer>", "x ^ { 2 }", "sad"]
    task = ["fer", "hmer", None]  # a row without a task is scored by every reward
    assert R.fer_accuracy_reward(completions, solutions, task=task) == [1.0, None, 1.0]
    assert R.unifer_accuracy_reward(completions, solutions, task=task) == [1.0, None, 1.0]
    assert R.think_answer_format_reward(completions, task=task) == [1.0, None, 0.0]
    assert R.hmer_exact_match_reward(completions, solutions, task=task) == [None, 1.0, 0.0]
    assert R.hmer_edit_score_reward(completions, solutions, task=["FER", " HMER ", "ocr"]) == [
        None,
        1.0,
        None,
    ]


# --------------------------------------------------------------------------------------------------------------
# TRL's calling contract
# --------------------------------------------------------------------------------------------------------------

ALL_REWARDS = [
    R.unifer_accuracy_reward,
    R.think_answer_format_reward,
    R.fer_accuracy_reward,
    R.hmer_exact_match_reward,
    R.hmer_edit_score_reward,
    R.make_fer_accuracy_reward("sfew"),
    R.make_hmer_exact_match_reward("last-line"),
    R.make_hmer_edit_score_reward("raw"),
    R.make_hmer_within_edits_reward(1),
]
NEEDS_SOLUTION = [r for r in ALL_REWARDS if r is not R.think_answer_format_reward]


def _trl_kwargs(n):
    """Everything trl 0.24 and trl >= 1.0 pass besides completions and the dataset's `solution` column."""
    return {
        "prompts": [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}]] * n,
        "completion_ids": [[1, 2, 3]] * n,
        "image": [object()] * n,
        "problem": ["q"] * n,
        "trainer_state": object(),
        "log_extra": lambda *a, **k: pytest.fail("rewards must not log"),
        "log_metric": lambda *a, **k: pytest.fail("rewards must not log"),
        "environments": None,
        "some_future_kwarg": 42,
    }


@pytest.mark.parametrize("reward", ALL_REWARDS, ids=lambda r: r.__name__)
def test_extra_kwargs_are_ignored(reward):
    completions = [conv("<think>a</think><answer>sad</answer>"), conv("x ^ { 2 }")]
    solution = ["<answer>sad</answer>", "x ^ { 2 }"]
    plain = reward(completions=completions, solution=solution)
    assert reward(completions=completions, solution=solution, **_trl_kwargs(2)) == plain
    assert len(plain) == 2


@pytest.mark.parametrize("reward", ALL_REWARDS, ids=lambda r: r.__name__)
def test_pickle_roundtrip_keeps_name_and_behaviour(reward):
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == reward.__name__
    completions = ["<answer>sad</answer>", "x ^ { 3 }", "<think>t</think><answer>fear</answer>"]
    solution = ["sad", "x ^ { 2 }", "<answer>fear</answer>"]
    assert clone(completions, solution) == reward(completions, solution)


@pytest.mark.parametrize("reward", ALL_REWARDS, ids=lambda r: r.__name__)
def test_mismatched_lengths_raise_a_clear_error(reward):
    if reward in NEEDS_SOLUTION:
        with pytest.raises(ValueError, match=r"`completions` has 2 items but `solution` has 3"):
            reward(["a", "b"], solution=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"`completions` has 2 items but `task` has 1"):
        reward(["a", "b"], solution=["a", "b"], task=["fer"])
    with pytest.raises(ValueError, match=r"`completions` must be a list"):
        reward("a single string", solution=["a"])


def test_candidate_labels_length_is_checked():
    with pytest.raises(ValueError, match=r"`candidate_labels` has 1"):
        R.fer_accuracy_reward(["a", "b"], ["sad", "sad"], candidate_labels=[["sad"]])


@pytest.mark.parametrize("reward", NEEDS_SOLUTION, ids=lambda r: r.__name__)
def test_missing_solution_column_is_named(reward):
    with pytest.raises(ValueError, match="`solution` column"):
        reward(["<answer>sad</answer>"], prompts=["q"])


@pytest.mark.parametrize("reward", ALL_REWARDS, ids=lambda r: r.__name__)
def test_empty_batch(reward):
    assert reward([], solution=[]) == []


def test_names_are_fixed_and_distinct():
    names = [r.__name__ for r in ALL_REWARDS]
    assert len(set(names)) == len(names)
    assert R.unifer_accuracy_reward.__name__ == "unifer_accuracy_reward"


@pytest.mark.parametrize("name", trl_grpo.__all__)
def test_every_export_loads_by_dotted_path(name):
    module_name, _, attr = f"trl_grpo.{name}".rpartition(".")
    obj = getattr(importlib.import_module(module_name), attr)
    assert obj is getattr(R, name)


@pytest.mark.parametrize(
    "dotted",
    [
        "trl_grpo.rewards.unifer_accuracy_reward",
        "trl_grpo.rewards.think_answer_format_reward",
        "trl_grpo.rewards.fer_accuracy_reward",
        "trl_grpo.rewards.hmer_exact_match_reward",
        "trl_grpo.rewards.hmer_edit_score_reward",
    ],
)
def test_rewards_load_by_dotted_path_through_the_train_loader(dotted):
    from trl_grpo.train import load_reward

    func = load_reward(dotted)
    assert func.__name__ == dotted.rpartition(".")[2]
    assert isinstance(func(["<answer>sad</answer>"], solution=["sad"]), list)


def test_factory_loads_by_dotted_path_with_kwargs():
    from trl_grpo.train import load_reward

    func = load_reward("trl_grpo.rewards.make_hmer_edit_score_reward", {"extract_mode": "raw"})
    assert func.__name__ == "hmer_edit_score_reward_raw"


# --------------------------------------------------------------------------------------------------------------
# Fuzzing: rewards never raise on any string content
# --------------------------------------------------------------------------------------------------------------

_TAGGY = st.lists(
    st.sampled_from(list("<>/ \n\tabc{}^_\\") + ["<think>", "</think>", "<answer>", "</answer>", "happy"]),
    max_size=20,
).map("".join)
_ANY_TEXT = st.one_of(st.text(max_size=60), _TAGGY)
_COMPLETION = st.one_of(
    _ANY_TEXT,
    _ANY_TEXT.map(conv),
    st.lists(st.dictionaries(st.sampled_from(["role", "content", "text", "type"]), _ANY_TEXT), max_size=2),
    st.none(),
    st.integers(),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            _COMPLETION,
            st.one_of(_ANY_TEXT, st.none()),
            st.one_of(st.none(), st.lists(st.one_of(_ANY_TEXT, st.none()), max_size=4), _ANY_TEXT),
            st.one_of(st.none(), st.sampled_from(["fer", "hmer", "FER"]), _ANY_TEXT),
        ),
        max_size=6,
    )
)
def test_rewards_never_raise_on_any_content(rows):
    completions = [r[0] for r in rows]
    solution = [r[1] for r in rows]
    candidates = [r[2] for r in rows]
    task = [r[3] for r in rows]
    for reward in ALL_REWARDS:
        out = reward(completions, solution=solution, candidate_labels=candidates, task=task)
        assert len(out) == len(rows)
        assert all(v is None or (isinstance(v, float) and 0.0 <= v <= 1.0) for v in out)


# --------------------------------------------------------------------------------------------------------------
# The reward a model is trained on is the function it is scored with
# --------------------------------------------------------------------------------------------------------------


def test_fer_accuracy_equals_the_strict_evaluator():
    from evaluators.fer.strict_protocol import extract_label_strict

    answers = ["happy", "Happiness", "joy", "sad", "contempt", "anger", "", "neutral"]
    responses = [f"<think>t</think><answer>{a}</answer>" for a in answers] + ["<think>happy</think>", "happy"]
    for labels in CANDIDATE_LABELS.values():
        for gold in labels:
            expected = [1.0 if extract_label_strict(r, labels)[0] == gold else 0.0 for r in responses]
            n = len(responses)
            assert (
                R.fer_accuracy_reward(responses, [gold] * n, candidate_labels=[list(labels)] * n) == expected
            )
            assert R.fer_accuracy_reward(responses, [f"<answer>{gold}</answer>"] * n) == expected


def test_hmer_rewards_equal_the_evaluator_metrics():
    from evaluators.hmer.metrics import align, edit_score
    from evaluators.knowledge.latex import extract_latex, tokenize

    completions = [c for c, _, _, _ in HMER_CASES]
    solutions = [s for _, s, _, _ in HMER_CASES]
    expected_exact, expected_edit = [], []
    for c, s in zip(completions, solutions, strict=True):
        gt, pred = tokenize(extract_latex(s, "auto")), tokenize(extract_latex(c, "auto"))
        if not gt:  # the evaluator refuses unlabelled records; the rewards leave them out (None)
            expected_exact.append(None)
            expected_edit.append(None)
            continue
        d = align(gt, pred).distance
        expected_exact.append(1.0 if d == 0 else 0.0)
        expected_edit.append(edit_score(d, len(gt), len(pred)) / 100)
    assert R.hmer_exact_match_reward(completions, solutions) == expected_exact
    assert R.hmer_edit_score_reward(completions, solutions) == pytest.approx(expected_edit, abs=1e-12)
