"""Build Uni-MuMER HMER training data (vanilla, tree, can, error_find, error_fix) as sharegpt JSON.

INPUT is a sharegpt JSON list or JSONL (``from``/``value`` or ``role``/``content``), flat records
(``image``/``gt``/``pred``, e.g. upstream's ``*_pred.json``), or a CROHME ``caption.txt`` (or its folder).
OUTPUT is a JSON list of ``{"messages": [human, gpt], "images": [path]}``. Each image is looked up (relative
paths: in --image-root, default INPUT's folder, then the working directory) and written the way LLaMA-Factory
finds it from --media-dir (default --dataset-dir, as in LLaMA-Factory): relative to that folder when the
image lies inside it, else absolute (--absolute-images: always absolute).
Rejected records (tree parse error, missing image, …) are listed with a reason in
``OUTPUT-stem.rejected.jsonl``; ``--strict`` fails instead. ``--register NAME`` adds the output to
``dataset_info.json`` (upstream names: crohme_train, crohme_train_tree, crohme_train_can, …).

Error-Driven Learning: ``--task error_find|error_fix --predictions PRED.jsonl`` pairs each prediction
``{"id", "pred", "gt"?, "sample_index"?}`` (our inference output) with the INPUT record whose ``img_id``
/``id`` or image file stem equals ``id``; correct and duplicate predictions are dropped.
"""

from __future__ import annotations

import argparse

from .build import build_file
from .prompts import TASKS

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune data hmer``."""
    parser.add_argument(
        "input", metavar="INPUT", help="sharegpt JSON/JSONL, flat JSON/JSONL, caption.txt or its folder"
    )
    parser.add_argument("output", metavar="OUTPUT", help="output sharegpt JSON list")
    parser.add_argument("--task", required=True, choices=TASKS, help="which target to build")
    parser.add_argument(
        "--predictions", metavar="PRED.jsonl", help="EDL only: sampled predictions to pair with INPUT"
    )
    parser.add_argument(
        "--image-dir", help="image folder of a caption.txt (default: img/ or images/ beside it)"
    )
    parser.add_argument(
        "--image-root", help="folder relative image paths are checked against (default: INPUT's folder)"
    )
    parser.add_argument(
        "--no-check-images", action="store_true", help="do not reject records whose image is missing"
    )
    parser.add_argument("--absolute-images", action="store_true", help="write resolved absolute image paths")
    parser.add_argument(
        "--media-dir", help="the media_dir of your recipe, if you set one (default: DATASET_DIR)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="fail on the first rejected record, write nothing"
    )
    parser.add_argument("--register", metavar="NAME", help="add NAME to DATASET_DIR/dataset_info.json")
    parser.add_argument(
        "--force", action="store_true", help="with --register: replace a different entry NAME"
    )
    parser.add_argument(
        "--dataset-dir", default="dataset_info", help="folder of dataset_info.json (default: %(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--workers",
        type=int,
        help="tree / can: processes computing targets, this one included (default: one per available CPU); "
        "outputs are the same for any number",
    )


def run(args: argparse.Namespace) -> int:
    """Run the build; exit status 0, or 1 when every record was rejected."""
    stats = build_file(
        args.input,
        args.output,
        args.task,
        predictions_path=args.predictions,
        image_dir=args.image_dir,
        image_root=args.image_root,
        check_images=not args.no_check_images,
        absolute_images=args.absolute_images,
        strict=args.strict,
        register=args.register,
        dataset_dir=args.dataset_dir,
        progress=not args.no_progress,
        force=args.force,
        media_dir=args.media_dir,
        workers=args.workers,
    )
    return 1 if stats.written == 0 and stats.rejected else 0
