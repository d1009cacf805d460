"""Error-Driven Learning: marking, correction log and its inverse (property tests), builds from predictions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluators.knowledge.alignment import edit_distance
from llamafactory_ext.hmer.build import build_dataset, build_file
from llamafactory_ext.hmer.edl import (
    apply_corrections,
    correction_log,
    error_fix_answer,
    error_regions,
    mark_errors,
    parse_fix_answer,
)
from llamafactory_ext.hmer.prompts import DELETED, ERROR_END, ERROR_START, MARKERS

# Small alphabet so that random pairs share tokens; includes tokens that look like log syntax.
TOKENS = st.sampled_from(
    ["x", "2", "{", "}", "^", "_", "\\frac", "+", "->", "after", "-", ">", "REPLACE:a", "<start>"]
)
FORMULAS = st.lists(TOKENS, max_size=14)


@settings(max_examples=400, deadline=None)
@given(gt=FORMULAS, pred=FORMULAS)
def test_round_trip_gives_gt_exactly(gt, pred):
    marked = mark_errors(gt, pred)
    log = correction_log(gt, pred)
    assert apply_corrections(marked, log) == " ".join(gt)
    # the answer format round-trips too (log lines, then the corrected LaTeX)
    if gt:
        lines, latex = parse_fix_answer(error_fix_answer(" ".join(gt), " ".join(pred)))
        assert lines == log and latex == " ".join(gt)


@settings(max_examples=300, deadline=None)
@given(gt=FORMULAS, pred=FORMULAS)
def test_marks_wrap_exactly_the_prediction(gt, pred):
    marked = mark_errors(gt, pred).split()
    assert [tok for tok in marked if tok not in MARKERS] == pred
    n_marks = marked.count(ERROR_START) + marked.count(DELETED)
    assert n_marks == len(correction_log(gt, pred))
    assert marked.count(ERROR_START) == marked.count(ERROR_END)
    # the marked regions cost no more than the edit distance (one mark per maximal region)
    assert n_marks <= edit_distance(pred, gt)
    assert (n_marks == 0) == (gt == pred)


def test_hand_made_pairs():
    gt, pred = "x ^ { 2 } + 1", "x ^ { 3 } 1"
    assert mark_errors(gt, pred) == "x ^ { <error_start> 3 <error_end> } <deleted> 1"
    assert correction_log(gt, pred) == ["REPLACE:3 -> 2", "INSERT:+ after }"]
    assert correction_log("a b", "a b c") == ["DELETE:c"]
    assert mark_errors("a b", "a b c") == "a b <error_start> c <error_end>"
    assert correction_log("y a", "a") == ["INSERT:y after <start>"]
    assert mark_errors("a", "") == DELETED
    # adjacent edits merge into one region
    assert error_regions("a b c d".split(), "a x y z d".split()) == [(1, 4, 1, 3)]
    assert correction_log("a b c d", "a x y z d") == ["REPLACE:x y z -> b c"]


@pytest.mark.parametrize(
    ("marked", "log", "message"),
    [
        ("a <deleted>", [], "has 0 entries"),
        ("a", ["DELETE:a"], "formula has 0 marks"),
        ("a <error_start> b <error_end>", ["DELETE:c"], "wraps 'b'"),
        ("a <deleted>", ["REPLACE:a -> b"], "expected `INSERT"),
        ("a <error_start> b", ["DELETE:b"], "never closed"),
        ("a <error_end>", [], "without"),
    ],
)
def test_apply_rejects_inconsistent_logs(marked, log, message):
    with pytest.raises(ValueError, match=message):
        apply_corrections(marked, log)


def test_reserved_markers_are_refused():
    with pytest.raises(ValueError, match="reserved"):
        mark_errors("a", "a <deleted>")


def _labels(tmp_path, n=3):
    (tmp_path / "img").mkdir()
    records = []
    for i in range(n):
        (tmp_path / "img" / f"im{i}.png").write_bytes(b"png")
        records.append(
            {
                "images": [f"img/im{i}.png"],
                "messages": [
                    {"from": "human", "value": "<image>q"},
                    {"from": "gpt", "value": f"x ^ {{ {i} }}"},
                ],
            }
        )
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    return path


def test_edl_from_predictions_file(tmp_path):
    labels = _labels(tmp_path)
    preds = [
        {"id": "im0", "pred": "x ^ { 0 }", "gt": "x ^ { 0 }", "sample_index": 0},  # correct: dropped
        {"id": "im0", "pred": "x ^ { 6 }", "gt": "x ^ { 0 }", "sample_index": 1},
        {
            "id": "im0",
            "pred": "x  ^ { 6 }",
            "gt": "x ^ { 0 }",
            "sample_index": 2,
        },  # duplicate tokens: dropped
        {"id": "im1", "pred": "x { 1 }", "sample_index": 0},
        {"id": "nope", "pred": "x", "sample_index": 0},  # unmatched: rejected
        {"id": "im2", "pred": "y", "gt": "x ^ { 9 }", "sample_index": 0},  # label mismatch: rejected
        {"id": "im2", "pred": "", "sample_index": 1},  # empty: rejected
    ]
    pred_file = tmp_path / "preds.jsonl"
    pred_file.write_text("".join(json.dumps(p) + "\n" for p in preds))
    out = tmp_path / "find.json"
    stats = build_file(
        labels, out, "error_find", predictions_path=pred_file, progress=False, dataset_dir=tmp_path
    )
    assert (stats.written, stats.rejected, stats.dropped_correct, stats.dropped_duplicate) == (2, 3, 1, 1)
    records = json.loads(out.read_text())
    assert [r["messages"][1]["value"] for r in records] == [
        "x ^ { <error_start> 6 <error_end> }",
        "x <deleted> { 1 }",
    ]
    assert records[0]["images"] == ["img/im0.png"]  # relative to dataset_dir (LLaMA-Factory's media_dir)
    assert records[0]["messages"][0]["value"].endswith("erroneous formula: x ^ { 6 }\nMarked formula: ")
    reasons = [
        json.loads(line)["reason"] for line in (tmp_path / "find.rejected.jsonl").read_text().splitlines()
    ]
    assert [r.split(":")[0] for r in reasons] == [
        "unmatched prediction",
        "label mismatch",
        "empty prediction",
    ]

    fix = tmp_path / "fix.json"
    build_file(labels, fix, "error_fix", predictions_path=pred_file, progress=False)
    answers = [r["messages"][1]["value"] for r in json.loads(fix.read_text())]
    assert answers == ["REPLACE:6 -> 0\nx ^ { 0 }", "INSERT:^ after x\nx ^ { 1 }"]
    prompt = json.loads(fix.read_text())[0]["messages"][0]["value"]
    assert prompt.endswith("Marked formula: x ^ { <error_start> 6 <error_end> }\nCorrection log: ")


def test_edl_from_flat_records_with_pred():
    flat = [
        {"img_id": "a", "image_path": "a.png", "gt": "x + 1", "pred": "x - 1"},
        {"img_id": "b", "image_path": "b.png", "gt": "y", "pred": "y"},
        {"img_id": "c", "image_path": "c.png", "gt": "z"},
    ]
    out, rejected = build_dataset(flat, "error_fix", check_images=False)
    assert [r["messages"][1]["value"] for r in out] == ["REPLACE:- -> +\nx + 1"]
    assert [r["id"] for r in rejected] == ["c"] and rejected[0]["reason"].startswith("no prediction")


def test_predictions_only_for_edl(tmp_path):
    from evaluators.errors import UserError

    with pytest.raises(UserError, match="only applies"):
        build_dataset([], "tree", predictions=[])
