"""The fast paths of ``unitune eval hmer`` equal the plain definitions they replace, byte for byte.

- ``sample_lines`` (hand-formatted JSONL) == ``json.dumps(row, ensure_ascii=False)`` of ``sample_records``;
- interned / shared token lists change nothing: same tokens, metrics and distances as plain ``str.split``;
- the loader's column-wise path for plain files gives the same samples, warnings and notes as its
  record-by-record loop, and leaves every other file to that loop.
"""

from __future__ import annotations

import json
import random

import pytest

from evaluators.hmer import loaders
from evaluators.hmer.cli import sample_lines, sample_records
from evaluators.hmer.loaders import HmerSample, load_predictions
from evaluators.hmer.metrics import bleu4_nltk, evaluate_samples, mean_edit_score

ODD = ["\\frac", "{", "}", "x", '"', "\\\\", "é", "∑", "\u2028", "\x01", "\t", "😀", "a_b", "1e5"]


def random_samples(seed: int, n: int = 300) -> list[HmerSample]:
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        gt = " ".join(rng.choice(ODD) for _ in range(rng.randint(0, 12)))
        pred = gt if rng.random() < 0.5 else " ".join(rng.choice(ODD) for _ in range(rng.randint(0, 12)))
        samples.append(HmerSample(id=rng.choice([str(i), f'id "{i}"', f"ü{i}"]), gt=gt, pred=pred))
    return samples


@pytest.mark.parametrize("seed", range(5))
def test_sample_lines_are_json_dumps_of_the_records(seed: int) -> None:
    result = evaluate_samples(random_samples(seed))
    lines = list(sample_lines(result))
    assert lines == [json.dumps(row, ensure_ascii=False) for row in sample_records(result)]
    assert [json.loads(line)["edit_score"] for line in lines] == list(result.edit_scores)


@pytest.mark.parametrize("seed", range(5))
def test_interned_shared_tokens_change_no_number(seed: int) -> None:
    samples = random_samples(seed)
    result = evaluate_samples(samples)
    assert result.gt_tokens == [s.gt.split() for s in samples]
    assert result.pred_tokens == [s.pred.strip().split() for s in samples]
    gt_lens = [len(t) for t in result.gt_tokens]
    pred_lens = [len(t) for t in result.pred_tokens]
    assert result.metrics["mean_edit_score"] == mean_edit_score(result.distances, gt_lens, pred_lens)
    assert result.metrics["bleu4"] == bleu4_nltk(result.gt_tokens, result.pred_tokens)


@pytest.mark.shared
def test_sample_lines_on_the_reference_files(shared_reference) -> None:
    for path in sorted((shared_reference / "unimumer").glob("*.json")):
        if path.name.startswith("preprocess_"):
            continue
        result = evaluate_samples(load_predictions(path).samples)
        assert list(sample_lines(result)) == [
            json.dumps(r, ensure_ascii=False) for r in sample_records(result)
        ]


PLAIN_FILES = {
    "upstream.json": [
        {"gt": "x ^ 2", "pred": "x ^ 3", "img_id": "a"},
        {"gt": "y", "pred": "", "img_id": "a"},
    ],
    "int_ids.json": [{"gt": "x", "pred": "x", "img_id": 7}, {"gt": "y", "pred": "z", "img_id": True}],
    "llamafactory.jsonl": [{"prompt": "p", "predict": " x ", "label": "x"}, {"predict": "", "label": "y"}],
}
OTHER_FILES = {  # each needs the record loop: a missing id, a null or non-string prediction, an error field
    "missing_id.json": [{"gt": "x", "pred": "x", "img_id": "a"}, {"gt": "y", "pred": "y"}],
    "null_pred.json": [{"gt": "x", "pred": None, "img_id": "a"}, {"gt": "y", "pred": "y", "img_id": "b"}],
    "int_pred.json": [{"gt": "x", "pred": 3, "img_id": "a"}, {"gt": "y", "pred": "y", "img_id": "b"}],
    "error.json": [{"gt": "x", "pred": "x", "img_id": "a", "error": False}, {"gt": "y", "pred": "y"}],
}


def _write(path, records) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")


@pytest.mark.parametrize("name", [*PLAIN_FILES, *OTHER_FILES])
def test_column_loader_equals_the_record_loop(tmp_path, monkeypatch, name: str) -> None:
    records = {**PLAIN_FILES, **OTHER_FILES}[name]
    _write(tmp_path / name, records)
    taken = []
    real = loaders._plain_samples
    monkeypatch.setattr(loaders, "_plain_samples", lambda *a: taken.append(real(*a)) or taken[-1])
    fast = load_predictions(tmp_path / name)
    assert (taken[0] is not None) == (name in PLAIN_FILES)
    monkeypatch.setattr(loaders, "_plain_samples", lambda *a: None)
    loop = load_predictions(tmp_path / name)
    assert (fast.samples, fast.warnings, fast.notes, fast.format) == (
        loop.samples,
        loop.warnings,
        loop.notes,
        loop.format,
    )
