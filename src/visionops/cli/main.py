"""visionops: run the training pipeline, manage the model registry, label images, start the UIs.

Sub-command groups: ``pipeline run``, ``registry show|promote|rollback``, ``predict``, ``serve``,
``data add|watch``, ``ui``, ``stack up|down|status``.
"""

from __future__ import annotations

import argparse

from visionops.cli import data, pipeline, predict, registry, serve, stack, ui
from visionops.core.interpreter import tune_gc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", required=True)
    for group in (pipeline, registry, predict, serve, data, ui, stack):
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_gc()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
