"""``visionops data add``: new photos into a configured source (checked first); ``data watch``: what
the watcher would see now."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from visionops.core.storage import project_dir


def _config(path: str) -> Any:
    from visionops.core.run import resolve_config

    return resolve_config({"config": str(Path(path).expanduser().resolve())})[0]


def cmd_data_add(args: argparse.Namespace) -> int:
    from visionops.core.errors import InputError
    from visionops.data.add import add_photos

    try:
        added = add_photos(
            _config(args.config), [Path(p) for p in args.paths], args.label, args.dry_run
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    verb = "would add" if args.dry_run else "added"
    for photo, label, target in added.files:
        print(f"{verb} {photo} as {label!r} -> {target}")
    print(
        f"{verb} {len(added.files)} photo(s) to {added.source}. The next watch_sources run "
        "notices them and starts train_pipeline through the source's asset."
    )
    return 0


def cmd_data_watch(args: argparse.Namespace) -> int:
    from visionops.data.watch import watch_source

    config = str(Path(args.config).expanduser().resolve())
    change = watch_source(config, _config(config).data)
    print(change.message())
    return 0


def add_commands(sub: Any) -> None:
    """``data add`` and ``data watch``."""
    data = sub.add_parser("data", help="add photos to a data source, watch it").add_subparsers(
        dest="cmd", required=True
    )
    add = data.add_parser(
        "add",
        help="copy photos into a config's source, each checked first (none lands if one is bad)",
    )
    add.add_argument("paths", nargs="+", help="photos, or folders (class sub-folders: their names)")
    add.add_argument(
        "--config", default=str(project_dir() / "conf" / "digits.yaml"), help="config YAML"
    )
    add.add_argument("--label", help="the class of the photos given (else: sub-folder names)")
    add.add_argument("--dry-run", action="store_true", help="check and list, copy nothing")
    add.set_defaults(func=cmd_data_add)
    watch = data.add_parser(
        "watch", help="compare a config's source with its last snapshot (what watch_sources does)"
    )
    watch.add_argument(
        "--config", default=str(project_dir() / "conf" / "digits.yaml"), help="config YAML"
    )
    watch.set_defaults(func=cmd_data_watch)
