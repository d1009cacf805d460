"""The UniFER CoT → sharegpt converter (``unitune data fer-sft``) and the UniFER SFT recipe."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import yaml
from PIL import Image

from evaluators.cli import main
from evaluators.errors import UserError
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS
from llamafactory_ext.fer_data import (
    candidate_labels_from_question,
    convert_file,
    convert_records,
    rejected_path,
)

REPO = Path(__file__).resolve().parents[1]
QUESTION = (
    "As an expert in facial expression recognition, which expression is most prominent in this image? "
    "Please select your answer from the following candidate labels: angry, disgust, fear, happy, neutral, sad, "
    "surprise. Provide your detailed reasoning between the <think></think> tags, and then give your final "
    "answer between the <answer></answer> tags."
)


def cot(image: str, label: str = "sad", response: str | None = None) -> dict:
    return {
        "image_path": image,
        "question": QUESTION,
        "response": response
        if response is not None
        else f"<think>Drooping mouth.</think>\n<answer>{label}</answer>",
    }


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "SFEW" / "Val").mkdir(parents=True)
    Image.new("RGB", (100, 50), "red").save(root / "SFEW" / "Val" / "a.png")
    Image.new("RGB", (30, 90), "blue").save(root / "SFEW" / "Val" / "b.jpg")
    (root / "SFEW" / "Val" / "broken.jpg").write_bytes(b"not an image")
    return root


def test_layout_and_image_root(image_root: Path) -> None:
    entries, rejected, stats = convert_records([cot("/SFEW/Val/a.png")], image_root=image_root)
    assert rejected == [] and stats.written == 1
    assert entries == [
        {
            "messages": [
                {"from": "human", "value": "<image>" + QUESTION},
                {"from": "gpt", "value": "<think>Drooping mouth.</think>\n<answer>sad</answer>"},
            ],
            "images": [str((image_root / "SFEW/Val/a.png").resolve())],
        }
    ]


def test_existing_image_token_is_not_doubled(image_root: Path) -> None:
    record = {**cot("SFEW/Val/a.png"), "question": "<image>" + QUESTION}
    entries, _, _ = convert_records([record], image_root=image_root)
    assert entries[0]["messages"][0]["value"].count("<image>") == 1


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (cot("/SFEW/Val/missing.png"), "missing_image"),
        (cot("/SFEW/Val/broken.jpg"), "bad_image"),
        (cot("/SFEW/Val/a.png", response="<answer>sad</answer>"), "format"),
        (cot("/SFEW/Val/a.png", response="<think>x</think><answer>sad</answer> trailing"), "format"),
        (cot("/SFEW/Val/a.png", "contempt"), "answer_not_candidate"),  # not an SFEW candidate
        (cot("/SFEW/Val/a.png", "unhappy"), "answer_not_candidate"),
        ({"image_path": "/SFEW/Val/a.png", "question": QUESTION}, "missing_field"),
        ({**cot("/SFEW/Val/a.png"), "question": "<image><image>" + QUESTION}, "image_tokens"),
    ],
)
def test_rejections(image_root: Path, record: dict, kind: str) -> None:
    entries, rejected, stats = convert_records([record, cot("/SFEW/Val/a.png")], image_root=image_root)
    assert len(entries) == 1 and stats.rejected == 1
    assert rejected[0]["index"] == 0 and rejected[0]["kind"] == kind
    assert stats.reasons == {kind: 1}


def test_synonym_answer_is_a_candidate(image_root: Path) -> None:
    _, rejected, _ = convert_records([cot("/SFEW/Val/a.png", "happiness")], image_root=image_root)
    assert rejected == []


def test_no_image_check_keeps_missing_images(image_root: Path) -> None:
    entries, rejected, _ = convert_records(
        [cot("/SFEW/Val/missing.png")], image_root=image_root, check_images=False
    )
    assert rejected == [] and entries[0]["images"] == [str((image_root / "SFEW/Val/missing.png").resolve())]


def test_resize_copies_are_224_square_and_reused(image_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    records = [cot("/SFEW/Val/a.png"), cot("/SFEW/Val/b.jpg"), cot("/SFEW/Val/a.png", "happy")]
    entries, rejected, _ = convert_records(records, image_root=image_root, resize=224, cache_dir=cache)
    assert rejected == []
    paths = [Path(e["images"][0]) for e in entries]
    assert paths[0] == paths[2] != paths[1]  # same source bytes -> same copy
    assert all(p.parent == cache.resolve() for p in paths)
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (224, 224) and image.mode == "RGB"
    with Image.open(paths[0]) as image:  # aspect not kept: the red 100x50 image fills the square
        assert image.getpixel((0, 0)) == image.getpixel((223, 223)) == (255, 0, 0)
    stamp = paths[0].stat().st_mtime_ns
    os.utime(paths[0], ns=(stamp - 10**9, stamp - 10**9))
    again, _, _ = convert_records(records, image_root=image_root, resize=224, cache_dir=cache)
    assert [e["images"] for e in again] == [e["images"] for e in entries]
    assert paths[0].stat().st_mtime_ns == stamp - 10**9  # reused, not rewritten
    assert sorted(p.name for p in cache.iterdir()) == sorted({p.name for p in paths})


def test_resize_rejects_broken_images(image_root: Path, tmp_path: Path) -> None:
    _, rejected, _ = convert_records(
        [cot("/SFEW/Val/broken.jpg")], image_root=image_root, resize=224, cache_dir=tmp_path / "c"
    )
    assert rejected[0]["kind"] == "bad_image"


def test_resize_needs_cache_dir(image_root: Path) -> None:
    with pytest.raises(UserError, match="--cache-dir"):
        convert_records([cot("/SFEW/Val/a.png")], image_root=image_root, resize=224)


def test_convert_file_rejected_side_file_strict_and_register(image_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "cot.json"
    src.write_text(json.dumps([cot("/SFEW/Val/a.png"), cot("/SFEW/Val/missing.png")]))
    ds_dir = tmp_path / "dataset_info"
    out = ds_dir / "data" / "unifer_cot_sft.json"
    stats = convert_file(src, out, image_root=image_root, register="unifer_cot_sft", dataset_dir=ds_dir)
    assert stats.written == 1 and stats.rejected == 1
    assert len(json.loads(out.read_text())) == 1
    side = [json.loads(line) for line in rejected_path(out).read_text().splitlines()]
    assert [(r["index"], r["kind"]) for r in side] == [(1, "missing_image")]
    info = json.loads((ds_dir / "dataset_info.json").read_text())
    assert info == {
        "unifer_cot_sft": {
            "file_name": "data/unifer_cot_sft.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        }
    }
    with pytest.raises(UserError, match="record 1 rejected: image not found"):
        convert_file(src, tmp_path / "strict.json", image_root=image_root, strict=True)
    assert not (tmp_path / "strict.json").exists()
    src.write_text(json.dumps([cot("/SFEW/Val/a.png")]))
    convert_file(src, out, image_root=image_root)
    assert not rejected_path(out).exists()  # stale side file removed


def test_convert_file_bad_inputs(tmp_path: Path, image_root: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(UserError, match="empty file"):
        convert_file(empty, tmp_path / "o.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(UserError, match="malformed JSON"):
        convert_file(bad, tmp_path / "o.json")
    allbad = tmp_path / "allbad.json"
    allbad.write_text(json.dumps([cot("/nope.png")]))
    with pytest.raises(UserError, match="all 1 records rejected"):
        convert_file(allbad, tmp_path / "o.json", image_root=image_root)


def test_cli_fer_sft(image_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "cot.jsonl"
    src.write_text("".join(json.dumps(cot(p)) + "\n" for p in ("/SFEW/Val/a.png", "/SFEW/Val/b.jpg")))
    out = tmp_path / "o" / "sft.json"
    argv = ["data", "fer-sft", str(src), "--out", str(out), "--image-root", str(image_root)]
    assert main([*argv, "--resize", "224", "--cache-dir", str(tmp_path / "c")]) == 0
    assert len(json.loads(out.read_text())) == 2
    assert main([*argv, "--resize", "0", "--cache-dir", str(tmp_path / "c")]) == 2


@pytest.mark.shared
def test_candidate_parsing_on_real_prompts(shared_reference: Path) -> None:
    files = {
        "rafdb": "rafdb_qa.json.gz",
        "ferplus": "ferplus_qa.json.gz",
        "affectnet": "affectnet_qa.json.gz",
        "sfew": "sfew_2.0_qa.json.gz",
    }
    for dataset, name in files.items():
        path = shared_reference / "unifer_ferbench" / name
        if not path.is_file():
            pytest.skip(f"{path} not found")
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            item = json.load(handle)[0]
        assert candidate_labels_from_question(item["prompt"]) == CANDIDATE_LABELS[dataset]


def test_unifer_sft_recipe_matches_upstream() -> None:
    recipe = yaml.safe_load((REPO / "recipes" / "unifer_sft.yaml").read_text())
    assert recipe["model_name_or_path"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert recipe["finetuning_type"] == "full" and recipe["template"] == "qwen2_vl"
    assert recipe["learning_rate"] == 2e-5 and recipe["lr_scheduler_type"] == "cosine"
    assert recipe["num_train_epochs"] == 2.0 and recipe["bf16"] is True and recipe["max_grad_norm"] == 5.0
    assert recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"] * 4 == 16
    assert recipe["default_system"] == "" and recipe["train_on_prompt"] is True
    assert recipe["image_max_pixels"] == 224 * 224 and recipe["dataset_dir"] == "dataset_info"
    assert recipe["freeze_vision_tower"] is False and recipe["freeze_multi_modal_projector"] is False
    assert recipe["deepspeed"] == "recipes/deepspeed/ds_z2.json"
    deepspeed = REPO / recipe["deepspeed"]
    if deepspeed.is_file():
        assert json.loads(deepspeed.read_text())["zero_optimization"]["stage"] == 2
