"""``unitune eval-all``: suite loading, paper numbers, skipped/failed datasets and the summary table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from evaluators.cli import main as unitune
from evaluators.errors import UserError
from evaluators.inference import runner
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS
from evaluators.suite import DEFAULT_SUITE, load_suite
from llamafactory_ext.demo_data.fer import FERBENCH_PROMPT
from llamafactory_ext.hmer.prompts import human_prompt


def test_packaged_suite_has_the_paper_numbers():
    meta, datasets = load_suite(DEFAULT_SUITE)
    paper = {d.name: d.paper for d in datasets}
    assert paper == {
        "CROHME 2014": 82.05,
        "CROHME 2016": 77.94,
        "CROHME 2019": 79.23,
        "CROHME 2023": None,
        "HME100K": None,  # the paper's 71.93 is on 24,016 samples, hme100k_test has 24,607
        "Im2LaTeXv2": None,  # the paper's 84.32 matches neither Im2LaTeXv2 file (see release.yaml)
        "MathWriting": 51.45,
        "MNE N1": 76.00,
        "MNE N2": 58.88,
        "MNE N3": 46.45,
        "RAF-DB": None,
        "FERPlus": None,
        "AffectNet": None,
        "SFEW 2.0": None,
    }
    assert {d.task for d in datasets if d.name in ("RAF-DB", "FERPlus", "AffectNet", "SFEW 2.0")} == {"fer"}
    assert meta["data_root"] == "data"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo: 1\n", "needs a top-level `datasets:` list"),
        ("datasets:\n  - {name: A, task: ocr, input: a.json}\n", "task must be hmer or fer"),
        ("datasets:\n  - {name: A, task: hmer}\n", "needs `name`, `task` and `input`"),
        (
            "datasets:\n  - {name: A, task: hmer, input: a}\n  - {name: A, task: fer, input: b}\n",
            "used twice",
        ),
        ("infer: {temprature: 0}\ndatasets: []\n", "unknown `infer` keys"),
        ("datasets: [\n", "not valid YAML"),
    ],
)
def test_suite_errors(tmp_path, text, message):
    path = tmp_path / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_suite(path)


def _data(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    hmer, qa = [], []
    labels = list(CANDIDATE_LABELS["rafdb"])
    for i in range(4):
        Image.new("RGB", (60, 30), "white").save(tmp_path / "img" / f"h{i}.png")
        hmer.append(
            {
                "images": [f"img/h{i}.png"],
                "messages": [
                    {"from": "human", "value": human_prompt("vanilla")},
                    {"from": "gpt", "value": f"x ^ {{ {i} }}"},
                ],
            }
        )
        Image.new("RGB", (50, 50), "gray").save(tmp_path / "img" / f"f{i}.png")
        qa.append(
            {
                "image_path": f"/img/f{i}.png",
                "true_label": labels[i],
                "prompt": FERBENCH_PROMPT.format(labels=", ".join(labels)),
                "candidate_labels": labels,
            }
        )
    (tmp_path / "crohme_2014.json").write_text(json.dumps(hmer), encoding="utf-8")
    (tmp_path / "rafdb_qa.json").write_text(json.dumps(qa), encoding="utf-8")
    (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "paper_model: test\n"
        "infer: {max_new_tokens: 4}\n"
        "datasets:\n"
        "  - {name: CROHME 2014, task: hmer, input: crohme_2014.json, paper: 82.05}\n"
        "  - {name: RAF-DB, task: fer, input: rafdb_qa.json, image_root: .}\n"
        "  - {name: HME100K, task: hmer, input: absent/hme100k.json, paper: 71.93}\n"
        "  - {name: Broken, task: hmer, input: broken.json}\n",
        encoding="utf-8",
    )
    return suite


class _Oracle:
    """A backend that answers right for ids ending in an even digit and wrong otherwise."""

    chunk_size = 0

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, requests, sampling):
        self.calls += 1
        outputs = []
        for request in requests:
            record = request.record
            right = int(record.id[-1]) % 2 == 0
            if record.task == "hmer":
                outputs.append([record.gt if right else "y"])
            else:
                outputs.append([f"<think>..</think><answer>{record.gt if right else 'nothing'}</answer>"])
        return outputs


def test_eval_all_prints_the_summary_and_resumes(tmp_path, tiny_model_dir, monkeypatch, capsys):
    suite = _data(tmp_path)
    oracle = _Oracle()
    monkeypatch.setattr(runner, "make_backend", lambda *a: oracle)
    out = tmp_path / "out"
    argv = [
        "eval-all",
        "--model",
        str(tiny_model_dir),
        "--config",
        str(suite),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert unitune(argv) == 1  # the broken dataset fails; the others still run
    table = capsys.readouterr().out
    assert "| CROHME 2014 | hmer | 4 | ExpRate | 50.00 | 82.05 | -32.05 | ok |" in table
    assert "| RAF-DB | fer | 4 | Acc (UniFER protocol) | 50.00 | — | — | ok |" in table
    assert "| RAF-DB | fer | 4 | Acc (strict) | 50.00 | — | — | ok |" in table
    assert "| HME100K | hmer | — | — | — | 71.93 | — | skipped: input not found" in table
    assert "| Broken | hmer | — | — | — | — | — | failed:" in table
    assert (out / "summary.md").read_text(encoding="utf-8") == table.lstrip("\n")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    statuses = {d["name"]: d["status"] for d in summary["datasets"]}
    assert statuses == {"CROHME 2014": "ok", "RAF-DB": "ok", "HME100K": "skipped", "Broken": "failed"}
    assert (out / "crohme_2014" / "infer" / "crohme_2014_pred.json").is_file()
    assert (out / "raf_db" / "infer" / "rafdb_results.json").is_file()
    assert oracle.calls == 2

    # A second run generates nothing new (finished work is skipped) and prints the same table.
    assert unitune([*argv, "--only", "CROHME 2014", "raf_db"]) == 0
    assert oracle.calls == 2
    again = capsys.readouterr().out
    assert "| CROHME 2014 | hmer | 4 | ExpRate | 50.00 | 82.05 | -32.05 | ok |" in again
    assert "Broken" not in again


def test_eval_all_needs_a_model(tmp_path, caplog):
    suite = _data(tmp_path)
    assert unitune(["eval-all", "--config", str(suite)]) == 2
    assert "give --model" in caplog.text
    assert unitune(["eval-all", "--model", "m", "--config", str(suite), "--only", "Nope"]) == 2
