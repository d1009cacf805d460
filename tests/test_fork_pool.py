"""Forked workers: same results in job order as running here, failures come back as the right exception,
and ``eval hmer --workers 2`` writes byte-identical outputs to ``--workers 1``."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from evaluators.cli import main as unitune
from evaluators.errors import UserError
from evaluators.fork_pool import run_jobs, split_jobs

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture(autouse=True)
def _no_tqdm_monitor() -> None:
    """Stop tqdm's monitor threads, which any earlier progress bar of this pytest process started: while one
    runs, ``run_jobs`` rightly refuses to fork (it runs the jobs here), and the tests that fork would fail.
    There is one per tqdm class that showed a bar (tqdm's own, and subclasses such as the ones transformers 5
    and huggingface_hub show while loading weights); tqdm starts a new monitor with its next bar."""
    import threading

    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return
    from tqdm._monitor import TMonitor

    for thread in threading.enumerate():
        if isinstance(thread, TMonitor):
            thread.exit()
            thread.tqdm_cls.monitor = None


def test_results_in_job_order_and_from_other_processes() -> None:
    results = run_jobs(lambda i: [i, os.getpid()], [1, 5, 1, 5, 1], workers=2)
    assert [r[0] for r in results] == [0, 1, 2, 3, 4]
    assert os.getpid() not in {r[1] for r in results}
    assert len({r[1] for r in results}) == 2


def test_runs_here_while_other_threads_run() -> None:
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        results = run_jobs(lambda i: os.getpid(), [1, 1, 1], workers=2)
    finally:
        stop.set()
        thread.join()
    assert results == [os.getpid()] * 3


def test_split_balances_by_weight() -> None:
    groups = split_jobs([10, 1, 1, 1, 9], 2)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    assert [0] in groups or [0, 1] in groups or [0, 2] in groups or [0, 3] in groups  # 10 with at most one 1
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        split_jobs([1], 0)


def test_user_error_keeps_its_message() -> None:
    def job(i: int) -> int:
        if i == 2:
            raise UserError("file 2: no 'gt' key")
        return i

    with pytest.raises(UserError, match="file 2: no 'gt' key"):
        run_jobs(job, [1, 1, 1, 1], workers=2)


def test_other_errors_carry_the_worker_traceback() -> None:
    def job(i: int) -> float:
        return 1 / (i - 3)

    with pytest.raises(RuntimeError, match="(?s)a worker process failed.*ZeroDivisionError"):
        run_jobs(job, [1, 1, 1, 1], workers=2)


def _strip_time(text: str) -> str:
    return re.sub(r'"timestamp": "[^"]*"', '"timestamp": ""', text)


def test_eval_hmer_outputs_do_not_depend_on_workers(tmp_path: Path, capsys) -> None:
    inputs = []
    for k in range(3):
        rows = [
            {"gt": f"x ^ {{ {i} }}", "pred": f"x ^ {{ {i % (k + 2)} }}", "img_id": str(i)} for i in range(40)
        ]
        path = tmp_path / f"set{k}_pred.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
        inputs.append(str(path))
    outputs, tables = [], []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        assert unitune(["eval", "hmer", *inputs, "--out-dir", str(out), "--workers", workers]) == 0
        tables.append(capsys.readouterr().out)
        outputs.append({p.name: _strip_time(p.read_text(encoding="utf-8")) for p in sorted(out.iterdir())})
    assert len(outputs[0]) == 9 and outputs[0] == outputs[1]
    assert tables[0] == tables[1] and tables[0].count("\n") == 5


def test_eval_hmer_refuses_zero_workers(tmp_path: Path, caplog) -> None:
    path = tmp_path / "a_pred.json"
    path.write_text(json.dumps([{"gt": "x", "pred": "x", "img_id": "0"}]), encoding="utf-8")
    assert unitune(["eval", "hmer", str(path), "--out-dir", str(tmp_path / "o"), "--workers", "0"]) != 0
    assert "--workers must be >= 1, got 0" in caplog.text
