"""Unit tests: pure code on tiny data made inside the test (temporary files allowed).

They touch no server, no database and start no process; the autouse ``service_guard`` below makes
that a rule rather than a hope. Opening a network connection (anything but a Unix socket), a SQLite
or PostgreSQL database, or starting a process (subprocess, ``os.fork``/``posix_spawn``/``system``,
multiprocessing, hence process pools and DataLoader workers) fails the test, and MLflow points at a
tracking URI no store answers, so a test that logs to MLflow by accident fails instead of writing
to a store. A test that needs any of these belongs in tests/integration/. The guard covers the test
and its function-scoped fixtures; a module- or session-scoped fixture is set up before it, so keep
those pure too (what they hand over is still guarded when a test uses it).

Each test's own ``VISIONOPS_HOME`` comes from tests/conftest.py, as in every tier.
"""

from __future__ import annotations

import multiprocessing.process
import os
import platform
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from PIL import Image

MOVE_IT = "unit tests touch no server or process: move this test to tests/integration"
NO_TRACKING_STORE = "unit-tests-have-no-tracking-store://"

# The standard library runs ``uname -p`` once per process for platform.processor() (MLflow's telemetry
# asks at import): run it now, outside any test, so the cached answer serves the guarded tests.
platform.processor()


class ServiceGuard:
    """What a unit test tried and was refused (also the ones code under test caught and swallowed)."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.reported = False  # a refusal reached pytest as the test's failure

    def refuse(self, what: str) -> NoReturn:
        self.attempts.append(what)
        # pytest.fail raises a BaseException: an ``except Exception`` in the code under test cannot hide it.
        pytest.fail(f"{what}: {MOVE_IT}")


def _guard_sockets(mp: pytest.MonkeyPatch, guard: ServiceGuard) -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        guard.refuse(f"socket connect to {address!r}")

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if sock.family == socket.AF_UNIX:
            return real_connect_ex(sock, address)
        guard.refuse(f"socket connect_ex to {address!r}")

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> NoReturn:
        guard.refuse(f"socket.create_connection to {address!r}")

    mp.setattr(socket.socket, "connect", connect)
    mp.setattr(socket.socket, "connect_ex", connect_ex)
    mp.setattr(socket, "create_connection", create_connection)


def _guard_processes(mp: pytest.MonkeyPatch, guard: ServiceGuard) -> None:
    def popen_init(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> NoReturn:
        guard.refuse(f"subprocess.Popen({args!r})")

    def process_start(self: multiprocessing.process.BaseProcess) -> NoReturn:
        guard.refuse(f"multiprocessing {type(self).__name__}.start() (target {self._target!r})")

    def refused(name: str) -> Callable[..., NoReturn]:
        def call(*args: Any, **kwargs: Any) -> NoReturn:
            guard.refuse(f"os.{name}{args!r}")

        return call

    mp.setattr(subprocess.Popen, "__init__", popen_init)
    mp.setattr(multiprocessing.process.BaseProcess, "start", process_start)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            mp.setattr(os, name, refused(name))


def _guard_databases(mp: pytest.MonkeyPatch, guard: ServiceGuard) -> None:
    def sqlite_connect(database: Any, *args: Any, **kwargs: Any) -> NoReturn:
        guard.refuse(f"sqlite3.connect({database!r})")

    # SQLAlchemy (MLflow's and Optuna's database stores) calls sqlite3.dbapi2.connect.
    mp.setattr(sqlite3, "connect", sqlite_connect)
    mp.setattr(sqlite3.dbapi2, "connect", sqlite_connect)
    psycopg2 = sys.modules.get("psycopg2")
    if psycopg2 is not None:  # libpq connects in C, below the socket guard
        mp.setattr(psycopg2, "connect", lambda *a, **k: guard.refuse(f"psycopg2.connect{a!r}"))


def _unusable_tracking_store(mp: pytest.MonkeyPatch) -> None:
    """MLFLOW_TRACKING_URI names a scheme no store answers; mlflow.set_tracking_uri's earlier value is cleared."""
    mp.setenv("MLFLOW_TRACKING_URI", NO_TRACKING_STORE)
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    if "mlflow" in sys.modules:  # not imported yet: nothing was set, and the variables above decide
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        mp.setattr(tracking_utils, "_tracking_uri", None)
        mp.setattr(registry_utils, "_registry_uri", None)


@pytest.fixture(autouse=True)
def service_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceGuard]:
    """Every unit test: no network connection, no database, no process, no MLflow tracking store."""
    guard = ServiceGuard()
    mlflow_loaded = "mlflow" in sys.modules
    with monkeypatch.context() as mp:
        _unusable_tracking_store(mp)
        _guard_sockets(mp, guard)
        _guard_processes(mp, guard)
        _guard_databases(mp, guard)
        yield guard
    if not mlflow_loaded and "mlflow" in sys.modules:
        # mlflow first imported during the test: clear what the test set, so later tests see the environment.
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None
    if (
        guard.attempts and not guard.reported
    ):  # refused, but caught by the code under test: still a failure
        pytest.fail(f"{MOVE_IT}; refused: " + "; ".join(guard.attempts))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A refusal that failed the test is reported once, not again by the guard's teardown."""
    try:
        return (yield)
    except BaseException as exc:
        guard = getattr(item, "funcargs", {}).get("service_guard")
        if isinstance(guard, ServiceGuard) and MOVE_IT in str(exc):
            guard.reported = True
        raise


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture()
def write_png() -> Callable[[Path, np.ndarray], Path]:
    """``write_png(path, pixels)``: save a uint8 array (HxW grey or HxWx3 RGB) as a PNG, creating folders."""
    return _write_png
