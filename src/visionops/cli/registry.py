"""``visionops registry show|promote|rollback``: the model registry by hand.

``promote`` runs the gate: it scores the version and the current champion on the version's own
test split (recorded on the version when it was registered) with the config of the run that
trained it, and promotes only when the gate passes, unless ``--force``; a forced promotion is
recorded on the version (who, when, and the gate's reasons it overrode). Domain code is imported
by each command, so that ``visionops --help`` stays quick.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from visionops.core.constants import TAG_PREFIX as T
from visionops.core.errors import InputError


def cmd_registry_show(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from visionops.core import tracking
    from visionops.release import registry

    tracking.configure()
    try:
        rows = registry.list_versions(args.name)
    except MlflowException as exc:
        print(
            f"error: registered model {args.name!r} not found ({exc.error_code})", file=sys.stderr
        )
        return 1
    print(f"{'version':>7}  {'aliases':<28} {'accuracy':>8} {'macro_f1':>8}  {'gate':<9} run")
    for r in rows:
        print(
            f"{r.version:>7}  {','.join(r.aliases) or '-':<28} {r.accuracy or '-':>8} {r.macro_f1 or '-':>8}"
            f"  {r.gate or '-':<9} {r.run_key}"
        )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from visionops.core import tracking
    from visionops.release.champion import SmokeTestError, promote_safely
    from visionops.release.version_gate import (
        gate_for_version,
        recheck_version,
        smoke_for_version,
        version_tags,
    )

    tracking.configure()
    name, version = args.name, str(args.version)
    try:
        version_tags(name, version)
        decision, against = gate_for_version(name, version) if not args.force else (None, None)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a missing model/version is the user's input
        print(f"error: {name} v{version}: {exc}", file=sys.stderr)
        return 2
    if decision is not None:
        print(decision.summary())
        if not decision.passed:
            print(
                f"not promoted: {name} v{version} fails the gate (use --force to override; it is recorded)",
                file=sys.stderr,
            )
            return 1
    tags = {
        f"{T}promoted_by": f"cli:{getpass.getuser()}",
        f"{T}promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.skip_smoke_test:
        tags[f"{T}smoke_test"] = "skipped (--skip-smoke-test)"
    if args.force:
        tags[f"{T}forced_promotion"] = "true"
        tags[f"{T}force_reason"] = args.reason or "forced from the command line, gate not run"
    try:
        result = promote_safely(
            name,
            version,
            evaluated_against=against,
            recheck=recheck_version(name, version) if not args.force else _no_recheck,
            run_key=f"cli:{getpass.getuser()}",
            tags=tags,
            smoke_test=None if args.skip_smoke_test else smoke_for_version(name, version),
        )
    except SmokeTestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not result.promoted:
        print(
            f"not promoted: the champion changed to v{result.rechecked_against} meanwhile: "
            + "; ".join(result.reasons),
            file=sys.stderr,
        )
        return 1
    print(
        f"{name}@champion -> version {version}"
        + (f" (replaced v{result.replaced})" if result.replaced else "")
        + (" [FORCED]" if args.force else "")
    )
    return 0


def _no_recheck(current: str) -> Any:
    from visionops.core.contracts import GateDecision

    return GateDecision(
        passed=True, reasons=[f"forced: gate not run against v{current}"], metrics={}
    )


def cmd_rollback(args: argparse.Namespace) -> int:
    from visionops.core import tracking
    from visionops.release.champion import SmokeTestError, rollback

    tracking.configure()
    try:
        before, after = rollback(
            args.name,
            args.to,
            reason=args.reason or (None if args.force else f"cli:{getpass.getuser()}"),
            force=args.force,
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SmokeTestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001
        print(f"error: {args.name}: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.name}@champion: version {before} -> {after} (rolled back; v{before} is previous_champion)"
        + (" [FORCED]" if args.force else "")
    )
    return 0


def add_commands(sub: Any) -> None:
    """``registry show|promote|rollback``."""
    reg = sub.add_parser("registry", help="inspect the model registry, promote, roll back")
    commands = reg.add_subparsers(dest="cmd", required=True)
    show = commands.add_parser("show", help="list versions, aliases and key metrics")
    show.add_argument("name")
    show.set_defaults(func=cmd_registry_show)
    promote = commands.add_parser(
        "promote", help="move champion to a version (gate checks unless --force)"
    )
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument(
        "--force", action="store_true", help="skip the gate; recorded on the version"
    )
    promote.add_argument("--reason", help="why (recorded with --force)")
    promote.add_argument(
        "--skip-smoke-test",
        action="store_true",
        help="do not load the new champion in a fresh process afterwards (recorded)",
    )
    promote.set_defaults(func=cmd_promote)
    back = commands.add_parser(
        "rollback", help="move champion back to previous_champion (or --to VERSION)"
    )
    back.add_argument("name")
    back.add_argument(
        "--to",
        help="version to make champion instead of previous_champion: a former champion or a "
        "version that passed its gate",
    )
    back.add_argument(
        "--force",
        action="store_true",
        help="roll back to a version that was never champion and did not pass its gate "
        "(needs --reason; recorded on the version)",
    )
    back.add_argument(
        "--reason", help="recorded on the registered model (and the version if forced)"
    )
    back.set_defaults(func=cmd_rollback)
