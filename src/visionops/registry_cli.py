"""``visionops registry promote|rollback`` and ``visionops predict``: the registry and serving by hand.

``promote`` runs the gate: it scores the version and the current champion on the version's own
test split (recorded on the version when it was registered) with the config of the run that
trained it, and promotes only when the gate passes, unless ``--force``; a forced promotion is
recorded on the version (who, when, and the gate's reasons it overrode).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from visionops.errors import InputError


def _version_tags(name: str, version: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient().get_model_version(name, version).tags or {})


def _gate_config(tags: dict[str, str]) -> Any:
    """The gate config of the run that trained the version (the defaults when it cannot be found)."""
    from visionops.config import GateConfig, build_config
    from visionops.storage import RunStore

    run_key = tags.get("visionops.run_key")
    if run_key:
        path = Path(RunStore(run_key).stage_path("config")) / "config.json"
        if path.is_file():
            return build_config(json.loads(path.read_text()), source=str(path)).gate
    return GateConfig()


def gate_for_version(name: str, version: str) -> tuple[Any, str | None]:
    """The gate's decision for ``version`` against the champion now, on the version's test split."""
    from visionops import registry
    from visionops.data.preprocess import load_labels
    from visionops.evaluation import (champion_predictions, classification_metrics, clean_metrics,
                                      load_test_clean, load_test_set)
    from visionops.gate import PairedPredictions, decide
    from visionops.storage import StageOutput

    tags = _version_tags(name, version)
    if "visionops.test_data_uri" not in tags:
        raise InputError(f"{name} v{version} has no recorded test split (tag visionops.test_data_uri); "
                         "it was not registered by this pipeline: use --force to promote it anyway")
    test_data = StageOutput(tags["visionops.test_data_uri"], tags.get("visionops.test_data_fingerprint", ""), {})
    labels, raw, y_true = load_test_set(test_data)
    clean = load_test_clean(test_data.local_path(), len(y_true))
    cand_pred, _ = champion_predictions(name, version, raw)
    metrics = {**classification_metrics(y_true, cand_pred, labels), **clean_metrics(y_true, cand_pred, labels, clean)}
    current = registry.get_alias(name, registry.CHAMPION)
    champion, paired = None, None
    if current is not None and str(current.version) != str(version):
        champ_pred, champ_labels = champion_predictions(name, str(current.version), raw)
        cm = classification_metrics(y_true, champ_pred, sorted(set(labels) | set(champ_labels)))
        champion = {"version": str(current.version), "accuracy": cm["accuracy"], "macro_f1": cm["macro_f1"],
                    **clean_metrics(y_true, champ_pred, sorted(set(labels) | set(champ_labels)), clean)}
        paired = PairedPredictions(y_true, cand_pred, champ_pred, load_labels(test_data.local_path()), champ_labels,
                                   clean.tolist())
    decision = decide(metrics, champion, _gate_config(tags), paired)
    return decision, (champion or {}).get("version")


def smoke_for_version(name: str, version: str, n_images: int = 8) -> Any:
    """The post-promotion smoke test for a version: its first test images, labelled as in this process."""
    def check() -> None:
        from visionops.evaluation import champion_predictions, load_test_set
        from visionops.serving import smoke_test
        from visionops.storage import StageOutput

        tags = _version_tags(name, version)
        if "visionops.test_data_uri" not in tags:
            return  # no held-out images recorded (a version registered outside the pipeline)
        _, raw, _ = load_test_set(StageOutput(tags["visionops.test_data_uri"],
                                              tags.get("visionops.test_data_fingerprint", ""), {}))
        expected, _ = champion_predictions(name, version, raw[:n_images])
        smoke_test(f"models:/{name}@champion", raw[:n_images], expected)
    return check


def cmd_promote(args: argparse.Namespace) -> int:
    from visionops import tracking
    from visionops.champion import SmokeTestError, promote_safely

    tracking.configure()
    name, version = args.name, str(args.version)
    try:
        _version_tags(name, version)
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
        from visionops.promotion import recheck_version

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
