"""Command line: ``visionops pipeline run``, ``visionops registry show|promote|rollback``, ``predict``, ``ui``.

``pipeline run`` runs the ``train_pipeline`` DAG through real Airflow (``airflow dags test``, in
one process, with the run's conf), then reads the outcome back from MLflow and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from visionops.config import ConfigError, parse_override
from visionops.storage import project_dir, visionops_home

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
    from visionops.tracking import tracking_uri

    env.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _airflow(*args: str, env: dict[str, str], log_file: Path | None = None, verbose: bool = False) -> int:
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    if log_file is None or verbose:
        return subprocess.call(cmd, env=env, cwd=project_dir())
    with log_file.open("w") as fh:
        return subprocess.call(cmd, env=env, cwd=project_dir(), stdout=fh, stderr=subprocess.STDOUT)


def ensure_airflow_db(env: dict[str, str]) -> None:
    """Create or upgrade Airflow's metadata database (idempotent; quick when up to date)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    log_file = Path(env["AIRFLOW_HOME"]) / "db-migrate.log"
    if _airflow("db", "migrate", env=env, log_file=log_file) != 0:
        raise SystemExit(f"airflow db migrate failed; see {log_file}")


def _find_parent_run(request_id: str) -> str | None:
    import mlflow

    from visionops import tracking

    tracking.configure()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`{tracking.TAG_PREFIX}request_id` = '{request_id}'")
    return runs[0].info.run_id if runs else None


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from visionops.runs import resolve_config

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
    conf = {"config": config_file, "overrides": overrides, "request_id": request_id}
    env = airflow_env()
    ensure_airflow_db(env)
    logs = visionops_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"pipeline-{request_id}.log"
    print(f"running DAG {DAG_ID} through Airflow (log: {log_file}) ...", flush=True)
    if cfg.gate.require_approval:
        print("gate.require_approval is set: if the gate passes, the run waits for a person to answer the "
              "`approve` task (Airflow UI: `make ui`, Browse -> Required Actions; or the HITL REST API). "
              "No answer within 23 h rejects.", flush=True)
    code = _airflow("dags", "test", DAG_ID, "--conf", json.dumps(conf), env=env, log_file=log_file,
                    verbose=args.verbose)
    parent = _find_parent_run(request_id)
    if parent is None:
        if not args.verbose:
            print("".join(log_file.read_text().splitlines(keepends=True)[-60:]), file=sys.stderr)
        print(f"error: the run did not start (see {log_file})", file=sys.stderr)
        return code or 1
    from visionops.summary import build_summary, format_summary
    from visionops.tracking import tracking_uri

    summary = build_summary(parent)
    print(format_summary(summary, tracking_uri()))
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    if code != 0 and not args.verbose:
        print(f"the DAG run failed; full Airflow log: {log_file}", file=sys.stderr)
    return 0 if code == 0 else 1


def cmd_registry_show(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from visionops import registry, tracking

    tracking.configure()
    try:
        rows = registry.list_versions(args.name)
    except MlflowException as exc:
        print(f"error: registered model {args.name!r} not found ({exc.error_code})", file=sys.stderr)
        return 1
    print(f"{'version':>7}  {'aliases':<28} {'accuracy':>8} {'macro_f1':>8}  {'gate':<9} run")
    for r in rows:
        print(f"{r.version:>7}  {','.join(r.aliases) or '-':<28} {r.accuracy or '-':>8} {r.macro_f1 or '-':>8}"
              f"  {r.gate or '-':<9} {r.run_key}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start ``airflow standalone`` and the MLflow UI on 127.0.0.1 against the project's state."""
    from visionops.tracking import tracking_uri

    env = airflow_env()
    ensure_airflow_db(env)
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    artifacts = visionops_home() / "mlartifacts"
    mlflow_cmd = [mlflow_bin, "server", "--backend-store-uri", tracking_uri(), "--host", "127.0.0.1",
                  "--port", str(args.mlflow_port), "--default-artifact-root", artifacts.as_uri()]
    env_af = {**env, "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(args.airflow_port),
              # Tasks talk to the API server's execution API: it must follow the port.
              "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{args.airflow_port}/execution/",
              # The plugin's links to MLflow, as a browser on this machine reaches it.
              "VISIONOPS_MLFLOW_UI_URL": f"http://127.0.0.1:{args.mlflow_port}"}
    password_file = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    print(f"MLflow UI : http://127.0.0.1:{args.mlflow_port}")
    print(f"Airflow UI: http://127.0.0.1:{args.airflow_port} (user 'admin'; the password is in {password_file})")
    mlflow_proc = subprocess.Popen(mlflow_cmd, env=env)
    try:
        return subprocess.call([shutil.which("airflow", path=env["PATH"]) or "airflow", "standalone"], env=env_af,
                               cwd=project_dir())
    finally:
        mlflow_proc.terminate()
        mlflow_proc.wait(timeout=30)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", required=True)
    pipe = sub.add_parser("pipeline", help="run the training pipeline").add_subparsers(dest="cmd", required=True)
    run = pipe.add_parser("run", help="run the train_pipeline DAG through Airflow and print a summary")
    run.add_argument("--config", default=str(project_dir() / "conf" / "digits.yaml"), help="config YAML")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set train.max_epochs=3 (repeatable)")
    run.add_argument("--verbose", action="store_true", help="stream Airflow's output instead of logging it")
    run.add_argument("--summary-json", help="also write the summary as JSON to this file")
    run.set_defaults(func=cmd_pipeline_run)
    reg = sub.add_parser("registry", help="inspect the model registry, promote, roll back").add_subparsers(dest="cmd", required=True)
    show = reg.add_parser("show", help="list versions, aliases and key metrics")
    show.add_argument("name")
    show.set_defaults(func=cmd_registry_show)
    from visionops.registry_cli import add_commands

    add_commands(reg, sub)
    ui = sub.add_parser("ui", help="start airflow standalone and the MLflow UI on 127.0.0.1")
    ui.add_argument("--airflow-port", type=int, default=8080)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
