"""RLVR -> GRPO dataset folders: prompt layout, embedded 224x224 images, validation, sharegpt/FERBench input, CLIs."""

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


def rows(folder, split="train"):
    """The rows of a converted folder, loaded as a user would (datasets.load_dataset on the folder)."""
    return list(D.load_grpo_dataset(folder, split=split))


def record(image="/RAF-DB/aligned/a.jpg", solution="<answer>happiness</answer>", problem=PROBLEM, **extra):
    return {"problem": problem, "solution": solution, "image_path": image, **extra}


def test_rows_have_the_grpo_layout_and_224_images(image_root, tmp_path):
    records = [record(), record("/RAF-DB/aligned/b.png", "<answer> Sad </answer>"), record()]
    out = D.convert_records(records, tmp_path / "out", image_root)
    got = rows(out)
    assert len(got) == 3
    row = got[0]
    assert row["prompt"] == [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": PROBLEM}]}
    ]  # one user turn, image placeholder first, no system turn (Arrow gives every part both keys)
    assert row["solution"] == "<answer>happiness</answer>"
    assert row["candidate_labels"] == RAFDB  # parsed from the question
    assert row["task"] == "fer"
    assert row["image_path"] == "/RAF-DB/aligned/a.jpg"
    for r in got:
        assert r["image"].size == (224, 224) and r["image"].mode == "RGB"
    assert got[0]["image"].tobytes() == got[2]["image"].tobytes() != got[1]["image"].tobytes()
    assert len(list((out / ".cache" / "images").iterdir())) == 2  # one converted file per source image
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]


def test_folder_loads_from_any_directory_and_scores_with_the_rewards(image_root, tmp_path, monkeypatch):
    import datasets

    from trl_grpo.rewards import fer_accuracy_reward

    out = D.convert_records(
        [record(), record(solution="<answer>fear</answer>")], tmp_path / "grpo", image_root
    )
    D.convert_records([record()], out, image_root, split="test")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (image_root / "RAF-DB").rename(image_root / "moved")  # the source images are not needed any more
    ds = datasets.load_dataset(str(out))  # what `trl grpo --dataset_name OUT` calls
    assert {split: d.num_rows for split, d in ds.items()} == {"train": 2, "test": 1}
    assert ds["train"][0]["image"].size == (224, 224)
    completions = ["<answer>happy</answer>", "<answer>happy</answer>"]
    train = ds["train"]
    assert fer_accuracy_reward(
        completions, train["solution"], candidate_labels=train["candidate_labels"]
    ) == [
        1.0,
        0.0,
    ]


def test_two_folders_with_the_same_name_do_not_share_a_cache(image_root, tmp_path):
    """datasets 4.0 caches a folder with a `configs` card by its name: ours has none, so each loads its own rows."""
    a = D.convert_records([record()], tmp_path / "a" / "grpo", image_root)
    b = D.convert_records([record()] * 3, tmp_path / "b" / "grpo", image_root)
    assert (len(rows(a)), len(rows(b))) == (1, 3)
    D.convert_records([record()] * 2, a, image_root)  # rewritten in place
    assert len(rows(a)) == 2


def test_image_size_none_keeps_the_size(image_root, tmp_path):
    out = D.convert_records([record()], tmp_path, image_root, image_size=None)
    assert rows(out)[0]["image"].size == (100, 60)
    out = D.convert_records([record()], tmp_path, image_root, image_size=64)  # same cache, another size
    assert rows(out)[0]["image"].size == (64, 64)


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
    assert len(rows(D.convert_records(records, tmp_path / "lenient", image_root, skip_invalid=True))) == 1


def test_error_summary_is_capped(image_root, tmp_path):
    records = [record(f"/missing_{i}.jpg") for i in range(8)]
    with pytest.raises(UserError, match=r"8 of 8 rows are invalid: .*\(3 more\)"):
        D.convert_records(records, tmp_path, image_root)
    with pytest.raises(UserError, match="no valid row"):
        D.convert_records(records, tmp_path, image_root, skip_invalid=True)


def test_candidate_labels_field_wins_over_the_question(image_root, tmp_path):
    ferplus = list(CANDIDATE_LABELS["ferplus"])
    got = rows(
        D.convert_records(
            [record(solution="<answer>contempt</answer>", candidate_labels=ferplus)], tmp_path, image_root
        )
    )
    assert got[0]["candidate_labels"] == ferplus
    # No list anywhere: any FERBench label is accepted and the column is empty (the reward uses the gold).
    got = rows(
        D.convert_records(
            [record(problem="<image>Which expression?", solution="<answer>contempt</answer>")],
            tmp_path / "b",
            image_root,
        )
    )
    assert got[0]["candidate_labels"] == []
    assert got[0]["prompt"][0]["content"][1]["text"] == "Which expression?"  # <image> token removed


def test_hmer_task_and_sharegpt_records(image_root, tmp_path):
    sharegpt = {
        "images": ["RAF-DB/aligned/b.png"],
        "messages": [
            {"from": "human", "value": "<image>Write the LaTeX."},
            {"from": "gpt", "value": "x ^ { 2 }"},
        ],
    }
    hmer = D.convert_records([sharegpt], tmp_path / "hmer", image_root, task="hmer", image_size=None)
    got = rows(hmer)
    assert got[0]["solution"] == "x ^ { 2 }"
    assert got[0]["task"] == "hmer"
    assert got[0]["candidate_labels"] == []
    assert got[0]["prompt"][0]["content"][1] == {"type": "text", "text": "Write the LaTeX."}
    fer = D.convert_records([record()], tmp_path / "fer", image_root)
    assert D.load_grpo_dataset(fer).features == D.load_grpo_dataset(hmer).features  # FER and HMER sets mix
    with pytest.raises(UserError, match="task must be one of"):
        D.convert_records([sharegpt], tmp_path, image_root, task="ocr")


def test_ferbench_qa_records_become_an_eval_split(image_root, tmp_path):
    qa = {
        "image_path": "/RAF-DB/aligned/a.jpg",
        "true_label": "happiness",
        "prompt": PROBLEM,
        "candidate_labels": RAFDB,
    }
    out = D.convert_records([qa], tmp_path, image_root, split="test")
    got = rows(out, split="test")
    assert got[0]["solution"] == "<answer>happiness</answer>" and got[0]["problem"] == PROBLEM
    with pytest.raises(UserError, match="`solution` must be a non-empty string"):
        D.convert_records([{**qa, "true_label": ""}], tmp_path, image_root)


def test_parse_candidate_labels_on_ferbench_questions(shared_reference):
    import gzip

    for name, dataset in [("rafdb_qa", "rafdb"), ("sfew_2.0_qa", "sfew")]:
        with gzip.open(shared_reference / "unifer_ferbench" / f"{name}.json.gz", "rt") as handle:
            items = json.load(handle)
        for item in items[:50]:
            assert D.parse_candidate_labels(item["prompt"]) == list(CANDIDATE_LABELS[dataset])


def test_cli_fer_rlvr_and_hmer_rlvr(image_root, tmp_path):
    src = tmp_path / "rlvr.json"
    src.write_text(json.dumps([record(), record("/RAF-DB/aligned/b.png", "<answer>fear</answer>")]))
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps([{"image_path": "a.jpg", "true_label": "sadness", "prompt": PROBLEM}]))
    out = tmp_path / "out"
    argv = ["data", "fer-rlvr", str(src), "--image-root", str(image_root), "--out", str(out)]
    assert (
        unitune([*argv, "--eval", str(qa), "--eval-image-root", str(image_root / "RAF-DB" / "aligned")]) == 0
    )
    assert (len(rows(out)), len(rows(out, "test"))) == (2, 1)
    assert unitune(argv) == 0  # a re-run without --eval drops the old test split
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    src.write_text(json.dumps([record(solution="<answer>joy</answer>")]))
    assert unitune(argv) == 2

    hmer = tmp_path / "hmer.json"
    hmer.write_text(
        json.dumps([{"problem": "Write it.", "solution": "x ^ 2", "image_path": "RAF-DB/aligned/b.png"}])
    )
    out = tmp_path / "hmer_out"
    assert unitune(["data", "hmer-rlvr", str(hmer), "--image-root", str(image_root), "--out", str(out)]) == 0
    row = rows(out)[0]
    assert row["task"] == "hmer" and row["image"].size == (300, 500)  # formula images keep their size


def test_synthetic_rows_convert_cleanly(tmp_path):
    for task in ("fer", "hmer"):
        raw = D.write_synthetic_rlvr(tmp_path / task, task=task, n=3)
        out = D.convert_records(read_records(raw), tmp_path / f"{task}_out", image_root=raw.parent, task=task)
        got = rows(out)
        assert len(got) == 3 and {r["task"] for r in got} == {task}
