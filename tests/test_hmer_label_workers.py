"""LabelWorkers: answers in input order from this process and forked helpers, the same for any number of
workers; helpers stop with the build (finished or failed); no fork while other threads run; ``data hmer
--workers``."""

from __future__ import annotations

import os
import threading

import pytest

from evaluators.cli import main as unitune
from llamafactory_ext.hmer.build import _BoundedMemo
from llamafactory_ext.hmer.label_workers import LabelWorkers
from llamafactory_ext.hmer.records import HmerSample

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.usefixtures("no_tqdm_monitor"),  # an earlier progress bar's thread would prevent forking
]


def _samples(n: int) -> list[HmerSample]:
    # repeats within and across chunks: some labels come from the memo
    return [HmerSample(id=str(i), image=f"{i}.png", latex=f"x {i % 37}", index=i) for i in range(n)]


def _tagged(label: str) -> tuple[str, int]:
    return label.upper(), os.getpid()


def test_answers_in_order_from_this_process_and_a_helper(monkeypatch):
    monkeypatch.setattr(LabelWorkers, "CHUNK", 4)
    monkeypatch.setattr(LabelWorkers, "MAX_PER_HELPER", 1)
    samples = _samples(200)
    memo = _BoundedMemo(_tagged)
    with LabelWorkers(_tagged, workers=2) as pool:
        assert pool.forked == 1
        pairs = list(pool.answered(samples, memo))
    assert [sample for sample, _ in pairs] == samples
    assert [answer[0] for _, answer in pairs] == [s.latex.upper() for s in samples]
    pids = {answer[1] for _, answer in pairs}
    assert len(pids) == 2 and os.getpid() in pids  # the first chunk always goes to the idle helper
    assert pool.forked == 0  # reaped on exit


def test_non_ascii_and_lone_surrogate_labels_cross_the_pipes_unchanged(monkeypatch):
    """Any string a JSON input can hold (a lone surrogate too) crosses the pipes and comes back as it went."""
    from llamafactory_ext.hmer.build import _label_answers

    monkeypatch.setattr(LabelWorkers, "CHUNK", 2)
    labels = ["\\alpha", "é ^ { 2 }", "\ud800", "\\frac { a } { b }", "", "x \U0001d465"]
    samples = [HmerSample(id=str(i), image="", latex=label, index=i) for i, label in enumerate(labels)]
    answer = _label_answers("tree", None)
    here = [answer.fn(label) for label in labels]
    with LabelWorkers(answer.fn, workers=2) as pool:
        assert pool.forked == 1
        got = [value for _, value in pool.answered(samples, _BoundedMemo(answer.fn))]
    assert got == here and all(type(value) is tuple for value in got)


def test_one_worker_and_other_threads_answer_here():
    memo = _BoundedMemo(_tagged)
    with LabelWorkers(_tagged, workers=1) as pool:
        assert pool.forked == 0
        assert {a[1] for _, a in pool.answered(_samples(50), memo)} == {os.getpid()}
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with LabelWorkers(_tagged, workers=2) as pool:
            assert pool.forked == 0
    finally:
        stop.set()
        thread.join()


def _fails_on_seven(label: str) -> str:
    if label == "x 7":
        raise KeyError(label)
    return label


def test_a_failing_helper_raises_with_its_traceback(monkeypatch):
    monkeypatch.setattr(LabelWorkers, "CHUNK", 1000)  # one chunk: the helper gets it
    with pytest.raises(RuntimeError, match="KeyError: 'x 7'"):
        with LabelWorkers(_fails_on_seven, workers=2) as pool:
            list(pool.answered(_samples(20), _BoundedMemo(_fails_on_seven)))


def test_helpers_stop_when_the_reader_stops_early(monkeypatch):
    monkeypatch.setattr(LabelWorkers, "CHUNK", 3)
    with LabelWorkers(_tagged, workers=3) as pool:
        pids = [helper.pid for helper in pool.helpers]
        answers = pool.answered(_samples(100), _BoundedMemo(_tagged))
        next(answers)
        answers.close()
    for pid in pids:  # reaped: no such child any more
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


@pytest.mark.parametrize("task", ["tree", "can"])
def test_cli_workers_give_the_same_bytes(tmp_path, monkeypatch, task):
    import json

    monkeypatch.setattr(LabelWorkers, "CHUNK", 3)
    labels = ["x ^ { 2 }", "x ^ 2", "\\frac { a } { b }", "", "a _ { i } ^ { 2 }"] * 7
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"image": f"{i}.png", "gt": latex}) + "\n" for i, latex in enumerate(labels))
    )
    outputs = []
    for workers in ("1", "2", "3"):
        out = tmp_path / workers / "out.json"
        argv = ["data", "hmer", str(source), str(out), "--task", task, "--no-check-images", "--no-progress"]
        unitune([*argv, "--workers", workers])
        outputs.append((out.read_bytes(), (out.parent / "out.rejected.jsonl").read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]
    assert unitune([*argv, "--workers", "0"]) != 0


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _gone(pid: int) -> bool:
    """The process ended (no such pid, or a zombie nobody reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_killed_build_leaves_no_output_and_no_helper(tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    source = tmp_path / "in.json"
    records = [
        {"image": f"{i}.png", "gt": f"x ^ {{ {i} }} + \\frac {{ a }} {{ {i} }}"} for i in range(60_000)
    ]
    source.write_text(json.dumps(records))
    out = tmp_path / "out" / "tree.json"
    argv = [sys.executable, "-m", "evaluators.cli", "data", "hmer", str(source), str(out), "--task", "tree"]
    proc = subprocess.Popen(
        [*argv, "--no-check-images", "--no-progress", "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    helpers: list[int] = []
    while not helpers and proc.poll() is None and time.monotonic() < deadline:
        helpers = _children(proc.pid)
        time.sleep(0.005)
    assert helpers, "the build finished (or hung) before its helper was seen"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(_gone(pid) for pid in helpers)  # its request pipe closed: the helper exited by itself
    assert not out.exists()
