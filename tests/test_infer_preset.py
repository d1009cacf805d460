"""``unitune infer --preset unifer``: FER inference exactly as UniFER ran it (transformers, float32, batch 1)."""

from __future__ import annotations

import argparse
import json

import pytest

from evaluators.cli import main as unitune
from evaluators.errors import UserError
from evaluators.inference.cli import add_arguments, settings_from_args


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["in.json", "--model", "m", "--out-dir", "o", *extra])


def test_default_is_the_fast_preset():
    settings = settings_from_args(_args("--backend", "hf"))
    assert settings.backend_options["dtype"] == "auto" and settings.backend_options["batch_size"] is None
    assert settings.system_prompt is not None


def test_unifer_preset_settings():
    settings = settings_from_args(_args("--preset", "unifer"))
    assert settings.backend == "hf"
    assert (settings.backend_options["dtype"], settings.backend_options["batch_size"]) == ("float32", 1)
    assert settings.system_prompt is None  # no system turn, as UniFER's inference


@pytest.mark.parametrize(
    "flags", [("--backend", "vllm"), ("--dtype", "bfloat16"), ("--batch-size", "8"), ("--system-prompt", "x")]
)
def test_unifer_preset_refuses_conflicting_flags(flags):
    with pytest.raises(UserError, match="--preset unifer runs transformers in float32 at batch size 1"):
        settings_from_args(_args("--preset", "unifer", *flags))


@pytest.mark.slow
def test_unifer_preset_runs_fer(tmp_path, tiny_model_dir, caplog):
    caplog.set_level("INFO")
    data = tmp_path / "fer"
    assert unitune(["demo-data", "fer", "--n", "2", "--n-test", "2", "--out-dir", str(data)]) == 0
    argv = [
        "infer",
        "--model",
        str(tiny_model_dir),
        "--out-dir",
        str(tmp_path / "out"),
        str(data / "fer_demo_qa.json"),
    ]
    assert unitune([*argv, "--preset", "unifer", "--max-new-tokens", "4", "--no-progress"]) == 0
    assert "(torch.float32), batch size 1" in caplog.text
    lines = (tmp_path / "out" / "fer_demo_qa_infer.jsonl").read_text(encoding="utf-8").splitlines()
    assert len([json.loads(line) for line in lines if line.strip()]) >= 2
