"""Simulate ``unitune infer --backend vllm`` on HME100K: chunks with a barrier vs. streaming submission.

Before streaming, the runner gave vLLM 2048 requests per ``LLM.generate`` call and waited for the chunk's
slowest request before the next chunk started; the engine's batch then drains to a handful of sequences
(in the worst case one runaway output decoding to ``max_new_tokens``). Now requests stream through the
engine's step loop with the queue topped up as requests finish, so the batch stays full until the end of
the file. This script replays both schedules with a continuous-batching model:

- output lengths (decode steps) are drawn with replacement from Uni-MuMER's committed predictions
  (``../shared/reference/unimumer/*_pred.json``: CROHME 2014/2016/2019/2023, MNE N2; 5,936 real outputs
  of the same model family), one decode step per whitespace token plus ``<|im_end|>`` (LaTeX tokens are
  space-separated, about one Qwen BPE token each); a prediction of 2,000+ characters is a runaway that ran
  to ``max_new_tokens`` (2048). Without the reference folder a log-normal fit of the same medians is used
  and the table says so.
- a decode step costs ``step_ms + per_seq_ms × active sequences``; each admitted request adds a prefill
  cost ``prefill_ms`` (the image and prompt) to the step that admits it; ``max_num_seqs`` sequences at most.
- HME100K's test set has 24,607 images; the old default chunk was 2048 (13 chunks).

Run: ``python benchmarks/sim_vllm_streaming.py [--requests 24607] [--max-num-seqs 256] [--seeds 5]``.
It prints one Markdown table: for each cost setting, the simulated hours of both schedules and the gain.
The numbers are a model, not a measurement: they show where the barrier costs time and how much.
"""

from __future__ import annotations

import argparse
import glob
import heapq
import json
import math
import random
import statistics
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "unimumer"
HME100K_TEST = 24_607
MAX_NEW_TOKENS = 2048


def real_lengths(folder: Path = REFERENCE) -> tuple[list[int], str]:
    """Decode steps of every committed prediction, and where they came from."""
    lengths = []
    for path in sorted(glob.glob(str(folder / "*_pred.json"))):
        for row in json.loads(Path(path).read_text(encoding="utf-8")):
            pred = str(row.get("pred", ""))
            steps = MAX_NEW_TOKENS if len(pred) >= 2000 else len(pred.split()) + 1
            lengths.append(min(steps, MAX_NEW_TOKENS))
    if lengths:
        return lengths, f"{len(lengths)} real Uni-MuMER predictions ({folder})"
    rng = random.Random(0)
    fitted = [max(2, min(MAX_NEW_TOKENS, round(rng.lognormvariate(math.log(15), 0.55)))) for _ in range(6000)]
    fitted[0] = MAX_NEW_TOKENS  # about one runaway in 6,000, as in the real files
    return fitted, "a log-normal fit (median 15 steps, 1 runaway in 6,000): reference files not found"


def simulate(
    lengths: list[int], max_num_seqs: int, chunk: int, step_ms: float, per_seq_ms: float, prefill_ms: float
) -> float:
    """Seconds to decode every request; ``chunk`` 0 = streaming (no barrier), else a barrier per chunk."""
    groups = [lengths] if chunk <= 0 else [lengths[i : i + chunk] for i in range(0, len(lengths), chunk)]
    total_ms = 0.0
    for group in groups:
        step = 0
        queue = iter(group)
        finishing: list[int] = []  # heap of the step at which each active sequence finishes
        pending = True
        while pending or finishing:
            admitted = 0
            while pending and len(finishing) < max_num_seqs:
                length = next(queue, None)
                if length is None:
                    pending = False
                    break
                heapq.heappush(finishing, step + length)
                admitted += 1
            if not finishing:
                break
            # the batch is full or the queue empty: nothing changes until the next sequence finishes
            steps = max(1, finishing[0] - step)
            total_ms += admitted * prefill_ms + steps * (step_ms + per_seq_ms * len(finishing))
            step += steps
            while finishing and finishing[0] <= step:
                heapq.heappop(finishing)
    return total_ms / 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=HME100K_TEST, help="HME100K test images (24,607)")
    parser.add_argument("--chunk", type=int, default=2048, help="the old chunk size (default 2048)")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="vLLM's default (256)")
    parser.add_argument("--seeds", type=int, default=5, help="resamplings of the length distribution")
    parser.add_argument(
        "--reference", type=Path, default=REFERENCE, help=f"folder of *_pred.json (default {REFERENCE})"
    )
    args = parser.parse_args(argv)

    pool, source = real_lengths(args.reference)
    runaways = sum(1 for x in pool if x >= MAX_NEW_TOKENS)
    print(
        f"Output lengths: {source}; median {statistics.median(pool):.0f} decode steps, "
        f"{runaways} runaway(s) to {MAX_NEW_TOKENS}. {args.requests} requests, max_num_seqs "
        f"{args.max_num_seqs}, old chunk {args.chunk} ({math.ceil(args.requests / args.chunk)} chunks), "
        f"{args.seeds} resamplings (median shown, min-max of the gain in brackets).\n"
    )
    settings = [  # (step_ms, per_seq_ms, prefill_ms): a 3B model on one GPU, memory-bound to compute-bound
        (15.0, 0.02, 1.0),
        (15.0, 0.10, 2.0),
        (25.0, 0.20, 4.0),
    ]
    print("| step ms | per-seq ms | prefill ms | chunked (2048) h | streaming h | gain | runaway-free gain |")
    print("|---|---|---|---|---|---|---|")
    for step_ms, per_seq_ms, prefill_ms in settings:
        chunked, streamed, gains, clean_gains = [], [], [], []
        for seed in range(args.seeds):
            rng = random.Random(seed)
            lengths = [rng.choice(pool) for _ in range(args.requests)]
            a = simulate(lengths, args.max_num_seqs, args.chunk, step_ms, per_seq_ms, prefill_ms)
            b = simulate(lengths, args.max_num_seqs, 0, step_ms, per_seq_ms, prefill_ms)
            chunked.append(a)
            streamed.append(b)
            gains.append(a / b)
            clean = [x for x in lengths if x < MAX_NEW_TOKENS]
            c = simulate(clean, args.max_num_seqs, args.chunk, step_ms, per_seq_ms, prefill_ms)
            d = simulate(clean, args.max_num_seqs, 0, step_ms, per_seq_ms, prefill_ms)
            clean_gains.append(c / d)
        print(
            f"| {step_ms:g} | {per_seq_ms:g} | {prefill_ms:g} | {statistics.median(chunked) / 3600:.3f} | "
            f"{statistics.median(streamed) / 3600:.3f} | {statistics.median(gains):.2f}× "
            f"[{min(gains):.2f}–{max(gains):.2f}] | {statistics.median(clean_gains):.2f}× |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
