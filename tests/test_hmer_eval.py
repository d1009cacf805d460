"""Always-on tests of the HMER evaluator on small hand-worked and synthetic cases (no shared data)."""

from __future__ import annotations

import json
import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluators.cli import main
from evaluators.errors import UserError
from evaluators.hmer.analysis import (
    by_length,
    by_structure,
    parse_counts_line,
    sc_consistency,
    token_confusions,
)
from evaluators.hmer.loaders import HmerSample, load_predictions, output_stem
from evaluators.hmer.metrics import (
    align,
    bleu4,
    bleu4_nltk,
    char_error_rate,
    edit_score,
    evaluate_samples,
    mean_edit_score,
    threshold_counts,
    token_edits_per_gt_char,
    token_error_rate,
)
from evaluators.hmer.upstream_report import format_upstream_results
from evaluators.knowledge.alignment import edit_distance
from evaluators.knowledge.latex import normalize_latex

TOKENS = st.sampled_from(["x", "y", "1", "2", "+", "=", "^", "_", "{", "}", "\\frac", "\\alpha", "\\times"])
SEQS = st.lists(TOKENS, max_size=12)


def _samples(pairs: list[tuple[str, str]]) -> list[HmerSample]:
    return [HmerSample(str(i), gt, pred) for i, (gt, pred) in enumerate(pairs)]


def _write_json(path, obj) -> str:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- metrics, hand-worked


def test_exprate_and_thresholds_hand_worked():
    # distances 0, 1, 2, 3, 5 over 5 samples
    pairs = [("a b c", "a b c"), ("a b c", "a b d"), ("a b c", "a"), ("a b c", "x y z"), ("a b c d e", "")]
    result = evaluate_samples(_samples(pairs))
    assert result.distances == [0, 1, 2, 3, 5]
    assert result.counts == {0: 1, 1: 2, 2: 3, 3: 4}
    assert result.metrics["exprate"] == 20.0
    assert result.metrics["error_le_1"] == 40.0
    assert result.metrics["error_le_2"] == 60.0
    assert result.metrics["error_le_3"] == 80.0
    assert threshold_counts([4, 4]) == {0: 0, 1: 0, 2: 0, 3: 0}


def test_edit_score_hand_worked_and_empty_rules():
    assert edit_score(0, 0, 0) == 100.0  # both empty
    assert edit_score(2, 2, 0) == 0.0  # empty prediction
    assert edit_score(2, 0, 2) == 0.0  # empty label
    assert edit_score(1, 4, 5) == pytest.approx(80.0)  # 1 - 1/5
    result = evaluate_samples(_samples([("", ""), ("a b", ""), ("a b c d", "a b c d e")]))
    assert result.metrics["mean_edit_score"] == pytest.approx((100.0 + 0.0 + 80.0) / 3)
    assert mean_edit_score([0, 2], [3, 2], [3, 2]) == pytest.approx(50.0)


def test_bleu_hand_worked_matches_formula_and_nltk():
    refs = [["a", "b"], ["a", "b"]]
    hyps = [["a", "b"], ["a", "c"]]
    # p1 = 3/4, p2 = 1/2; p3 = 0/2, p4 = 0/2 smoothed by method4 (k=5, hyp_len=4):
    # p3 = 1 / (2 * 5 / ln 4) / 2, p4 = 1 / (4 * 5 / ln 4) / 2; brevity penalty 1
    p3 = 1 / (2 * 5 / math.log(4)) / 2
    p4 = 1 / (4 * 5 / math.log(4)) / 2
    expected = math.exp(0.25 * (math.log(3 / 4) + math.log(1 / 2) + math.log(p3) + math.log(p4))) * 100
    assert bleu4(refs, hyps) == pytest.approx(expected, rel=1e-12)
    assert round(bleu4(refs, hyps), 2) == 17.32
    assert bleu4(refs, hyps) == bleu4_nltk(refs, hyps)


def test_bleu_edge_cases():
    assert bleu4([["a", "b", "c", "d"]], [["a", "b", "c", "d"]]) == pytest.approx(100.0)
    assert bleu4([["a"]], [["b"]]) == 0.0  # no unigram match at all
    assert bleu4([["a", "b"]], [[]]) == 0.0 == bleu4_nltk([["a", "b"]], [[]])
    # brevity penalty: short hypothesis, exact prefix
    refs, hyps = [["a", "b", "c", "d", "e", "f"]], [["a", "b", "c", "d"]]
    assert bleu4(refs, hyps) == bleu4_nltk(refs, hyps)
    assert bleu4(refs, hyps) < 100 * math.exp(1 - 6 / 4) + 1e-9


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(SEQS, SEQS), min_size=1, max_size=8))
def test_bleu_equals_nltk_exactly(pairs):
    refs = [gt for gt, _ in pairs]
    hyps = [pred for _, pred in pairs]
    assert bleu4(refs, hyps) == bleu4_nltk(refs, hyps)


@settings(max_examples=200, deadline=None)
@given(SEQS, SEQS)
def test_alignment_cost_is_the_edit_distance(gt, pred):
    alignment = align(gt, pred)
    assert alignment.distance == edit_distance(gt, pred)
    assert all(tag in ("replace", "insert", "delete") for tag, *_ in alignment.ops)


def test_upstream_cer_is_token_edits_per_label_character():
    # 1 token edit in "a + b" (5 chars) and 0 in "c" (1 char)
    assert token_edits_per_gt_char([1, 0], ["a + b", "c"]) == pytest.approx(1 / 6)
    result = evaluate_samples(_samples([("\\alpha + 1", "\\alpha + 7"), ("x", "x")]))
    assert result.metrics["token_edits_per_gt_char"] == pytest.approx(1 / (len("\\alpha + 1") + 1))
    # true CER: one character edit over 8 + 1 non-space characters
    assert result.metrics["cer"] == pytest.approx(1 / 9)
    assert result.metrics["token_error_rate"] == pytest.approx(1 / 4)
    # a wrong command is one token edit but several character edits
    assert char_error_rate(["\\alpha"], ["\\beta"]) == pytest.approx(4 / 6)
    assert token_error_rate([0], [0]) == 0.0 and char_error_rate([""], ["x"]) == 0.0


def test_evaluate_rejects_no_samples():
    with pytest.raises(UserError, match="no samples"):
        evaluate_samples([])


# --------------------------------------------------------------------------- extraction / normalisation


def test_extraction_modes_change_what_is_scored():
    cot = HmerSample("0", "x ^ { 2 }", "x: 1, ^: 1, 2: 1\nx ^ { 2 }")
    assert evaluate_samples([cot]).metrics["exprate"] == 0.0  # raw: counts line is scored too
    assert evaluate_samples([cot], extract="last-line").metrics["exprate"] == 100.0
    assert evaluate_samples([cot], extract="auto").metrics["exprate"] == 100.0
    with pytest.raises(UserError, match="--extract"):
        evaluate_samples([cot], extract="first-line")


def test_normalize_applies_to_both_sides():
    sample = HmerSample("0", "a _ { i } \\leq b", "a_i \\le b")
    # raw: a_i vs a (sub), _ { i } deleted, \le vs \leq (sub)
    assert evaluate_samples([sample]).distances == [6]
    assert evaluate_samples([sample], normalize=True).distances == [0]


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("\\le \\ge \\dots", "\\leq \\geq \\ldots"),
        ("a_i", "a _ { i }"),
        ("x^\\alpha_{n}", "x ^ { \\alpha } _ { n }"),
        ("\\begin{matrix} a \\end{matrix}", "\\begin {matrix} a \\end {matrix}"),
        ("\\begin {pmatrix} a \\end {pmatrix}", "\\begin {pmatrix} a \\end {pmatrix}"),
        ("\\frac 1 { 2 b }", "\\frac { 1 } { 2 b }"),
        ("\\ldots \\leqslant", "\\ldots \\leqslant"),  # only the exact aliases are rewritten
        ("\\{ x \\}", "\\{ x \\}"),
        ("", ""),
    ],
)
def test_normalize_latex_cases(raw, normalized):
    assert normalize_latex(raw) == normalized


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "a",
                "1",
                "^",
                "_",
                "{",
                "}",
                "\\frac",
                "\\sqrt",
                "[",
                "]",
                "\\le",
                " ",
                "\\begin{matrix}",
                "\\end",
                "\\{",
            ]
        )
    )
)
def test_normalize_latex_is_idempotent(tokens):
    once = normalize_latex("".join(tokens))
    assert normalize_latex(once) == once


# --------------------------------------------------------------------------- upstream layout


def test_upstream_layout_exact_bytes():
    pairs = [("a b c", "a b c")] * 2 + [("a b c", "a b d")]
    text = format_upstream_results(evaluate_samples(_samples(pairs)))
    rule = "=" * 60
    expected = (
        f"\n{rule}\n                    EVALUATION RESULTS\n{rule}\n\n"
        "Dataset Statistics:\n  Total Samples: 3\n\n"
        "Core Metrics:\n"
        "  Mean Edit Score:        88.8889%\n"
        f"  BLEU-4 Score:           {round(bleu4_nltk([['a', 'b', 'c']] * 3, [['a', 'b', 'c']] * 2 + [['a', 'b', 'd']]), 4):>7.4f}%\n"
        "  Character Error Rate:    0.0667\n\n"
        "Error Threshold Analysis:\n"
        "  Exact Match Rate:       66.6667% (0 errors)\n"
        "  Error ≤ 1:             100.0000%\n"
        "  Error ≤ 2:             100.0000%\n"
        "  Error ≤ 3:             100.0000%\n\n"
        "Detailed Error Distribution:\n"
        "  Errors ≤ 0:      2 samples ( 66.67%)\n"
        "  Errors ≤ 1:      3 samples (100.00%)\n"
        "  Errors ≤ 2:      3 samples (100.00%)\n"
        "  Errors ≤ 3:      3 samples (100.00%)\n\n"
        f"{rule}\n"
    )
    assert text == expected


def test_upstream_layout_rounds_twice_and_groups_thousands():
    # 1234 of 2000 exact: 61.7% -> '61.70'; thousands separator in counts
    pairs = [("a", "a")] * 1234 + [("a", "b")] * 766
    lines = format_upstream_results(evaluate_samples(_samples(pairs))).splitlines()
    assert lines[6] == "  Total Samples: 2,000"
    assert lines[20] == "  Errors ≤ 0:  1,234 samples ( 61.70%)"


# --------------------------------------------------------------------------- loaders


def test_loads_all_three_formats(tmp_path):
    upstream = load_predictions(
        _write_json(
            tmp_path / "a_pred.json", [{"gt": "x", "pred": "x", "image_path": "i.jpg", "img_id": "i"}]
        )
    )
    assert upstream.format == "upstream" and upstream.samples == [HmerSample("i", "x", "x")]

    lf = tmp_path / "generated_predictions.jsonl"
    lf.write_text(
        "".join(
            json.dumps({"prompt": "p", "predict": p, "label": g}) + "\n" for g, p in [("x", "y"), ("a", "a")]
        )
    )
    loaded = load_predictions(lf)
    assert loaded.format == "llamafactory"
    assert loaded.samples == [HmerSample("0", "x", "y"), HmerSample("1", "a", "a")]

    inf = tmp_path / "infer.jsonl"
    rows = [
        {"id": "q1", "pred": "wrong", "gt": "x", "sample_index": 1},
        {"id": "q1", "pred": "x", "gt": "x", "sample_index": 0},
        {"id": "q2", "pred": "y", "gt": "y", "sample_index": 0},
        {"id": "q2", "pred": "z", "gt": "y", "sample_index": 1},
    ]
    inf.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_predictions(inf)
    assert loaded.format == "inference"
    assert loaded.samples == [HmerSample("q1", "x", "x"), HmerSample("q2", "y", "y")]
    assert loaded.warnings == {"extra_samples_skipped": 2}
    assert any("sample_index 0 only" in note for note in loaded.notes)


def test_missing_key_names_file_and_index(tmp_path):
    path = _write_json(tmp_path / "bad_pred.json", [{"gt": "x", "pred": "x"}, {"gt": "y", "img_id": "2"}])
    with pytest.raises(UserError, match=r"bad_pred\.json: record 1 has no 'pred' key"):
        load_predictions(path)
    path = _write_json(tmp_path / "nogt.json", [{"pred": "x"}])
    with pytest.raises(UserError, match=r"nogt\.json: record 0 has no 'gt' key"):
        load_predictions(path)


def test_null_and_non_string_predictions_are_empty_with_warning(tmp_path, caplog):
    rows = [{"gt": "x", "pred": None}, {"gt": "x y", "pred": 3}, {"gt": "x", "pred": "x"}]
    with caplog.at_level(logging.WARNING):
        loaded = load_predictions(_write_json(tmp_path / "n.json", rows))
    assert loaded.warnings == {"null_pred": 1, "non_string_pred": 1}
    assert [s.pred for s in loaded.samples] == ["", "", "x"]
    assert "2 null or non-string predictions" in caplog.text
    assert evaluate_samples(loaded.samples).distances == [1, 2, 0]


def test_bad_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "broken.json").write_text('[{"gt": "x", "pred": ')
    with pytest.raises(UserError, match="malformed JSON"):
        load_predictions(tmp_path / "broken.json")
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(UserError, match="empty"):
        load_predictions(tmp_path / "empty.json")
    with pytest.raises(UserError, match="empty"):
        load_predictions(_write_json(tmp_path / "emptylist.json", []))
    with pytest.raises(UserError, match="no such file"):
        load_predictions(tmp_path / "missing.json")
    with pytest.raises(UserError, match="record 0 has a NoneType 'gt'"):
        load_predictions(_write_json(tmp_path / "nullgt.json", [{"gt": None, "pred": "x"}]))


def test_duplicate_ids_warn(tmp_path):
    rows = [{"gt": "x", "pred": "x", "img_id": "a"}, {"gt": "y", "pred": "y", "img_id": "a"}]
    loaded = load_predictions(_write_json(tmp_path / "d.json", rows))
    assert loaded.warnings == {"duplicate_ids": 1}
    assert len(loaded.samples) == 2  # still scored


def test_output_stem():
    assert output_stem("x/crohme_2014_pred.json") == "crohme_2014"
    assert output_stem("backup__crohme_2014.json") == "backup__crohme_2014"
    assert output_stem("generated_predictions.jsonl") == "generated_predictions"


# --------------------------------------------------------------------------- analysis


def test_confusions_length_and_structure():
    pairs = [
        ("x + 1", "\\times + l"),
        ("x ^ { 2 }", "x ^ { 2 }"),
        ("\\frac { a } { b }", "\\frac { a } { b } c"),
        ("\\sqrt { 2 } y", "\\sqrt { 2 }"),
    ]
    result = evaluate_samples(_samples(pairs))
    confusions = token_confusions(result)
    assert confusions["substitutions"] == [["x", "\\times", 1], ["1", "l", 1]]
    assert confusions["insertions"] == [["c", 1]]
    assert confusions["deletions"] == [["y", 1]]
    structure = by_structure(result)
    assert structure["script"] == {"n": 1, "exprate": 100.0, "error_le_1": 100.0, "mean_distance": 0.0}
    assert structure["frac"]["exprate"] == 0.0 and structure["sqrt"]["n"] == 1
    assert structure["plain"]["n"] == 1 and structure["plain"]["mean_distance"] == 2.0
    lengths = by_length(result)
    assert lengths["1-5"]["n"] == 3 and lengths["6-10"]["n"] == 1
    assert sum(v["n"] for v in lengths.values()) == 4


def test_symbol_counting_consistency():
    assert parse_counts_line("x: 2, +: 1") == {"x": 2, "+": 1}
    assert parse_counts_line("x + 1") is None
    outputs = ["x: 2, +: 1\nx + x", "x: 1\nx + y", "a + b", None]
    assert sc_consistency(outputs) == {"n_with_counts": 2, "consistent": 1, "rate": 50.0}


# --------------------------------------------------------------------------- CLI


def test_cli_writes_three_outputs_and_one_table(tmp_path, capsys):
    a = _write_json(tmp_path / "set_a_pred.json", [{"gt": "x + 1", "pred": "x + 1", "img_id": "a0"}])
    lf = tmp_path / "generated_predictions.jsonl"
    lf.write_text(json.dumps({"prompt": "p", "predict": "x - 1", "label": "x + 1"}) + "\n")
    out = tmp_path / "out"
    assert main(["eval", "hmer", a, str(lf), "--out-dir", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("\n") == 4  # header, rule, two rows
    assert "| set_a | 1 | 100.00 |" in table and "| generated_predictions | 1 | 0.00 |" in table
    assert sorted(p.name for p in out.iterdir()) == [
        "generated_predictions_metrics.json",
        "generated_predictions_results.txt",
        "generated_predictions_samples.jsonl",
        "set_a_metrics.json",
        "set_a_results.txt",
        "set_a_samples.jsonl",
    ]
    doc = json.loads((out / "generated_predictions_metrics.json").read_text())
    assert doc["N"] == 1 and doc["format"] == "llamafactory" and doc["config"]["extract"] == "raw"
    assert doc["metrics"]["exprate"] == 0.0 and doc["higher_is_better"]["cer"] is False
    assert doc["metrics"]["token_edits_per_gt_char"] == pytest.approx(1 / 5)
    assert doc["version"]
    (sample,) = [
        json.loads(line) for line in (out / "generated_predictions_samples.jsonl").read_text().splitlines()
    ]
    assert sample["distance"] == 1 and sample["id"] == "0"
    assert sample["ops"] == [
        {"op": "replace", "gt": ["+"], "pred": ["-"], "gt_span": [1, 2], "pred_span": [1, 2]}
    ]
    assert (out / "set_a_results.txt").read_text(encoding="utf-8").startswith("\n" + "=" * 60 + "\n")


def test_cli_plots_and_cot_options(tmp_path, capsys):
    rows = [{"gt": "x ^ { 2 }", "pred": "x: 1, ^: 1, 2: 1\nx ^ { 2 }", "img_id": str(i)} for i in range(3)]
    rows.append(
        {"gt": "\\frac { 1 } { 2 }", "pred": "\\frac: 1, 1: 1, 2: 1\n\\frac { 1 } { 3 }", "img_id": "x"}
    )
    path = _write_json(tmp_path / "cot_pred.json", rows)
    out = tmp_path / "o"
    assert (
        main(
            ["eval", "hmer", path, "--out-dir", str(out), "--extract", "last-line", "--normalize", "--plots"]
        )
        == 0
    )
    assert (out / "cot_analysis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "cot_metrics.json").read_text())
    assert doc["config"]["normalize"] is True and doc["config"]["extract"] == "last-line"
    assert doc["metrics"]["exprate"] == 0.75  # fractions in the JSON, percent in the printed table
    assert doc["analysis"]["sc_consistency"] == {"n_with_counts": 4, "consistent": 3, "rate": 0.75}
    assert doc["analysis"]["confusions"]["substitutions"] == [["2", "3", 1]]
    assert "| cot | 4 | 75.00 |" in capsys.readouterr().out


def test_cli_user_errors_exit_2_without_traceback(tmp_path, caplog, capsys):
    bad = _write_json(tmp_path / "bad.json", [{"gt": "x"}])
    good = _write_json(tmp_path / "good.json", [{"gt": "x", "pred": "x"}])
    out = tmp_path / "o"
    with caplog.at_level(logging.ERROR):
        assert main(["eval", "hmer", good, bad, "--out-dir", str(out)]) == 2
    assert "bad.json: record 0 has no 'pred' key" in caplog.text
    assert "Traceback" not in caplog.text + capsys.readouterr().err
    assert not out.exists()  # every input is validated before anything is written


def test_cli_disambiguates_same_stems(tmp_path, capsys):
    for folder in ("run1", "run2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "generated_predictions.jsonl").write_text(
            json.dumps({"prompt": "", "predict": "a", "label": "a"}) + "\n"
        )
    out = tmp_path / "o"
    files = [str(tmp_path / f / "generated_predictions.jsonl") for f in ("run1", "run2")]
    assert main(["eval", "hmer", *files, "--out-dir", str(out)]) == 0
    assert (out / "run1__generated_predictions_results.txt").is_file()
    assert (out / "run2__generated_predictions_results.txt").is_file()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(SEQS, SEQS), max_size=8))
def test_bleu_numpy_counts_equal_counter_counts(pairs):
    from evaluators.hmer.metrics import _matches_numpy, _matches_python

    refs = [gt for gt, _ in pairs]
    hyps = [pred for _, pred in pairs]
    assert _matches_numpy(refs, hyps).tolist() == _matches_python(refs, hyps)  # per sample pair


def test_bleu_large_vocabulary_falls_back_exactly():
    from evaluators.hmer.metrics import _matches_numpy

    ref = [f"t{i}" for i in range(70_000)]
    hyp = ref[:100] + ["x"] + ref[101:]
    assert _matches_numpy([ref], [hyp]) is None  # 16-bit packing impossible: Counter path used
    assert bleu4([ref, ["a", "b"]], [hyp, ["a", "c"]]) == bleu4_nltk([ref, ["a", "b"]], [hyp, ["a", "c"]])
