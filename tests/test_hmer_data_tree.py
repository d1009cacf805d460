"""Tree-CoT and Symbol-Counting targets: hand-made cases always, upstream's golden file when ../shared exists."""

from __future__ import annotations

import gzip
import json

import pytest

from llamafactory_ext.hmer import prompts
from llamafactory_ext.hmer.tree_cot import (
    MAX_TREE_LINES,
    TreeParseError,
    can_answer,
    latex_to_tree,
    tree_answer,
)

ISSUE_EXAMPLE = "\\frac { a ^ { 2 } + 1 } { b }"


def test_issue_example_exact():
    assert tree_answer(ISSUE_EXAMPLE) == (
        "\\frac\n\ta (above)\n\t\t2 (sup)\n\t+ (right)\n\t1 (right)\n\tb (below)\n" + ISSUE_EXAMPLE
    )


@pytest.mark.parametrize(
    ("latex", "tree"),
    [
        # \sqrt: optional [..] -> below, {..} -> above
        ("\\sqrt [ 3 ] { x + 1 }", "\\sqrt\n\t3 (below)\n\tx (above)\n\t+ (right)\n\t1 (right)"),
        ("\\sqrt { 2 }", "\\sqrt\n\t2 (above)"),
        # big operators: _ -> below, ^ -> above; the rest stays at the operator's level
        (
            "\\sum _ { i = 1 } ^ { n } i",
            "\\sum\n\ti (below)\n\t= (right)\n\t1 (right)\n\tn (above)\ni (right)",
        ),
        ("\\int ^ { 1 } x", "\\int\n\t1 (above)\nx (right)"),
        # \limits is an ordinary symbol: it takes the sub, not \sum
        ("\\sum \\limits _ { i } x", "\\sum\n\\limits (right)\n\ti (sub)\nx (right)"),
        # environments: body -> begin_<env>, literal \end -> end_<env>, rows -> nextline (one level deeper)
        (
            "\\begin {matrix} a & b \\\\ c & d \\end {matrix}",
            "\\begin\n\ta (begin_matrix)\n\t& (right)\n\tb (right)\n\t\tc (nextline)\n\t\t& (right)\n\t\td (right)"
            "\n\t\\end (end_matrix)",
        ),
        (
            "\\begin {matrix} \\begin {matrix} a \\end {matrix} \\end {matrix} x",
            "\\begin\n\t\\begin (begin_matrix)\n\t\ta (begin_matrix)\n\t\t\\end (end_matrix)\n\t\\end (end_matrix)"
            "\nx (right)",
        ),
        ("a \\\\ b", "a\n\tb (nextline)"),
        ("a \\\\", "a"),
        # ordinary symbols: _ then ^ only in that order
        ("x _ { i } ^ { 2 }", "x\n\ti (sub)\n\t2 (sup)"),
        ("x ^ { 2 } _ { i }", "x\n\t2 (sup)\n_ (right)\n{ (right)\ni (right)\n} (right)"),
        # accents take one {..} -> above, no sup of their own
        ("\\hat { a } ^ { 2 }", "\\hat\n\ta (above)\n^ (right)\n{ (right)\n2 (right)\n} (right)"),
        # braces not owned by a command are literal symbols; empty groups add no line
        ("{ a }", "{\na (right)\n} (right)"),
        ("\\frac { } { b }", "\\frac\n\tb (below)"),
        # upstream quirk: an unclosed { is re-read as a literal
        ("x ^ { 2", "x\n{ (right)\n2 (right)"),
        ("", ""),
    ],
)
def test_tree_cases(latex, tree):
    assert latex_to_tree(latex) == tree
    assert tree_answer(latex) == f"{tree}\n{latex}"


@pytest.mark.parametrize(
    ("latex", "message"),
    [
        ("x ^ 2", "^ not with {"),
        ("x _ 1", "_ not with {"),
        ("x ^", "^ not with {"),
        ("\\frac a b", "\\frac above not with {"),
        ("\\frac { a } b", "\\frac below not with {"),
        ("\\sqrt 2", "\\sqrt main param not with {"),
        ("\\sqrt [ 3 { x }", "\\sqrt main param not with {"),
        ("\\hat x", "\\hat not with {"),
        ("\\sum _ i", "_ not with {"),
        ("\\begin {cases} a", "missing matching \\end{cases}"),
        ("\\begin", "\\begin missing environment name"),
        ("\\frac { a ^ 2 } { b }", "^ not with {"),
    ],
)
def test_tree_rejections(latex, message):
    with pytest.raises(TreeParseError) as info:
        latex_to_tree(latex)
    assert str(info.value) == message


def test_deep_and_long_inputs():
    long = " ".join(["x ^ { 2 } +"] * 3000) + " 1"
    assert latex_to_tree(long).count("\n") + 1 == 3000 * 3 + 1  # no recursion along the right chain
    with pytest.raises(TreeParseError, match="nested too deeply"):
        latex_to_tree("x " + "^ { x " * 5000 + "} " * 5000)
    with pytest.raises(TreeParseError, match="longer than"):
        # each unclosed { re-reads the rest of the formula: 2**k lines upstream
        latex_to_tree("x" + " ^ { y" * 40 + " z" * 42)
    assert latex_to_tree("x" + " ^ { y" * 10 + " z" * 12).count("\n") + 1 == 10238
    assert MAX_TREE_LINES >= 1000


def test_can_answer_uses_the_shared_rule():
    assert can_answer(ISSUE_EXAMPLE) == "\\frac: 1, a: 1, ^: 1, 2: 1, +: 1, 1: 1, b: 1\n" + ISSUE_EXAMPLE
    assert can_answer("\\{ x \\} { }") == "\\{: 1, x: 1, \\}: 1\n\\{ x \\} { }"


def test_prompts_exact():
    assert prompts.TREE_PROMPT == (
        "I have an image of a handwritten mathematical expression. Please generate the abstract syntax tree (AST) "
        "of the formula in the image, and then provide its corresponding LaTeX format."
    )
    assert prompts.CAN_PROMPT == (
        "I have an image of a handwritten mathematical expression. Please identify and count each distinct visible "
        "mathematical symbol in the image, and then provide its corresponding LaTeX format."
    )
    assert prompts.VANILLA_PROMPT == (
        "I have an image of a handwritten mathematical expression. Please write out the expression of the formula "
        "in the image using LaTeX format."
    )
    assert prompts.human_prompt("error_fix", marked="a <deleted>").endswith(
        "\n\nMarked formula: a <deleted>\nCorrection log: "
    )
    with pytest.raises(ValueError):
        prompts.human_prompt("error_find")


@pytest.mark.shared
def test_golden_tree_and_counts(shared_reference):
    """All 5,632 CROHME labels: tree answer, rejection (same message) and counts, byte for byte."""
    path = shared_reference / "unimumer" / "tree_can_golden_from_gt.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert len(rows) == 5632
    tree_ok = rejected_ok = can_ok = 0
    mismatches = []
    for row in rows:
        try:
            answer, error = tree_answer(row["latex"]), None
        except TreeParseError as err:
            answer, error = None, f"AssertionError: {err}"
        if answer == row["tree_answer"] and error == row["tree_error"]:
            if answer is None:
                rejected_ok += 1
            else:
                tree_ok += 1
        else:
            mismatches.append(row["img_id"])
        can_ok += can_answer(row["latex"]) == row["can_answer"]
    assert mismatches == []
    assert (tree_ok, rejected_ok, can_ok) == (5473, 159, 5632)


@pytest.mark.shared
def test_upstream_sample_files(shared_reference, tmp_path):
    """Building tree / can from upstream's sample_input.json gives its sample_tree.json / sample_can.json."""
    from llamafactory_ext.hmer.build import build_file

    ref = shared_reference / "unimumer"
    for task in ("tree", "can"):
        out = tmp_path / f"{task}.json"
        stats = build_file(
            ref / "preprocess_example__sample_input.json", out, task, check_images=False, progress=False
        )
        assert stats.written == 2
        expected = json.loads((ref / f"preprocess_example__sample_{task}.json").read_text(encoding="utf-8"))
        got = json.loads(out.read_text(encoding="utf-8"))
        assert [r["messages"] for r in got] == [r["messages"] for r in expected]
        assert [r["images"] for r in got] == [r["images"] for r in expected]
