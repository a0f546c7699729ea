"""Integration tests: they touch a server, a database or a process (MLflow store or server, PostgreSQL,
Airflow runs, subprocesses). Every test collected under this folder is marked ``integration``, so
``-m "not integration"`` leaves them out.

Fixtures: ``no_active_run`` (``mlflow_store``, a module's SQLite tracking store, is in tests/conftest.py,
which the data tests share); and for the registry, promotion and serving tests a real MLflow store
with real, tiny models. Two small_cnn classifiers on a separable 2-class 8x8 problem: ``good``
(trained on the true labels, 100% on held-out images) and ``bad`` (trained on swapped labels, about
0%), logged through the project's own ``log_classifier``, plus a preprocessed test split in the
pipeline's format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testkit import left_right

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ ``integration`` (the hook sees the whole session's items)."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture()
def no_active_run() -> Iterator[None]:
    """Fail loudly if a test leaves an MLflow run active, and end it so later tests are unaffected."""
    import mlflow

    yield
    leaked = mlflow.active_run()
    while mlflow.active_run() is not None:
        mlflow.end_run()
    assert leaked is None, f"test left MLflow run {leaked.info.run_id} active"


# -- the registry, promotion and serving tests: real, tiny models in a session-wide store -----------

LABELS = ["left", "right"]
SIZE = 8


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 8, 8): a bright left half is class 0, a bright right half class 1."""
    return left_right(n, seed, SIZE)


def train(swap: bool, seed: int = 0):
    """A small_cnn with its normalisation, trained by plain Adam steps (swap=True learns the wrong labels)."""
    import torch

    from visionops.models import build_model
    from visionops.models.wrappers import NormalizedNet

    torch.manual_seed(seed)
    net = NormalizedNet(
        build_model("small_cnn", in_channels=1, image_size=SIZE, num_classes=2, dropout=0.0),
        [0.3],
        [0.3],
    )
    x, y = images(128, seed=seed + 1)
    target = torch.from_numpy(1 - y if swap else y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), target)
        loss.backward()
        opt.step()
    return net.eval()


def log_model(net, workdir: Path, experiment_id: str) -> dict[str, str]:
    import mlflow
    from visionops.serving.model import log_classifier

    workdir.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        uris = log_classifier(
            net,
            labels=LABELS,
            image_size=SIZE,
            channels=1,
            example=images(4, 9)[0],
            workdir=workdir,
        )
    return {**uris, "run_id": run.info.run_id}


def write_test_split(folder: Path, n: int = 40, seed: int = 11) -> Path:
    """A preprocess output as the pipeline writes it: label map and the test split arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = images(n, seed)
    np.save(folder / "test_x.npy", x)
    np.save(folder / "test_y.npy", y)
    (folder / "label_map.json").write_text(json.dumps({"labels": LABELS}))
    return folder


@pytest.fixture(scope="session")
def trained_nets() -> dict[str, Any]:
    return {"good": train(swap=False), "bad": train(swap=True)}


@contextmanager
def _pointed_at(root: Path) -> Iterator[None]:
    """MLflow (environment and the process-wide URIs) on the SQLite store under ``root``; the
    environment is restored on leaving."""
    import mlflow
    from visionops.core import tracking

    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "VISIONOPS_HOME")
    }
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    os.environ["VISIONOPS_HOME"] = str(root / "home")
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    try:
        tracking.configure()
        yield
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def _logged_models(tmp_path_factory: pytest.TempPathFactory, trained_nets) -> dict[str, Any]:
    """The good and the bad model logged once per lane into a SQLite store of their own."""
    from visionops.core import tracking

    root = tmp_path_factory.mktemp("serving")
    with _pointed_at(root):
        exp = tracking.experiment_id("serving-tests")
        models = {k: log_model(net, root / f"work-{k}", exp) for k, net in trained_nets.items()}
    return {
        "root": root,
        "uri": f"sqlite:///{root}/mlflow.db",
        "models": models,
        "test_split": write_test_split(root / "preprocess"),
    }


@pytest.fixture(scope="module")
def sqlite_store(_logged_models: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A temporary SQLite MLflow store with the good and the bad model logged (not yet registered),
    and MLflow pointed at it for the module. The models are logged once per lane, but each module
    points MLflow at the store again: a module run in between may have pointed it elsewhere (the
    registry then looked for the logged models in another store)."""
    with _pointed_at(_logged_models["root"]):
        yield _logged_models


@pytest.fixture(scope="session")
def helpers():
    """The model and data builders above, for tests that need their own store."""
    from types import SimpleNamespace

    return SimpleNamespace(
        images=images,
        train=train,
        log_model=log_model,
        write_test_split=write_test_split,
        labels=LABELS,
    )


@pytest.fixture()
def serving_tracking(
    sqlite_store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """MLflow pointed at the session's serving store for this test (a module's own store may have moved it)."""
    from visionops.core import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store["uri"])
    monkeypatch.setenv("VISIONOPS_HOME", str(sqlite_store["root"] / "home"))
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    tracking.configure()
    return sqlite_store


@pytest.fixture()
def good_and_bad(serving_tracking: dict[str, Any]) -> str:
    """A fresh registered model: v1 good, v2 bad, both with their test split recorded as the pipeline does."""
    import uuid

    from visionops.release import registry

    sqlite_store = serving_tracking

    name = f"m-{uuid.uuid4().hex[:8]}"
    tags = {
        "visionops.test_data_uri": str(sqlite_store["test_split"]),
        "visionops.test_data_fingerprint": "t",
    }
    for kind in ("good", "bad"):
        m = sqlite_store["models"][kind]
        registry.register_version(
            name, m["model_uri"], m["run_id"], {**tags, "visionops.kind": kind}, kind
        )
    return name
