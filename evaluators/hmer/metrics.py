"""Per-sample scoring and aggregate metrics for HMER, with upstream Uni-MuMER's exact definitions.

Tokens are whitespace-split LaTeX (:func:`evaluators.knowledge.latex.tokenize`). Every sample is aligned
once (:func:`align`, C-backed via :mod:`evaluators.knowledge.alignment`) and every metric reads that
alignment's distance ``d``:

- ``exprate`` = % of samples with ``d == 0``; ``error_le_k`` = % with ``d <= k`` for k = 1, 2, 3.
- ``mean_edit_score`` = mean of ``(1 - d / max(len(gt), len(pred))) * 100``; 100 when both are empty,
  0 when exactly one is.
- ``bleu4`` = NLTK corpus BLEU (weights ``(0.25,) * 4``, ``SmoothingFunction().method4``) x 100,
  references ``[[gt_tokens]]``; :func:`bleu4` reproduces ``nltk.translate.bleu_score.corpus_bleu`` exactly
  (tested with ``==``) without importing nltk, and counts n-grams only where prediction and label differ.
- ``token_edits_per_gt_char`` = sum of token distances / sum of ``len(gt)`` in characters: what upstream
  prints as "Character Error Rate". It mixes units, so it keeps that label only in the upstream text file.
- ``cer`` = a true character error rate: character Levenshtein distance / label characters, whitespace
  removed on both sides (spaces in Uni-MuMER labels are tokenisation, not content).
- ``token_error_rate`` = sum of token distances / sum of label tokens (a WER over LaTeX tokens).

All percentages are in [0, 100]; nothing is rounded here (upstream's rounding lives in
:mod:`evaluators.hmer.upstream_report`).
"""

from __future__ import annotations

import gc
import math
import operator
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, compress, repeat, tee
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING

from rapidfuzz.distance import Levenshtein

from evaluators.errors import UserError
from evaluators.hmer.loaders import HmerSample
from evaluators.knowledge.alignment import edit_opcodes, edit_similarity

if TYPE_CHECKING:
    import numpy as np

from evaluators.knowledge.latex import (
    EXTRACT_MODES,
    extract_latex,
    extract_latex_all,
    normalize_latex,
    tokenize_all,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "STRUCTURES",
    "STRUCTURE_MARKERS",
    "THRESHOLDS",
    "Alignment",
    "HmerResult",
    "ScoreMemo",
    "align",
    "bleu4",
    "bleu4_nltk",
    "bleu_from_counts",
    "char_error_rate",
    "char_error_rate_tokens",
    "edit_score",
    "evaluate_samples",
    "gc_paused",
    "mean_edit_score",
    "non_whitespace_length",
    "prepare_texts",
    "threshold_counts",
    "token_edits_per_gt_char",
    "token_error_rate",
]

#: Edit-distance thresholds upstream reports (0 = ExpRate).
THRESHOLDS = (0, 1, 2, 3)

#: Direction of every metric in ``HmerResult.metrics``.
HIGHER_IS_BETTER: dict[str, bool] = {
    "exprate": True,
    "error_le_1": True,
    "error_le_2": True,
    "error_le_3": True,
    "mean_edit_score": True,
    "bleu4": True,
    "token_edits_per_gt_char": False,
    "token_error_rate": False,
    "cer": False,
}

#: Structure name -> label tokens that mark it (a label can have several; the analysis calls one with none
#: "plain"). :func:`evaluate_samples` records which of them each label contains.
STRUCTURES: dict[str, frozenset[str]] = {
    "frac": frozenset({"\\frac", "\\dfrac", "\\tfrac"}),
    "script": frozenset({"^", "_"}),
    "sqrt": frozenset({"\\sqrt"}),
    "environment": frozenset({"\\begin"}),
    "big_operator": frozenset({"\\sum", "\\int", "\\prod", "\\lim", "\\oint"}),
}
#: Every token of :data:`STRUCTURES`.
STRUCTURE_MARKERS: frozenset[str] = frozenset().union(*STRUCTURES.values())

_BLEU_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
_ZEROS = repeat(0)
#: Wrong samples whose n-grams are matched at once: bounds BLEU's memory whatever the corpus size.
_BLEU_CHUNK = 16384
#: New labels split at once (their token lists are dropped after each chunk).
_LABEL_CHUNK = 16384


@dataclass(frozen=True, slots=True)
class Alignment:
    """A sample's minimal token alignment: ``distance`` and its non-equal opcode blocks.

    ``ops`` holds ``(tag, i1, i2, j1, j2)`` with ``tag`` in replace/insert/delete: ``gt[i1:i2]`` became
    ``pred[j1:j2]``. ``op_tokens`` holds those tokens, ``(gt[i1:i2], pred[j1:j2])`` per op: what the
    samples file and the confusions show, kept so that the whole token lists need not be. Exact matches
    have ``distance == 0`` and no ops.
    """

    distance: int
    ops: tuple[tuple[str, int, int, int, int], ...] = ()
    op_tokens: tuple[tuple[list[str], list[str]], ...] = field(default=(), repr=False, compare=False)


_EXACT = Alignment(0, ())
_DISTANCE = operator.attrgetter("distance")


def align(gt_tokens: Sequence[str], pred_tokens: Sequence[str]) -> Alignment:
    """Align a label and a prediction once; the distance is the cost of the returned ops.

    Example:

    >>> align(["x", "^", "{", "2", "}"], ["x", "^", "{", "3", "}"])
    Alignment(distance=1, ops=(('replace', 3, 4, 3, 4),))
    >>> align(["a"], ["a"]).distance, align([], ["a", "b"]).distance
    (0, 2)
    """
    if gt_tokens == pred_tokens:
        return _EXACT
    ops = tuple([op for op in edit_opcodes(gt_tokens, pred_tokens) if op[0] != "equal"])
    return Alignment(
        sum([max(i2 - i1, j2 - j1) for _, i1, i2, j1, j2 in ops]),
        ops,
        tuple([(list(gt_tokens[i1:i2]), list(pred_tokens[j1:j2])) for _, i1, i2, j1, j2 in ops]),
    )


def edit_score(distance: int, gt_len: int, pred_len: int) -> float:
    """Upstream's per-sample edit score in percent.

    Example:

    >>> edit_score(1, 4, 5)
    80.0
    >>> edit_score(0, 0, 0), edit_score(3, 0, 3), edit_score(2, 2, 0)
    (100.0, 0.0, 0.0)
    """
    return edit_similarity(distance, gt_len, pred_len) * 100


def mean_edit_score(distances: Sequence[int], gt_lens: Sequence[int], pred_lens: Sequence[int]) -> float:
    """Mean of :func:`edit_score` over samples, summed in order like upstream (bit-identical float).

    Example:

    >>> mean_edit_score([0, 1], [2, 4], [2, 5])
    90.0
    """
    scores = [edit_score(d, g, p) for d, g, p in zip(distances, gt_lens, pred_lens, strict=True)]
    return sum(scores) / len(scores)


def threshold_counts(distances: Sequence[int], thresholds: Sequence[int] = THRESHOLDS) -> dict[int, int]:
    """Number of samples with ``distance <= k`` for each ``k``.

    Example:

    >>> threshold_counts([0, 0, 1, 3, 7])
    {0: 2, 1: 3, 2: 3, 3: 4}
    """
    histogram = Counter(distances)
    return {k: sum(n for d, n in histogram.items() if d <= k) for k in thresholds}


def token_edits_per_gt_char(distances: Sequence[int], gt_texts: Sequence[str]) -> float:
    """Upstream's "Character Error Rate": token distances over label *characters* (0 if no characters).

    Example:

    >>> token_edits_per_gt_char([1, 0], ["a + b", "c"])  # 1 token edit / 6 characters
    0.16666666666666666
    """
    total_length = sum(map(len, gt_texts))
    return sum(distances) / total_length if total_length > 0 else 0.0


def token_error_rate(distances: Sequence[int], gt_lens: Sequence[int]) -> float:
    """Token distances over label tokens, a WER over LaTeX tokens (0 if the labels are all empty).

    Example:

    >>> token_error_rate([1, 0], [3, 1])
    0.25
    """
    total = sum(gt_lens)
    return sum(distances) / total if total > 0 else 0.0


def char_error_rate(
    gt_texts: Sequence[str], pred_texts: Sequence[str], distances: Sequence[int] | None = None
) -> float:
    """True character error rate, whitespace removed on both sides (0 if the labels have no characters).

    ``distances`` (token distances), when given, skip the character alignment of exact matches.

    Example:

    >>> char_error_rate(["\\\\alpha + 1", "x"], ["\\\\alpha + 7", "x"])  # 1 edit / (8 + 1) characters
    0.1111111111111111
    """
    if len(gt_texts) != len(pred_texts):
        raise ValueError(f"char_error_rate: {len(gt_texts)} labels for {len(pred_texts)} predictions")
    return char_error_rate_tokens(
        [text.split() for text in gt_texts], [text.split() for text in pred_texts], distances
    )


#: The ASCII characters ``str.split()`` splits on (``"".join(c for c in map(chr, range(128)) if c.isspace())``).
_ASCII_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "


def non_whitespace_length(texts: Sequence[str]) -> int:
    """Characters of ``texts`` outside whitespace: ``sum`` of the lengths of their ``str.split()`` tokens.

    ASCII texts (Uni-MuMER's labels) are joined once and their whitespace counted by ``str.count``, instead
    of visiting every token; other texts are split.

    Example:

    >>> non_whitespace_length(["\\\\alpha + 1", "x\ty"]), non_whitespace_length(["é ∑\u2003x"])
    (10, 3)
    """
    joined = "".join(texts)
    if joined.isascii():
        return len(joined) - sum(map(joined.count, _ASCII_WHITESPACE))
    return sum(map(len, chain.from_iterable(map(str.split, texts))))


def char_error_rate_tokens(
    gt_tokens: Sequence[Sequence[str]],
    pred_tokens: Sequence[Sequence[str]],
    distances: Sequence[int] | None = None,
    gt_length: int | None = None,
) -> float:
    """:func:`char_error_rate` of texts given as their whitespace tokens (joined, they are the texts
    without whitespace), so a caller that has tokenised does not split again.

    ``gt_length``, when given, is the labels' characters without whitespace (the sum of the lengths of
    ``gt_tokens``, e.g. from :func:`non_whitespace_length` of the label texts): the tokens are not visited.

    Example:

    >>> char_error_rate_tokens([["\\\\alpha", "+", "1"], ["x"]], [["\\\\alpha", "+", "7"], ["x"]], [1, 0])
    0.1111111111111111
    """
    if len(gt_tokens) != len(pred_tokens) or (distances is not None and len(distances) != len(gt_tokens)):
        raise ValueError(
            f"char_error_rate: {len(gt_tokens)} labels, {len(pred_tokens)} predictions"
            + (f", {len(distances)} distances" if distances is not None else "")
            + "; expected one of each per sample"
        )
    length = sum(map(len, chain.from_iterable(gt_tokens))) if gt_length is None else gt_length
    pairs = zip(gt_tokens, pred_tokens, strict=True)
    if distances is not None:  # no token edit, no character edit: only the others are aligned
        pairs = compress(pairs, distances)
    edits = sum(Levenshtein.distance("".join(gt), "".join(pred)) for gt, pred in pairs)
    return edits / length if length > 0 else 0.0


def _matches_python(
    references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]
) -> list[list[int]]:
    """Clipped n-gram matches of each sample pair for n = 1..4, with Counters (nltk's definition)."""
    out = []
    for ref, hyp in zip(references, hypotheses, strict=True):
        matches = [0, 0, 0, 0]
        for n in (1, 2, 3, 4):
            if len(hyp) < n:
                break
            hyp_counts = Counter(zip(*(hyp[i:] for i in range(n)), strict=False))
            ref_counts = Counter(zip(*(ref[i:] for i in range(n)), strict=False))
            # sum over the prediction's n-grams of min(count in prediction, count in label)
            matches[n - 1] = sum(map(min, hyp_counts.values(), map(ref_counts.get, hyp_counts, _ZEROS)))
        out.append(matches)
    return out


def _matches_numpy(
    references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]], per_sample: bool = True
) -> np.ndarray | None:
    """Same as :func:`_matches_python`, vectorised (an n-gram is its token ids packed into one int64), as an
    int64 array of one row per sample pair (``per_sample``) or one row of their sums.

    Returns ``None`` when the vocabulary has 2**16 tokens or more (the packing would not be exact).
    """
    import numpy as np

    both_sides = (*hypotheses, *references)
    vocab = {token: i for i, token in enumerate(set(chain.from_iterable(both_sides)))}
    if len(vocab) >= 1 << 16:
        return None
    bits = max(1, (len(vocab) - 1).bit_length())  # bits per token id in a packed n-gram key
    count = len(hypotheses)
    sample_bits = max(1, (count - 1).bit_length())
    # All tokens of the predictions then of the labels, as ids; per token its sample, its side (0 =
    # prediction, 1 = label) and the tokens left in its sequence (an n-gram may start where n are left).
    ids = np.fromiter(map(vocab.__getitem__, chain.from_iterable(both_sides)), dtype=np.int64)
    lens = np.fromiter(map(len, both_sides), dtype=np.int64, count=len(both_sides))
    owner = np.repeat(np.arange(len(both_sides), dtype=np.int64), lens)
    room = np.cumsum(lens)[owner] - np.arange(len(ids), dtype=np.int64)
    side = owner >= count
    sample = owner - side * count
    matches = np.zeros((4, count), dtype=np.int64)
    key = ids
    for n in (1, 2, 3, 4):
        if n > 1:  # the n-gram starting at i = the (n-1)-gram at i, then token i + n - 1
            key = (key[:-1] << bits) | ids[n - 1 :]
        at = np.flatnonzero(room[: len(key)] >= n)
        gram, gram_sample, gram_side = key[at], sample[at], side[at]
        if not gram_side.any() or gram_side.all():  # no n-gram on one of the two sides
            continue
        if n * bits + sample_bits <= 61:  # (sample, n-gram, side bit) fits one int64
            packed = (gram_sample << n * bits) | gram
            grams = 1 << n * bits
        else:  # densify the n-grams first, then combine with the sample index
            _, dense = np.unique(gram, return_inverse=True)
            dense = dense.reshape(-1)
            grams = int(dense.max()) + 1
            packed = gram_sample * grams + dense
        # One sort, the side in the lowest bit: each run of equal (sample, n-gram) keys holds that n-gram's
        # prediction count (bit 0) and label count (bit 1); the clipped match is their minimum.
        packed = (packed << 1) | gram_side
        packed.sort()
        run_key = packed >> 1
        starts = np.flatnonzero(np.concatenate(([True], run_key[1:] != run_key[:-1])))
        in_ref = np.add.reduceat(packed & 1, starts)
        in_hyp = np.diff(np.append(starts, len(packed))) - in_ref
        clipped = np.minimum(in_hyp, in_ref)  # each run's clipped matches
        if per_sample:  # summed per sample (the sample is the key over the n-gram values)
            matches[n - 1] = np.bincount(run_key[starts] // grams, clipped, count)
        else:
            matches[n - 1, 0] = clipped.sum()
    return matches.T if per_sample else matches[:, :1].T


def _window(
    ref: Sequence[str], hyp: Sequence[str], ops: Sequence[tuple[str, int, int, int, int]]
) -> tuple[Sequence[str], Sequence[str]]:
    """A wrong sample cut to its edited span plus 3 tokens of context each side (``ops``: its non-equal opcodes).

    Outside ``[first edit - 3, last edit + 3)`` both sides hold the same tokens (the common prefix and
    suffix), so every n-gram (n <= 4) that lies wholly outside is the same on both sides and matches itself:
    the clipped matches of a sample are those cut n-grams plus the clipped matches of the kept parts (for
    each n-gram, min(c + h, c + r) = c + min(h, r)).
    """
    start = ops[0][1] - 3  # the first edit's i1 (= j1): the common prefix's length
    if start < 0:
        start = 0
    _, _, ref_stop, _, hyp_stop = ops[-1]
    stop = len(ref) - ref_stop  # the common suffix's length, kept up to 3
    if stop > 3:
        stop = 3
    return ref[start : ref_stop + stop], hyp[start : hyp_stop + stop]


def _cut_ngrams(whole_lens: Sequence[int], kept: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sample, the prediction n-grams (n = 1..4) :func:`_window` cut away from its ``whole_lens`` tokens,
    as an int64 array of one row per sample."""
    import numpy as np

    whole = np.fromiter(whole_lens, dtype=np.int64, count=len(whole_lens))
    kept_lens = np.fromiter(map(len, kept), dtype=np.int64, count=len(kept))
    return np.stack([np.maximum(0, whole - k) - np.maximum(0, kept_lens - k) for k in range(4)], axis=1)


def _trimmed(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[Sequence[str]],
    alignments: Sequence[Alignment],
    wrong: list[int],
) -> tuple[list[Sequence[str]], list[Sequence[str]], list[int]]:
    """The wrong samples cut by :func:`_window`: the kept labels, the kept predictions, and per n the number
    of prediction n-grams cut."""
    windows = [_window(references[i], hypotheses[i], alignments[i].ops) for i in wrong]
    refs = [ref for ref, _ in windows]
    hyps = [hyp for _, hyp in windows]
    cut = _cut_ngrams([len(hypotheses[i]) for i in wrong], hyps).sum(axis=0)
    return refs, hyps, [int(c) for c in cut]


def _sample_matches(
    refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]], per_sample: bool = True
) -> np.ndarray:
    """Clipped n-gram matches (n = 1..4) of each sample pair, :data:`_BLEU_CHUNK` pairs at a time, as an int64
    array of one row per pair (``per_sample``) or per chunk (its sums)."""
    import numpy as np

    chunks = [np.zeros((0, 4), dtype=np.int64)]
    for start in range(0, len(hyps), _BLEU_CHUNK):
        chunk_refs, chunk_hyps = refs[start : start + _BLEU_CHUNK], hyps[start : start + _BLEU_CHUNK]
        counted = _matches_numpy(chunk_refs, chunk_hyps, per_sample)
        if counted is None:  # a huge vocabulary: exact Counter matching instead
            counted = np.array(_matches_python(chunk_refs, chunk_hyps), dtype=np.int64).reshape(-1, 4)
        chunks.append(counted)
    return np.concatenate(chunks)


def _wrong_matches(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[Sequence[str]],
    alignments: Sequence[Alignment] | None = None,
) -> list[int]:
    """Clipped n-gram matches (n = 1..4) of the samples that differ, :data:`_BLEU_CHUNK` samples at a time.

    With the samples' ``alignments``, only the edited span of each (with its context) is matched, see
    :func:`_window`: a few tokens per sample instead of every token.
    """
    matches = [0, 0, 0, 0]
    wrong = [i for i, same in enumerate(map(operator.eq, references, hypotheses)) if not same]
    for start in range(0, len(wrong), _BLEU_CHUNK):
        chunk = wrong[start : start + _BLEU_CHUNK]
        if alignments is not None:  # trimmed chunk by chunk: the cut copies stay bounded too
            refs, hyps, cut = _trimmed(references, hypotheses, alignments, chunk)
            matches = [a + b for a, b in zip(matches, cut, strict=True)]
        else:
            refs = [references[i] for i in chunk]
            hyps = [hypotheses[i] for i in chunk]
        counted = _sample_matches(refs, hyps, per_sample=False).sum(axis=0)
        matches = [a + int(b) for a, b in zip(matches, counted, strict=True)]
    return matches


def _bleu4_from_sums(
    pred_lens: Sequence[int], exact_lens: Sequence[int], ref_len: int, wrong: Sequence[int]
) -> float:
    """:func:`bleu4` from what :func:`evaluate_samples` gathered: every prediction's length, the lengths of
    the exact matches, the labels' total length and the clipped n-gram matches of the others (summed)."""
    if not pred_lens:
        return 0.0
    import numpy as np

    hyp_lens = np.fromiter(pred_lens, dtype=np.int64, count=len(pred_lens))
    exact = np.fromiter(exact_lens, dtype=np.int64, count=len(exact_lens))
    numerators = list(wrong)
    denominators = [0, 0, 0, 0]
    for k in range(4):
        # nltk: denominator max(1, number of n-grams); an exact match matches all its n-grams
        denominators[k] = int(np.maximum(1, hyp_lens - k).sum())
        numerators[k] += int(np.maximum(0, exact - k).sum())
    return bleu_from_counts(numerators, denominators, ref_len, int(hyp_lens.sum()))


def bleu_from_counts(
    numerators: Sequence[int], denominators: Sequence[int], ref_len: int, hyp_len: int
) -> float:
    """Corpus BLEU-4 x 100 from summed n-gram counts, as ``nltk`` 3.8+ finishes ``corpus_bleu``.

    ``numerators[k]`` / ``denominators[k]`` are the clipped matches / n-grams (each sample's count at least
    1) of order ``k + 1``; ``ref_len`` and ``hyp_len`` the summed token lengths. Orders without a match
    get ``SmoothingFunction().method4``: ``1 / (2**i * 5 / ln(hyp_len))`` over the denominator, ``i``
    counting the smoothed orders from 1; the brevity penalty is ``exp(1 - ref_len / hyp_len)`` when
    ``hyp_len <= ref_len``; the score is ``bp * exp(fsum(0.25 * ln p_n))`` over the positive ``p_n``.

    Example:

    >>> bleu_from_counts([4, 3, 2, 1], [4, 3, 2, 1], 4, 4)
    100.0
    >>> bleu_from_counts([2, 1, 0, 0], [3, 2, 1, 1], 3, 3) == bleu4_nltk([["a", "b", "c"]], [["a", "b", "d"]])
    True
    """
    if numerators[0] == 0:
        return 0.0
    precisions = []
    smoothed = 1
    for numerator, denominator in zip(numerators, denominators, strict=True):
        if numerator == 0 and hyp_len > 1:
            precisions.append((1 / (2**smoothed * 5 / math.log(hyp_len))) / denominator)
            smoothed += 1
        else:
            precisions.append(numerator / denominator)
    log_sum = math.fsum(w * math.log(p) for w, p in zip(_BLEU_WEIGHTS, precisions, strict=True) if p > 0)
    if hyp_len > ref_len:
        penalty = 1.0
    elif hyp_len == 0:
        penalty = 0.0
    else:
        penalty = math.exp(1 - ref_len / hyp_len)
    return penalty * math.exp(log_sum) * 100


def bleu4(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[Sequence[str]],
    alignments: Sequence[Alignment] | None = None,
) -> float:
    """Corpus BLEU-4 x 100 exactly as ``nltk`` computes it for upstream, one reference per sample.

    Same modified n-gram precision counts (denominator at least 1 per sample and order), brevity
    penalty and ``SmoothingFunction().method4`` as ``corpus_bleu(..., weights=(0.25,) * 4)``, finished by
    :func:`bleu_from_counts` (nltk itself is not imported: its package pulls in scipy and pandas).
    Exact matches are counted in closed form and the others' n-grams with numpy in bounded chunks; given
    the samples' :func:`align` results (``alignments``), only the n-grams around the edits are matched.
    Tests check ``bleu4(...) == bleu4_nltk(...)`` exactly.

    Example:

    >>> refs = [["a", "b", "c", "d"], ["x", "y"]]
    >>> hyps = [["a", "b", "c", "d"], ["x", "z"]]
    >>> bleu4(refs, hyps) == bleu4_nltk(refs, hyps)
    True
    >>> bleu4([["a"]], [["b"]])
    0.0
    >>> refs, hyps = [list("abcdefghij")], [list("abcdxfghij")]
    >>> bleu4(refs, hyps, [align(refs[0], hyps[0])]) == bleu4_nltk(refs, hyps)
    True
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    if alignments is not None and len(alignments) != len(hypotheses):
        raise ValueError(f"{len(alignments)} alignments for {len(hypotheses)} hypotheses")
    if not hypotheses:
        return 0.0
    import numpy as np

    hyp_lens = np.fromiter(map(len, hypotheses), dtype=np.int64, count=len(hypotheses))
    exact = np.fromiter(map(operator.eq, references, hypotheses), dtype=bool, count=len(hypotheses))
    numerators = _wrong_matches(references, hypotheses, alignments) if not exact.all() else [0, 0, 0, 0]
    denominators = [0, 0, 0, 0]
    for k in range(4):
        # nltk: denominator max(1, number of n-grams); an exact match matches all its n-grams
        denominators[k] = int(np.maximum(1, hyp_lens - k).sum())
        numerators[k] += int(np.maximum(0, hyp_lens[exact] - k).sum())
    return bleu_from_counts(numerators, denominators, sum(map(len, references)), int(hyp_lens.sum()))


def bleu4_nltk(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """Upstream's call, verbatim: ``corpus_bleu([[ref]...], hyps, (0.25,)*4, method4) * 100`` (slow, reference).

    Example:

    >>> round(bleu4_nltk([["a", "b", "c", "d"]], [["a", "b", "c", "d"]]), 6)
    100.0
    """
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    score = corpus_bleu(
        [[list(ref)] for ref in references],
        [list(hyp) for hyp in hypotheses],
        weights=_BLEU_WEIGHTS,
        smoothing_function=SmoothingFunction().method4,
    )
    return score * 100


def prepare_texts(
    samples: Sequence[HmerSample], extract: str = "raw", normalize: bool = False
) -> tuple[list[str], list[str]]:
    """The label and prediction texts that get scored.

    ``extract="raw"`` (upstream, the default) keeps the label untouched and only strips the prediction;
    ``"last-line"``/``"auto"`` take the LaTeX line of chain-of-thought outputs, on both sides (a
    LLaMA-Factory label of a CoT set ends with the LaTeX line too). ``normalize`` applies
    :func:`~evaluators.knowledge.latex.normalize_latex` to both sides, after extraction.

    Example:

    >>> s = HmerSample(id="0", gt="x: 1\\nx ^ 2", pred="x: 1\\nx^{2}")
    >>> prepare_texts([s], extract="last-line", normalize=True)
    (['x ^ { 2 }'], ['x ^ { 2 }'])
    """
    if extract not in EXTRACT_MODES:
        raise UserError(f"--extract must be one of {', '.join(EXTRACT_MODES)}, got {extract!r}.")
    if extract == "raw":
        gts = list(map(attrgetter("gt"), samples))
    else:
        gts = [extract_latex(s.gt, extract) for s in samples]
    preds = extract_latex_all(list(map(attrgetter("pred"), samples)), extract)
    if normalize:
        gts = [normalize_latex(t) for t in gts]
        preds = [normalize_latex(t) for t in preds]
    return gts, preds


@dataclass
class HmerResult:
    """Everything one evaluation computed; ``metrics`` holds the unrounded aggregate values.

    Per sample, in input order: ``ids``, the scored texts ``gts`` and ``preds``, their token counts
    ``gt_lens`` and ``pred_lens``, the :class:`Alignment` (its ``op_tokens`` carry the edited tokens), the
    :func:`edit_score` and ``label_markers``, the tokens of :data:`STRUCTURE_MARKERS` the label contains (one
    shared frozenset per distinct set). The whole token lists are not kept (most samples are exact matches,
    and tokens were most of the memory): :attr:`gt_tokens` and :attr:`pred_tokens` split the texts again.
    """

    n: int
    metrics: dict[str, float]
    counts: dict[int, int]
    ids: list[str]
    gts: list[str]
    preds: list[str]
    gt_lens: Sequence[int]
    pred_lens: Sequence[int]
    alignments: list[Alignment]
    #: Per-sample :func:`edit_score` (``array('d')``).
    edit_scores: Sequence[float]
    label_markers: list[frozenset[str]]
    config: dict[str, object] = field(default_factory=dict)

    @property
    def distances(self) -> list[int]:
        """Token edit distance of every sample, in input order."""
        return list(map(_DISTANCE, self.alignments))

    @property
    def gt_tokens(self) -> list[list[str]]:
        """Every label's tokens (:func:`~evaluators.knowledge.latex.tokenize` of ``gts``), made on each access."""
        return tokenize_all(self.gts)

    @property
    def pred_tokens(self) -> list[list[str]]:
        """Every prediction's tokens, made on each access."""
        return tokenize_all(self.preds)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: scoring allocates ~10 small lists per sample and holds them,
    so generation-2 collections would rescan them all repeatedly (about 30% of the time at 100k).

    ``unitune eval hmer`` holds it for the whole run (loading, scoring, analysis, writing); the objects it
    makes form no reference cycles, so nothing is left for the collector to free.

    Example:

    >>> import gc
    >>> with gc_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class ScoreMemo:
    """What :func:`evaluate_samples` found for a text, kept for the next calls given the same memo.

    ``labels`` maps a label to its token count, structure markers and characters; ``pairs`` a (label,
    prediction) pair that differs to what scoring reads of it (its :class:`Alignment`, prediction length,
    edit score, BLEU windows and character edits), or to ``None`` when the two have the same tokens;
    ``ngrams`` such a pair to its clipped n-gram matches. The prediction files of one test set (several
    checkpoints, a set and its normalised twin) share most labels and many wrong predictions: ``unitune eval
    hmer`` gives one memo to all the files of a process, so that those are tokenised and aligned once. Every
    entry is what scoring the text computes, so a memo changes no result; each kind keeps at most ``limit``
    entries, which bounds its memory on huge runs.

    Example:

    >>> memo = ScoreMemo()
    >>> first = evaluate_samples([HmerSample("0", "x + 1", "x + 7")], memo=memo)
    >>> again = evaluate_samples([HmerSample("9", "x + 1", "x + 7")], memo=memo)
    >>> again.alignments[0] is first.alignments[0], len(memo.labels), len(memo.pairs)
    (True, 1, 1)
    """

    labels: dict[str, tuple[int, frozenset[str], int]] = field(default_factory=dict)
    pairs: dict[tuple[str, str], tuple | None] = field(default_factory=dict)
    #: Per wrong pair, its prediction's clipped n-gram matches (n = 1..4) against its label, for BLEU.
    ngrams: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: One frozenset per distinct set of structure markers, shared by the labels that have it.
    markers: dict[frozenset[str], frozenset[str]] = field(default_factory=dict)
    limit: int = 1 << 16


def _label_info(memo: ScoreMemo, gts: list[str]) -> list[tuple[int, frozenset[str], int]]:
    """``(tokens, structure markers, characters outside whitespace)`` of every label, each new label split
    once (and remembered)."""
    info = list(map(memo.labels.get, gts))
    new = list(compress(range(len(gts)), map(operator.is_, info, repeat(None))))
    keep = len(memo.labels) + len(new) <= memo.limit
    for start in range(0, len(new), _LABEL_CHUNK):  # a chunk's token lists at a time
        chunk = new[start : start + _LABEL_CHUNK]
        tokens = tokenize_all([gts[i] for i in chunk])
        markers, same_markers = tee(map(STRUCTURE_MARKERS.intersection, tokens))
        found = list(
            zip(
                map(len, tokens),
                map(memo.markers.setdefault, markers, same_markers),
                map(len, map("".join, tokens)),
                strict=True,
            )
        )
        for i, entry in zip(chunk, found, strict=True):
            info[i] = entry
        if keep:
            memo.labels.update(zip([gts[i] for i in chunk], found, strict=True))
    return info


def _score_pair(gt_text: str, pred_text: str) -> tuple | None:
    """What scoring reads of a label and a prediction that differ (see :class:`ScoreMemo`); ``None`` when
    they have the same tokens."""
    gt = gt_text.split()
    pred = pred_text.split()
    if pred == gt:  # other whitespace, same tokens
        return None
    ops = tuple([op for op in edit_opcodes(gt, pred) if op[0] != "equal"])
    tokens = []
    distance = 0
    for _, i1, i2, j1, j2 in ops:  # each op's tokens and cost
        tokens.append((gt[i1:i2], pred[j1:j2]))
        distance += i2 - i1 if i2 - i1 > j2 - j1 else j2 - j1
    ref_window, hyp_window = _window(gt, pred, ops)
    return (
        Alignment(distance, ops, tuple(tokens)),
        len(pred),
        edit_score(distance, len(gt), len(pred)),
        ref_window,
        hyp_window,
        Levenshtein.distance("".join(gt), "".join(pred)),
    )


def _count_windows(
    memo: ScoreMemo,
    keys: list[tuple[str, str]],
    refs: list[Sequence[str]],
    hyps: list[Sequence[str]],
    whole_lens: list[int],
    totals: list[int],
) -> None:
    """Add the clipped n-gram matches of the wrong pairs ``keys`` (cut to their BLEU windows ``refs`` and
    ``hyps``, of ``whole_lens`` prediction tokens) to ``totals``, remember each pair's, and empty the lists."""
    keep = len(memo.ngrams) + len(keys) <= memo.limit  # else only the sums are needed
    cut = _cut_ngrams(whole_lens, hyps)
    matched = _sample_matches(refs, hyps, per_sample=keep)
    for k, total in enumerate(matched.sum(axis=0) + cut.sum(axis=0)):
        totals[k] += int(total)
    if keep:
        memo.ngrams.update(zip(keys, (matched + cut).tolist(), strict=True))
    for column in (keys, refs, hyps, whole_lens):
        column.clear()


def evaluate_samples(
    samples: Sequence[HmerSample],
    extract: str = "raw",
    normalize: bool = False,
    memo: ScoreMemo | None = None,
) -> HmerResult:
    """Score samples: one alignment each, then every aggregate metric from those alignments.

    Exact matches (most samples) cost a split of the label and no alignment: their distance is 0, their
    edit score 100 and their n-grams all match. The others are aligned once, in one pass that also keeps
    their edited tokens, cuts their BLEU windows (:func:`_window`) and counts their character edits. Texts
    met before in ``memo`` (a :class:`ScoreMemo`, e.g. one per run of several files) are not split or aligned
    again; the result is the same with or without it.

    Raises:
        UserError: no samples.

    Example:

    >>> samples = [HmerSample("a", "x + 1", "x + 1"), HmerSample("b", "\\\\frac { a } { b }", "\\\\frac { a } { 6 }")]
    >>> result = evaluate_samples(samples)
    >>> result.n, result.counts, result.metrics["exprate"], result.distances
    (2, {0: 1, 1: 2, 2: 2, 3: 2}, 50.0, [0, 1])
    >>> round(result.metrics["mean_edit_score"], 4)
    92.8571
    >>> result.alignments[1].op_tokens, result.label_markers[1] == {"\\\\frac"}
    (((['b'], ['6']),), True)
    """
    if not samples:
        raise UserError("no samples to evaluate; an evaluation needs at least one.")
    memo = memo if memo is not None else ScoreMemo()
    with gc_paused():
        gts, preds = prepare_texts(samples, extract, normalize)
        n = len(gts)
        info = _label_info(memo, gts)
        gt_lens = list(map(itemgetter(0), info))
        label_markers = list(map(itemgetter(1), info))
        gt_chars = sum(map(itemgetter(2), info))  # as non_whitespace_length(gts)
        del info
        # What an exact match has; the loop below overwrites the others. edit_score(0, k, k) is 100.0 for
        # every k (0 included).
        pred_lens = gt_lens.copy()
        alignments = [_EXACT] * n
        edit_scores = array("d", [100.0]) * n
        known: list[list[int]] = []  # clipped n-gram matches of wrong pairs counted before
        wrong_matches = [0, 0, 0, 0]  # and of the others, counted from their BLEU windows
        todo: list[tuple[str, str]] = []  # the others, counted below from their BLEU windows
        window_refs: list[Sequence[str]] = []
        window_hyps: list[Sequence[str]] = []
        wrong_lens: list[int] = []
        char_edits = 0
        pairs, ngrams = memo.pairs, memo.ngrams
        room = memo.limit - len(pairs)
        for i in compress(range(n), map(operator.ne, gts, preds)):
            key = (gts[i], preds[i])
            scored = pairs.get(key, pairs)  # the dict itself: not seen yet
            if scored is pairs:
                scored = _score_pair(*key)
                if room > 0:
                    pairs[key] = scored
                    room -= 1
            if scored is None:
                continue
            alignment, pred_len, score, ref_window, hyp_window, chars = scored
            alignments[i] = alignment
            pred_lens[i] = pred_len
            edit_scores[i] = score
            char_edits += chars
            matches = ngrams.get(key)
            if matches is None:
                todo.append(key)
                window_refs.append(ref_window)
                window_hyps.append(hyp_window)
                wrong_lens.append(pred_len)
                if len(todo) == _BLEU_CHUNK:  # counted a chunk at a time: the windows stay bounded
                    _count_windows(memo, todo, window_refs, window_hyps, wrong_lens, wrong_matches)
            else:
                known.append(matches)
        if todo:
            _count_windows(memo, todo, window_refs, window_hyps, wrong_lens, wrong_matches)
        if known:
            wrong_matches = [a + sum(b) for a, b in zip(wrong_matches, zip(*known, strict=True), strict=True)]
        distances = list(map(_DISTANCE, alignments))
        counts = threshold_counts(distances)
        metrics: dict[str, float] = {
            "exprate": (counts[0] / n) * 100,
            "error_le_1": (counts[1] / n) * 100,
            "error_le_2": (counts[2] / n) * 100,
            "error_le_3": (counts[3] / n) * 100,
            "mean_edit_score": sum(edit_scores) / n,  # in order, as mean_edit_score() and upstream
            "bleu4": _bleu4_from_sums(
                pred_lens, list(compress(gt_lens, map(operator.not_, distances))), sum(gt_lens), wrong_matches
            ),
            "token_edits_per_gt_char": token_edits_per_gt_char(distances, gts),
            "token_error_rate": token_error_rate(distances, gt_lens),
            "cer": char_edits / gt_chars if gt_chars > 0 else 0.0,  # as char_error_rate()
        }
    return HmerResult(
        n=n,
        metrics=metrics,
        counts=counts,
        ids=list(map(attrgetter("id"), samples)),
        gts=gts,
        preds=preds,
        gt_lens=gt_lens,
        pred_lens=pred_lens,
        alignments=alignments,
        edit_scores=edit_scores,
        label_markers=label_markers,
        config={"extract": extract, "normalize": normalize},
    )
