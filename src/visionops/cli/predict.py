"""``visionops predict``: label a folder of images with a registered model, to CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from visionops.core.errors import InputError


def cmd_predict(args: argparse.Namespace) -> int:
    from visionops.core import tracking
    from visionops.serving.batch import resolve_model, score_folder

    tracking.configure()
    try:
        resolved = resolve_model(args.model)
        result = score_folder(
            resolved,
            str(Path(args.input).resolve()),
            str(Path(args.output).resolve()),
            overwrite=args.overwrite,
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result.n_images} images scored with {resolved.name} v{resolved.version} -> {result.output}"
        + (
            f" ({result.n_unknown} unknown, {result.n_not_scored} without a usable face or unreadable:"
            " see status, error)"
            if result.n_unknown or result.n_not_scored
            else ""
        )
    )
    return 0


def add_commands(sub: Any) -> None:
    """``predict``."""
    predict = sub.add_parser(
        "predict",
        help="label a folder of images (whole photos for face models) "
        "with a registered model, to CSV",
    )
    predict.add_argument(
        "--model", required=True, help="NAME (alias champion), NAME@ALIAS or NAME/VERSION"
    )
    predict.add_argument("--input", required=True, help="folder of images (searched recursively)")
    predict.add_argument(
        "--output",
        required=True,
        help="CSV file: path,label,probability,box,status,error,model_version "
        "(status ok | unknown | rejected: no single face | invalid: not an image)",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output (refused otherwise); the file is replaced whole",
    )
    predict.set_defaults(func=cmd_predict)
