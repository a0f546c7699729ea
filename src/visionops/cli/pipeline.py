"""``visionops pipeline run``: the ``train_pipeline`` DAG through real Airflow, then its summary.

The DAG runs in one process (``airflow dags test``) with the run's conf, or, with ``--stack``, is
triggered through the REST API of the running multi-service stack (``make stack``), where the
scheduler hands its tasks to the Celery workers. Either way the outcome is read back from MLflow
(the parent run carries the request id the CLI set) and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from visionops.core.config import ConfigError, parse_override
from visionops.core.storage import project_dir, visionops_home

DAG_ID = "train_pipeline"


def airflow_env() -> dict[str, str]:
    """Environment for the Airflow CLI: project DAGs and plugins, state under ``.visionops/airflow``."""
    env = dict(os.environ)
    home = visionops_home()
    env.setdefault("AIRFLOW_HOME", str(home / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(project_dir() / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(project_dir() / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("VISIONOPS_HOME", str(home))
    from visionops.core.tracking import tracking_uri

    env.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _airflow(
    *args: str, env: dict[str, str], log_file: Path | None = None, verbose: bool = False
) -> int:
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    if log_file is None or verbose:
        return subprocess.call(cmd, env=env, cwd=project_dir())
    with log_file.open("w") as fh:
        return subprocess.call(cmd, env=env, cwd=project_dir(), stdout=fh, stderr=subprocess.STDOUT)


MIGRATED_STAMP = "visionops-db-migrated.json"


def _db_identity(env: dict[str, str]) -> dict[str, Any] | None:
    """What the default SQLite metadata database was migrated as, or None where it is not in use.

    ``airflow db migrate`` is a no-op on a database at head, but starting Airflow to find that out
    costs about 5 s on every ``pipeline run``. The database is migrated again whenever the Airflow
    version, the database file (its inode), airflow.cfg or a connection set in the environment differs
    from what the stamp recorded; any other metadata database is always migrated.
    """
    from importlib.metadata import version

    home = Path(env["AIRFLOW_HOME"])
    db, cfg = home / "airflow.db", home / "airflow.cfg"
    if not db.is_file() or not cfg.is_file():
        return None
    return {
        "airflow": version("apache-airflow"),
        "db_inode": db.stat().st_ino,
        "cfg_mtime_ns": cfg.stat().st_mtime_ns,
        "env_conn": env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""),
    }


def ensure_airflow_db(env: dict[str, str]) -> None:
    """Create or upgrade Airflow's metadata database (skipped when the stamp says it is at head)."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    stamp = home / MIGRATED_STAMP
    known = _db_identity(env)
    if known is not None and stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == known:
                return
        except ValueError:  # a torn stamp: migrate again
            pass
    log_file = home / "db-migrate.log"
    if _airflow("db", "migrate", env=env, log_file=log_file) != 0:
        raise SystemExit(f"airflow db migrate failed; see {log_file}")
    identity = _db_identity(env)
    if identity is not None and not identity["env_conn"]:
        stamp.write_text(json.dumps(identity))


def _find_parent_run(request_id: str) -> str | None:
    from visionops.core import tracking
    from visionops.core.constants import TAG_PREFIX

    tracking.configure()
    runs = tracking.find_runs({f"{TAG_PREFIX}request_id": request_id})
    return runs[0].info.run_id if runs else None


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from visionops.core.run import resolve_config

    try:
        overrides = dict(parse_override(item) for item in args.set)
        if overrides.get("data.path") and "://" not in str(overrides["data.path"]):
            overrides["data.path"] = str(Path(overrides["data.path"]).expanduser().resolve())
        config_file = str(Path(args.config).expanduser().resolve())
        # Fail fast, before Airflow starts: the same validation the start task does.
        cfg, _ = resolve_config({"config": config_file, "overrides": overrides})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    request_id = uuid.uuid4().hex
    conf = {
        "config": config_file,
        "overrides": overrides,
        "request_id": request_id,
        "force": bool(args.force),
    }
    if args.stack is not None:
        return _run_on_stack(Path(args.stack), conf, args)
    env = airflow_env()
    ensure_airflow_db(env)
    logs = visionops_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"pipeline-{request_id}.log"
    print(f"running DAG {DAG_ID} through Airflow (log: {log_file}) ...", flush=True)
    if cfg.gate.require_approval:
        print(
            "gate.require_approval is set: if the gate passes, the run waits for a person to answer the "
            "`approve` task (Airflow UI: `make ui`, Browse -> Required Actions; or the HITL REST API). "
            "No answer within 23 h rejects.",
            flush=True,
        )
    dags_test = ["dags", "test", DAG_ID, "--conf", json.dumps(conf)]
    if args.verbose:
        code = _airflow(*dags_test, env=env, verbose=True)
    else:  # each task's start and end (and the epochs) as the log gets them
        from visionops.cli.follow import run_following

        airflow = str(Path(sys.executable).parent / "airflow")
        code = run_following([airflow, *dags_test], env, project_dir(), log_file)
    parent = _find_parent_run(request_id)
    if parent is None:
        if not args.verbose:
            print("".join(log_file.read_text().splitlines(keepends=True)[-60:]), file=sys.stderr)
        print(f"error: the run did not start (see {log_file})", file=sys.stderr)
        return code or 1
    _print_summary(parent, args)
    if code != 0 and not args.verbose:
        print(f"the DAG run failed; full Airflow log: {log_file}", file=sys.stderr)
    return 0 if code == 0 else 1


def _print_summary(parent_run_id: str, args: argparse.Namespace, uis: str | None = None) -> None:
    from visionops.core.tracking import tracking_uri
    from visionops.pipeline.summary import LOCAL_UIS, build_summary, format_summary

    summary = build_summary(parent_run_id)
    print(format_summary(summary, tracking_uri(), uis or LOCAL_UIS))
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.to_dict(), indent=2))


def _run_on_stack(home: Path, conf: dict[str, Any], args: argparse.Namespace) -> int:
    """Trigger the run through the stack's REST API (as its admin), follow it, print its summary."""
    from visionops.cli.airflow_api import AirflowApi, AirflowApiError
    from visionops.cli.stack_env import STATE_FILE, read_env_file

    # The stack's record (written by `visionops stack up`), read as data: importing the stack's
    # process helpers here would tie this module to the ui module that imports it.
    record = home.resolve() / STATE_FILE
    state = json.loads(record.read_text()) if record.is_file() else {}
    info = state.get("info", {})
    if "urls" not in info or not state.get("services"):
        print(
            f"error: no stack runs in {home.resolve()}: start one with `make stack`",
            file=sys.stderr,
        )
        return 2
    secrets = read_env_file(Path(info["env_file"]))
    # The stack's MLflow server and its service account: where the run's summary is read
    # (only the stack's: a registry URI left in this shell by another store must not win).
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in info["env"].items() if k.startswith("MLFLOW_")})
    urls = info["urls"]
    try:
        api = AirflowApi(
            urls["airflow"],
            secrets.get("AIRFLOW_ADMIN_USERNAME") or "admin",
            secrets["AIRFLOW_ADMIN_PASSWORD"],
        )
    except (OSError, AirflowApiError) as exc:
        print(
            f"error: the stack's Airflow at {urls['airflow']} refused or did not answer ({exc})",
            file=sys.stderr,
        )
        return 2
    api.unpause(DAG_ID)
    run_id = api.trigger(DAG_ID, conf)
    quoted = urllib.parse.quote(run_id, safe="")
    print(
        f"triggered {DAG_ID} run {run_id} on the stack: "
        f"{urls['airflow']}/dags/{DAG_ID}/runs/{quoted}",
        flush=True,
    )
    from visionops.cli.follow import TaskStates

    states = TaskStates()
    run = api.wait(
        DAG_ID,
        run_id,
        timeout_s=args.timeout,
        on_poll=lambda: states.show(api.tasks(DAG_ID, run_id)),
    )
    parent = _find_parent_run(conf["request_id"])
    if parent is None:
        states = {t["task_id"]: t["state"] for t in api.tasks(DAG_ID, run_id)}
        print(
            f"error: the run did not start its MLflow run; task states: {states}", file=sys.stderr
        )
        return 1
    _print_summary(
        parent, args, f"Airflow {urls['airflow']} and MLflow {urls['mlflow']} (the stack)"
    )
    if run["state"] != "success":
        print(
            f"the DAG run {run_id} ended {run['state']}; task logs in the Airflow UI",
            file=sys.stderr,
        )
        return 1
    return 0


def add_commands(sub: Any) -> None:
    """``pipeline run``."""
    pipe = sub.add_parser("pipeline", help="run the training pipeline").add_subparsers(
        dest="cmd", required=True
    )
    run = pipe.add_parser(
        "run", help="run the train_pipeline DAG through Airflow and print a summary"
    )
    run.add_argument(
        "--config", default=str(project_dir() / "conf" / "digits.yaml"), help="config YAML"
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.max_epochs=3 (repeatable)",
    )
    run.add_argument(
        "--verbose", action="store_true", help="stream Airflow's output instead of logging it"
    )
    run.add_argument("--summary-json", help="also write the summary as JSON to this file")
    run.add_argument(
        "--force",
        action="store_true",
        help="train even when data, config and code are those of the champion "
        "(otherwise such a run stops after ingest: nothing changed)",
    )
    run.add_argument(
        "--stack",
        nargs="?",
        const=str(visionops_home() / "stack"),
        default=None,
        metavar="HOME",
        help="trigger the run on the running multi-service stack (make stack; its home, default "
        "%(const)s) through Airflow's REST API: the tasks run on its Celery workers",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=6 * 3600.0,
        help="with --stack: seconds to wait for the run to end (%(default)s)",
    )
    run.set_defaults(func=cmd_pipeline_run)
