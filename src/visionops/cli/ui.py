"""``visionops ui``: Airflow (standalone) and the MLflow UI on 127.0.0.1, against the project's state."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from visionops.cli.pipeline import airflow_env, ensure_airflow_db
from visionops.core.constants import MLFLOW_ML_VIEW_QUERY
from visionops.core.storage import project_dir, visionops_home


def cmd_ui(args: argparse.Namespace) -> int:
    """Start ``airflow standalone`` and the MLflow UI on 127.0.0.1 against the project's state."""
    from visionops.core.tracking import tracking_uri

    env = airflow_env()
    ensure_airflow_db(env)
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    artifacts = visionops_home() / "mlartifacts"
    mlflow_cmd = [
        mlflow_bin,
        "server",
        "--backend-store-uri",
        tracking_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(args.mlflow_port),
        "--default-artifact-root",
        artifacts.as_uri(),
    ]
    env_af = {
        **env,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(args.airflow_port),
        # Tasks talk to the API server's execution API: it must follow the port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{args.airflow_port}/execution/",
        # The plugin's links to MLflow, and the MLflow runs' links to Airflow, as a browser on this
        # machine reaches them.
        "VISIONOPS_MLFLOW_UI_URL": f"http://127.0.0.1:{args.mlflow_port}",
        "VISIONOPS_AIRFLOW_UI_URL": f"http://127.0.0.1:{args.airflow_port}",
    }
    password_file = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    # MLflow 3.17 opens in whichever view the browser last chose (GenAI when it never chose): this
    # address opens the model-training one; "Model training" in its sidebar makes the browser keep it.
    print(
        f"MLflow UI : http://127.0.0.1:{args.mlflow_port}/#/experiments?{MLFLOW_ML_VIEW_QUERY} "
        "(sidebar: 'Model training')"
    )
    print(
        f"Airflow UI: http://127.0.0.1:{args.airflow_port} (user 'admin'; the password is in {password_file})"
    )
    mlflow_proc = subprocess.Popen(mlflow_cmd, env=env)
    try:
        return subprocess.call(
            [shutil.which("airflow", path=env["PATH"]) or "airflow", "standalone"],
            env=env_af,
            cwd=project_dir(),
        )
    finally:
        mlflow_proc.terminate()
        mlflow_proc.wait(timeout=30)


def add_commands(sub: Any) -> None:
    """``ui``."""
    ui = sub.add_parser("ui", help="start airflow standalone and the MLflow UI on 127.0.0.1")
    ui.add_argument("--airflow-port", type=int, default=8080)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
