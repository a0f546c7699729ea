"""Shared fixtures of the unit tests: isolated local state, tiny images, a temporary MLflow store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _isolated_home(isolated_home: Path) -> Path:
    """Every test gets its own VISIONOPS_HOME, so nothing lands in the repository's .visionops/."""
    return isolated_home


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture()
def write_png() -> Callable[[Path, np.ndarray], Path]:
    """``write_png(path, pixels)``: save a uint8 array (HxW grey or HxWx3 RGB) as a PNG, creating folders."""
    return _write_png


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary SQLite tracking store and registry for one test module (creating it takes seconds)."""
    import mlflow

    from visionops import tracking

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


@pytest.fixture()
def no_active_run() -> Iterator[None]:
    """Fail loudly if a test leaves an MLflow run active, and end it so later tests are unaffected."""
    import mlflow

    yield
    leaked = mlflow.active_run()
    while mlflow.active_run() is not None:
        mlflow.end_run()
    assert leaked is None, f"test left MLflow run {leaked.info.run_id} active"
