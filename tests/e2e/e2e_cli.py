"""Running the pipeline the way a user does (the ``visionops`` CLI, i.e. ``airflow dags test``) in a test home.

Imported by the e2e test modules (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def pipeline_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # mlflow.set_registry_uri() exports MLFLOW_REGISTRY_URI, so earlier in-process tests leave one
    # behind; the pipeline must use the registry of this test's store.
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(
        {
            "VISIONOPS_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "AIRFLOW_HOME": str(home / "airflow"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def pipeline_command(home: Path, *args: str) -> tuple[list[str], Path]:
    """``visionops pipeline run ARGS`` and the file its summary will be written to."""
    summary = home / f"summary-{len(list(home.glob('summary-*.json')))}.json"
    return [
        str(Path(sys.executable).parent / "visionops"),
        "pipeline",
        "run",
        *args,
        "--summary-json",
        str(summary),
    ], summary


def run_cli(
    home: Path, *args: str, timeout: int = 600
) -> tuple[subprocess.CompletedProcess, dict | None]:
    cmd, summary = pipeline_command(home, *args)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=pipeline_env(home), timeout=timeout
    )
    return proc, (json.loads(summary.read_text()) if summary.exists() else None)
