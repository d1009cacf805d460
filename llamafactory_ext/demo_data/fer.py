"""Draw simple synthetic faces for a few expressions, in FERBench's QA format (demo data).

``unitune demo-data fer --n 32 --out-dir DIR`` draws cartoon faces with PIL (face shape, skin and background
colours, eye and mouth positions jittered; brows, eyes and mouth set by the expression) and writes:

- ``DIR/images/face_<split>_<k>.png`` (224x224, UniFER's input size)
- ``DIR/fer_demo_qa.json`` (``--n-test`` faces): FERBench QA records ``{"image_path", "true_label", "prompt",
  "candidate_labels"}`` with the FERBench prompt and the chosen dataset's candidate list (default RAF-DB, so
  the FER evaluator detects it);
- ``DIR/fer_demo_rlvr.json`` (``--n`` faces): UniFER's RLVR records ``{"problem", "solution", "image_path"}``
  with ``solution`` = ``<answer>label</answer>``, for ``unitune data fer-rlvr`` / GRPO.

``image_path`` values are ``images/...png``, relative to ``DIR`` (pass ``--image-root DIR``).
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path
from typing import Any

from evaluators.cli import add_out_dir
from evaluators.io_utils import atomic_write_json
from evaluators.knowledge.fer_labels import CANDIDATE_LABELS

__all__ = ["EXPRESSIONS", "FERBENCH_PROMPT", "add_arguments", "draw_face", "run", "write_fer_demo"]

logger = logging.getLogger(__name__)

#: FERBench's question (``{labels}`` = the comma-separated candidate list).
FERBENCH_PROMPT = (
    "As an expert in facial expression recognition, which expression is most prominent in this image? Please "
    "select your answer from the following candidate labels: {labels}. Provide your detailed reasoning between "
    "the <think></think> tags, and then give your final answer between the <answer></answer> tags."
)

#: Expressions the drawing knows, by their RAF-DB/AffectNet names; FERPlus/SFEW spellings map onto them.
EXPRESSIONS = ("happiness", "sadness", "surprise", "anger", "neutral", "fear", "disgust")
_SPELLING = {"happy": "happiness", "sad": "sadness", "angry": "anger"}

_SIZE = 224


def draw_face(expression: str, rng: random.Random, size: int = _SIZE) -> Any:
    """Draw one cartoon face showing ``expression`` (any FERBench spelling); returns an RGB PIL image.

    Example:

    >>> image = draw_face("happy", random.Random(0))
    >>> image.size, image.mode
    ((224, 224), 'RGB')
    """
    from PIL import Image, ImageDraw, ImageFilter

    kind = _SPELLING.get(expression, expression)
    if kind not in EXPRESSIONS:
        raise ValueError(f"cannot draw {expression!r}; known: {', '.join(EXPRESSIONS)}")
    s = size / 224.0
    background = tuple(rng.randint(150, 235) for _ in range(3))
    skin = rng.choice([(241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)])
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cx, cy = size / 2 + rng.uniform(-6, 6) * s, size / 2 + rng.uniform(-4, 6) * s
    rx, ry = rng.uniform(72, 84) * s, rng.uniform(88, 100) * s
    draw.ellipse(
        (cx - rx, cy - ry, cx + rx, cy + ry), fill=skin, outline=(60, 40, 30), width=max(1, int(2 * s))
    )

    eye_dx, eye_y = rng.uniform(28, 34) * s, cy - rng.uniform(22, 30) * s
    eye_r = (11 if kind in ("surprise", "fear") else 7) * s
    line = max(2, int(4 * s))
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse(
            (ex - eye_r * 1.4, eye_y - eye_r, ex + eye_r * 1.4, eye_y + eye_r), fill="white", outline="black"
        )
        pupil = 4 * s
        draw.ellipse((ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil), fill=(30, 20, 10))
        # Brows: inner end (towards the nose) first.
        inner, outer = ex - side * 12 * s, ex + side * 14 * s
        base = eye_y - eye_r - 10 * s
        if kind == "anger":
            brow = ((inner, base + 8 * s), (outer, base - 6 * s))  # inner ends pulled down
        elif kind in ("sadness", "fear"):
            brow = ((inner, base - 8 * s), (outer, base + 4 * s))  # inner ends raised
        elif kind == "surprise":
            brow = ((inner, base - 12 * s), (outer, base - 12 * s))
        elif kind == "disgust" and side == 1:
            brow = ((inner, base + 6 * s), (outer, base))
        else:
            brow = ((inner, base), (outer, base))
        draw.line(brow, fill=(50, 30, 20), width=line)

    nose_y = cy + 8 * s
    draw.line(
        ((cx, eye_y + 8 * s), (cx - 6 * s, nose_y), (cx + 4 * s, nose_y)), fill=(90, 60, 40), width=line // 2
    )
    if kind == "disgust":  # wrinkled nose
        for dy in (-6, -2):
            draw.arc(
                (cx - 10 * s, nose_y + dy * s - 6 * s, cx + 10 * s, nose_y + dy * s + 6 * s),
                200,
                340,
                fill=(90, 60, 40),
            )

    my, mw = cy + rng.uniform(40, 48) * s, rng.uniform(26, 34) * s
    mouth = (120, 30, 40)
    if kind == "happiness":
        draw.chord((cx - mw, my - 18 * s, cx + mw, my + 18 * s), 0, 180, fill=mouth, outline="black")
    elif kind == "sadness":
        draw.arc((cx - mw, my, cx + mw, my + 30 * s), 200, 340, fill="black", width=line)
    elif kind == "surprise":
        draw.ellipse((cx - 12 * s, my - 16 * s, cx + 12 * s, my + 16 * s), fill=mouth, outline="black")
    elif kind == "fear":
        draw.rectangle((cx - mw * 0.8, my - 6 * s, cx + mw * 0.8, my + 8 * s), fill=mouth, outline="black")
        for k in range(-3, 4):
            x = cx + k * mw * 0.2
            draw.line(((x, my - 6 * s), (x, my + 8 * s)), fill="white", width=1)
    elif kind == "anger":
        draw.line(((cx - mw, my + 4 * s), (cx + mw, my + 4 * s)), fill="black", width=line)
        draw.arc((cx - mw, my + 2 * s, cx + mw, my + 20 * s), 200, 340, fill="black", width=max(1, line // 2))
    elif kind == "disgust":
        draw.line(
            (
                (cx - mw, my + 6 * s),
                (cx - mw / 3, my - 2 * s),
                (cx + mw / 3, my + 6 * s),
                (cx + mw, my - 6 * s),
            ),
            fill="black",
            width=line,
        )
    else:  # neutral
        draw.line(((cx - mw * 0.8, my), (cx + mw * 0.8, my)), fill="black", width=line)

    image = image.rotate(rng.uniform(-6, 6), resample=Image.Resampling.BICUBIC, fillcolor=background)
    return image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 0.8)))


def write_fer_demo(
    out_dir: str | Path, n: int = 32, n_test: int | None = None, dataset: str = "rafdb", seed: int = 0
) -> dict[str, Path]:
    """Draw ``n`` RLVR training faces and ``n_test`` QA test faces into ``out_dir``; return the JSON paths.

    Labels cycle through the dataset's candidates (balanced), shuffled with ``seed``. ``n_test`` defaults
    to ``max(7, n // 2)``.
    """
    if dataset not in CANDIDATE_LABELS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(CANDIDATE_LABELS)}")
    labels = [label for label in CANDIDATE_LABELS[dataset] if _SPELLING.get(label, label) in EXPRESSIONS]
    n_test = max(7, n // 2) if n_test is None else n_test
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    prompt = FERBENCH_PROMPT.format(labels=", ".join(CANDIDATE_LABELS[dataset]))

    def faces(split: str, count: int) -> list[tuple[str, str]]:
        cycle = [labels[k % len(labels)] for k in range(count)]
        rng.shuffle(cycle)
        rows = []
        for k, label in enumerate(cycle):
            name = f"images/face_{split}_{k:04d}.png"
            draw_face(label, rng).save(out / name)
            rows.append((name, label))
        return rows

    rlvr = [
        {"problem": prompt, "solution": f"<answer>{label}</answer>", "image_path": name}
        for name, label in faces("train", n)
    ]
    qa = [
        {
            "image_path": name,
            "true_label": label,
            "prompt": prompt,
            "candidate_labels": list(CANDIDATE_LABELS[dataset]),
        }
        for name, label in faces("test", n_test)
    ]
    paths = {
        "rlvr": atomic_write_json(out / "fer_demo_rlvr.json", rlvr),
        "qa": atomic_write_json(out / "fer_demo_qa.json", qa),
    }
    logger.info("FER demo data (%s labels): %d RLVR + %d QA faces in %s", dataset, n, n_test, out)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune demo-data fer``."""
    parser.add_argument("--n", type=int, default=32, help="RLVR training faces (default 32)")
    parser.add_argument("--n-test", type=int, default=None, help="QA test faces (default max(7, n/2))")
    add_out_dir(parser, "output folder (default: %(default)s)", default=Path("demo_data/fer"))
    parser.add_argument(
        "--dataset",
        choices=sorted(CANDIDATE_LABELS),
        default="rafdb",
        help="candidate list to use (default rafdb)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """Run ``unitune demo-data fer``."""
    from evaluators.errors import UserError

    if args.n < 0 or (args.n_test is not None and args.n_test < 0):
        raise UserError("--n and --n-test must not be negative.")
    for kind, path in write_fer_demo(args.out_dir, args.n, args.n_test, args.dataset, args.seed).items():
        logger.info("%s: %s", kind, path)
    return 0
