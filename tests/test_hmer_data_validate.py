"""`unitune data validate` catches each bad-record kind; the dataset_info registry refuses ignored keys."""

from __future__ import annotations

import json
import logging
import multiprocessing

import pytest
from PIL import Image

from evaluators.cli import main
from evaluators.errors import UserError
from llamafactory_ext.dataset_registry import check_entry, register_dataset, sharegpt_entry
from llamafactory_ext.hmer.build import make_record
from llamafactory_ext.validate import validate_dataset


@pytest.fixture()
def media(tmp_path):
    Image.new("RGB", (8, 8), "white").save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return tmp_path


def _record(prompt="<image>q", answer="x", images=("ok.png",)):
    return {
        "messages": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}],
        "images": list(images),
    }


def _kinds(tmp_path, records, **kwargs):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    count, problems = validate_dataset(path, **{"dataset_dir": tmp_path, **kwargs})
    assert count == len(records)
    return [(p.index, p.kind) for p in problems], problems


def test_valid_builder_output_passes(media):
    records = [
        make_record(task, "ok.png", "x ^ { 2 } + 1", pred)
        for task, pred in [
            ("vanilla", None),
            ("tree", None),
            ("can", None),
            ("error_find", "x ^ { 3 }"),
            ("error_fix", "x + 1"),
        ]
    ]
    assert _kinds(media, records)[0] == []


def tree_mismatch():
    record = make_record("tree", "ok.png", "x ^ { 2 }")
    record["messages"][1]["value"] = record["messages"][1]["value"].replace("(sup)", "(sub)")
    return record


def tree_parse():
    record = make_record("tree", "ok.png", "x ^ { 2 }")
    record["messages"][1]["value"] = "x\n\t2 (sup)\nx ^ 2"
    return record


def count_mismatch():
    record = make_record("can", "ok.png", "x + x")
    record["messages"][1]["value"] = "x: 1, +: 1\nx + x"
    return record


def find_mismatch():
    record = make_record("error_find", "ok.png", "x + 1", "x - 1")
    record["messages"][1]["value"] = "x <error_start> + <error_end> 1"
    return record


def fix_mismatch():
    record = make_record("error_fix", "ok.png", "x + 1", "x - 1")
    record["messages"][1]["value"] = "REPLACE:- -> =\nx + 1"
    return record


@pytest.mark.parametrize(
    ("record", "kind", "text"),
    [
        ([1, 2], "not-an-object", "expected an object"),
        ({"images": ["ok.png"]}, "no-messages", "`messages` must be a non-empty list"),
        (
            _record(prompt="<image><image>q"),
            "image-count",
            "2 `<image>` token(s) in the turns but 1 image(s)",
        ),
        (_record(images=()), "image-count", "1 `<image>` token(s) in the turns but 0 image(s)"),
        (
            {
                "messages": [{"from": "gpt", "value": "<image>x"}, {"from": "human", "value": "q"}],
                "images": ["ok.png"],
            },
            "role-order",
            "turn 0 is from 'gpt', expected 'human'",
        ),
        (
            {"messages": [{"from": "human", "value": "<image>q"}], "images": ["ok.png"]},
            "role-order",
            "must end with 'gpt'",
        ),
        (
            {
                "messages": [{"from": "human", "value": "<image>q"}, {"role": "assistant", "content": "x"}],
                "images": ["ok.png"],
            },
            "bad-turn",
            "turn 1 needs string `from` and `value` keys",
        ),
        (_record(answer="  "), "empty-turn", "turn 1 has empty content"),
        (_record(images=("missing.png",)), "missing-image", "image 'missing.png' not found"),
        (_record(images=("broken.png",)), "unreadable-image", "image 'broken.png' cannot be decoded"),
        ({**_record(), "images": [3]}, "bad-images", "must be a list of paths"),
        (tree_parse(), "tree-parse", "does not parse as a tree (^ not with {)"),
        (tree_mismatch(), "tree-mismatch", "tree lines are not the tree"),
        (count_mismatch(), "count-mismatch", "not the symbol counts"),
        (find_mismatch(), "edl-mismatch", "without its marks is not the erroneous formula"),
        (fix_mismatch(), "edl-mismatch", "does not give the last line"),
    ],
)
def test_each_bad_record_kind(media, record, kind, text):
    found, problems = _kinds(media, [_record(), record])
    assert found == [(1, kind)]
    assert text in problems[0].message


def test_cli_by_name_summary_and_exit(media, caplog):
    dataset_dir = media / "ds"
    (dataset_dir).mkdir()
    Image.new("RGB", (4, 4)).save(dataset_dir / "ok.png")
    (dataset_dir / "good.json").write_text(
        json.dumps([_record(), make_record("tree", "ok.png", "a _ { 1 }")])
    )
    (dataset_dir / "bad.json").write_text(
        json.dumps([_record(), _record(prompt="q"), _record(images=("x.png",))])
    )
    register_dataset("good", dataset_dir / "good.json", dataset_dir)
    register_dataset("bad", dataset_dir / "bad.json", dataset_dir)
    entry = sharegpt_entry("good.json")
    del entry["columns"]["images"]
    register_dataset("no_images_column", dataset_dir=dataset_dir, entry=entry)
    with caplog.at_level(logging.INFO):
        assert main(["data", "validate", "good", "--dataset-dir", str(dataset_dir)]) == 0
        assert "good: 2 records, all valid." in caplog.text
        assert main(["data", "validate", "bad", "--dataset-dir", str(dataset_dir)]) == 1
        assert "bad: 3 records, 2 invalid (image-count: 1, missing-image: 1)." in caplog.text
        assert main(["data", "validate", "no_images_column", "--dataset-dir", str(dataset_dir)]) == 1
        assert "maps no `images` column" in caplog.text
        assert main(["data", "validate", "goood", "--dataset-dir", str(dataset_dir)]) == 2
        assert "did you mean 'good'?" in caplog.text
        assert main(["data", "validate", str(media / "nope.json")]) == 2


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**sharegpt_entry("a.json"), "tag": {}}, "unknown key 'tag'.*did you mean 'tags'"),
        ({**sharegpt_entry("a.json"), "columns": {"image": "images"}}, "unknown column 'image'.*'images'"),
        ({**sharegpt_entry("a.json"), "tags": {"role": "from"}}, "unknown tag 'role'"),
        ({"formatting": "sharegpt"}, "needs one of"),
        ({"file_name": "a.json", "formatting": "chatml"}, "formatting must be"),
        ({"file_name": "a.json", "columns": {"messages": 3}}, "must be a string"),
        ([], "expected an object"),
    ],
)
def test_registry_refuses_ignored_keys(entry, message):
    with pytest.raises(UserError, match=message):
        check_entry("x", entry)


def test_registry_keeps_other_entries_and_paths(tmp_path):
    dataset_dir = tmp_path / "ds"
    dataset_dir.mkdir()
    (dataset_dir / "dataset_info.json").write_text(json.dumps({"mllm_demo": {"file_name": "mllm_demo.json"}}))
    register_dataset("inside", dataset_dir / "sub" / "a.json", dataset_dir)
    register_dataset("outside", tmp_path / "b.json", dataset_dir)
    register_dataset("inside", dataset_dir / "c.json", dataset_dir, force=True)  # update in place
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    assert list(info) == ["mllm_demo", "inside", "outside"]
    assert info["inside"]["file_name"] == "c.json"
    assert info["outside"]["file_name"] == str((tmp_path / "b.json").resolve())
    with pytest.raises(UserError):
        register_dataset("bad", dataset_dir=dataset_dir, entry={"file_name": "a.json", "tag": {}})
    assert "bad" not in json.loads((dataset_dir / "dataset_info.json").read_text())


def _register_many(args):
    dataset_dir, worker = args
    for i in range(15):
        register_dataset(f"w{worker}_{i}", f"{dataset_dir}/w{worker}_{i}.json", dataset_dir)


def test_registry_concurrent_writers_lose_nothing(tmp_path):
    with multiprocessing.get_context("fork").Pool(6) as pool:
        pool.map(_register_many, [(str(tmp_path), worker) for worker in range(6)])
    assert len(json.loads((tmp_path / "dataset_info.json").read_text())) == 6 * 15
