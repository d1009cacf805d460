"""The model-family table agrees with the engines: LLaMA-Factory's templates and transformers' classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers
from packaging.version import Version

from evaluators.errors import UserError
from evaluators.model_family import (
    DEFAULT_FAMILY,
    FAMILIES,
    family_for_model_type,
    get_family,
    load_hf_model,
    model_family,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_template_is_registered_in_llamafactory(name):
    from llamafactory.data.template import TEMPLATES

    family = get_family(name)
    template = TEMPLATES[family.template]
    assert template.mm_plugin.image_token == family.image_token
    assert template.stop_words[0] == family.stop[0]
    assert (template.default_system or None) == family.default_system


@pytest.mark.parametrize("name", list(FAMILIES))
def test_model_class_exists_when_transformers_is_new_enough(name):
    family = get_family(name)
    if Version(transformers.__version__) < Version(family.min_transformers):
        assert not hasattr(transformers, family.hf_class)
        pytest.skip(f"{family.display} needs transformers >= {family.min_transformers}")
    assert hasattr(transformers, family.hf_class)
    config_class = transformers.AutoConfig.for_model(family.model_types[0])
    assert config_class.model_type == family.model_types[0]


def test_default_is_qwen2_5_vl_and_matches_the_tiny_model(tiny_model_dir):
    assert DEFAULT_FAMILY.name == "qwen2_5_vl"
    assert model_family(tiny_model_dir) is DEFAULT_FAMILY
    assert family_for_model_type("qwen2_vl") is DEFAULT_FAMILY


def test_unknown_model_type_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(UserError, match="model_type 'llava' is not a supported"):
        load_hf_model(tmp_path)


def _installed_transformers(monkeypatch, installed: str) -> None:
    """Make ``require_transformers`` read ``installed`` as the transformers version (a user's older stack)."""
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: installed if name == "transformers" else real(name)
    )


def test_too_new_family_names_the_transformers_version(tmp_path, monkeypatch):
    _installed_transformers(monkeypatch, "4.57.6")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_5"}))
    with pytest.raises(UserError, match=r"needs transformers >= 5\.2\.0"):
        load_hf_model(tmp_path)


def test_pixel_bounds():
    family = get_family("qwen3_vl")
    assert family.processor_pixel_kwargs(4096, 262144) == {"min_pixels": 4096, "max_pixels": 262144}
    with pytest.raises(UserError, match="min_pixels: expected at least 1024"):
        family.processor_pixel_kwargs(min_pixels=100)
    with pytest.raises(UserError, match="larger than max_pixels"):
        family.processor_pixel_kwargs(8192, 4096)


def test_every_llamafactory_recipe_uses_its_familys_template():
    """A recipe's template is the one the family table names for its model (hub names carry the family)."""
    import yaml

    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    checked = 0
    for path in recipes:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "template" not in recipe:
            continue  # TRL recipes
        model = str(recipe["model_name_or_path"])
        family = next((f for f in FAMILIES.values() if f"/{f.display}-" in model), None)
        if family is None:  # a local checkpoint path: any family's template
            assert recipe["template"] in {f.template for f in FAMILIES.values()}, path.name
            continue
        assert recipe["template"] == family.template, f"{path.name}: {model} trains with {family.template}"
        checked += 1
    assert checked >= 2


def test_every_family_stops_where_the_inference_default_stops():
    from evaluators.inference.sampling import DEFAULT_STOP

    assert all(family.stop == DEFAULT_STOP for family in FAMILIES.values())
