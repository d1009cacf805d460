"""The fast paths of ``unitune eval hmer`` equal the plain definitions they replace, byte for byte.

- ``sample_lines`` (hand-formatted JSONL) == ``json.dumps(row, ensure_ascii=False)`` of ``sample_records``;
- interned / shared token lists change nothing: same tokens, metrics and distances as plain ``str.split``;
- ``non_whitespace_length`` (the CER denominator, counted on the joined labels) == the tokens' lengths;
- a ``ScoreMemo`` / line-tails memo shared by several files changes no number and no byte.
"""

from __future__ import annotations

import json
import random

import pytest

from evaluators.hmer.cli import LineMemo, sample_lines, sample_records
from evaluators.hmer.loaders import HmerSample, load_predictions
from evaluators.hmer.metrics import (
    ScoreMemo,
    bleu4_nltk,
    evaluate_samples,
    mean_edit_score,
    non_whitespace_length,
)

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


@pytest.mark.parametrize("seed", range(5))
def test_non_whitespace_length_is_the_length_of_the_tokens(seed: int) -> None:
    rng = random.Random(seed)
    spaces = [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\u2003", "\x85"]
    pool = ODD + spaces
    ascii_only = [c for c in pool if c.isascii()]
    for chars in (pool, ascii_only):
        texts = ["".join(rng.choice(chars) for _ in range(rng.randint(0, 20))) for _ in range(50)]
        assert non_whitespace_length(texts) == sum(len(t) for text in texts for t in text.split())


def _same_result(a, b) -> None:
    assert a.metrics == b.metrics and a.counts == b.counts
    assert a.distances == b.distances and list(a.edit_scores) == list(b.edit_scores)
    assert list(a.gt_lens) == list(b.gt_lens) and list(a.pred_lens) == list(b.pred_lens)
    assert a.label_markers == b.label_markers
    assert [x.ops for x in a.alignments] == [x.ops for x in b.alignments]
    assert [x.op_tokens for x in a.alignments] == [x.op_tokens for x in b.alignments]


@pytest.mark.parametrize("limit", [1 << 17, 3, 0])
def test_memos_shared_by_files_change_nothing(limit: int) -> None:
    # files that share labels and wrong predictions (and repeat some within a file, some spaced differently)
    base = random_samples(0, 200)
    files = [base, random_samples(1, 200) + base[:50], base[100:] + base[:100], base[:20] * 3]
    files.append([HmerSample(s.id, s.gt, " " + s.pred.replace(" ", "  ")) for s in base[:40]])
    memo, lines_memo = ScoreMemo(limit=limit), LineMemo(limit=limit)
    for samples in files:
        alone = evaluate_samples(samples)
        shared = evaluate_samples(samples, memo=memo)
        _same_result(shared, alone)
        assert list(sample_lines(shared, lines_memo)) == list(sample_lines(alone))
        assert list(sample_lines(alone)) == [json.dumps(r, ensure_ascii=False) for r in sample_records(alone)]
    assert len(memo.labels) <= max(limit, 0) and len(memo.pairs) <= max(limit, 0)


def test_chunked_scoring_changes_nothing(monkeypatch) -> None:
    """New labels split and BLEU windows counted a few at a time (the chunks that bound memory on huge files)."""
    import evaluators.hmer.metrics as metrics

    samples = random_samples(7, 300) + random_samples(8, 100)
    whole = evaluate_samples(samples)
    monkeypatch.setattr(metrics, "_BLEU_CHUNK", 3)
    monkeypatch.setattr(metrics, "_LABEL_CHUNK", 5)
    chunked = evaluate_samples(samples)
    _same_result(chunked, whole)
    assert chunked.metrics["bleu4"] == bleu4_nltk(chunked.gt_tokens, chunked.pred_tokens)


@pytest.mark.parametrize(
    "text",
    [
        '[{"gt": "x", "pred": "é 😀 \\u00e9 \\ud83d\\ude00 \\u2028", "img_id": "1", "n": -0, "f": -0.0}]',
        '[{"a": 1, "a": 2, "big": 123456789012345678901234567890, "f": [0.1, 5e-324, 1.7976931348623157e308]}]',
        '[{"inf": 1e400, "nan": NaN}]',  # orjson refuses these: json's values
        '[{"lone": "\\ud800"}]',  # a lone surrogate: orjson refuses, json accepts
        "[" * 1100 + "]" * 1100,  # deeper than orjson goes, shallower than json's limit
        '\ufeff[{"a": 1}]',
    ],
)
def test_json_files_load_as_json_loads_them(tmp_path, text: str) -> None:
    """``load_json`` parses with orjson when it can: the values are json.loads's, and so are the refusals."""
    import math

    from evaluators.errors import UserError
    from evaluators.io_utils import load_json

    path = tmp_path / "f.json"
    path.write_text(text, encoding="utf-8")
    try:
        expected = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        with pytest.raises(UserError):
            load_json(path)
        assert type(err) in (json.JSONDecodeError, RecursionError)
        return
    got = load_json(path)
    same = json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert same or (math.isnan(got[0]["nan"]) and got[0]["inf"] == expected[0]["inf"])
