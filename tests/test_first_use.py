"""First use without traps: file modes, --register safety, one CLI spelling, subcommand usage, plain help."""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat

import pytest

from evaluators.cli import COMMANDS, build_parser, main
from evaluators.errors import UserError
from evaluators.io_utils import atomic_write_json, atomic_write_text
from llamafactory_ext.dataset_registry import register_dataset


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o007, 0o660), (0o077, 0o600)])
def test_atomic_writes_keep_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        json_file = atomic_write_json(tmp_path / "m.json", {"a": 1})
        text_file = atomic_write_text(tmp_path / "sub" / "r.md", "x")
    finally:
        os.umask(old)
    assert _mode(json_file) == expected and _mode(text_file) == expected


def test_builders_keep_the_umask(tmp_path):
    (tmp_path / "caption.txt").write_text("a x\nb y\n")
    old = os.umask(0o022)
    try:
        assert main(["data", "hmer", str(tmp_path / "caption.txt"), str(tmp_path / "o.json"), "--task",
                     "vanilla", "--no-check-images", "--no-progress", "--register", "d",
                     "--dataset-dir", str(tmp_path / "di")]) == 0  # fmt: skip
    finally:
        os.umask(old)
    assert _mode(tmp_path / "o.json") == 0o644
    assert _mode(tmp_path / "di" / "dataset_info.json") == 0o644


def test_register_refuses_to_change_an_entry_without_force(tmp_path, caplog):
    register_dataset("crohme_train", tmp_path / "a.json", tmp_path)
    before = (tmp_path / "dataset_info.json").read_text()
    register_dataset("crohme_train", tmp_path / "a.json", tmp_path)  # the same entry again: a re-run
    with pytest.raises(UserError, match=r"already registered in .*dataset_info\.json.*--force"):
        register_dataset("crohme_train", tmp_path / "b.json", tmp_path)
    assert (tmp_path / "dataset_info.json").read_text() == before
    with caplog.at_level(logging.INFO):
        register_dataset("crohme_train", tmp_path / "b.json", tmp_path, force=True)
    assert json.loads((tmp_path / "dataset_info.json").read_text())["crohme_train"]["file_name"] == "b.json"
    assert f"replaced 'crohme_train' in {(tmp_path / 'dataset_info.json').resolve()}" in caplog.text


def test_register_says_where_and_warns_when_it_creates_a_file(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: ./dataset_info/dataset_info.json does not exist
    (tmp_path / "caption.txt").write_text("a x\n")
    argv = [
        "data",
        "hmer",
        "caption.txt",
        "o.json",
        "--task",
        "vanilla",
        "--no-check-images",
        "--no-progress",
    ]
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--register", "mine"]) == 0
    created = (tmp_path / "dataset_info" / "dataset_info.json").resolve()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"created a new {created}" in w for w in warnings)
    assert f"registered 'mine' in {created}" in caplog.text
    caplog.clear()
    assert main([*argv[:3], "other.json", *argv[4:], "--register", "mine"]) == 2  # refused before building
    assert "--force" in caplog.text and not (tmp_path / "other.json").exists()
    assert main([*argv[:3], "other.json", *argv[4:], "--register", "mine", "--force"]) == 0


def _leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    leaves = {}
    for name, target in COMMANDS.items():
        subs = {name: target} if isinstance(target, str) else {f"{name} {k}": v for k, v in target.items()}
        for label in subs:
            argv = label.split()
            parser = build_parser(argv)
            for word in argv:
                action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
                parser = action.choices[word]
            leaves[label] = parser
    return leaves


def test_one_spelling_for_the_output_folder_and_old_one_hidden():
    leaves = _leaf_parsers()
    with_out_dir = set()
    for label, parser in leaves.items():
        for action in parser._actions:
            if "--out" in action.option_strings:  # the old spelling survives only as an alias
                assert action.option_strings[0] in ("--out-dir", "--output"), label
            if "--out-dir" in action.option_strings:
                with_out_dir.add(label)
        assert "--out " not in parser.format_help().replace("--out-dir", ""), label
    assert {"infer", "eval-all", "eval hmer", "eval fer", "demo", "demo-data hmer", "demo-data fer",
            "data hmer-folds", "data fer-rlvr"} <= with_out_dir  # fmt: skip


def test_help_texts_have_no_rest_markup():
    for label, parser in _leaf_parsers().items():
        text = parser.format_help()
        assert "``" not in text and ":func:" not in text and ":class:" not in text, label
        assert "`" not in text, (label, [line for line in text.splitlines() if "`" in line][:3])


def test_a_bad_flag_prints_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "hmer", "in.json", "out.json", "--task", "vanilla", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: unitune data hmer" in err and "unrecognized arguments: --bogus" in err
    with pytest.raises(SystemExit):
        main(["eval", "hmer", "x.json", "--out-dir", "o", "--nope"])
    assert "usage: unitune eval hmer" in capsys.readouterr().err


def test_streamed_jsonl_keeps_the_umask(tmp_path):
    from evaluators.io_utils import write_jsonl_atomic

    old = os.umask(0o022)
    try:
        path = write_jsonl_atomic(tmp_path / "s.jsonl", ({"i": i} for i in range(3)))
    finally:
        os.umask(old)
    assert _mode(path) == 0o644
