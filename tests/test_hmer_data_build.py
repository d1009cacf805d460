"""HMER builders end to end: input readers, `unitune data hmer` (rejections, --strict, --register), hmer-folds."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from evaluators.cli import main
from evaluators.errors import UserError
from llamafactory_ext.hmer.build import build_dataset, make_record, rejected_path, write_sharegpt
from llamafactory_ext.hmer.prompts import CAN_PROMPT, TREE_PROMPT, VANILLA_PROMPT
from llamafactory_ext.hmer.records import iter_samples


def _sharegpt(image, latex, role_keys=("from", "value"), roles=("human", "gpt")):
    role, content = role_keys
    return {
        "images": [image],
        "messages": [{role: roles[0], content: "<image>" + VANILLA_PROMPT}, {role: roles[1], content: latex}],
    }


@pytest.fixture()
def corpus(tmp_path):
    """train.json with 3 good records (one image missing on disk) and one bare `x ^ 2`."""
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "d"):
        (tmp_path / "img" / f"{name}.png").write_bytes(b"not checked by the builder")
    records = [
        _sharegpt("img/a.png", "\\frac { a ^ { 2 } + 1 } { b }"),
        _sharegpt("img/b.png", "x ^ 2"),
        _sharegpt("img/c.png", "y"),
        _sharegpt("img/d.png", "\\sqrt [ 3 ] { x }"),
    ]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records, indent=2))
    return path


def test_readers_accept_every_layout(tmp_path):
    jsonl = tmp_path / "t.jsonl"
    rows = [
        _sharegpt("p/q.jpg", "a", ("role", "content"), ("user", "assistant")),
        {"img_id": "id7", "image_path": "r.png", "gt": "b", "pred": "c"},
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    samples = iter_samples(jsonl)
    first, second = next(samples), next(samples)  # streaming: the broken third line is not read yet
    assert (first.id, first.image, first.latex) == ("q", "p/q.jpg", "a")
    assert (second.id, second.image, second.latex, second.pred) == ("id7", "r.png", "b", "c")
    with pytest.raises(UserError, match="line 3 is not valid JSON"):
        next(samples)

    crohme = tmp_path / "2014"
    (crohme / "img").mkdir(parents=True)
    (crohme / "img" / "18_em_0.bmp").write_bytes(b"")
    (crohme / "caption.txt").write_text("18_em_0\tx ^ { 2 }\n\n18_em_1 \\alpha\n")
    got = [(s.id, s.image, s.latex) for s in iter_samples(crohme)]
    assert got == [
        ("18_em_0", str((crohme / "img" / "18_em_0.bmp").resolve()), "x ^ { 2 }"),
        ("18_em_1", str((crohme / "img" / "18_em_1").resolve()), "\\alpha"),
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"images": ["a.png"], "messages": [{"from": "human", "value": "q"}]}]))
    with pytest.raises(UserError, match="record 0 has no assistant turn"):
        list(iter_samples(bad))


def test_cli_tree_register_and_rejections(corpus, tmp_path, caplog):
    dataset_dir = tmp_path / "dataset_info"
    out = dataset_dir / "crohme_train_tree.json"
    argv = ["data", "hmer", "--task", "tree", str(corpus), str(out), "--no-progress"]
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--register", "crohme_train_tree", "--dataset-dir", str(dataset_dir)]) == 0
    records = json.loads(out.read_text())
    # outside the dataset folder: absolute, so LLaMA-Factory finds them from any working directory
    assert [r["images"] for r in records] == [[str(tmp_path / "img" / n)] for n in ("a.png", "d.png")]
    assert records[0]["messages"][0] == {"from": "human", "value": "<image>" + TREE_PROMPT}
    assert records[0]["messages"][1]["value"].startswith("\\frac\n\ta (above)\n\t\t2 (sup)")
    rejected = [json.loads(line) for line in rejected_path(out).read_text().splitlines()]
    assert [(r["index"], r["reason"]) for r in rejected] == [
        (1, "tree parse error: ^ not with {"),
        (2, "missing image: img/c.png"),
    ]
    assert "tree: 2 records written, 2 rejected (tree parse error: 1, missing image: 1)" in caplog.text
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    assert info["crohme_train_tree"]["file_name"] == "crohme_train_tree.json"
    assert info["crohme_train_tree"]["tags"]["role_tag"] == "from"

    # a clean rebuild removes the stale rejected file; --absolute-images resolves against INPUT's folder
    assert (
        main(["data", "hmer", "--task", "can", str(corpus), str(out), "--no-progress", "--no-check-images"])
        == 0
    )
    assert not rejected_path(out).exists()
    assert main([*argv, "--absolute-images"]) == 0
    assert json.loads(out.read_text())[0]["images"] == [str((tmp_path / "img" / "a.png").resolve())]


def test_cli_strict_fails_and_writes_nothing(corpus, tmp_path, caplog):
    out = tmp_path / "strict.json"
    assert main(["data", "hmer", "--task", "tree", str(corpus), str(out), "--strict", "--no-progress"]) == 2
    assert "record 1 (id 'b') rejected: tree parse error: ^ not with {" in caplog.text
    assert not out.exists() and not rejected_path(out).exists()
    assert list(tmp_path.glob(".strict.json.*")) == []  # no temp file left behind


def test_cli_everything_rejected_exits_1(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps([_sharegpt("gone.png", "a")]))
    assert (
        main(["data", "hmer", "--task", "vanilla", str(src), str(tmp_path / "o.json"), "--no-progress"]) == 1
    )


def test_build_dataset_api_and_writer(tmp_path):
    src = [_sharegpt("a.png", "x _ { i }"), _sharegpt("b.png", "")]
    out, rejected = build_dataset(src, "can", check_images=False)
    assert out == [
        {
            "messages": [
                {"from": "human", "value": "<image>" + CAN_PROMPT},
                {"from": "gpt", "value": "x: 1, _: 1, i: 1\nx _ { i }"},
            ],
            "images": ["a.png"],
        }
    ]
    assert rejected[0]["reason"] == "bad record: empty LaTeX label"
    path = tmp_path / "w.json"
    assert write_sharegpt(path, out) == 1
    assert json.loads(path.read_text()) == out
    assert write_sharegpt(path, []) == 0 and json.loads(path.read_text()) == []
    with pytest.raises(ValueError, match="task"):
        make_record("nope", "a.png", "x")


def test_hmer_folds(corpus, tmp_path):
    dataset_dir = tmp_path / "ds"
    out_dir = tmp_path / "folds"
    base = tmp_path / "base.yaml"
    base.write_text("model_name_or_path: tiny\nstage: sft\ndataset: overwritten\n")
    argv = [
        "data",
        "hmer-folds",
        str(corpus),
        "--k",
        "2",
        "--out-dir",
        str(out_dir),
        "--tasks",
        "vanilla,can",
    ]
    assert main([*argv, "--dataset-dir", str(dataset_dir), "--base-recipe", str(base)]) == 0
    manifest = json.loads((out_dir / "folds.json").read_text())
    heldout = [set(f["heldout_ids"]) for f in manifest["folds"]]
    assert heldout[0].isdisjoint(heldout[1]) and heldout[0] | heldout[1] == {"a", "b", "c", "d"}
    for fold in manifest["folds"]:
        assert fold["n_heldout"] == 2 and fold["n_train"] == 2 * 2  # 2 records x (vanilla + can)
        recipe = yaml.safe_load(
            (out_dir / "recipes" / f"local_crohme_train_fold{fold['fold']}.yaml").read_text()
        )
        assert recipe["dataset"] == fold["train"] and recipe["model_name_or_path"] == "tiny"
        assert recipe["dataset_dir"] == str(dataset_dir)
        train_ids = {
            r["images"][0].split("/")[-1][0]
            for r in json.loads((out_dir / f"{fold['train']}.json").read_text())
        }
        assert train_ids.isdisjoint(fold["heldout_ids"])
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    assert set(info) == {
        f"local_crohme_train_fold{i}_{part}" for i in range(2) for part in ("train", "heldout")
    }
    # deterministic for a seed
    assert main([*argv, "--no-register", "--out-dir", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "folds.json").read_text())
    assert [f["heldout_ids"] for f in again["folds"]] == [f["heldout_ids"] for f in manifest["folds"]]
    assert (
        main(["data", "hmer-folds", str(corpus), "--k", "9", "--out-dir", str(out_dir), "--no-register"]) == 2
    )
    assert main([*argv, "--no-register", "--tasks", "error_fix"]) == 2


def test_hmer_folds_smaller_k_unregisters_the_removed_folds(corpus, tmp_path):
    """k=3 then k=2: fold 2's files go with the new set, and so do its dataset_info entries; an entry of the
    same name that the user re-pointed at another file is kept."""
    dataset_dir, out_dir = tmp_path / "ds", tmp_path / "folds"
    argv = ["data", "hmer-folds", str(corpus), "--out-dir", str(out_dir), "--dataset-dir", str(dataset_dir)]
    argv += ["--base-recipe", ""]

    def registered() -> set[str]:
        return set(json.loads((dataset_dir / "dataset_info.json").read_text()))

    def names(k: int) -> set[str]:
        return {f"local_crohme_train_fold{i}_{part}" for i in range(k) for part in ("train", "heldout")}

    assert main([*argv, "--k", "3"]) == 0
    assert registered() == names(3)
    assert main([*argv, "--k", "2"]) == 0
    assert registered() == names(2)
    assert not (out_dir / "local_crohme_train_fold2_train.json").exists()
    for fold in range(2):
        assert (out_dir / f"local_crohme_train_fold{fold}_train.json").is_file()
    # Again k=3, then re-point fold 2's train entry at the user's own file before going back to k=2.
    assert main([*argv, "--k", "3"]) == 0
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    (tmp_path / "mine.json").write_text("[]")
    info["local_crohme_train_fold2_train"]["file_name"] = str(tmp_path / "mine.json")
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info))
    assert main([*argv, "--k", "2"]) == 0
    assert registered() == names(2) | {"local_crohme_train_fold2_train"}


def test_hmer_folds_default_recipe(corpus, tmp_path, monkeypatch):
    """Without --base-recipe the project's recipes/unimumer_crohme.yaml is used when present, else built-ins."""
    from llamafactory_ext.hmer.folds import DEFAULT_RECIPE

    monkeypatch.chdir(tmp_path)
    argv = ["data", "hmer-folds", str(corpus), "--k", "2", "--out-dir", "f", "--no-register"]
    assert main(argv) == 0
    recipe = yaml.safe_load((tmp_path / "f" / "recipes" / "local_crohme_train_fold0.yaml").read_text())
    assert recipe["model_name_or_path"] == DEFAULT_RECIPE["model_name_or_path"]
    assert recipe["output_dir"] == "saves/local_crohme_train_fold0"
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "unimumer_crohme.yaml").write_text("model_name_or_path: project\ndataset: all\n")
    assert main(argv) == 0
    recipe = yaml.safe_load((tmp_path / "f" / "recipes" / "local_crohme_train_fold1.yaml").read_text())
    assert (recipe["model_name_or_path"], recipe["dataset"]) == ("project", "local_crohme_train_fold1_train")
    assert main([*argv, "--base-recipe", "missing.yaml"]) == 2
