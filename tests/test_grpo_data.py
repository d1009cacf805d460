"""RLVR -> GRPO rows: prompt layout, 224x224 images, validation messages, sharegpt input, the CLI."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from evaluators.cli import main as unitune
from evaluators.errors import UserError
from evaluators.io_utils import read_records
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS
from trl_grpo import rlvr_data as D

RAFDB = list(CANDIDATE_LABELS["rafdb"])
PROBLEM = D.FER_PROBLEM.format(labels=", ".join(RAFDB))


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "root"
    (root / "RAF-DB" / "aligned").mkdir(parents=True)
    Image.new("RGB", (100, 60), (200, 10, 10)).save(root / "RAF-DB" / "aligned" / "a.jpg")
    Image.new("L", (300, 500), 128).save(root / "RAF-DB" / "aligned" / "b.png")  # grey, tall
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


def record(image="/RAF-DB/aligned/a.jpg", solution="<answer>happiness</answer>", problem=PROBLEM, **extra):
    return {"problem": problem, "solution": solution, "image_path": image, **extra}


def test_rows_have_the_grpo_layout_and_224_images(image_root, tmp_path):
    records = [record(), record("/RAF-DB/aligned/b.png", "<answer> Sad </answer>"), record()]
    path = D.convert_records(records, tmp_path / "out", image_root)
    rows = read_records(path)
    assert len(rows) == 3
    row = rows[0]
    assert row["prompt"] == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROBLEM}]}
    ]  # one user turn, image placeholder first, no system turn
    assert row["solution"] == "<answer>happiness</answer>"
    assert row["candidate_labels"] == RAFDB  # parsed from the question
    assert row["task"] == "fer"
    assert row["image_path"] == "/RAF-DB/aligned/a.jpg"
    assert rows[0]["image"] == rows[2]["image"] != rows[1]["image"]  # one converted file per source image
    for r in rows:
        with Image.open(path.parent / r["image"]) as img:
            assert img.size == (224, 224) and img.mode == "RGB"
    assert len(list((tmp_path / "out" / "images").iterdir())) == 2


def test_dataset_loads_with_decoded_images_and_scores_with_the_rewards(image_root, tmp_path):
    from trl_grpo.rewards import fer_accuracy_reward

    ds = D.load_grpo_dataset(
        D.convert_records([record(), record(solution="<answer>fear</answer>")], tmp_path, image_root)
    )
    assert ds[0]["image"].size == (224, 224)
    assert ds[0]["prompt"][0]["content"][0]["type"] == "image"
    assert ds[0]["prompt"][0]["content"][1]["text"] == PROBLEM
    completions = ["<answer>happy</answer>", "<answer>happy</answer>"]
    assert fer_accuracy_reward(completions, ds["solution"], candidate_labels=ds["candidate_labels"]) == [
        1.0,
        0.0,
    ]


def test_image_size_none_keeps_the_size(image_root, tmp_path):
    path = D.convert_records([record()], tmp_path, image_root, image_size=None)
    with Image.open(path.parent / read_records(path)[0]["image"]) as img:
        assert img.size == (100, 60)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (record("/RAF-DB/aligned/missing.jpg"), "row 1: image not found: "),
        (record("broken.jpg"), "row 1: cannot decode image "),
        (record(solution="happiness"), "row 1: `solution` has no <answer>...</answer> span"),
        (record(solution="<answer>joy</answer>"), "row 1: answer 'joy' is not one of the candidate labels"),
        (
            record(solution="<answer>contempt</answer>"),
            "answer 'contempt' is not one of the candidate labels",
        ),
        (record(problem=""), "row 1: `problem` must be a non-empty string"),
        (
            {"problem": PROBLEM, "solution": "<answer>sad</answer>"},
            "row 1: `image_path` must be a non-empty string",
        ),
        ("just a string", "row 1: expected an object, got str"),
    ],
)
def test_invalid_rows_are_reported_or_skipped(image_root, tmp_path, bad, message):
    records = [record(), bad]
    with pytest.raises(UserError, match="1 of 2 rows are invalid") as err:
        D.convert_records(records, tmp_path / "strict", image_root, source="rlvr.json")
    assert message in str(err.value)
    assert "\n" not in str(err.value)  # the CLI prints one line
    path = D.convert_records(records, tmp_path / "lenient", image_root, skip_invalid=True)
    assert len(read_records(path)) == 1


def test_error_summary_is_capped(image_root, tmp_path):
    records = [record(f"/missing_{i}.jpg") for i in range(8)]
    with pytest.raises(UserError, match=r"8 of 8 rows are invalid: .*\(3 more\)"):
        D.convert_records(records, tmp_path, image_root)
    with pytest.raises(UserError, match="no valid row"):
        D.convert_records(records, tmp_path, image_root, skip_invalid=True)


def test_candidate_labels_field_wins_over_the_question(image_root, tmp_path):
    ferplus = list(CANDIDATE_LABELS["ferplus"])
    rows = read_records(
        D.convert_records(
            [record(solution="<answer>contempt</answer>", candidate_labels=ferplus)], tmp_path, image_root
        )
    )
    assert rows[0]["candidate_labels"] == ferplus
    # No list anywhere: any FERBench label is accepted and the column is empty (the reward uses the gold).
    rows = read_records(
        D.convert_records(
            [record(problem="<image>Which expression?", solution="<answer>contempt</answer>")],
            tmp_path / "b",
            image_root,
        )
    )
    assert rows[0]["candidate_labels"] == []
    assert rows[0]["prompt"][0]["content"][1]["text"] == "Which expression?"  # <image> token removed


def test_hmer_task_and_sharegpt_records(image_root, tmp_path):
    sharegpt = {
        "images": ["RAF-DB/aligned/b.png"],
        "messages": [
            {"from": "human", "value": "<image>Write the LaTeX."},
            {"from": "gpt", "value": "x ^ { 2 }"},
        ],
    }
    rows = read_records(D.convert_records([sharegpt], tmp_path, image_root, task="hmer", image_size=None))
    assert rows[0]["solution"] == "x ^ { 2 }"
    assert rows[0]["task"] == "hmer"
    assert "candidate_labels" not in rows[0]
    assert rows[0]["prompt"][0]["content"][1] == {"type": "text", "text": "Write the LaTeX."}
    with pytest.raises(UserError, match="task must be one of"):
        D.convert_records([sharegpt], tmp_path, image_root, task="ocr")


def test_prepare_reuses_converted_rows(image_root, tmp_path):
    converted = D.convert_records([record()], tmp_path / "a", image_root)
    assert D.prepare_grpo_data(converted, tmp_path / "b") == converted
    assert not (tmp_path / "b").exists()


def test_parse_candidate_labels_on_ferbench_questions(shared_reference):
    import gzip

    for name, dataset in [("rafdb_qa", "rafdb"), ("sfew_2.0_qa", "sfew")]:
        with gzip.open(shared_reference / "unifer_ferbench" / f"{name}.json.gz", "rt") as handle:
            items = json.load(handle)
        for item in items[:50]:
            assert D.parse_candidate_labels(item["prompt"]) == list(CANDIDATE_LABELS[dataset])


def test_cli_fer_rlvr(image_root, tmp_path):
    src = tmp_path / "rlvr.json"
    src.write_text(json.dumps([record(), record("/RAF-DB/aligned/b.png", "<answer>fear</answer>")]))
    out = tmp_path / "out"
    assert unitune(["data", "fer-rlvr", str(src), "--image-root", str(image_root), "--out", str(out)]) == 0
    assert len(read_records(out / D.OUTPUT_NAME)) == 2
    src.write_text(json.dumps([record(solution="<answer>joy</answer>")]))
    assert unitune(["data", "fer-rlvr", str(src), "--image-root", str(image_root), "--out", str(out)]) == 2


def test_synthetic_rows_convert_cleanly(tmp_path):
    for task in ("fer", "hmer"):
        raw = D.write_synthetic_rlvr(tmp_path / task, task=task, n=3)
        rows = read_records(
            D.prepare_grpo_data(raw, tmp_path / f"{task}_out", image_root=raw.parent, task=task)
        )
        assert len(rows) == 3 and {r["task"] for r in rows} == {task}
