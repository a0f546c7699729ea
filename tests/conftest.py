"""Test-wide isolation: Airflow, MLflow and visionops state live in a temporary folder, never in the repo.

The tiers: tests/unit/ (no server, database or process: its conftest enforces it), tests/data/ (the
validation suite on good and broken data), tests/dags/ (DAG parsing), tests/integration/ (MLflow
stores and servers, PostgreSQL, Airflow runs, subprocesses; marked ``integration``) and tests/e2e/
(whole pipeline runs; marked ``e2e``). The fixtures here serve several tiers or folders: the per-test
home (all), a module's MLflow store (integration, and the data tests marked integration), the Yale
faces (unit and integration), a PostgreSQL database and the project's MLflow server. A test marked
``shared_dataset`` (``testkit.needs_shared``) is skipped where its data set is absent, failed there
when VISIONOPS_REQUIRE_SHARED=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import YALE, require_shared, start_project_mlflow_server, stop_process_group
from visionops.core.interpreter import tune_gc

REPO = Path(__file__).resolve().parents[1]

# Airflow reads AIRFLOW_HOME when it is first imported, so it is set before any test module loads.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="visionops-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(
    REPO / "plugins"
)  # on sys.path: the DAGs import from it
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("VISIONOPS_HOME", str(_SESSION_HOME / "visionops"))
os.environ.setdefault(
    "MLFLOW_TRACKING_URI", f"sqlite:///{_SESSION_HOME / 'visionops' / 'mlflow.db'}"
)
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# The lanes import what the pipeline's processes import, and are set like them.
tune_gc()
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two lanes on two cores: one compute thread per process (inherited by the Airflow tasks and the
    # servers a lane starts), so two lanes training at once do not oversubscribe the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``shared_dataset`` (``testkit.needs_shared``) is skipped before its fixtures are
    set up when the data set is absent, or failed there when VISIONOPS_REQUIRE_SHARED=1 (CI)."""
    for mark in item.iter_markers("shared_dataset"):
        require_shared(*mark.args)


# ``make test`` runs two lanes (pytest-xdist, ``--dist loadfile --no-loadscope-reorder``): each module
# goes whole to one lane, and a lane takes the next module from the queue when it runs dry. Modules are
# queued heaviest first, so the long ones overlap and the many short ones even out the end. The
# seconds are each module's time in a lane (two lanes, fresh clone of 464943a, 2026-12-07); unlisted modules
# (under 14 s each) keep their collection order after these.
MODULE_SECONDS = {
    "test_stack_e2e.py": 435,
    "test_pipeline_e2e.py": 168,
    "test_continuous_e2e.py": 134,
    "test_imperfect_sets_e2e.py": 127,
    "test_real_sets_e2e.py": 111,
    "test_browser_e2e.py": 105,
    "test_faces_e2e.py": 80,
    "test_approval_e2e.py": 74,
    "test_promotion_race.py": 65,
    "test_face_unknown_yale_served.py": 45,
    "test_mlflow_auth.py": 34,
    "test_registry_cli.py": 24,
    "test_distributed_training.py": 21,
    "test_tuning_runs_and_workers.py": 20,
    "test_faces_small.py": 16,
    "test_checkpoint_resume.py": 16,
    "test_baselines_in_pipeline.py": 15,
    "test_serving.py": 15,
    "test_faces_yale.py": 14,
    "test_monitoring_flow.py": 14,
    "test_kfold_ensemble.py": 14,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one lane: collection order
    # A stable sort: each module's tests keep their order, and every lane sorts alike.
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.name, 0))


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


@pytest.fixture(autouse=True)
def _isolated_home(isolated_home: Path) -> Path:
    """Every test, in every tier, gets its own VISIONOPS_HOME, so nothing lands in the repository's .visionops/.

    Fixtures of a wider scope (a module's MLflow store, the e2e homes) are set up before it, in the
    home they chose themselves.
    """
    return isolated_home


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary SQLite tracking store and registry for one test module (creating it takes seconds)."""
    import mlflow
    from visionops.core import tracking

    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISIONOPS_HOME", str(root / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        uri = tracking.configure()
        assert uri == f"sqlite:///{root}/mlflow.db"
        try:
            yield root
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run()
    tracking.configure()  # MLflow keeps the URI it was given: back to the one the environment names


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL (127.0.0.1:5432), dropped afterwards.

    Skipped when PostgreSQL does not answer, unless VISIONOPS_REQUIRE_POSTGRES=1 (CI), then failed.
    """
    try:
        import psycopg2

        admin = psycopg2.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3
        )
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no PostgreSQL here"
        if os.environ.get("VISIONOPS_REQUIRE_POSTGRES") == "1":
            pytest.fail(
                f"VISIONOPS_REQUIRE_POSTGRES=1 but PostgreSQL at 127.0.0.1:5432 does not answer: {exc}"
            )
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


@pytest.fixture()
def mlflow_server(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Start the project's MLflow server (``mlflow/start.sh``) on a backend store URI; returns its URL.

    Called as ``mlflow_server(backend_uri)``; artifacts go under the test's temp folder and every
    server started is stopped (process group) when the test ends.
    """
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    if not mlflow_bin.exists():
        pytest.skip(f"no mlflow command beside {sys.executable} (install requirements.txt)")
    started: list[subprocess.Popen] = []

    def start(backend_uri: str, timeout_s: float = 90.0) -> str:
        folder = Path(tempfile.mkdtemp(prefix="mlflow-server-", dir=tmp_path))
        # These tests are about the store and the artifact proxy; login: test_mlflow_auth.py.
        server, url = start_project_mlflow_server(
            folder, backend_uri, {"MLFLOW_AUTH": "none"}, timeout_s
        )
        started.append(server)
        return url

    try:
        yield start
    finally:
        for server in started:
            stop_process_group(server)


@pytest.fixture(scope="session")
def yale(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Chips (dlib-aligned, via the faces module's photo_to_face) and embeddings of every distinct photo.

    The Yale faces (``testkit.YALE``), for the unknown-people tests of tests/unit and tests/integration
    (computing them takes half a minute). Computed once per pytest run: the first lane that needs them
    writes them beside the lanes' temporary folders, under a file lock, and the other lane reads them
    (the pattern pytest-xdist documents for a session fixture shared by its workers). Its users skip
    when the data set is absent, or fail when VISIONOPS_REQUIRE_SHARED=1 (``testkit.require_shared``).
    """
    import numpy as np
    from filelock import FileLock

    from visionops.core.config import FacesConfig
    from visionops.data.faces import face_settings

    require_shared(YALE)
    settings = face_settings(FacesConfig(enabled=True))
    # Under xdist each lane's basetemp is a folder of the run's one root; alone, the root is the run's.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    cache = root / "yale-chips.npz"
    with FileLock(str(cache) + ".lock"):
        if not cache.exists():
            np.savez(cache.with_suffix(".tmp.npz"), **_yale_chips(settings))
            cache.with_suffix(".tmp.npz").rename(cache)
    with np.load(cache) as stored:
        return {
            "paths": stored["paths"].tolist(),
            "labels": stored["labels"],
            "chips": stored["chips"],
            "emb": stored["emb"],
            "settings": settings,
        }


def _yale_chips(settings: Any) -> dict[str, Any]:
    import hashlib

    import numpy as np
    import pandas as pd
    from PIL import Image

    from visionops.data.embeddings import embed_chips
    from visionops.data.faces import photo_to_face

    rows, seen = [], set()
    for rec in pd.read_csv(YALE / "labels.csv").to_dict("records"):
        data = (YALE / rec["path"]).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:  # byte-identical copies (normal = noglasses) would sit in train and test
            continue
        seen.add(digest)
        face = photo_to_face(np.asarray(Image.open(YALE / rec["path"]).convert("RGB")), settings)
        if face.chip is not None:
            rows.append((rec["path"], rec["label"], face.chip))
    paths, labels, chips = zip(*rows)
    chips = np.stack(chips)
    return {
        "paths": np.asarray(paths),
        "labels": np.asarray(labels),
        "chips": chips,
        "emb": embed_chips(chips),
    }
