"""FER scoring: metrics of both protocols, counting, the pooled total, the JSON schema and the CLI."""

from __future__ import annotations

import collections
import gzip
import json
import logging
from pathlib import Path

import pytest

from evaluators.cli import main
from evaluators.errors import UserError
from evaluators.fer.evaluate import load_results, load_results_records, results_stem, score_file, score_total
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS, POOLED_LABEL_MAP

QA_FILES = {
    "rafdb": "rafdb_qa.json.gz",
    "ferplus": "ferplus_qa.json.gz",
    "affectnet": "affectnet_qa.json.gz",
    "sfew": "sfew_2.0_qa.json.gz",
}


def record(dataset: str, true: str, response, **extra) -> dict:
    return {
        "image_path": f"/{dataset}/{true}.png",
        "true_label": true,
        "prompt": "…",
        "candidate_labels": list(CANDIDATE_LABELS[dataset]),
        "model_response": response,
        **extra,
    }


def answer(label: str, think: str = "ok") -> str:
    return f"<think>{think}</think><answer>{label}</answer>"


# --------------------------------------------------------------------------------------------------
# metrics and counts, hand-computed


def rafdb_four() -> list[dict]:
    return [
        record("rafdb", "happiness", answer("happiness")),
        record("rafdb", "happiness", "I cannot tell"),  # unifer: unknown, strict: invalid
        record("rafdb", "sadness", answer("sad")),  # unifer rule 3 (sadness:[sad]), strict synonym
        record("rafdb", "anger", answer("happy")),  # wrong under both
        record("rafdb", "anger", "ERROR: CUDA out of memory", error=True),
    ]


def test_unifer_metrics_unknown_is_a_class_and_errors_are_skipped() -> None:
    score = score_file(load_results_records(rafdb_four(), "m"), "unifer")
    assert score.predictions == ["happiness", "unknown", "sadness", "happiness", None]
    assert score.rules == ["answer_exact", "unknown", "synonym", "synonym", "error"]
    assert score.counts == {"total": 5, "errors": 1, "unknown": 1, "valid": 4, "bad_response": 0}
    overall = score.metrics["overall"]
    assert overall["accuracy"] == pytest.approx(2 / 4)
    # classes anger, happiness, sadness, unknown: P = (0 + 1/2 + 1 + 0) / 4, R = (0 + 1/2 + 1 + 0) / 4
    assert overall["precision"] == pytest.approx(1.5 / 4)
    assert overall["recall"] == pytest.approx(1.5 / 4)
    assert overall["f1"] == pytest.approx(1.5 / 4)
    labels = list(CANDIDATE_LABELS["rafdb"])
    assert score.labels == labels
    matrix = score.metrics["confusion_matrix"]
    assert matrix[labels.index("anger")][labels.index("happiness")] == 1
    assert sum(map(sum, matrix)) == 3  # the unknown prediction has no column


def test_strict_metrics_invalid_is_wrong_and_not_a_class() -> None:
    score = score_file(load_results_records(rafdb_four(), "m"), "strict")
    assert score.predictions == ["happiness", "invalid", "sadness", "happiness", "invalid"]
    assert score.rules == ["answer", "no_answer", "answer_synonym", "answer_synonym", "error"]
    assert score.counts == {"total": 5, "errors": 1, "invalid": 1, "scored": 5, "bad_response": 0}
    overall = score.metrics["overall"]
    assert overall["accuracy"] == pytest.approx(2 / 5)
    # over the 7 candidates: P happiness 1/2, sadness 1; R happiness 1/2, sadness 1, anger 0; rest 0
    assert overall["precision"] == pytest.approx(1.5 / 7)
    assert overall["recall"] == pytest.approx(1.5 / 7)
    per_class = {row["emotion"]: row for row in score.metrics["per_class"]}
    assert per_class["anger"]["support"] == 2 and per_class["anger"]["recall"] == 0.0
    assert per_class["happiness"] == {
        "emotion": "happiness",
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "support": 2,
    }


def test_non_string_response_is_counted_not_a_traceback() -> None:
    recs = [record("sfew", "sad", None), record("sfew", "sad", 42), record("sfew", "sad", answer("sad"))]
    loaded = load_results_records(recs, "m")
    unifer, strict = score_file(loaded, "unifer"), score_file(loaded, "strict")
    assert unifer.predictions == ["unknown", "unknown", "sad"]
    assert unifer.counts["bad_response"] == 2 and strict.counts["bad_response"] == 2
    assert strict.counts["invalid"] == 2


def test_all_errors_are_refused() -> None:
    # Every inference failed: no number would mean anything (issue #11), so the file is refused.
    recs = [record("sfew", "sad", "ERROR: x", error=True)]
    with pytest.raises(UserError, match="all 1 items are marked as failed inference"):
        load_results_records(recs, "m")


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "empty file"),
        ([["not", "an", "object"]], "expected an object"),
        ([{"candidate_labels": list(CANDIDATE_LABELS["sfew"]), "model_response": "x"}], "true_label"),
        ([{"true_label": "sad", "model_response": "x"}], "--dataset"),
        ([record("sfew", "sad", "x"), record("ferplus", "sad", "x")], "one file must hold one dataset"),
        ([record("sfew", "contempt", "x")], "not one of sfew's candidates"),
        ([{**record("sfew", "sad", "x"), "candidate_labels": ["sad", "happy"]}], "match no FERBench dataset"),
    ],
)
def test_bad_records_raise_user_errors(records: list, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_results_records(records, "bad.json")


def test_dataset_override() -> None:
    recs = [{"true_label": "sad", "model_response": answer("sad")}]
    assert load_results_records(recs, "m", dataset="sfew").dataset == "sfew"
    with pytest.raises(UserError, match="unknown"):
        load_results_records(recs, "m", dataset="fer2013")


def test_results_stem() -> None:
    assert results_stem("a/b/ferplus_unifer_7b_results.json") == "ferplus_unifer_7b"
    assert results_stem("x_results_v2.json") == "x_results_v2"
    assert results_stem("_results.json") == "_results"


# --------------------------------------------------------------------------------------------------
# pooled total


def four_files() -> list:
    files = {
        "affectnet": [
            record("affectnet", "contempt", answer("contempt")),
            record("affectnet", "anger", answer("angry")),
        ],
        "rafdb": [record("rafdb", "happiness", "no tags at all"), record("rafdb", "fear", answer("fear"))],
        "ferplus": [
            record("ferplus", "happy", answer("happiness", "not angry at all")),
            record("ferplus", "sad", "x", error=True),
        ],
        # per-dataset SFEW regex is case-sensitive -> angry; the pooled regex reads sad
        "sfew": [record("sfew", "sad", "<think>not angry</think><ANSWER>sad</ANSWER>")],
    }
    return [load_results_records(recs, name) for name, recs in reversed(list(files.items()))]


def test_total_unifer_matches_upstream_pooling() -> None:
    loaded = four_files()
    assert score_file(loaded[0], "unifer").predictions == ["angry"]  # the SFEW file alone
    score = score_total(loaded, "unifer")
    # order AffectNet, RAF-DB, FERPlus, SFEW; labels mapped on both sides
    assert score.predictions == ["contempt", "anger", "unknown", "fear", "anger", None, "sadness"]
    assert score.labels == ["anger", "contempt", "fear", "happiness", "sadness"]  # sorted(set(true))
    assert score.counts == {"total": 7, "errors": 1, "unknown": 1, "valid": 6, "bad_response": 0}
    overall = score.metrics["overall"]
    assert overall["accuracy"] == pytest.approx(4 / 6)
    # classes: anger contempt fear happiness sadness unknown
    # P: anger 1/2, contempt 1, fear 1, happiness 0, sadness 1, unknown 0 -> 3.5/6
    # R: anger 1, contempt 1, fear 1, happiness 0, sadness 1, unknown 0 -> 4/6
    assert overall["precision"] == pytest.approx(3.5 / 6)
    assert overall["recall"] == pytest.approx(4 / 6)


def test_total_strict() -> None:
    score = score_total(four_files(), "strict")
    assert score.predictions == ["contempt", "anger", "invalid", "fear", "happiness", "invalid", "sadness"]
    assert score.labels == sorted(set(POOLED_LABEL_MAP.get(c, c) for c in CANDIDATE_LABELS["affectnet"]))
    assert score.counts == {"total": 7, "errors": 1, "invalid": 1, "scored": 7, "bad_response": 0}
    assert score.metrics["overall"]["accuracy"] == pytest.approx(5 / 7)


@pytest.mark.parametrize("protocol", ["unifer", "strict"])
def test_total_reusing_per_file_labels_is_identical(protocol: str) -> None:
    loaded = four_files()
    own = [score_file(f, protocol) for f in loaded]
    assert score_total(loaded, protocol, own) == score_total(loaded, protocol)
    # SFEW is extracted again with the pooled regex: its own file's label (angry) does not leak in
    if protocol == "unifer":
        assert score_total(loaded, protocol, own).predictions[-1] == "sadness"
    with pytest.raises(ValueError, match="per_file: 1 scores for 4 files"):
        score_total(loaded, protocol, own[:1])


def test_total_refuses_two_files_of_one_dataset() -> None:
    one = load_results_records([record("sfew", "sad", "x")], "a")
    two = load_results_records([record("sfew", "sad", "x")], "b")
    with pytest.raises(UserError, match="both sfew"):
        score_total([one, two], "unifer")


# --------------------------------------------------------------------------------------------------
# CLI, schema and files


def write(path: Path, records) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_cli_both_total_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    names = {"affectnet": "affectnet_unifer_7b_results.json", "rafdb": "rafdb_results.json"}
    raf = write(tmp_path / names["rafdb"], [r for r in rafdb_four()])
    aff = write(tmp_path / names["affectnet"], [record("affectnet", "anger", answer("anger"))])
    out = tmp_path / "out"
    status = main(
        ["eval", "fer", str(raf), str(aff), "--protocol", "both", "--total", "--plots", "--out-dir", str(out)]
    )
    assert status == 0
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted(
        [
            f"{stem}_{suffix}"
            for stem in ("rafdb", "affectnet_unifer_7b", "total")
            for suffix in (
                "unifer_metrics.json",
                "strict_metrics.json",
                "unifer_confusion.png",
                "strict_confusion.png",
            )
        ]
        + ["rafdb_samples.jsonl", "affectnet_unifer_7b_samples.jsonl"]
    )
    doc = json.loads((out / "rafdb_unifer_metrics.json").read_text())
    assert list(doc)[:3] == ["overall", "per_class", "confusion_matrix"]
    assert set(doc["overall"]) == {"accuracy", "precision", "recall", "f1"}
    assert [set(row) for row in doc["per_class"]] == [{"emotion", "precision", "recall", "f1", "support"}] * 7
    assert [row["emotion"] for row in doc["per_class"]] == list(CANDIDATE_LABELS["rafdb"])
    assert len(doc["confusion_matrix"]) == 7 and all(len(r) == 7 for r in doc["confusion_matrix"])
    assert doc["protocol"] == "unifer" and doc["dataset"] == "rafdb"
    assert doc["counts"] == {"total": 5, "errors": 1, "unknown": 1, "valid": 4, "bad_response": 0}
    samples = [json.loads(line) for line in (out / "rafdb_samples.jsonl").read_text().splitlines()]
    assert samples[2] == {
        "index": 2,
        "image_path": "/rafdb/sadness.png",
        "true_label": "sadness",
        "error": False,
        "model_response": "<think>ok</think><answer>sad</answer>",
        "unifer_pred": "sadness",
        "unifer_rule": "synonym",
        "strict_pred": "sadness",
        "strict_rule": "answer_synonym",
    }
    total = json.loads((out / "total_strict_metrics.json").read_text())
    assert total["counts"]["total"] == 6 and total["dataset"] == "total"
    printed = capsys.readouterr().out
    assert "| rafdb | RAF-DB | unifer | 5 | 1 | 1 | 4 | 0.5000 |" in printed
    assert "| rafdb | RAF-DB | strict | 5 | 1 | 1 | 5 | 0.4000 |" in printed
    assert (out / "rafdb_strict_confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_single_protocol_writes_stem_metrics(tmp_path: Path) -> None:
    src = write(tmp_path / "sfew_2.0_results.json", [record("sfew", "sad", answer("sad"))])
    assert main(["eval", "fer", str(src), "--protocol", "unifer", "--out-dir", str(tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "sfew_2.0_metrics.json").read_text())
    assert doc["protocol"] == "unifer" and doc["overall"]["accuracy"] == 1.0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "sfew_2.0_metrics.json",
        "sfew_2.0_samples.jsonl",
    ]


def test_cli_without_plots_removes_the_plot_of_an_earlier_run(tmp_path: Path) -> None:
    """A confusion PNG from an earlier --plots run would describe other metrics than the ones beside it."""
    src = write(tmp_path / "rafdb_results.json", rafdb_four())
    out = tmp_path / "o"
    assert main(["eval", "fer", str(src), "--plots", "--total", "--out-dir", str(out)]) == 0
    assert {"rafdb_confusion.png", "total_confusion.png"} <= {p.name for p in out.iterdir()}
    unrelated = out / "other_confusion.png"  # a plot of a file this run does not score: kept
    unrelated.write_bytes(b"\x89PNG")
    write(src, [record("rafdb", "sadness", answer("sadness"))])
    assert main(["eval", "fer", str(src), "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "other_confusion.png",
        "rafdb_metrics.json",
        "rafdb_samples.jsonl",
        "total_confusion.png",  # --total was not asked for this time: total_metrics.json is the old one too
        "total_metrics.json",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no items to evaluate"),
        ('[{"true_label": "sad",', "malformed JSON"),
        ("42", "expected an object"),
        ('[{"model_response": "x"}]', "true_label"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, message: str
) -> None:
    src = tmp_path / "bad.json"
    src.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="unitune"):
        assert main(["eval", "fer", str(src), "--out-dir", str(tmp_path / "o")]) == 2
    assert message in caplog.text
    assert not (tmp_path / "o").exists()


def test_cli_missing_file_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="unitune"):
        assert main(["eval", "fer", str(tmp_path / "nope.json"), "--out-dir", str(tmp_path)]) == 2
    assert "no such file" in caplog.text


# --------------------------------------------------------------------------------------------------
# the real FERBench QA files (no images), paired with synthetic responses


def shared_qa(shared_reference: Path, dataset: str) -> list[dict]:
    path = shared_reference / "unifer_ferbench" / QA_FILES[dataset]
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.shared
def test_shared_qa_files_load_and_detect(shared_reference: Path, tmp_path: Path) -> None:
    sizes = {"rafdb": 3068, "ferplus": 3573, "affectnet": 4000, "sfew": 431}
    for dataset, size in sizes.items():
        items = shared_qa(shared_reference, dataset)
        results = [{**item, "model_response": answer(item["true_label"])} for item in items]
        path = write(tmp_path / f"{dataset}_results.json", results)
        loaded = load_results(path)
        assert loaded.dataset == dataset and len(loaded.true_labels) == size
        prompt = (
            "As an expert in facial expression recognition, which expression is most prominent in this image? "
            "Please select your answer from the following candidate labels: "
            f"{', '.join(CANDIDATE_LABELS[dataset])}. Provide your detailed reasoning between the <think></think> "
            "tags, and then give your final answer between the <answer></answer> tags."
        )
        assert {item["prompt"] for item in items} == {prompt}
        for protocol in ("unifer", "strict"):
            assert score_file(loaded, protocol).metrics["overall"]["accuracy"] == 1.0


@pytest.mark.shared
def test_shared_pooled_vocabulary_answers(shared_reference: Path) -> None:
    """Answer every item in RAF-DB's vocabulary after "not angry at all": FERPlus/SFEW happy items fail."""
    loaded = []
    for dataset in QA_FILES:
        items = shared_qa(shared_reference, dataset)
        recs = [
            {
                **it,
                "model_response": answer(
                    POOLED_LABEL_MAP.get(it["true_label"], it["true_label"]), "not angry at all"
                ),
            }
            for it in items
        ]
        loaded.append(load_results_records(recs, dataset))
    by_name = {f.dataset: f for f in loaded}
    for dataset in ("ferplus", "sfew"):
        happy = collections.Counter(by_name[dataset].true_labels)["happy"]
        n = len(by_name[dataset].true_labels)
        unifer = score_file(by_name[dataset], "unifer")
        assert unifer.metrics["overall"]["accuracy"] == pytest.approx(1 - happy / n)
        assert unifer.metrics["confusion_matrix"][0][CANDIDATE_LABELS[dataset].index("happy")] == 0
        assert score_file(by_name[dataset], "strict").metrics["overall"]["accuracy"] == 1.0
    total_u, total_s = score_total(loaded, "unifer"), score_total(loaded, "strict")
    assert total_u.counts["valid"] == total_s.counts["scored"] == 11072
    wrong = sum(collections.Counter(by_name[d].true_labels)["happy"] for d in ("ferplus", "sfew"))
    assert total_u.metrics["overall"]["accuracy"] == pytest.approx(1 - wrong / 11072)
    assert total_s.metrics["overall"]["accuracy"] == 1.0
