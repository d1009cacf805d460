"""Hostile inputs (issue #13): every case is ``input kind -> command -> expected outcome``.

Each row was a silent wrong result, a traceback, or a stale/partial output before the fix. A CLI case
runs the real ``unitune`` entry point in-process and checks the exit status, the one-line message (no
traceback) and, where it matters, what is (not) left on disk.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from evaluators.cli import main as unitune
from evaluators.errors import UserError
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS

RAFDB = list(CANDIDATE_LABELS["rafdb"])
NOT_UTF8 = "é".encode("latin-1")  # a lone 0xE9 byte
UNWRITABLE = Path("/sys/unitune-hostile-test")  # mkdir fails even for root


# ------------------------------------------------------------------------------------------------------------
# Input builders
# ------------------------------------------------------------------------------------------------------------


def _json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _hmer_preds(tmp: Path, rows=None, name: str = "set_pred.json") -> Path:
    rows = rows or [
        {"gt": "x ^ { 2 }", "pred": "x ^ { 2 }", "img_id": "a"},
        {"gt": "y", "pred": "z", "img_id": "b"},
    ]
    return _json(tmp / name, rows)


def _fer_row(label: str = "sadness", response: str = "<answer>sadness</answer>", **extra) -> dict:
    return {
        "image_path": "/x.jpg",
        "true_label": label,
        "prompt": "p",
        "candidate_labels": RAFDB,
        "model_response": response,
        **extra,
    }


def _torn(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows[:-1])
    path.write_text(text + json.dumps(rows[-1])[:-7], encoding="utf-8")  # last line cut by a kill
    return path


def _not_utf8(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8").replace(b"@@", NOT_UTF8))
    return path


def _fake_model(tmp: Path) -> Path:
    """Passes the model-folder check; any attempt to load it would fail (so errors must come first)."""
    return _json(tmp / "model" / "config.json", {"model_type": "qwen2_5_vl"}).parent


def _image(path: Path, size=(32, 16), color=(255, 255, 255)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _bomb(path: Path) -> Path:
    """A 20000x20000 PNG header (a few bytes on disk): over PIL's decompression-bomb limit."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def _sharegpt(tmp: Path, n: int = 2, name: str = "train.json", labels=None) -> Path:
    records = []
    for i in range(n):
        _image(tmp / "img" / f"h{i}.png")
        label = labels[i] if labels else f"x ^ {{ {i} }}"
        records.append(
            {
                "images": [f"img/h{i}.png"],
                "messages": [{"from": "human", "value": "<image>Read it."}, {"from": "gpt", "value": label}],
            }
        )
    return _json(tmp / name, records)


def _fer_cot(tmp: Path, *images: Path) -> Path:
    q = "Pick one of the candidate labels: sad, happy. Answer in tags."
    response = "<think>t</think><answer>sad</answer>"
    return _json(
        tmp / "cot.json", [{"image_path": f"/{p.name}", "question": q, "response": response} for p in images]
    )


def _rlvr(tmp: Path, images: list[Path]) -> Path:
    problem = "Which expression? candidate labels: " + ", ".join(RAFDB) + "."
    return _json(
        tmp / "rlvr.json",
        [
            {"problem": problem, "solution": "<answer>sad</answer>", "image_path": f"/{p.name}"}
            for p in images
        ],
    )


# ------------------------------------------------------------------------------------------------------------
# Checks on what is left on disk
# ------------------------------------------------------------------------------------------------------------


def _metrics_n(out: Path, n: int) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        (metrics,) = list(out.glob("*_metrics.json"))
        assert json.loads(metrics.read_text())["N"] == n

    return check


def _nothing_at(path: Path) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        assert not path.exists(), f"{path} should not have been written"

    return check


def _no_leftovers(folder: Path) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []

    return check


# ------------------------------------------------------------------------------------------------------------
# The CLI table
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """``kind`` of input, the ``command`` run on it, the exit status and the message (regex) expected."""

    id: str
    kind: str
    command: str
    argv: Callable[[Path], list[str]]
    status: int
    message: str | None = None
    check: Callable[[Path], Callable[[Path], None] | None] | None = None


def _cases() -> list[Case]:
    two = [
        {"gt": "a", "pred": "a", "id": "1", "sample_index": 0},
        {"gt": "b", "pred": "b", "id": "2", "sample_index": 0},
    ]
    three = [*two, {"gt": "c", "pred": "c", "id": "3", "sample_index": 0}]
    return [
        # --- torn last line -----------------------------------------------------------------------------
        Case(
            "torn-eval-hmer",
            "JSONL, last line cut by a kill",
            "eval hmer",
            lambda t: ["eval", "hmer", str(_torn(t / "p.jsonl", three)), "--out-dir", str(t / "o")],
            2,
            r"p\.jsonl: line 3 is cut off.*--allow-torn",
            lambda t: _nothing_at(t / "o"),
        ),
        Case(
            "torn-eval-hmer-allowed",
            "JSONL, last line cut by a kill",
            "eval hmer --allow-torn",
            lambda t: [
                "eval",
                "hmer",
                str(_torn(t / "p.jsonl", three)),
                "--out-dir",
                str(t / "o"),
                "--allow-torn",
            ],
            0,
            r"line 3 is cut off.*skipped",
            lambda t: _metrics_n(t / "o", 2),
        ),
        Case(
            "torn-eval-fer",
            "JSONL, last line cut by a kill",
            "eval fer",
            lambda t: ["eval", "fer", str(_torn(t / "r.jsonl", [_fer_row()] * 3)), "--out-dir", str(t / "o")],
            2,
            r"r\.jsonl: line 3 is cut off",
        ),
        Case(
            "torn-infer",
            "JSONL input, last line cut by a kill",
            "infer",
            lambda t: [
                "infer",
                "--model",
                str(_fake_model(t)),
                "--out",
                str(t / "o"),
                str(_torn(t / "in.jsonl", [_fer_row()] * 3)),
                "--no-progress",
            ],
            2,
            r"in\.jsonl: line 3 is cut off",
        ),
        # --- not UTF-8 ------------------------------------------------------------------------------------
        Case(
            "utf8-eval-hmer",
            "JSON with a Latin-1 byte",
            "eval hmer",
            lambda t: [
                "eval",
                "hmer",
                str(_not_utf8(t / "p.json", '[{"gt": "@@", "pred": "a"}]')),
                "--out-dir",
                str(t / "o"),
            ],
            2,
            r"p\.json: the file is not UTF-8 text \(byte 0xe9",
        ),
        Case(
            "utf8-eval-fer",
            "JSONL with a Latin-1 byte",
            "eval fer",
            lambda t: [
                "eval",
                "fer",
                str(_not_utf8(t / "r.jsonl", json.dumps(_fer_row()) + "\n" + '{"x": "@@"}\n')),
                "--out-dir",
                str(t / "o"),
            ],
            2,
            r"r\.jsonl: line 2 is not UTF-8",
        ),
        Case(
            "utf8-infer",
            "JSON with a Latin-1 byte",
            "infer",
            lambda t: [
                "infer",
                "--model",
                str(_fake_model(t)),
                "--out",
                str(t / "o"),
                str(_not_utf8(t / "in.json", '[{"prompt": "@@", "image_path": "a.png"}]')),
                "--no-progress",
            ],
            2,
            r"in\.json: the file is not UTF-8",
        ),
        Case(
            "utf8-data-hmer-jsonl",
            "JSONL with a Latin-1 byte",
            "data hmer",
            lambda t: [
                "data",
                "hmer",
                "--task",
                "vanilla",
                str(_not_utf8(t / "in.jsonl", '{"gt": "@@", "image": "a.png"}\n')),
                str(t / "o.json"),
            ],
            2,
            r"in\.jsonl: line 1 is not UTF-8",
            lambda t: _nothing_at(t / "o.json"),
        ),
        Case(
            "utf8-data-hmer-caption",
            "caption.txt with a Latin-1 byte",
            "data hmer",
            lambda t: [
                "data",
                "hmer",
                "--task",
                "vanilla",
                str(_not_utf8(t / "caption.txt", "a\tx\nb\t@@\n")),
                str(t / "o.json"),
            ],
            2,
            r"caption\.txt: line 2 is not UTF-8",
        ),
        Case(
            "utf8-validate",
            "JSON with a Latin-1 byte",
            "data validate",
            lambda t: ["data", "validate", str(_not_utf8(t / "d.json", '[{"messages": "@@"}]'))],
            2,
            r"d\.json: the file is not UTF-8",
        ),
        Case(
            "utf8-fer-sft",
            "JSON with a Latin-1 byte",
            "data fer-sft",
            lambda t: [
                "data",
                "fer-sft",
                str(_not_utf8(t / "cot.json", '[{"question": "@@"}]')),
                "--out",
                str(t / "o.json"),
            ],
            2,
            r"cot\.json: the file is not UTF-8",
        ),
        Case(
            "utf8-fer-rlvr",
            "JSON with a Latin-1 byte",
            "data fer-rlvr",
            lambda t: [
                "data",
                "fer-rlvr",
                str(_not_utf8(t / "rl.json", '[{"problem": "@@"}]')),
                "--out",
                str(t / "o"),
            ],
            2,
            r"rl\.json: the file is not UTF-8",
        ),
        Case(
            "utf8-eval-all",
            "suite YAML with a Latin-1 byte",
            "eval-all",
            lambda t: [
                "eval-all",
                "--model",
                "m",
                "--config",
                str(_not_utf8(t / "s.yaml", "datasets: [] # @@\n")),
                "--out",
                str(t / "o"),
            ],
            2,
            r"s\.yaml: not UTF-8",
        ),
        # --- nesting --------------------------------------------------------------------------------------
        Case(
            "deep-json-eval-hmer",
            "JSON nested 100k deep",
            "eval hmer",
            lambda t: [
                "eval",
                "hmer",
                str(_write(t / "p.json", "[" * 100_000 + "]" * 100_000)),
                "--out-dir",
                str(t / "o"),
            ],
            2,
            r"p\.json: the file is nested too deeply",
        ),
        Case(
            "deep-jsonl-data-hmer",
            "JSONL line nested 100k deep",
            "data hmer",
            lambda t: [
                "data",
                "hmer",
                "--task",
                "vanilla",
                str(_write(t / "in.jsonl", '{"gt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")),
                str(t / "o.json"),
            ],
            2,
            r"in\.jsonl: line 1 is nested too deeply",
        ),
        Case(
            "deep-latex-normalize",
            "prediction nested 5000 groups deep",
            "eval hmer --normalize",
            lambda t: [
                "eval",
                "hmer",
                str(
                    _hmer_preds(
                        t,
                        [{"gt": "x ^ { 2 }", "pred": "x ^ { " * 5000 + "}" * 5000}, {"gt": "y", "pred": "y"}],
                    )
                ),
                "--out-dir",
                str(t / "o"),
                "--normalize",
            ],
            0,
            None,
            lambda t: _metrics_n(t / "o", 2),
        ),
        # --- output paths ---------------------------------------------------------------------------------
        Case(
            "unwritable-eval-hmer",
            "unwritable --out-dir",
            "eval hmer",
            lambda t: ["eval", "hmer", str(_hmer_preds(t)), "--out-dir", str(UNWRITABLE)],
            2,
            r"--out-dir /sys/\S+: cannot be created",
        ),
        Case(
            "unwritable-eval-fer",
            "unwritable --out-dir",
            "eval fer",
            lambda t: ["eval", "fer", str(_json(t / "r.json", [_fer_row()])), "--out-dir", str(UNWRITABLE)],
            2,
            r"--out-dir /sys/\S+: cannot be created",
        ),
        Case(
            "unwritable-data-hmer",
            "unwritable OUTPUT folder",
            "data hmer",
            lambda t: ["data", "hmer", "--task", "vanilla", str(_sharegpt(t)), str(UNWRITABLE / "o.json")],
            2,
            r"/sys/\S+: cannot be created",
        ),
        Case(
            "unwritable-infer",
            "unwritable --out",
            "infer",
            lambda t: [
                "infer",
                "--model",
                str(_fake_model(t)),
                "--out",
                str(UNWRITABLE),
                str(_sharegpt(t)),
                "--no-progress",
            ],
            2,
            r"--out /sys/\S+: cannot be created",
        ),
        Case(
            "unwritable-fer-rlvr",
            "unwritable --out",
            "data fer-rlvr",
            lambda t: [
                "data",
                "fer-rlvr",
                str(_rlvr(t, [_image(t / "f.png")])),
                "--image-root",
                str(t),
                "--out",
                str(UNWRITABLE),
            ],
            2,
            r"cannot use /sys/\S+",
        ),
        Case(
            "under-file-eval-hmer",
            "--out-dir under a file",
            "eval hmer",
            lambda t: ["eval", "hmer", str(_hmer_preds(t)), "--out-dir", str(_write(t / "f", "x") / "sub")],
            2,
            r"f is a file, not a folder",
        ),
        Case(
            "under-file-data-hmer",
            "OUTPUT under a file",
            "data hmer",
            lambda t: [
                "data",
                "hmer",
                "--task",
                "vanilla",
                str(_sharegpt(t)),
                str(_write(t / "f", "x") / "o.json"),
            ],
            2,
            r"f: exists and is a file|f is a file, not a folder",
        ),
        Case(
            "under-file-infer",
            "--out under a file",
            "infer",
            lambda t: [
                "infer",
                "--model",
                str(_fake_model(t)),
                "--out",
                str(_write(t / "f", "x") / "sub"),
                str(_sharegpt(t)),
                "--no-progress",
            ],
            2,
            r"f is a file, not a folder",
        ),
        Case(
            "is-file-eval-fer",
            "--out-dir is a file",
            "eval fer",
            lambda t: [
                "eval",
                "fer",
                str(_json(t / "r.json", [_fer_row()])),
                "--out-dir",
                str(_write(t / "f", "x")),
            ],
            2,
            r"exists and is a file",
        ),
        Case(
            "folder-output-data-hmer",
            "OUTPUT is a folder",
            "data hmer",
            lambda t: ["data", "hmer", "--task", "vanilla", str(_sharegpt(t)), str(_mkdir(t / "outdir"))],
            2,
            r"outdir: is a folder",
            lambda t: _no_leftovers(t / "outdir"),
        ),
        Case(
            "yaml-tag-base-recipe",
            "--base-recipe with a python YAML tag",
            "data hmer-folds",
            lambda t: [
                "data",
                "hmer-folds",
                str(_sharegpt(t, 3)),
                "--k",
                "2",
                "--out-dir",
                str(t / "folds"),
                "--no-register",
                "--base-recipe",
                str(_write(t / "b.yaml", "x: !!python/object/apply:os.system ['true']\n")),
            ],
            2,
            r"b\.yaml: not plain YAML",
            lambda t: _nothing_at(t / "folds"),
        ),
        # --- inputs that cannot give a meaningful number -----------------------------------------------------
        Case(
            "empty-labels-eval-hmer",
            "2 of 3 labels empty",
            "eval hmer",
            lambda t: [
                "eval",
                "hmer",
                str(
                    _hmer_preds(
                        t, [{"gt": "", "pred": ""}, {"gt": " ", "pred": "x"}, {"gt": "a", "pred": "a"}]
                    )
                ),
                "--out-dir",
                str(t / "o"),
            ],
            2,
            r"set_pred\.json: 2 of 3 records have an empty label 'gt'",
            lambda t: _nothing_at(t / "o"),
        ),
        Case(
            "unlabelled-infer-export",
            'unlabelled HMER input exported by infer (gt "")',
            "eval hmer",
            lambda t: [
                "eval",
                "hmer",
                str(
                    _hmer_preds(
                        t, [{"gt": "", "pred": "x", "img_id": "1"}, {"gt": "", "pred": "", "img_id": "2"}]
                    )
                ),
                "--out-dir",
                str(t / "o"),
            ],
            2,
            r"2 of 2 records have an empty label",
        ),
        Case(
            "all-failed-eval-hmer",
            "every prediction missing (missing images)",
            "eval hmer",
            lambda t: [
                "eval",
                "hmer",
                str(_hmer_preds(t, [{"gt": "a", "pred": "", "error": True}, {"gt": "b", "pred": None}])),
                "--out-dir",
                str(t / "o"),
            ],
            2,
            r"all 2 predictions are missing \(1 marked as failed",
        ),
        Case(
            "all-failed-eval-fer",
            "every item an inference error",
            "eval fer",
            lambda t: [
                "eval",
                "fer",
                str(_json(t / "r.json", [_fer_row(response="ERROR: x", error=True)] * 2)),
                "--out-dir",
                str(t / "o"),
            ],
            2,
            r"all 2 items are marked as failed inference",
        ),
        Case(
            "partial-missing-eval-hmer",
            "1 of 2 predictions failed (missing image)",
            "eval hmer",
            lambda t: [
                "eval",
                "hmer",
                str(_hmer_preds(t, [{"gt": "a", "pred": "", "error": True}, {"gt": "b", "pred": "b"}])),
                "--out-dir",
                str(t / "o"),
            ],
            0,
            r"1 of 2 records failed upstream",
            None,
        ),
        Case(
            "string-bool-eval-fer",
            '"error": "false" (a string)',
            "eval fer",
            lambda t: [
                "eval",
                "fer",
                str(_json(t / "r.json", [_fer_row(error="false")] * 2)),
                "--out-dir",
                str(t / "o"),
            ],
            2,
            r"item 0 has \"error\": 'false', expected true or false",
        ),
        Case(
            "string-bool-eval-hmer",
            '"error": "false" (a string)',
            "eval hmer",
            lambda t: [
                "eval",
                "hmer",
                str(_hmer_preds(t, [{"gt": "a", "pred": "a", "error": "false"}])),
                "--out-dir",
                str(t / "o"),
            ],
            2,
            r"record 0 has \"error\": 'false', expected true or false",
        ),
        Case(
            "slug-collision-eval-all",
            "suite names `CROHME 2014` and `crohme-2014`",
            "eval-all",
            lambda t: [
                "eval-all",
                "--model",
                "m",
                "--out",
                str(t / "o"),
                "--config",
                str(
                    _write(
                        t / "s.yaml",
                        "datasets:\n  - {name: CROHME 2014, task: hmer, input: a.json}\n"
                        "  - {name: crohme-2014, task: hmer, input: b.json}\n",
                    )
                ),
            ],
            2,
            r"'CROHME 2014' and 'crohme-2014' share the output folder 'crohme_2014'",
            lambda t: _nothing_at(t / "o"),
        ),
        Case(
            "validate-empty-dataset",
            "empty JSON list `[]`",
            "data validate",
            lambda t: ["data", "validate", str(_json(t / "d.json", []))],
            1,
            r"d\.json: 0 records: an empty dataset has nothing to train on",
        ),
        Case(
            "all-rejected-data-hmer-register",
            "every record rejected (`x ^ 2` has no braces)",
            "data hmer --task tree --register",
            lambda t: [
                "data",
                "hmer",
                "--task",
                "tree",
                str(_sharegpt(t, 2, labels=["x ^ 2", "y ^ 3"])),
                str(t / "o.json"),
                "--register",
                "x",
                "--dataset-dir",
                str(t / "di"),
            ],
            1,
            r"every record was rejected; 'x' is not registered",
            lambda t: _nothing_at(t / "di"),
        ),
        Case(
            "empty-input-data-hmer",
            "empty JSON list `[]`",
            "data hmer --register",
            lambda t: [
                "data",
                "hmer",
                "--task",
                "vanilla",
                str(_json(t / "in.json", [])),
                str(t / "o.json"),
                "--register",
                "x",
                "--dataset-dir",
                str(t / "di"),
            ],
            2,
            r"in\.json: nothing to build \(the input holds no records\)",
            lambda t: lambda tmp: (_nothing_at(t / "o.json")(tmp), _nothing_at(t / "di")(tmp)),
        ),
    ]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_case(case: Case, tmp_path, caplog, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository (dataset_info/, runs/)
    argv = case.argv(tmp_path)
    check = case.check(tmp_path) if case.check else None
    with caplog.at_level("INFO"):
        status = unitune(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in caplog.text + captured.err, case.id
    assert status == case.status, (case.id, status, caplog.text[-2000:])
    if case.message:
        assert re.search(case.message, caplog.text), (case.id, caplog.text[-2000:])
    if case.status == 2:
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "\n" not in errors[0].getMessage(), case.id  # one line
    if check is not None:
        check(tmp_path)


def test_partial_missing_images_show_in_the_table(tmp_path, capsys):
    rows = [{"gt": "a", "pred": "", "error": True}, {"gt": "b", "pred": "b"}]
    assert unitune(["eval", "hmer", str(_hmer_preds(tmp_path, rows)), "--out-dir", str(tmp_path / "o")]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].endswith("| failed |") and table.splitlines()[2].endswith("| 1 |")


def test_orphans_of_a_killed_data_hmer_are_cleaned_on_the_next_run(tmp_path):
    from evaluators.outputs import STAGING_PREFIX

    staging = tmp_path / f"{STAGING_PREFIX}killed"
    staging.mkdir()
    (staging / "o.json").write_bytes(b"[" + b" " * 1_000_000)  # a half-written 1 MB dataset
    assert (
        unitune(["data", "hmer", "--task", "vanilla", str(_sharegpt(tmp_path)), str(tmp_path / "o.json")])
        == 0
    )
    assert not staging.exists()
    assert len(json.loads((tmp_path / "o.json").read_text())) == 2


def test_hmer_folds_outside_the_repo_never_trust_remote_code(tmp_path, monkeypatch):
    import yaml

    from llamafactory_ext.hmer.folds import DEFAULT_RECIPE

    assert DEFAULT_RECIPE["trust_remote_code"] is False
    monkeypatch.chdir(tmp_path)  # recipes/unimumer_full.yaml is not here: the built-in settings are used
    assert (
        unitune(
            ["data", "hmer-folds", str(_sharegpt(tmp_path, 4)), "--k", "2", "--out-dir", "f", "--no-register"]
        )
        == 0
    )
    recipes = sorted((tmp_path / "f" / "recipes").glob("*.yaml"))
    assert recipes and all(yaml.safe_load(r.read_text())["trust_remote_code"] is False for r in recipes)


# ------------------------------------------------------------------------------------------------------------
# Rewards and GRPO config: input kind -> call -> expected outcome
# ------------------------------------------------------------------------------------------------------------


def _rewards():
    from trl_grpo import rewards

    return rewards


REWARD_CASES = [
    ("empty gold, empty completion", "unifer_accuracy_reward", [""], ["<answer> </answer>"], [None]),
    ("empty gold, empty completion", "hmer_exact_match_reward", [""], [""], [None]),
    ("empty gold, any completion", "hmer_edit_score_reward", ["x"], ["  "], [None]),
]


@pytest.mark.parametrize(("kind", "name", "completions", "solution", "expected"), REWARD_CASES)
def test_reward_case(kind, name, completions, solution, expected):
    assert getattr(_rewards(), name)(completions, solution=solution) == expected, kind


LOAD_REWARD_CASES = [
    ("a callable that is not a reward", "os.system", None, r"'os.system' is not a reward function"),
    ("a class", "collections.Counter", None, r"is not a reward function"),
    ("bad factory kwargs", "trl_grpo.rewards.make_fer_accuracy_reward", {"nope": 1}, r"unexpected keyword"),
    (
        "a factory that raises",
        "trl_grpo.rewards.make_fer_accuracy_reward",
        {"candidate_labels": "nope"},
        r"unknown dataset 'nope'",
    ),
    ("kwargs on a non-callable", "trl_grpo.rewards.TASK_FER", {}, r"is not callable"),
]


@pytest.mark.parametrize(
    ("kind", "name", "kwargs", "message"), LOAD_REWARD_CASES, ids=[c[0] for c in LOAD_REWARD_CASES]
)
def test_load_reward_case(kind, name, kwargs, message):
    from trl_grpo.train import load_reward

    with pytest.raises(UserError, match=message):
        load_reward(name, kwargs)


def test_grpo_max_steps_abc_is_refused_before_the_model_loads(capsys):
    from trl_grpo.train import main

    with pytest.raises(SystemExit) as exc:  # TRL's parser: one usage line, exit 2, nothing loaded
        main(["--config", "recipes/unifer_grpo.yaml", "--max_steps", "abc"])
    assert exc.value.code == 2 and "invalid int value: 'abc'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# Tag extraction on hostile completions: must finish (the old regexes took minutes on 1 MB)
# ------------------------------------------------------------------------------------------------------------

HOSTILE = {
    "repeated <answer>": "<answer>" * 130_000,
    "repeated <answer> on one line, close far away": "<answer>x" * 110_000 + "\ny</answer>",
    "repeated </think><answer>": "<think>" + "</think><answer>" * 60_000 + "x",
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_tag_extraction_finishes_on_1mb(kind):
    """Run in a subprocess with a generous limit: a guard against quadratic regexes, not a timing."""
    code = (
        "import sys; from tests.test_hostile_inputs import HOSTILE, _extract_everything; "
        f"_extract_everything(HOSTILE[{kind!r}])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], timeout=60, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


def _extract_everything(text: str) -> None:
    from evaluators.fer.strict_protocol import extract_label_strict
    from evaluators.fer.unifer_protocol import extract_label_unifer
    from trl_grpo import rewards

    for dataset in ("rafdb", "sfew"):
        extract_label_unifer(text, RAFDB, dataset)
        extract_label_unifer(text, RAFDB, dataset, pooled=True)
    extract_label_strict(text, RAFDB)
    rewards.unifer_accuracy_reward([text], solution=["sad"])
    rewards.think_answer_format_reward([text])
    rewards.fer_accuracy_reward([text], solution=["sad"])


def test_linear_extractors_equal_the_regexes():
    import random

    from evaluators.knowledge import answers
    from evaluators.knowledge.fer_labels import UNIFER_ANSWER_RE, UNIFER_TOTAL_ANSWER_RE

    pieces = [
        "<answer>",
        "</answer>",
        "<ANSWER>",
        "</Answer>",
        " ",
        "\n",
        "x",
        "\t",
        "<think>",
        "</think>",
        "\r",
    ]
    patterns = [
        *UNIFER_ANSWER_RE.values(),
        UNIFER_TOTAL_ANSWER_RE,
        re.compile(r"<answer>(.*?)</answer>", re.DOTALL),
    ]
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for pattern in patterns:
            match = pattern.search(text)
            assert answers.search_answer(pattern, text) == (match.group(1) if match else None), (
                text,
                pattern,
            )
        spans = answers.ANSWER_TAG_RE.findall(text)
        assert answers.extract_answer(text) == (spans[-1].strip().casefold() if spans else None), text
        assert answers.is_think_answer_format(text) == bool(answers.THINK_ANSWER_FORMAT_RE.fullmatch(text)), (
            text
        )


# ------------------------------------------------------------------------------------------------------------
# Inference resume keys, oversized images, two writers (tiny model, an echo backend)
# ------------------------------------------------------------------------------------------------------------


class _Echo:
    """A backend that answers with the record id and a call counter, and remembers what it was asked."""

    chunk_size = 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def generate(self, requests, sampling):
        self.seen.extend(r.record.id for r in requests)
        return [[f"{r.record.id}:{r.user_text}:{len(self.seen)}"] for r in requests]


def _infer(inputs, out, model, backend=None, **settings):
    from evaluators.inference.runner import InferenceSettings, run_inference

    backend = backend or _Echo()
    options = InferenceSettings(model=str(model), sampling={"temperature": 0.0}, progress=False, **settings)
    return run_inference(inputs, out, options, backend_factory=lambda *a: backend), backend


def test_resume_with_another_input_of_the_same_stem_regenerates(tmp_path, tiny_model_dir):
    first = _sharegpt(tmp_path / "a", 3, name="test.json")
    second = _sharegpt(tmp_path / "b", 3, name="test.json", labels=["p", "q", "r"])
    records = json.loads(second.read_text())
    for record in records:
        record["messages"][0]["value"] = "<image>Another prompt."
    second.write_text(json.dumps(records))
    out = tmp_path / "out"
    _infer([first], out, tiny_model_dir)
    (result,), backend = _infer([second], out, tiny_model_dir)
    assert (result.done_before, result.stale, result.generated) == (0, 3, 3)
    assert len(backend.seen) == 3
    exported = json.loads((out / "test_pred.json").read_text())
    assert [row["gt"] for row in exported] == ["p", "q", "r"]
    assert all("Another prompt." in row["pred"] for row in exported)


def test_resume_after_an_image_is_replaced_regenerates_that_record(tmp_path, tiny_model_dir):
    data = _sharegpt(tmp_path, 3)
    out = tmp_path / "out"
    _infer([data], out, tiny_model_dir)
    _image(tmp_path / "img" / "h1.png", size=(40, 20), color=(0, 0, 0))  # same path, new content
    (result,), backend = _infer([data], out, tiny_model_dir)
    assert (result.done_before, result.stale, result.generated) == (2, 1, 1)
    assert backend.seen == ["h1"]


def test_decompression_bomb_is_a_per_record_failure_in_infer(tmp_path, tiny_model_dir, caplog):
    data = _sharegpt(tmp_path, 3)
    _bomb(tmp_path / "img" / "h1.png")
    out = tmp_path / "out"
    (result,), backend = _infer([data], out, tiny_model_dir)
    assert backend.seen == ["h0", "h2"] and result.generated == 2
    assert [m["id"] for m in result.missing] == ["h1"] and "too large" in result.missing[0]["problem"]
    exported = json.loads((out / "train_pred.json").read_text())
    assert [row.get("error", False) for row in exported] == [False, True, False]
    (again,), backend = _infer([data], out, tiny_model_dir)  # a resume does not die on it either
    assert backend.seen == [] and len(again.missing) == 1


def test_two_writers_on_one_out_are_refused(tmp_path, tiny_model_dir):
    from evaluators.outputs import output_lock

    data = _sharegpt(tmp_path, 2)
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out / ".infer.lock", "first run"):
        with pytest.raises(UserError, match=r"another unitune process \(pid \d+\) is writing there now"):
            _infer([data], out, tiny_model_dir)
    _infer([data], out, tiny_model_dir)  # released: runs
    assert len((out / "train_infer.jsonl").read_text().splitlines()) == 2


# ------------------------------------------------------------------------------------------------------------
# Builders' image caches and oversized images
# ------------------------------------------------------------------------------------------------------------


def _rlvr_images(out: Path) -> list:
    from trl_grpo.rlvr_data import load_grpo_dataset

    return [row["image"].convert("RGB") for row in load_grpo_dataset(out)]


def test_fer_rlvr_cache_follows_image_size_and_source_content(tmp_path):
    faces = [_image(tmp_path / f"f{i}.png", size=(300, 200), color=(i * 40, 0, 0)) for i in range(2)]
    data = _rlvr(tmp_path, faces)
    out = tmp_path / "grpo"
    base = ["data", "fer-rlvr", str(data), "--image-root", str(tmp_path), "--out-dir", str(out)]
    assert unitune([*base, "--image-size", "64"]) == 0
    assert [image.size for image in _rlvr_images(out)] == [(64, 64)] * 2
    assert unitune([*base, "--image-size", "224"]) == 0
    assert [image.size for image in _rlvr_images(out)] == [(224, 224)] * 2
    _image(faces[0], size=(300, 200), color=(0, 255, 0))  # the source is replaced
    assert unitune([*base, "--image-size", "224"]) == 0
    assert _rlvr_images(out)[0].getpixel((5, 5)) == (0, 255, 0)


def test_decompression_bomb_in_fer_rlvr_is_a_listed_row_problem(tmp_path, caplog):
    from trl_grpo.rlvr_data import load_grpo_dataset

    faces = [_image(tmp_path / "ok.png"), _bomb(tmp_path / "bomb.png")]
    data = _rlvr(tmp_path, faces)
    base = ["data", "fer-rlvr", str(data), "--image-root", str(tmp_path), "--out-dir", str(tmp_path / "o")]
    assert unitune(base) == 2
    assert "row 1: cannot decode image" in caplog.text and "DecompressionBombError" in caplog.text
    assert unitune([*base, "--skip-invalid"]) == 0
    assert len(load_grpo_dataset(tmp_path / "o")) == 1


def test_decompression_bomb_in_fer_sft_resize_is_a_rejected_record(tmp_path):
    images = [_image(tmp_path / "ok.png"), _bomb(tmp_path / "bomb.png")]
    out = tmp_path / "o.json"
    argv = [
        "data",
        "fer-sft",
        str(_fer_cot(tmp_path, *images)),
        "--image-root",
        str(tmp_path),
        "--out",
        str(out),
    ]
    assert (
        unitune(
            [*argv, "--resize", "32", "--cache-dir", str(tmp_path / "cache"), "--dataset-dir", str(tmp_path)]
        )
        == 0
    )
    assert len(json.loads(out.read_text())) == 1
    rejected = [json.loads(line) for line in out.with_name("o.rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["kind"] == "bad_image" and "DecompressionBomb" in rejected[0]["reason"]
