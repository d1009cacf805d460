"""Packaging: the declared dependency ranges contain the tested pins, and the metadata is current."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements() -> list[tuple[str, Requirement]]:
    project = PYPROJECT["project"]
    out = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        out += [(extra, Requirement(r)) for r in reqs]
    return out


def test_every_pin_lies_inside_the_declared_ranges():
    pins = _pins()
    checked = 0
    for where, req in _requirements():
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            assert where not in ("dependencies", "train", "dev"), f"{req} ({where}) is not pinned"
            continue  # optional engines (vllm) may be left to the user's CUDA set-up
        assert req.specifier.contains(pin, prereleases=True), (
            f"constraints.txt pins {req.name}=={pin}, outside pyproject's {where} range {req}"
        )
        checked += 1
    assert checked >= 20


def test_train_ranges_exclude_known_broken_releases():
    train = {canonicalize_name(r.name): r for extra, r in _requirements() if extra == "train"}
    spec = train["transformers"].specifier
    # 5.3+ returns a tuple from _is_package_available: trl 0.24 then imports mergekit and GRPOTrainer fails
    assert not spec.contains("5.3.0") and not spec.contains("5.6.0")
    assert not spec.contains("5.1.0")  # no qwen3_5 before 5.2.0
    assert spec.contains("5.2.0")


def test_license_is_an_spdx_string():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"  # a TOML table is deprecated by setuptools


@pytest.mark.parametrize("target", ["install"])
def test_make_install_installs_the_engines_the_default_recipes_name(target):
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    body = re.search(r"^\$\(STAMP\):.*?(?=^\S)", makefile, re.S | re.M).group(0)
    assert "deepspeed" in body  # unimumer_full / unifer_sft / unifer_grpo name a DeepSpeed config
    assert "--constraint constraints.txt" in body


def test_every_package_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for root in ("evaluators", "llamafactory_ext", "trl_grpo")
        for init in (REPO_ROOT / root).rglob("__init__.py")
    }
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"


def test_the_wheel_ships_recipes_and_dataset_info_and_finds_them(tmp_path):
    """A plain (non-editable) install works outside the checkout: recipes and dataset_info are inside."""
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    for name in files:
        if (REPO_ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((REPO_ROOT / name).read_bytes())
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=src, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("unitune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in (REPO_ROOT / "recipes").rglob("*"):
        if recipe.is_file():
            assert f"llamafactory_ext/{recipe.relative_to(REPO_ROOT).as_posix()}" in names
    assert "llamafactory_ext/dataset_info/dataset_info.json" in names
    assert "evaluators/suites/all.yaml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "from llamafactory_ext.assets import asset_path, find_existing; "
        "print(asset_path('recipes/unifer_grpo.yaml')); print(find_existing('recipes/deepspeed/ds_z3.json'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.split() == [
        str(site / "llamafactory_ext" / "recipes" / "unifer_grpo.yaml"),
        str(site / "llamafactory_ext" / "recipes" / "deepspeed" / "ds_z3.json"),
    ]


def test_package_version_is_the_project_version():
    """``unitune_version()`` (written into every metrics JSON) reads ``evaluators.__version__``: it must be
    the version the distribution is built with."""
    import tomllib

    import evaluators
    from evaluators.provenance import unitune_version

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert evaluators.__version__ == project["version"] == unitune_version()
