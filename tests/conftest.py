"""Test-wide isolation: Airflow, MLflow and visionops state live in a temporary folder, never in the repo."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
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


@pytest.fixture()
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A test's own VISIONOPS_HOME and default data root, so nothing lands in the repository."""
    home = tmp_path / "home"
    monkeypatch.setenv("VISIONOPS_HOME", str(home))
    monkeypatch.delenv("VISIONOPS_DATA_ROOT", raising=False)
    return home


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL (127.0.0.1:5432), dropped afterwards.

    Skipped when PostgreSQL does not answer, unless VISIONOPS_REQUIRE_POSTGRES=1 (CI), then failed.
    """
    try:
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no PostgreSQL here"
        if os.environ.get("VISIONOPS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"VISIONOPS_REQUIRE_POSTGRES=1 but PostgreSQL at 127.0.0.1:5432 does not answer: {exc}")
        pytest.skip(f"no PostgreSQL answers at 127.0.0.1:5432 ({exc})")
    admin.autocommit = True
    name = f"visionops_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
