"""Render synthetic math formulas to images, in Uni-MuMER's vanilla sharegpt format (demo data).

``unitune demo-data hmer --n 48 --out-dir DIR`` draws random formulas (fractions, scripts, roots, sums,
integrals, limits, Greek letters, relations) with matplotlib's mathtext in several font sets, adds light
noise and a slight rotation, and writes:

- ``DIR/images/hmer_<split>_<k>.png``
- ``DIR/hmer_demo_train.json`` (``--n`` records) and ``DIR/hmer_demo_test.json`` (``--n-test`` records): JSON
  lists of ``{"images": ["images/...png"], "messages": [{"from": "human", "value": "<image>" + vanilla prompt},
  {"from": "gpt", "value": "<space-tokenised LaTeX>"}]}``; image paths are relative to ``DIR``.

Labels are space-tokenised like upstream's (``\\frac { a ^ { 2 } + 1 } { b }``), every script and fraction
argument is braced, so the Tree-CoT builder parses all of them. The same ``--seed`` gives the same files.
No network, no LaTeX installation: matplotlib's bundled fonts only.
"""

from __future__ import annotations

import argparse
import io
import logging
import random
from pathlib import Path
from typing import Any

from evaluators.cli import add_out_dir
from evaluators.io_utils import atomic_write_json
from llamafactory_ext.hmer.prompts import human_prompt

__all__ = ["FONTSETS", "add_arguments", "random_formula", "render_formula", "run", "write_hmer_demo"]

logger = logging.getLogger(__name__)

#: matplotlib mathtext font sets used in turn ("several fonts").
FONTSETS = ("cm", "stix", "stixsans", "dejavusans", "dejavuserif")

_LETTERS = list("abcdxyzkmnpt")
_DIGITS = list("0123456789")
_GREEK = ["\\alpha", "\\beta", "\\gamma", "\\theta", "\\pi", "\\lambda", "\\mu", "\\sigma"]
_OPS = ["+", "-", "\\times", "\\div", "\\pm"]
_RELATIONS = ["=", "\\leq", "\\geq", "\\neq", "<", ">"]
_FUNCS = ["\\sin", "\\cos", "\\tan", "\\log"]


def _atom(rng: random.Random) -> list[str]:
    pick = rng.random()
    if pick < 0.45:
        return [rng.choice(_LETTERS)]
    if pick < 0.8:
        return list(str(rng.randint(0, 99)))  # multi-digit numbers are one token per digit, as in CROHME
    return [rng.choice(_GREEK)]


def _term(rng: random.Random, depth: int) -> list[str]:
    kind = rng.random() if depth > 0 else 0.0
    if kind < 0.45:
        return _atom(rng)
    sub = depth - 1
    if kind < 0.6:
        return [*_atom(rng), "^", "{", *_expr(rng, sub, 1), "}"]
    if kind < 0.7:
        return [rng.choice(_LETTERS), "_", "{", *_expr(rng, sub, 1), "}"]
    if kind < 0.82:
        return ["\\frac", "{", *_expr(rng, sub, 2), "}", "{", *_expr(rng, sub, 2), "}"]
    if kind < 0.9:
        return ["\\sqrt", "{", *_expr(rng, sub, 2), "}"]
    if kind < 0.95:
        return [rng.choice(_FUNCS), *_atom(rng)]
    return ["(", *_expr(rng, sub, 2), ")"]


def _expr(rng: random.Random, depth: int, max_terms: int) -> list[str]:
    tokens = _term(rng, depth)
    for _ in range(rng.randint(0, max_terms - 1)):
        tokens += [rng.choice(_OPS), *_term(rng, depth)]
    return tokens


def random_formula(rng: random.Random) -> str:
    """One random space-tokenised formula (every script/fraction argument braced).

    Example:

    >>> random_formula(random.Random(3)).count("{") == random_formula(random.Random(3)).count("}")
    True
    """
    shape = rng.random()
    if shape < 0.12:
        index = rng.choice("ijk")
        body = ["\\sum", "_", "{", index, "=", "1", "}", "^", "{", rng.choice("nNm"), "}", *_expr(rng, 1, 2)]
    elif shape < 0.22:
        var = rng.choice("xt")
        body = ["\\int", "_", "{", "0", "}", "^", "{", *_atom(rng), "}", *_expr(rng, 1, 2), "d", var]
    elif shape < 0.3:
        body = ["\\lim", "_", "{", "x", "\\rightarrow", rng.choice(["0", "\\infty"]), "}", *_expr(rng, 1, 2)]
    else:
        body = _expr(rng, 2, 3)
        if rng.random() < 0.5:
            body += [rng.choice(_RELATIONS), *_expr(rng, 1, 2)]
    return " ".join(body)


def render_formula(latex: str, fontset: str, rng: random.Random, noise: float = 12.0) -> Any:
    """Render ``latex`` with mathtext in ``fontset``; return a grayscale PIL image with light noise.

    Example:

    >>> image = render_formula("x ^ { 2 } + 1", "cm", random.Random(0))
    >>> image.mode, image.size[0] > image.size[1] > 10
    ('L', True)
    """
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import mathtext, rc_context
    from matplotlib.font_manager import FontProperties
    from PIL import Image, ImageFilter, ImageOps

    # mathtext only attaches a script written right after its nucleus: "x ^ { 2 }" -> "x^{ 2 }".
    source = " ".join(latex.split()).replace(" ^ ", "^").replace(" _ ", "_")
    buffer = io.BytesIO()
    with rc_context({"mathtext.fontset": fontset}):
        mathtext.math_to_image(
            f"${source}$", buffer, prop=FontProperties(size=rng.randint(18, 26)), dpi=100, format="png"
        )
    buffer.seek(0)
    with Image.open(buffer) as rendered:
        rgba = rendered.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    image = ImageOps.expand(canvas.convert("L"), border=rng.randint(6, 14), fill=255)
    image = image.rotate(
        rng.uniform(-3.0, 3.0), resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255
    )
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.2, 0.7)))
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + np.random.default_rng(rng.randrange(2**32)).normal(0.0, noise, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="L")


def _record(image: str, latex: str) -> dict[str, Any]:
    return {
        "images": [image],
        "messages": [{"from": "human", "value": human_prompt("vanilla")}, {"from": "gpt", "value": latex}],
    }


def write_hmer_demo(
    out_dir: str | Path, n: int = 48, n_test: int | None = None, seed: int = 0
) -> dict[str, Path]:
    """Render ``n`` training and ``n_test`` test formulas into ``out_dir``; return the two JSON paths.

    Formulas are distinct across both splits. ``n_test`` defaults to ``max(4, n // 4)``.
    """
    if n < 1:
        raise ValueError("--n must be at least 1")
    n_test = max(4, n // 4) if n_test is None else n_test
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    seen: set[str] = set()
    paths: dict[str, Path] = {}
    counter = 0
    for split, count in (("train", n), ("test", n_test)):
        records = []
        for k in range(count):
            latex = random_formula(rng)
            for _ in range(50):
                if latex not in seen and len(latex.split()) <= 40:
                    break
                latex = random_formula(rng)
            seen.add(latex)
            name = f"images/hmer_{split}_{k:04d}.png"
            render_formula(latex, FONTSETS[counter % len(FONTSETS)], rng).save(out / name)
            counter += 1
            records.append(_record(name, latex))
        paths[split] = atomic_write_json(out / f"hmer_demo_{split}.json", records)
    logger.info("HMER demo data: %d train + %d test formulas in %s", n, n_test, out)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune demo-data hmer``."""
    parser.add_argument("--n", type=int, default=48, help="training formulas (default 48)")
    parser.add_argument("--n-test", type=int, default=None, help="test formulas (default max(4, n/4))")
    add_out_dir(parser, "output folder (default: %(default)s)", default=Path("demo_data/hmer"))
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """Run ``unitune demo-data hmer``."""
    from evaluators.errors import UserError

    if args.n < 1 or (args.n_test is not None and args.n_test < 0):
        raise UserError("--n must be at least 1 and --n-test at least 0.")
    paths = write_hmer_demo(args.out_dir, args.n, args.n_test, args.seed)
    for split, path in paths.items():
        logger.info("%s: %s", split, path)
    return 0
