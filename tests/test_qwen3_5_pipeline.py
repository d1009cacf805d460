"""Qwen3.5 end to end on the tiny model: the real `llamafactory-cli train` + `export` with the Qwen3.5 recipe,
then `unitune infer --backend hf`, `make eval-all` and a 2-step GRPO run on the exported folder."""

from __future__ import annotations

import pytest
from test_qwen3_vl_pipeline import train_export_serve


@pytest.mark.slow
def test_qwen3_5_recipe_trains_exports_and_serves(tiny_qwen3_5_dir, tmp_path):
    train_export_serve(
        "qwen3_5",
        tiny_qwen3_5_dir,
        "recipes/unimumer_qwen35_2b.yaml",
        "recipes/unimumer_qwen35_export.yaml",
        tmp_path,
    )
