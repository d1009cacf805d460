"""The released training data (phxember/Uni-MuMER-Data) through our dataset_info entries, offline.

A local replica of two released configs is built from demo data in the released layout: a dataset repository
folder with a ``README.md`` listing the configs and ``<config>/train-00000-of-00001.parquet`` files with the
columns ``id``, ``conversations`` (``from``/``value``, ``human``/``gpt``) and ``image`` (embedded bytes). The
committed entries are used as they are, except that ``hf_hub_url`` points at the replica folder (or the replica
is placed in a Hugging Face hub cache), which ``datasets.load_dataset`` reads exactly like the hub repository.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evaluators.cli import main as unitune

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("crohme_train", "crohme_train_tree")


def _committed_entries() -> dict:
    info = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text(encoding="utf-8"))
    return {name: info[name] for name in CONFIGS}


def _to_released_rows(records: list[dict], base: Path) -> list[dict]:
    rows = []
    for index, record in enumerate(records):
        (image,) = record["images"]
        path = Path(image) if Path(image).is_absolute() else base / image
        rows.append(
            {
                "id": f"{index:05d}",
                "conversations": record["messages"],
                "image": {"bytes": path.read_bytes(), "path": path.name},
            }
        )
    return rows


def write_replica(root: Path, sources: dict[str, Path]) -> Path:
    """Write a dataset repository folder in the released layout from sharegpt JSON files (one per config)."""
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}],
            "image": datasets.Image(),
        }
    )
    configs = []
    for config, source in sources.items():
        rows = _to_released_rows(json.loads(source.read_text(encoding="utf-8")), source.parent)
        table = datasets.Dataset.from_list(rows, features=features)
        (root / config).mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(root / config / "train-00000-of-00001.parquet"))
        configs.append(
            {"config_name": config, "data_files": [{"split": "train", "path": f"{config}/train-*"}]}
        )
    card = io.StringIO()
    card.write("---\n")
    yaml.safe_dump({"configs": configs}, card, sort_keys=False)
    card.write("---\n# replica of phxember/Uni-MuMER-Data (two configs, demo data)\n")
    (root / "README.md").write_text(card.getvalue(), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("released")
    assert unitune(["demo-data", "hmer", "--n", "4", "--n-test", "1", "--out-dir", str(tmp / "demo")]) == 0
    train = tmp / "demo" / "hmer_demo_train.json"
    tree = tmp / "demo" / "tree.json"
    assert unitune(["data", "hmer", str(train), str(tree), "--task", "tree", "--absolute-images"]) == 0
    return write_replica(tmp / "Uni-MuMER-Data", {"crohme_train": train, "crohme_train_tree": tree})


def _dataset_dir(tmp: Path, hub: str) -> Path:
    entries = {name: {**entry, "hf_hub_url": hub} for name, entry in _committed_entries().items()}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
    return tmp


def test_validate_reads_a_local_mirror_of_the_release(replica, tmp_path, caplog):
    dataset_dir = _dataset_dir(tmp_path / "di", str(replica))
    caplog.set_level("INFO")
    assert unitune(["data", "validate", ",".join(CONFIGS), "--dataset-dir", str(dataset_dir)]) == 0
    assert "crohme_train: 4 records, all valid." in caplog.text
    assert "crohme_train_tree: 4 records, all valid." in caplog.text


def test_validate_finds_bad_rows_in_parquet(replica, tmp_path, caplog):
    import datasets

    table = datasets.load_dataset(str(replica), name="crohme_train_tree", split="train")
    broken = table.map(
        lambda row, i: (
            {"conversations": [row["conversations"][0], {"from": "gpt", "value": "x\n" + "a ^ 2"}]}
            if i == 1
            else {}
        ),
        with_indices=True,
    )
    folder = tmp_path / "di" / "tree_parquet"
    folder.mkdir(parents=True)
    broken.to_parquet(str(folder / "part-0.parquet"))
    entry = {**_committed_entries()["crohme_train_tree"]}
    for key in ("hf_hub_url", "subset", "split"):
        entry.pop(key)
    (tmp_path / "di" / "dataset_info.json").write_text(
        json.dumps({"my_tree": {"file_name": "tree_parquet", **entry}}), encoding="utf-8"
    )
    assert unitune(["data", "validate", "my_tree", "--dataset-dir", str(tmp_path / "di")]) == 1
    assert "record 1: [tree-" in caplog.text


def test_validate_reads_the_hub_cache_and_says_when_not_downloaded(replica, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "hub"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    argv = ["data", "validate", "crohme_train,hme100k_train", "--dataset-dir", str(REPO / "dataset_info")]
    assert unitune(argv) == 2
    assert "'crohme_train': phxember/Uni-MuMER-Data (config 'crohme_train') is not downloaded" in caplog.text
    assert "Traceback" not in caplog.text

    # the same repository in the cache layout huggingface_hub writes (refs/main -> snapshots/<commit>)
    repo = cache / "datasets--phxember--Uni-MuMER-Data"
    commit = "0" * 40
    shutil.copytree(replica / "crohme_train", repo / "snapshots" / commit / "crohme_train")
    shutil.copy(replica / "README.md", repo / "snapshots" / commit / "README.md")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    caplog.clear()
    caplog.set_level("INFO")
    assert unitune(argv) == 2  # crohme_train is cached and valid, hme100k_train is not downloaded
    assert "crohme_train: 4 records, all valid." in caplog.text
    assert (
        "'hme100k_train': phxember/Uni-MuMER-Data (config 'hme100k_train') is not downloaded" in caplog.text
    )


@pytest.mark.slow
def test_paper_recipe_trains_on_the_released_layout(replica, tmp_path, tiny_model_dir):
    """``llamafactory-cli train recipes/unimumer_paper.yaml``, overridden to the tiny model and two configs."""
    dataset_dir = _dataset_dir(tmp_path / "di", str(replica))
    cli = Path(sys.executable).parent / "llamafactory-cli"
    out = tmp_path / "out"
    overrides = {
        "model_name_or_path": tiny_model_dir,
        "dataset_dir": dataset_dir,
        "dataset": ",".join(CONFIGS),
        "output_dir": out,
        "deepspeed": "null",
        "bf16": "false",
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "image_max_pixels": 12544,
        "cutoff_len": 512,
        "plot_loss": "false",
    }
    argv = [str(cli), "train", str(REPO / "recipes" / "unimumer_paper.yaml")]
    argv += [f"{k}={v}" for k, v in overrides.items()]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "Num examples = 8" in log, log[-4000:]  # 4 + 4 rows from the two parquet configs
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 1
    assert (out / "model.safetensors").is_file()
