"""The serving tests' SQLite store (``sqlite_store`` in conftest.py) whatever ran before in the lane.

Its models are logged once per lane, but a module that ran in between may point MLflow at another
store (``mlflow.set_tracking_uri``): the registry then looked for the logged models there ("Logged
model ... not found", seen when test_serving.py followed test_registry_cli.py and
test_tracking_runs.py in one lane). Each module that asks for the store gets MLflow pointed at it.
"""

from __future__ import annotations

import uuid

import pytest

import mlflow
from visionops.release import registry


def test_a_module_gets_mlflow_pointed_at_the_store_again(request, tmp_path) -> None:
    logged = request.getfixturevalue("_logged_models")  # the lane's store, made earlier
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # what another module did
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    store = request.getfixturevalue("sqlite_store")  # this module's first use of it
    assert mlflow.get_tracking_uri() == store["uri"] == logged["uri"]
    name = f"fixture-{uuid.uuid4().hex[:6]}"
    m = store["models"]["good"]
    version = registry.register_version(name, m["model_uri"], m["run_id"], {}, "good")
    assert version == "1"


@pytest.fixture(autouse=True)
def _restore_uris():
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])
