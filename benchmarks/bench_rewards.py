"""Throughput of the GRPO rewards: completions scored per second on one core.

Run: ``.venv/bin/python benchmarks/bench_rewards.py [--n 20000] [--repeats 5]``. The target for the FER rewards
is >= 100k completions/s. The completions are realistic (a few sentences of think text, conversational format as
TRL passes them), with a mix of correct, wrong, synonym and malformed answers.
"""

from __future__ import annotations

import argparse
import random
import time

from evaluators.knowledge.fer_labels import CANDIDATE_LABELS
from trl_grpo import rewards as R

FER_TARGET = 100_000


def _fer_batch(n: int, rng: random.Random) -> dict:
    labels = list(CANDIDATE_LABELS["rafdb"])
    think = (
        "The eyebrows are raised and drawn together, the upper eyelids are raised and the lips are stretched "
        "horizontally; these action units point towards one expression more than the others."
    )
    completions, solution = [], []
    for i in range(n):
        gold = labels[i % len(labels)]
        kind = rng.random()
        if kind < 0.4:
            answer = gold
        elif kind < 0.5:
            answer = {"happiness": "happy", "sadness": "sad", "anger": "angry"}.get(gold, gold.upper())
        elif kind < 0.9:
            answer = rng.choice(labels)
        else:
            answer = None
        text = f"<think>{think}</think>\n<answer>{answer}</answer>" if answer else f"<think>{think}</think>"
        completions.append([{"role": "assistant", "content": text}])
        solution.append(f"<answer>{gold}</answer>")
    return {
        "completions": completions,
        "solution": solution,
        "candidate_labels": [labels] * n,
        "task": ["fer"] * n,
    }


def _hmer_batch(n: int, rng: random.Random) -> dict:
    gold = "\\frac { a ^ { 2 } + 1 } { b } + \\sqrt { x _ { i } } = \\sum _ { i = 1 } ^ { n } x _ { i }"
    tokens = gold.split()
    completions, solution = [], []
    for _ in range(n):
        pred = list(tokens)
        for _ in range(rng.randrange(3)):
            pred[rng.randrange(len(pred))] = rng.choice(["x", "y", "+", "-", "{", "}"])
        completions.append([{"role": "assistant", "content": " ".join(pred)}])
        solution.append(gold)
    return {"completions": completions, "solution": solution, "task": ["hmer"] * n}


def _rate(reward, batch: dict, repeats: int) -> float:
    n = len(batch["completions"])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        reward(**batch, trainer_state=None, prompts=None)
        best = min(best, time.perf_counter() - start)
    return n / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="completions per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the best is reported")
    args = parser.parse_args(argv)

    rng = random.Random(0)
    fer = _fer_batch(args.n, rng)
    fer_no_candidates = {k: v for k, v in fer.items() if k != "candidate_labels"}
    hmer = _hmer_batch(args.n, rng)
    cases = [
        ("fer_accuracy_reward (candidate_labels column)", R.fer_accuracy_reward, fer, True),
        ("fer_accuracy_reward (no candidate column)", R.fer_accuracy_reward, fer_no_candidates, True),
        ("make_fer_accuracy_reward('rafdb')", R.make_fer_accuracy_reward("rafdb"), fer, True),
        ("unifer_accuracy_reward", R.unifer_accuracy_reward, fer, True),
        ("think_answer_format_reward", R.think_answer_format_reward, fer, True),
        ("hmer_exact_match_reward", R.hmer_exact_match_reward, hmer, False),
        ("hmer_edit_score_reward", R.hmer_edit_score_reward, hmer, False),
    ]
    print(f"| reward | completions/s (n={args.n}, best of {args.repeats}) | FER target {FER_TARGET:,}/s |")
    print("|---|---:|---|")
    failed = False
    for label, reward, batch, is_fer in cases:
        rate = _rate(reward, batch, args.repeats)
        verdict = ("ok" if rate >= FER_TARGET else "BELOW") if is_fer else "-"
        failed |= is_fer and rate < FER_TARGET
        print(f"| {label} | {rate:,.0f} | {verdict} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
