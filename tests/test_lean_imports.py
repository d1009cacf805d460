"""Lean imports: a command loads only its own module, and the evaluators never load the heavy stacks.

``python -X importtime`` lists every module a process imports; ``unitune eval hmer`` (and every
``--help``) must not pull in scikit-learn, pandas, scipy, torch or transformers (seconds of start-up each),
and the evaluators must not import nltk (its package ``__init__`` pulls in scikit-learn, scipy and pandas).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluators.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"sklearn", "pandas", "scipy", "torch", "transformers"}


def imported_modules(*args: str) -> set[str]:
    """Top-level packages imported by ``python -m evaluators.cli ARGS`` (which must exit 0)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "evaluators.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "evaluators.errors" in names, "importtime output not understood"
    return {name.split(".")[0] for name in names}


def every_help_command() -> list[list[str]]:
    commands = [["--help"]]
    for name, target in COMMANDS.items():
        commands.append([name, "--help"])
        if isinstance(target, dict):
            commands.extend([name, sub, "--help"] for sub in target)
    return commands


@pytest.mark.parametrize("argv", every_help_command(), ids=" ".join)
def test_help_loads_no_heavy_package(argv: list[str]) -> None:
    assert not imported_modules(*argv) & HEAVY


@pytest.mark.parametrize("evaluator", ["hmer", "fer"])
def test_evaluator_help_loads_no_numpy(evaluator: str) -> None:
    loaded = imported_modules("eval", evaluator, "--help")
    assert "numpy" not in loaded and "nltk" not in loaded
    assert not loaded & HEAVY


def test_evaluations_load_no_heavy_package_nor_nltk(tmp_path: Path) -> None:
    hmer = tmp_path / "x_pred.json"
    hmer.write_text(
        json.dumps([{"gt": "x ^ { 2 }", "pred": "x ^ { 3 }", "img_id": str(i)} for i in range(20)])
    )
    loaded = imported_modules("eval", "hmer", str(hmer), "--out-dir", str(tmp_path / "hmer"))
    assert not loaded & (HEAVY | {"nltk", "matplotlib"}), loaded & (HEAVY | {"nltk", "matplotlib"})
    fer = tmp_path / "rafdb_results.json"
    labels = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    items = [
        {
            "image_path": f"{i}.png",
            "true_label": labels[i % 7],
            "candidate_labels": labels,
            "model_response": f"<think>t</think><answer>{labels[i % 5]}</answer>",
        }
        for i in range(30)
    ]
    fer.write_text(json.dumps(items))
    loaded = imported_modules(
        "eval", "fer", str(fer), "--protocol", "both", "--out-dir", str(tmp_path / "fer")
    )
    assert not loaded & (HEAVY | {"nltk", "matplotlib"}), loaded & (HEAVY | {"nltk", "matplotlib"})
