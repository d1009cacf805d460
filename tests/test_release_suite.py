"""The release suite (``evaluators/suites/release.yaml``): upstream's released test layout, the released
checkpoint's scores on the same files, the paper's numbers with their sources."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from evaluators.cli import main as unitune
from evaluators.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
RELEASE = REPO / "evaluators" / "suites" / "release.yaml"

#: ExpRate of phxember/Uni-MuMER-Qwen2.5-VL-3B in upstream's committed example_data/<DS>/results/<stem>_results.txt.
RELEASED_3B = {
    "crohme_2014": 82.66,
    "crohme_2016": 78.90,
    "crohme_2019": 79.82,
    "crohme2023_test": 46.35,
    "crohme2023_test_normalized": 69.49,
    "hme100k_test": 69.46,
    "hme100k_test_normalized": 72.72,
    "im2latexv2_test": 76.39,
    "im2latexv2_test_normalized": 88.03,
    "mathwriting_test": 51.41,
    "mathwriting_test_normalized": 60.75,
    "N1": 76.16,
    "N2": 58.88,
    "N3": 46.38,
}
#: The paper's Uni-MuMER† 3B numbers, by the file they were computed on.
PAPER = {
    "crohme_2014": 82.05,
    "crohme_2016": 77.94,
    "crohme_2019": 79.23,
    "hme100k_test_normalized": 71.93,  # 24,016 samples: the normalized file's count, not hme100k_test's 24,607
    "im2latexv2_test": 84.32,
    "mathwriting_test": 51.45,
    "N1": 76.00,
    "N2": 58.88,
    "N3": 46.45,
}


def test_release_suite_rows_name_their_files_and_numbers():
    meta, datasets = load_suite(RELEASE, data_root="/root")
    assert meta["infer"] == {"upstream_prompt": True}
    hmer = [d for d in datasets if d.task == "hmer"]
    stems = {}
    for dataset in hmer:
        match = re.fullmatch(r"data/(\w+)/prompts/(\w+)\.json", dataset.file)
        assert match, dataset.file
        stems[match.group(2)] = dataset
        assert dataset.image_root == Path("/root/.")
        assert dataset.paper is None or dataset.paper_note, f"{dataset.name}: a paper number needs its source"
    assert {stem: d.released for stem, d in stems.items()} == RELEASED_3B
    assert {stem: d.paper for stem, d in stems.items() if d.paper is not None} == PAPER
    fer = {d.name: d for d in datasets if d.task == "fer"}
    assert [d.paper for d in fer.values()] == [None, None, None, None, 68.84]
    assert fer["FERBench (pooled)"].total_of == ["RAF-DB", "FERPlus", "AffectNet", "SFEW 2.0"]
    assert "reported, not verified" in fer["FERBench (pooled)"].paper_note


def test_released_numbers_match_upstream_results_files(shared_reference):
    """Where upstream's results files are in the reference folder, the suite's numbers are theirs, rounded."""
    _, datasets = load_suite(RELEASE)
    by_stem = {Path(d.file).stem: d for d in datasets if d.task == "hmer"}
    checked = 0
    for path in sorted((shared_reference / "unimumer").glob("*__results__*_results.txt")):
        stem = path.name.split("__results__")[1].removesuffix("_results.txt")
        rate = float(re.search(r"Exact Match Rate:\s+([\d.]+)%", path.read_text(encoding="utf-8")).group(1))
        assert by_stem[stem].released == round(rate, 2), stem
        checked += 1
    for path in sorted((shared_reference / "unimumer").glob("final_paper_results__*_results.txt")):
        stem = path.name.split("__")[1].removesuffix("_results.txt")
        rate = float(re.search(r"Exact Match Rate:\s+([\d.]+)%", path.read_text(encoding="utf-8")).group(1))
        assert by_stem[stem].paper == round(rate, 2), stem
        checked += 1
    assert checked >= 5


def _hmer_replica(root: Path, demo: Path, ds: str, year: str, stem: str) -> None:
    """``root/data/<ds>/prompts/<stem>.json`` with image paths ``./data/<ds>/<year>/images/x.png``, as data.zip."""
    records = json.loads((demo / "hmer_demo_test.json").read_text(encoding="utf-8"))
    images = root / "data" / ds / year / "images"
    images.mkdir(parents=True, exist_ok=True)
    for record in records:
        (image,) = record["images"]
        shutil.copy(demo / image, images / Path(image).name)
        record["images"] = [f"./data/{ds}/{year}/images/{Path(image).name}"]
    prompts = root / "data" / ds / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    (prompts / f"{stem}.json").write_text(json.dumps(records, indent=4), encoding="utf-8")


def _fer_replica(root: Path, tmp: Path, dataset: str, file: str, folder: str) -> None:
    out = tmp / f"fer_{dataset}"
    argv = ["demo-data", "fer", "--n", "2", "--n-test", "2", "--dataset", dataset, "--out-dir", str(out)]
    assert unitune(argv) == 0
    records = json.loads((out / "fer_demo_qa.json").read_text(encoding="utf-8"))
    target = root / "ferbench" / folder
    target.mkdir(parents=True, exist_ok=True)
    for record in records:
        name = Path(record["image_path"]).name
        shutil.copy(out / record["image_path"], target / name)
        record["image_path"] = f"/{folder}/{name}"  # FERBench's absolute-looking paths, joined to image_root
    (root / "ferbench" / file).write_text(json.dumps(records), encoding="utf-8")


@pytest.mark.slow
def test_release_suite_end_to_end_on_a_replica(tmp_path, tiny_model_dir, capsys):
    root = tmp_path / "unzipped"
    demo = tmp_path / "demo"
    assert unitune(["demo-data", "hmer", "--n", "2", "--n-test", "2", "--out-dir", str(demo)]) == 0
    _hmer_replica(root, demo, "CROHME", "2014", "crohme_2014")
    _hmer_replica(root, demo, "HME100K", "test", "hme100k_test_normalized")
    for dataset, file, folder in [
        ("rafdb", "rafdb_qa.json", "RAF-DB"),
        ("ferplus", "ferplus_qa.json", "FERPlus"),
        ("affectnet", "affectnet_qa.json", "AffectNet"),
        ("sfew", "sfew_2.0_qa.json", "SFEW"),
    ]:
        _fer_replica(root, tmp_path, dataset, file, folder)
    out = tmp_path / "out"
    argv = ["eval-all", "--model", str(tiny_model_dir), "--config", str(RELEASE), "--data-root", str(root)]
    argv += ["--out-dir", str(out), "--backend", "hf", "--max-new-tokens", "4", "--no-progress"]
    assert unitune(argv) == 0
    table = capsys.readouterr().out
    assert "Reproduction prompt: upstream's (the literal `<image>` text kept" in table
    assert (
        "| Dataset | File | N | Metric | Ours | Uni-MuMER-3B released (same file) | Δ vs released |" in table
    )
    row = re.search(
        r"\| CROHME 2014 \| `data/CROHME/prompts/crohme_2014.json` \| 2 \| ExpRate \| ([\d.]+) \| 82.66 \| "
        r"([-+][\d.]+) \| 82.05 \[1\] \| ok \|",
        table,
    )
    assert row, table
    assert float(row.group(2)) == pytest.approx(float(row.group(1)) - 82.66, abs=0.006)
    assert (
        "| HME100K (normalized) | `data/HME100K/prompts/hme100k_test_normalized.json` | 2 | ExpRate |"
        in table
    )
    assert re.search(
        r"\| HME100K \| `data/HME100K/prompts/hme100k_test.json` \| — \| — \| — \| 69.46 \| — \| — \[\d\] \| skipped",
        table,
    )
    assert re.search(
        r"\| FERBench \(pooled\) \| `pooled: RAF-DB, FERPlus, AffectNet, SFEW 2.0` \| 8 \| Acc \(UniFER protocol\) \| [\d.]+ \| — \| — \| 68.84 \[\d\] \| ok \|",
        table,
    )
    assert "reported, not verified" in table
    assert "[1] paper: upstream's final_paper_results/<stem>_results.txt" in table
    # upstream's prompt: the literal <image> text stays in the user turn
    infer = next((out / "crohme_2014" / "infer").glob("*_infer.jsonl"))
    first = json.loads(infer.read_text(encoding="utf-8").splitlines()[0])
    assert "<image>" in json.dumps(first["prompt"])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    pooled = next(d for d in summary["datasets"] if d["name"] == "FERBench (pooled)")
    assert pooled["n"] == 8 and pooled["released"] is None and pooled["paper"] == 68.84
