"""HMER evaluator against upstream's own results files in ``../shared/reference/unimumer`` (read in place).

Skipped with a message when the shared folder is absent (a user's clone); nothing is copied into the repo.
"""

from __future__ import annotations

import json

import pytest

from evaluators.cli import main
from evaluators.hmer.loaders import load_predictions
from evaluators.hmer.metrics import bleu4_nltk, evaluate_samples
from evaluators.knowledge.alignment import edit_distance
from evaluators.knowledge.latex import normalize_latex

pytestmark = pytest.mark.shared

# json -> (results txt, N, ExpRate count) from the reference README table
PAIRS = {
    "CROHME__results__crohme_2014_pred.json": ("CROHME__results__crohme_2014_results.txt", 986, 815),
    "CROHME__results__crohme_2016_pred.json": ("CROHME__results__crohme_2016_results.txt", 1147, 905),
    "CROHME__results__crohme_2019_pred.json": ("CROHME__results__crohme_2019_results.txt", 1199, 957),
    "CROHME2023__results__crohme2023_test_pred.json": (
        "CROHME2023__results__crohme2023_test_results.txt",
        2300,
        1066,
    ),
    "MNE__results__N2_pred.json": ("MNE__results__N2_results.txt", 304, 179),
    "backup__crohme_2014.json": ("final_paper_results__crohme_2014_results.txt", 986, 809),
    "backup__crohme_2016.json": ("final_paper_results__crohme_2016_results.txt", 1147, 894),
    "backup__crohme_2019.json": ("final_paper_results__crohme_2019_results.txt", 1199, 950),
    "backup__N2.json": ("final_paper_results__N2_results.txt", 304, 179),
}


@pytest.fixture(scope="module")
def unimumer(shared_reference):
    folder = shared_reference / "unimumer"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


def test_every_pred_file_is_covered(unimumer):
    assert {p.name for p in unimumer.glob("*_pred.json")} <= set(PAIRS)


def test_all_results_byte_identical_in_one_call(unimumer, tmp_path, capsys):
    out = tmp_path / "out"
    files = [str(unimumer / name) for name in PAIRS]
    assert main(["eval", "hmer", *files, "--out-dir", str(out)]) == 0
    for name, (results, _, _) in PAIRS.items():
        stem = name.removesuffix(".json").removesuffix("_pred")
        assert (out / f"{stem}_results.txt").read_bytes() == (unimumer / results).read_bytes(), name
    table = capsys.readouterr().out
    assert table.count("\n") == len(PAIRS) + 2
    assert "| backup__crohme_2014 | 986 | 82.05 |" in table  # the paper's CROHME 2014 number


@pytest.mark.parametrize("name", list(PAIRS))
def test_metrics_match_reference_and_nltk(unimumer, name, tmp_path):
    _, n, exact = PAIRS[name]
    loaded = load_predictions(unimumer / name)
    assert loaded.format == "upstream" and loaded.warnings == {}
    result = evaluate_samples(loaded.samples)
    assert result.n == n and result.counts[0] == exact
    assert result.metrics["bleu4"] == bleu4_nltk(result.gt_tokens, result.pred_tokens)
    assert result.distances == [
        edit_distance(g, p) for g, p in zip(result.gt_tokens, result.pred_tokens, strict=True)
    ]
    if name.startswith("backup__"):  # upstream stored its own distances next to gt/pred
        stored = [r["distance"] for r in json.loads((unimumer / name).read_text())]
        assert result.distances == stored
    assert (
        0 <= result.metrics["cer"] <= 1 and result.metrics["cer"] != result.metrics["token_edits_per_gt_char"]
    )


def test_labels_are_already_normalized(unimumer):
    # the CROHME labels follow the *_normalized conventions; normalize_latex must leave them as they are
    for name in ("CROHME__results__crohme_2014_pred.json", "CROHME__results__crohme_2019_pred.json"):
        for record in json.loads((unimumer / name).read_text()):
            assert normalize_latex(record["gt"]) == record["gt"], record["gt"]
