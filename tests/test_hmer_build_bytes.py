"""The fast build path (memoised targets, folder shortcut, JSON template, batched writes) writes the same bytes
as the plain definition: ``json.dumps(make_record(...))`` per record, images resolved by ``resolve_image``."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from llamafactory_ext.hmer import build as build_module
from llamafactory_ext.hmer.build import _ImageChecker, build_file, make_record, rejected_path
from llamafactory_ext.hmer.label_workers import LabelWorkers
from llamafactory_ext.hmer.records import _image_stem, resolve_image, sample_from_record
from llamafactory_ext.hmer.tree_cot import TreeParseError
from llamafactory_ext.media import MediaPaths, media_path_for

HAND_LABELS = [
    "\\frac { a ^ { 2 } + 1 } { b }",
    "x ^ 2",  # tree parse error
    "",  # empty label
    "   ",
    'a " b \\\\ c',  # quote and backslash in the JSON string
    "é + ∑ _ { i }",  # non-ASCII, written as is (ensure_ascii=False)
    "a \u0007 b",  # a control character, escaped
    "\\sqrt [ 3 ] { x }",
    "\\frac { a ^ { 2 } + 1 } { b }",  # repeated: answered from the memo
    "x ^ 2",  # repeated rejection
]


def _labels() -> list[str]:
    """Hand-made labels, plus 400 real CROHME labels (with their repeats) when ../shared is present."""
    path = Path(__file__).resolve().parents[2] / "shared" / "reference" / "unimumer"
    path = path / "tree_can_golden_from_gt.jsonl.gz"
    real = []
    if path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            real = [json.loads(line)["latex"] for _, line in zip(range(400), handle, strict=False)]
    return HAND_LABELS + real + real[:50]


def _corpus(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Images in the input's folder, in the working directory, absolute elsewhere, in missing folders."""
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (data / "images").mkdir(parents=True)
    elsewhere.mkdir()
    (tmp_path / "cwd_images").mkdir()
    (data / "linked").symlink_to(elsewhere)
    records = []
    for i, latex in enumerate(_labels()):
        kind = i % 6
        if kind == 0:
            image = f"images/{i}.png"
            (data / image).write_bytes(b"")
        elif kind == 1:
            image = str(elsewhere / f"{i}.png")
            Path(image).write_bytes(b"")
            if i % 12 == 7:  # a symlinked file, and a file reached through a symlinked folder
                (data / "images" / f"link_{i}.png").symlink_to(image)
                image = f"images/link_{i}.png"
            elif i % 12 == 1:
                image = f"linked/{i}.png"
        elif kind == 2:
            image = f"cwd_images/{i}.png"  # found from the working directory only
            (tmp_path / image).write_bytes(b"")
        elif kind == 3:
            image = f"missing/{i}.png"  # folder missing everywhere
        elif kind == 4:
            image = f"images/gone_{i}.png"  # folder exists, file does not
        else:
            image = f"top_{i}.png"  # no folder part
            if i % 12 == 5:
                (data / image).write_bytes(b"")
        records.append(
            {
                "messages": [{"from": "human", "value": "<image>q"}, {"from": "gpt", "value": latex}],
                "images": [image],
                "pred": "z " + latex,  # always a wrong prediction: EDL keeps every record
            }
        )
    source = data / "in.json"
    source.write_text(json.dumps(records), encoding="utf-8")
    return source, records


def _reference(records, task, root, check, absolute, media_dir) -> tuple[str, str]:
    """Output and rejected-file text by the plain definition (no memo, no shortcut, no template)."""
    rows, rejected = [], []
    for i, record in enumerate(records):
        sample = sample_from_record(record, i)
        found = resolve_image(sample.image, root)
        if found is None and check:
            rejected.append(
                {
                    "index": i,
                    "id": sample.id,
                    "image": sample.image,
                    "reason": f"missing image: {sample.image}",
                }
            )
            continue
        image = sample.image
        if found is not None and absolute:
            image = str(found.resolve())
        elif found is not None and media_dir is not None:
            image = media_path_for(found, media_dir)
        try:
            rows.append(json.dumps(make_record(task, image, sample.latex, sample.pred), ensure_ascii=False))
        except TreeParseError as err:
            reason = f"tree parse error: {err}"
        except ValueError as err:
            reason = f"bad record: {err}"
        else:
            continue
        entry = {"index": i, "id": sample.id, "image": sample.image, "latex": sample.latex, "reason": reason}
        rejected.append(entry)
    text = "[\n" + ",\n".join(rows) + "\n]\n" if rows else "[]\n"
    return text, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected)


@pytest.mark.usefixtures("no_tqdm_monitor")  # else the build would not fork its label workers
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("task", ["vanilla", "tree", "can", "error_find", "error_fix"])
@pytest.mark.parametrize("mode", ["no-check", "check", "media-dir", "absolute", "tiny-memo"])
def test_build_file_bytes_equal_the_plain_definition(tmp_path, monkeypatch, task, mode, workers):
    source, records = _corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(build_module._JsonListWriter, "BATCH", 7)  # several batches, one partial
    # many small chunks: some answered by the helper, some here while it is busy (tree and can)
    monkeypatch.setattr(LabelWorkers, "CHUNK", 5)
    monkeypatch.setattr(LabelWorkers, "MAX_PER_HELPER", 1)
    if mode == "tiny-memo":  # the memo starts afresh every few labels
        monkeypatch.setattr(build_module, "ANSWER_CACHE_CHARS", 2000)
    media_dir = tmp_path / "data" if mode == "media-dir" else tmp_path / "dataset_info"
    out = tmp_path / "out" / f"{task}.json"
    build_file(
        source,
        out,
        task,
        check_images=mode in ("check", "absolute"),
        absolute_images=mode == "absolute",
        media_dir=media_dir,
        progress=False,
        workers=workers,
    )
    text, rejected = _reference(
        records, task, source.parent, mode in ("check", "absolute"), mode == "absolute", media_dir
    )
    assert out.read_text(encoding="utf-8") == text
    side = rejected_path(out)
    assert (side.read_text(encoding="utf-8") if side.exists() else "") == rejected


def test_image_checker_finds_what_resolve_image_finds(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.png").write_bytes(b"")
    (root / "top.png").write_bytes(b"")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "y.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    images = [
        "a/b/x.png", "a/b/none.png", "a/none/x.png", "a/b/../b/x.png", "a/zz/../b/x.png", "top.png",
        "c/y.png", "c//y.png", "./c/y.png", "none.png", str(root / "a" / "b" / "x.png"), "/nowhere/x.png",
        "/", "a/b/", "a/b",
    ]  # fmt: skip
    for current_root in (root, str(root), None):
        checker = _ImageChecker(current_root, check=True, absolute=False)
        for image in images + images:  # the second time from the remembered folders
            found = checker.find(image)
            assert (found and Path(found)) == resolve_image(image, current_root), (image, current_root)


def test_image_checker_forgets_folders_beyond_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(_ImageChecker, "MAX_FOLDERS", 3)
    checker = _ImageChecker(tmp_path, check=True, absolute=False)
    for i in range(10):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "x.png").write_bytes(b"")
        assert checker.find(f"d{i}/x.png") == str(tmp_path / f"d{i}" / "x.png")
        assert len(checker._folders) <= 3


@pytest.mark.parametrize(
    "path", ["a/b.png", "b", "x/.hidden", "..a", "a..", "c.d.jpg", "/d/", "", ".", "..", "/a/.b.c", "dir.x/f"]
)
def test_image_stem_is_os_path_splitext(path):
    assert _image_stem(path) == os.path.splitext(os.path.basename(path))[0]


def test_media_paths_is_media_path_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = [
        "a.png", "ds/a.png", "ds/sub/../b.png", "./ds//c.png", "ds", "elsewhere/d.png", "../e.png",
        str(tmp_path / "ds" / "f.png"), "/ds/g.png", "//ds/h.png", "/", "dsx/i.png",
    ]  # fmt: skip
    for media_dir in ("ds", "ds/", tmp_path / "ds", "/", "//ds", ".", "/ds"):
        to_write = MediaPaths(media_dir)
        assert [to_write(i) for i in images] == [media_path_for(i, media_dir) for i in images], media_dir


def test_progress_bar_reads_once_and_ends_full(tmp_path, monkeypatch, capsys):
    """A JSON list gets a byte bar (no counting pass), JSONL a record bar; the output does not change."""
    source, records = _corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    jsonl = tmp_path / "data" / "in.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    counted = []
    real = build_module.count_records
    monkeypatch.setattr(build_module, "count_records", lambda path: counted.append(path) or real(path))
    for path, unit in ((source, "B/s"), (jsonl, "rec/s")):
        quiet, shown = tmp_path / f"quiet{path.suffix}", tmp_path / f"shown{path.suffix}"
        build_file(path, quiet, "tree", check_images=False, progress=False)
        build_file(path, shown, "tree", check_images=False, progress=True)
        assert shown.read_bytes() == quiet.read_bytes()
        bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
        assert "100%" in bar and unit in bar, bar
    assert counted == [jsonl]  # JSONL: a cheap line count; a JSON list is not parsed twice
