"""Test-wide isolation: Airflow, MLflow and visionops state live in a temporary folder, never in the repo."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Airflow reads AIRFLOW_HOME when it is first imported, so it is set before any test module loads.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="visionops-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")  # on sys.path: the DAGs import from it
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("VISIONOPS_HOME", str(_SESSION_HOME / "visionops"))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_SESSION_HOME / 'visionops' / 'mlflow.db'}")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
