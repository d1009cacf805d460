"""Shared fixtures: the ../shared reference folder (skipped when absent) and the tiny models of each family."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """``../shared/reference`` beside the checkout; tests using it skip with a message when absent."""
    ref = SHARED_DIR / "reference"
    if not ref.is_dir():
        pytest.skip(
            f"reference data not found at {ref} (only present in the project workspace, not in a user's clone)"
        )
    return ref


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-VL built once per test session by ``unitune tiny-model``."""
    from llamafactory_ext.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny_qwen2_5_vl")
    build_tiny_model(out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen3_vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3-VL built once per test session by ``unitune tiny-model --family qwen3_vl``."""
    from llamafactory_ext.tiny_qwen3_vl import build_tiny_qwen3_vl

    out = tmp_path_factory.mktemp("tiny_qwen3_vl")
    build_tiny_qwen3_vl(out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen3_5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3.5 built once per test session by ``unitune tiny-model --family qwen3_5``."""
    from llamafactory_ext.tiny_qwen3_5 import build_tiny_qwen3_5

    out = tmp_path_factory.mktemp("tiny_qwen3_5")
    build_tiny_qwen3_5(out)
    return out


@pytest.fixture
def no_tqdm_monitor() -> None:
    """Stop tqdm's monitor threads, which any earlier progress bar of this pytest process started: while one
    runs, code that forks workers (``data hmer --workers``) rightly runs in-process instead."""
    import sys
    import threading

    if "tqdm" not in sys.modules:
        return
    from tqdm._monitor import TMonitor

    for thread in threading.enumerate():
        if isinstance(thread, TMonitor):
            thread.exit()
            thread.tqdm_cls.monitor = None
