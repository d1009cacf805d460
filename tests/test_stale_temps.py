"""Temp files of atomic writes killed mid-way: the next write of the same output removes them, and only them."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from evaluators.io_utils import atomic_write_json, remove_stale_temps, write_jsonl_atomic

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _killed_mid_write(path: Path) -> Path:
    """Fork a child that dies (as under ``kill -9``) while streaming ``path``; return the temp file it left."""
    pid = os.fork()
    if pid == 0:

        def lines():
            yield json.dumps({"i": 0})
            os._exit(137)

        write_jsonl_atomic(path, lines())
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137
    (orphan,) = path.parent.glob(f".{path.name}.*.tmp")
    return orphan


def _age(path: Path) -> Path:
    os.utime(path, (1, 1))  # as if the kill happened long ago
    return path


def test_next_write_of_the_output_removes_the_orphan_of_a_killed_write(tmp_path):
    out = tmp_path / "preds.jsonl"
    write_jsonl_atomic(out, [{"i": 1}])
    orphan = _age(_killed_mid_write(out))
    assert out.read_text() == '{"i": 1}\n'  # the old file is intact
    other = _age(_killed_mid_write(tmp_path / "other.jsonl"))  # another output's orphan
    atomic_write_json(out, [1])
    assert not orphan.exists()
    assert other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "preds.jsonl"]


def test_live_young_and_foreign_temp_files_are_kept(tmp_path):
    out = tmp_path / "a.json"
    live = tmp_path / ".a.json.live_123.tmp"
    live.write_text("being written")
    _age(live)
    young = tmp_path / ".a.json.young_12.tmp"  # its writer may not have locked it yet
    young.write_text("x")
    foreign = [tmp_path / name for name in (".a.json.backup.tmp", "a.json.k2x_9qzb.tmp", ".a.json.k2x_9qzb")]
    for path in foreign:
        path.write_text("not ours")
        _age(path)
    stale = tmp_path / ".a.json.k2x_9qzb.tmp"
    stale.write_text("half")
    _age(stale)
    with live.open("r") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # a writer that is still running holds its lock
        assert remove_stale_temps(tmp_path, "a.json") == [stale]
        atomic_write_json(out, {"ok": True})
    assert live.exists() and young.exists() and all(p.exists() for p in foreign)
    assert json.loads(out.read_text()) == {"ok": True}


def test_fer_sft_cache_orphans_are_removed_once_per_run(tmp_path):
    from llamafactory_ext.fer_data import convert_records

    Image.new("RGB", (8, 8)).save(tmp_path / "f.png")
    cache = tmp_path / "cache"
    cache.mkdir()
    orphan = cache / ".0123abcd_224.png.q9x_2kzz.tmp"
    orphan.write_bytes(b"\x89PNG half")
    _age(orphan)
    question = "Which expression? candidate labels: sad, happy."
    records = [
        {"image_path": "/f.png", "question": question, "response": "<think>t</think><answer>sad</answer>"}
    ]
    entries, rejected, _ = convert_records(records, image_root=tmp_path, resize=224, cache_dir=cache)
    assert len(entries) == 1 and not rejected
    assert not orphan.exists()
    assert [p.suffix for p in cache.iterdir()] == [".png"]
