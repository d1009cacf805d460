"""Label extraction of both FER protocols, rule by rule and dataset by dataset, with hand-made responses."""

from __future__ import annotations

import pytest

from evaluators.fer import strict_protocol
from evaluators.fer.strict_protocol import INVALID, extract_label_strict
from evaluators.fer.unifer_protocol import UNKNOWN, extract_label_unifer
from evaluators.knowledge import answers
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS, UNIFER_SYNONYMS

DATASETS = ("rafdb", "ferplus", "affectnet", "sfew")


def unifer(response: str, dataset: str, pooled: bool = False) -> tuple[str, str]:
    return extract_label_unifer(response, CANDIDATE_LABELS[dataset], dataset, pooled=pooled)


def strict(response, dataset: str) -> tuple[str, str]:
    return extract_label_strict(response, CANDIDATE_LABELS[dataset])


# --------------------------------------------------------------------------------------------------
# protocol `unifer`, rule 1: the answer span (equality, then substring, per candidate in order)


@pytest.mark.parametrize(
    ("dataset", "label"), [(d, label) for d in DATASETS for label in CANDIDATE_LABELS[d]]
)
@pytest.mark.parametrize("pooled", [False, True])
def test_unifer_rule1_exact_every_label(dataset: str, label: str, pooled: bool) -> None:
    response = f"<think>Hmm, let me look.</think>\n<answer>{label.upper()}</answer>"
    assert unifer(response, dataset, pooled) == (label, "answer_exact")


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("ferplus", ("sad", "answer_substring")),
        ("sfew", ("sad", "answer_substring")),
        # "sadness" is not a substring of "looks sad to me"; rules 2 fails too, rule 3 sadness:[sad] hits.
        ("rafdb", ("sadness", "synonym")),
        ("affectnet", ("sadness", "synonym")),
    ],
)
def test_unifer_rule1_substring(dataset: str, expected: tuple[str, str]) -> None:
    assert unifer("<think>..</think><answer>Looks sad to me</answer>", dataset) == expected


@pytest.mark.parametrize("dataset", DATASETS)
def test_unifer_rule1_first_candidate_in_candidate_order(dataset: str) -> None:
    # Both "fear" and "surprise" are substrings; the one earlier in the candidate list wins.
    cands = CANDIDATE_LABELS[dataset]
    expected = min(("fear", "surprise"), key=cands.index)
    assert unifer("<answer>surprise and fear</answer>", dataset) == (expected, "answer_substring")


@pytest.mark.parametrize("dataset", DATASETS)
def test_unifer_rule1_takes_first_span_strict_takes_last(dataset: str) -> None:
    response = "<answer>fear</answer> on reflection <answer>disgust</answer>"
    assert unifer(response, dataset) == ("fear", "answer_exact")
    assert strict(response, dataset) == ("disgust", "answer")


@pytest.mark.parametrize("dataset", ["rafdb", "ferplus", "affectnet"])
def test_unifer_rule1_no_dotall_outside_sfew(dataset: str) -> None:
    # The answer spans a line break: no match without DOTALL, so rule 2 reads the think text.
    response = "<think>No surprise here.</think><answer>pure\nfear</answer>"
    expected = min(("fear", "surprise"), key=CANDIDATE_LABELS[dataset].index)
    assert unifer(response, dataset) == (expected, "response_label")
    assert strict(response, dataset) == (INVALID, "not_a_candidate")


def test_unifer_rule1_sfew_regex_is_dotall_and_case_sensitive() -> None:
    multiline = "<think>No surprise here.</think><answer>pure\nfear</answer>"
    assert unifer(multiline, "sfew") == ("fear", "answer_substring")  # per-dataset: DOTALL
    assert unifer(multiline, "sfew", pooled=True) == ("fear", "response_label")  # pooled: no DOTALL
    upper = "<think>Not angry at all.</think><ANSWER>sad</ANSWER>"
    assert unifer(upper, "sfew") == ("angry", "response_label")  # per-dataset: tags are case-sensitive
    assert unifer(upper, "sfew", pooled=True) == ("sad", "answer_exact")  # pooled: IGNORECASE
    assert unifer(upper, "ferplus") == ("sad", "answer_exact")
    assert strict(upper, "sfew") == ("sad", "answer")


def test_unifer_rule1_whitespace_padding() -> None:
    for dataset in DATASETS:
        assert unifer("<answer>\n  fear \n</answer>", dataset) == ("fear", "answer_exact")
        assert unifer("<answer>\n  fear \n</answer>", dataset, pooled=True) == ("fear", "answer_exact")


# --------------------------------------------------------------------------------------------------
# rule 2: a candidate anywhere in the response (think text included), candidate order


@pytest.mark.parametrize(("dataset", "label"), [(d, lab) for d in DATASETS for lab in CANDIDATE_LABELS[d]])
def test_unifer_rule2_label_anywhere(dataset: str, label: str) -> None:
    assert unifer(f"The person shows {label.title()} clearly.", dataset) == (label, "response_label")


@pytest.mark.parametrize("dataset", DATASETS)
def test_unifer_rule2_answer_without_candidate_falls_through(dataset: str) -> None:
    # The answer span exists but names no candidate; rule 2 reads the whole response.
    response = "<think>some disgust, a little fear</think><answer>puzzled</answer>"
    expected = min(("disgust", "fear"), key=CANDIDATE_LABELS[dataset].index)
    assert unifer(response, dataset) == (expected, "response_label")
    assert strict(response, dataset) == (INVALID, "not_a_candidate")


def test_unifer_rule2_is_plain_substring() -> None:
    assert unifer("A fearless look.", "rafdb") == ("fear", "response_label")


# --------------------------------------------------------------------------------------------------
# rule 3: synonyms, dict order; rule 4: unknown

SYNONYM_CASES = [
    (d, label, alt) for d in DATASETS for label, alts in UNIFER_SYNONYMS[d].items() for alt in alts
]


@pytest.mark.parametrize(("dataset", "label", "alt"), SYNONYM_CASES)
def test_unifer_rule3_every_synonym(dataset: str, label: str, alt: str) -> None:
    got = unifer(f"I would say {alt.upper()}.", dataset)
    if alt == "unhappy":  # contains the candidate "happy": rule 2 fires first (FERPlus, SFEW 2.0)
        assert got == ("happy", "response_label")
    else:
        assert got == (label, "synonym")
    assert strict(f"<answer>{alt}</answer>", dataset)[0] == (
        INVALID if alt not in ("angry", "anger", "happy", "happiness", "sad", "sadness") else got[0]
    )


def test_unifer_synonym_tables_match_issue() -> None:
    rafdb = {
        "anger": ["angry"],
        "disgust": ["revulsion", "repulsion"],
        "fear": ["terror", "fright"],
        "happiness": ["joy", "happy"],
        "sadness": ["sad"],
        "neutral": ["normal", "calm", "blank"],
        "surprise": ["shock", "astonishment"],
    }
    affectnet = {"anger": ["angry", "mad"], "contempt": ["scorn", "disdain"]}
    affectnet |= {k: v for k, v in rafdb.items() if k != "anger"}
    ferplus = {
        "angry": ["anger"],
        "contempt": ["scorn", "disdain"],
        "disgust": ["revulsion", "repulsion"],
        "fear": ["terror", "fright"],
        "happy": ["joy", "happiness"],
        "sad": ["sorrow", "unhappy"],
        "neutral": ["normal", "calm", "blank"],
        "surprise": ["shock", "astonishment"],
    }
    sfew = {"angry": ["anger", "mad"]} | {k: v for k, v in ferplus.items() if k not in ("angry", "contempt")}
    for name, table in (("rafdb", rafdb), ("affectnet", affectnet), ("ferplus", ferplus), ("sfew", sfew)):
        assert list(UNIFER_SYNONYMS[name].items()) == list(table.items()), name


def test_unifer_rule3_dict_order_not_text_position() -> None:
    # "joy" comes first in the text, but anger precedes happiness in the table.
    assert unifer("joy mixed with angry", "rafdb") == ("anger", "synonym")
    # "made" contains "mad": AffectNet and SFEW 2.0 read anger; RAF-DB and FERPlus have no "mad".
    assert unifer("I made up my mind", "affectnet") == ("anger", "synonym")
    assert unifer("I made up my mind", "sfew") == ("angry", "synonym")
    assert unifer("I made up my mind", "rafdb") == (UNKNOWN, "unknown")
    assert unifer("I made up my mind", "ferplus") == (UNKNOWN, "unknown")


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("response", ["", "I cannot tell.", "<answer></answer>", "ERROR: CUDA out of memory"])
def test_unifer_rule4_unknown(dataset: str, response: str) -> None:
    assert unifer(response, dataset) == (UNKNOWN, "unknown")
    assert strict(response, dataset)[0] == INVALID


# --------------------------------------------------------------------------------------------------
# the known consequences the issue asks to reproduce


@pytest.mark.parametrize(
    ("dataset", "pooled", "expected"),
    [
        ("ferplus", False, ("angry", "response_label")),
        ("sfew", False, ("angry", "response_label")),
        ("sfew", True, ("angry", "response_label")),
        ("rafdb", False, ("happiness", "answer_exact")),
        ("affectnet", False, ("happiness", "answer_exact")),
    ],
)
def test_known_consequence_not_angry(dataset: str, pooled: bool, expected: tuple[str, str]) -> None:
    response = "<think>not angry at all</think><answer>happiness</answer>"
    assert unifer(response, dataset, pooled) == expected
    assert strict(response, dataset) == (
        ("happy", "answer_synonym") if dataset in ("ferplus", "sfew") else ("happiness", "answer")
    )


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("ferplus", ("happy", "answer_substring")),
        ("sfew", ("happy", "answer_substring")),
        ("rafdb", ("happiness", "synonym")),
        ("affectnet", ("happiness", "synonym")),
    ],
)
def test_known_consequence_unhappy_scores_happy(dataset: str, expected: tuple[str, str]) -> None:
    assert unifer("<answer>unhappy</answer>", dataset) == expected
    assert strict("<answer>unhappy</answer>", dataset) == (INVALID, "not_a_candidate")


# --------------------------------------------------------------------------------------------------
# protocol `strict`


def test_strict_uses_the_shared_extractor() -> None:
    assert strict_protocol.extract_answer is answers.extract_answer


@pytest.mark.parametrize(
    ("dataset", "answer", "expected"),
    [
        ("rafdb", "happy", ("happiness", "answer_synonym")),
        ("rafdb", "Sad", ("sadness", "answer_synonym")),
        ("rafdb", "angry", ("anger", "answer_synonym")),
        ("affectnet", "happy", ("happiness", "answer_synonym")),
        ("ferplus", "happiness", ("happy", "answer_synonym")),
        ("ferplus", "sadness", ("sad", "answer_synonym")),
        ("sfew", "anger", ("angry", "answer_synonym")),
        ("sfew", " NEUTRAL ", ("neutral", "answer")),
        ("ferplus", "contempt", ("contempt", "answer")),
        ("sfew", "contempt", (INVALID, "not_a_candidate")),
        ("rafdb", "contempt", (INVALID, "not_a_candidate")),
        ("rafdb", "joy", (INVALID, "not_a_candidate")),
        ("rafdb", "happiness.", (INVALID, "not_a_candidate")),
        ("ferplus", "sad or angry", (INVALID, "not_a_candidate")),
    ],
)
def test_strict_answers(dataset: str, answer: str, expected: tuple[str, str]) -> None:
    assert strict(f"<think>I think it is fear.</think><answer>{answer}</answer>", dataset) == expected


@pytest.mark.parametrize(
    "response",
    [
        "<think>clearly fear</think>",
        "<think>fear</think><answer>fear",
        "fear",
        None,
        123,
    ],
)
def test_strict_nothing_from_think_or_plain_text(response) -> None:
    assert strict(response, "rafdb") == (INVALID, "no_answer")
    if isinstance(response, str):
        assert unifer(response, "rafdb")[0] == "fear"


def test_strict_case_insensitive_tags() -> None:
    assert strict("<Think>x</Think><ANSWER> Fear </ANSWER>", "sfew") == ("fear", "answer")
