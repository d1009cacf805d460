"""``unitune demo-data hmer|fer``: formats, determinism, labels that the builders and evaluators accept."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from PIL import Image

from evaluators.cli import main as unitune
from evaluators.inference.prompts import load_records
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS, detect_dataset
from llamafactory_ext.demo_data.fer import EXPRESSIONS, FERBENCH_PROMPT, draw_face, write_fer_demo
from llamafactory_ext.demo_data.hmer import random_formula, write_hmer_demo
from llamafactory_ext.hmer.prompts import human_prompt
from llamafactory_ext.hmer.tree_cot import latex_to_tree


def test_hmer_demo_files(tmp_path):
    paths = write_hmer_demo(tmp_path / "a", n=6, n_test=3, seed=5)
    train = json.loads(paths["train"].read_text(encoding="utf-8"))
    test = json.loads(paths["test"].read_text(encoding="utf-8"))
    assert (len(train), len(test)) == (6, 3)
    labels = [r["messages"][1]["value"] for r in train + test]
    assert len(set(labels)) == 9  # distinct across both splits
    for record in train + test:
        assert record["messages"][0] == {"from": "human", "value": human_prompt("vanilla")}
        assert record["messages"][1]["from"] == "gpt"
        with Image.open(tmp_path / "a" / record["images"][0]) as image:
            assert image.size[0] > 20 and image.size[1] > 10
    # The runner reads them as HMER records with relative images resolved beside the file.
    records = load_records(paths["test"])
    assert records[0].task == "hmer" and records[0].image_paths[0].is_file()

    again = write_hmer_demo(tmp_path / "b", n=6, n_test=3, seed=5)
    assert again["train"].read_bytes() == paths["train"].read_bytes()
    first = train[0]["images"][0]
    assert (tmp_path / "a" / first).read_bytes() == (tmp_path / "b" / first).read_bytes()


def test_hmer_labels_are_space_tokenised_and_parse():
    rng = random.Random(0)
    for _ in range(300):
        latex = random_formula(rng)
        assert latex == " ".join(latex.split())
        for glued in ("^{", "_{", "{{", "}}"):
            assert glued not in latex
        latex_to_tree(latex)  # every argument braced: the Tree-CoT builder never rejects a demo label


def test_fer_demo_files(tmp_path):
    paths = write_fer_demo(tmp_path, n=8, n_test=7, seed=1)
    qa = json.loads(paths["qa"].read_text(encoding="utf-8"))
    rlvr = json.loads(paths["rlvr"].read_text(encoding="utf-8"))
    assert len(qa) == 7 and len(rlvr) == 8
    assert set(qa[0]) == {"image_path", "true_label", "prompt", "candidate_labels"}
    assert detect_dataset(qa[0]["candidate_labels"]) == "rafdb"
    assert sorted(r["true_label"] for r in qa) == sorted(CANDIDATE_LABELS["rafdb"])  # balanced
    assert qa[0]["prompt"] == FERBENCH_PROMPT.format(labels=", ".join(CANDIDATE_LABELS["rafdb"]))
    assert all(r["solution"] == f"<answer>{r['solution'][8:-9]}</answer>" for r in rlvr)
    assert {r["solution"][8:-9] for r in rlvr} <= set(CANDIDATE_LABELS["rafdb"])
    with Image.open(tmp_path / qa[0]["image_path"]) as image:
        assert image.size == (224, 224)
    records = load_records(paths["qa"], image_root=tmp_path)
    assert records[0].task == "fer" and records[0].image_paths[0].is_file()


def test_fer_faces_differ_by_expression():
    rendered = {e: draw_face(e, random.Random(0)).tobytes() for e in EXPRESSIONS}
    assert len(set(rendered.values())) == len(EXPRESSIONS)
    with pytest.raises(ValueError, match="cannot draw"):
        draw_face("contempt", random.Random(0))


def test_ferbench_prompt_matches_the_real_qa_files(shared_reference):
    with gzip.open(
        shared_reference / "unifer_ferbench" / "rafdb_qa.json.gz", "rt", encoding="utf-8"
    ) as handle:
        item = json.load(handle)[0]
    assert item["prompt"] == FERBENCH_PROMPT.format(labels=", ".join(item["candidate_labels"]))


def test_demo_data_cli(tmp_path):
    assert unitune(["demo-data", "hmer", "--n", "2", "--n-test", "1", "--out", str(tmp_path / "h")]) == 0
    assert (
        unitune(
            [
                "demo-data",
                "fer",
                "--n",
                "2",
                "--n-test",
                "2",
                "--dataset",
                "sfew",
                "--out",
                str(tmp_path / "f"),
            ]
        )
        == 0
    )
    qa = json.loads((tmp_path / "f" / "fer_demo_qa.json").read_text(encoding="utf-8"))
    assert detect_dataset(qa[0]["candidate_labels"]) == "sfew"
    assert unitune(["demo-data", "hmer", "--n", "0", "--out", str(tmp_path / "x")]) == 2
