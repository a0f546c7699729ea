"""The unit tier's guard (tests/unit/conftest.py) really refuses servers, databases and processes.

Each test attempts one of them and expects the guard's refusal; without the guard the attempt would
go through (or fail differently) and the test would fail. The refusal is then cleared from the
guard's record, which would otherwise fail the test at teardown as a swallowed attempt.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REFUSED = "unit tests touch no server or process: move this test to tests/integration"


def _listening_port() -> tuple[socket.socket, int]:
    """A real listener on 127.0.0.1 (binding needs no connection): a connect would succeed unguarded."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return server, server.getsockname()[1]


def _connect(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect(("127.0.0.1", port))


def _connect_ex(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "connect_ex went through"


def _create_connection(port: int) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize("attempt", [_connect, _connect_ex, _create_connection])
def test_a_network_connection_fails_the_test(attempt: Callable[[int], None], service_guard) -> None:
    server, port = _listening_port()
    with server, pytest.raises(pytest.fail.Exception, match=REFUSED):
        attempt(port)
    assert len(service_guard.attempts) == 1 and "127.0.0.1" in service_guard.attempts[0]
    service_guard.attempts.clear()


def test_a_unix_socket_pair_is_allowed() -> None:
    left, right = socket.socketpair()  # AF_UNIX: what event loops use to wake themselves
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"


def test_starting_a_subprocess_fails_the_test(service_guard) -> None:
    with pytest.raises(pytest.fail.Exception, match=REFUSED):
        subprocess.run(["true"], check=True)
    assert service_guard.attempts == ["subprocess.Popen(['true'])"]
    service_guard.attempts.clear()


def test_os_system_fails_the_test(service_guard) -> None:
    with pytest.raises(pytest.fail.Exception, match=REFUSED):
        os.system("true")
    assert service_guard.attempts == ["os.system('true',)"]
    service_guard.attempts.clear()


def test_a_multiprocessing_worker_fails_the_test(service_guard) -> None:
    process = multiprocessing.get_context("spawn").Process(target=print)
    with pytest.raises(pytest.fail.Exception, match=REFUSED):
        process.start()
    assert len(service_guard.attempts) == 1 and "Process.start()" in service_guard.attempts[0]
    service_guard.attempts.clear()


def test_opening_a_sqlite_database_fails_the_test(tmp_path: Path, service_guard) -> None:
    with pytest.raises(pytest.fail.Exception, match=REFUSED):
        sqlite3.connect(tmp_path / "mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()
    service_guard.attempts.clear()


def test_an_exception_handler_cannot_swallow_the_refusal(service_guard) -> None:
    """Code under test that catches Exception still fails: the refusal is a BaseException."""
    try:
        subprocess.run(["true"], check=True)
    except Exception:  # noqa: BLE001 - what careless code under test does
        pytest.fail("the guard's refusal was caught by `except Exception`")
    except BaseException:
        pass
    assert service_guard.attempts == ["subprocess.Popen(['true'])"]  # also failed again at teardown
    service_guard.attempts.clear()


def test_mlflow_has_no_tracking_store() -> None:
    from mlflow.exceptions import MlflowException

    import mlflow
    from visionops.core import tracking

    assert os.environ["MLFLOW_TRACKING_URI"] == "unit-tests-have-no-tracking-store://"
    assert (
        tracking.configure() == "unit-tests-have-no-tracking-store://"
    )  # even through the project's setup
    with pytest.raises(MlflowException, match="unit-tests-have-no-tracking-store"):
        mlflow.search_experiments()
    with pytest.raises(MlflowException, match="unit-tests-have-no-tracking-store"):
        with mlflow.start_run():
            pass
    assert mlflow.active_run() is None
