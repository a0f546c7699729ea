"""``visionops registry promote|rollback`` and ``visionops predict``: the registry and serving by hand.

``promote`` runs the gate: it scores the version and the current champion on the version's own
test split (recorded on the version when it was registered) with the config of the run that
trained it, and promotes only when the gate passes, unless ``--force``; a forced promotion is
recorded on the version (who, when, and the gate's reasons it overrode).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path
from typing import Any

from visionops.errors import InputError
from visionops.version_gate import gate_for_version, recheck_version, smoke_for_version, version_tags


def cmd_promote(args: argparse.Namespace) -> int:
    from visionops import tracking
    from visionops.champion import SmokeTestError, promote_safely

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
            print(f"not promoted: {name} v{version} fails the gate (use --force to override; it is recorded)",
                  file=sys.stderr)
            return 1
    tags = {"visionops.promoted_by": f"cli:{getpass.getuser()}",
            "visionops.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.skip_smoke_test:
        tags["visionops.smoke_test"] = "skipped (--skip-smoke-test)"
    if args.force:
        tags["visionops.forced_promotion"] = "true"
        tags["visionops.force_reason"] = args.reason or "forced from the command line, gate not run"
    try:

        result = promote_safely(name, version, evaluated_against=against,
                                recheck=recheck_version(name, version) if not args.force else _no_recheck,
                                run_key=f"cli:{getpass.getuser()}", tags=tags,
                                smoke_test=None if args.skip_smoke_test else smoke_for_version(name, version))
    except SmokeTestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not result.promoted:
        print(f"not promoted: the champion changed to v{result.rechecked_against} meanwhile: "
              + "; ".join(result.reasons), file=sys.stderr)
        return 1
    print(f"{name}@champion -> version {version}" + (f" (replaced v{result.replaced})" if result.replaced else "")
          + (" [FORCED]" if args.force else ""))
    return 0


def _no_recheck(current: str) -> Any:
    from visionops.gate import GateDecision

    return GateDecision(True, [f"forced: gate not run against v{current}"], {}, {})


def cmd_rollback(args: argparse.Namespace) -> int:
    from visionops import tracking
    from visionops.champion import rollback

    tracking.configure()
    try:
        before, after = rollback(args.name, args.to, reason=args.reason or f"cli:{getpass.getuser()}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001
        print(f"error: {args.name}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name}@champion: version {before} -> {after} (rolled back; v{before} is previous_champion)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from visionops import tracking
    from visionops.serving import resolve_model, score_folder

    tracking.configure()
    try:
        resolved = resolve_model(args.model)
        result = score_folder(resolved, str(Path(args.input).resolve()), str(Path(args.output).resolve()))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{result['n_images']} images scored with {resolved.name} v{resolved.version} -> {result['output']}"
          + (f" ({result['n_unknown']} unknown, {result['n_not_scored']} without a usable face or unreadable:"
             " see status, error)" if result.get("n_unknown") or result.get("n_not_scored") else ""))
    return 0


def add_commands(registry_sub: Any, top_sub: Any) -> None:
    """Attach ``registry promote``, ``registry rollback`` and ``predict`` to the CLI's parsers."""
    promote = registry_sub.add_parser("promote", help="move champion to a version (gate checks unless --force)")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="skip the gate; recorded on the version")
    promote.add_argument("--reason", help="why (recorded with --force)")
    promote.add_argument("--skip-smoke-test", action="store_true",
                         help="do not load the new champion in a fresh process afterwards (recorded)")
    promote.set_defaults(func=cmd_promote)
    back = registry_sub.add_parser("rollback", help="move champion back to previous_champion (or --to VERSION)")
    back.add_argument("name")
    back.add_argument("--to", help="version to make champion instead of previous_champion")
    back.add_argument("--reason", help="recorded on the registered model")
    back.set_defaults(func=cmd_rollback)
    predict = top_sub.add_parser("predict", help="label a folder of images (whole photos for face models) "
                                 "with a registered model, to CSV")
    predict.add_argument("--model", required=True, help="NAME (alias champion), NAME@ALIAS or NAME/VERSION")
    predict.add_argument("--input", required=True, help="folder of images (searched recursively)")
    predict.add_argument("--output", required=True, help="CSV file: path,label,probability,box,status,error,model_version "
                         "(status ok | unknown | rejected: no single face | invalid: not an image)")
    predict.set_defaults(func=cmd_predict)
