"""The Airflow REST client: the token flow, refusals named, a run followed to its end."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from visionops.cli.airflow_api import AirflowApi, AirflowApiError
from visionops.cli.main import main


class _Airflow(BaseHTTPRequestHandler):
    """Answers like Airflow's API server: a token for the right password, 401 without one."""

    states = ["queued", "running", "success"]
    seen: list[tuple[str, str, Any]] = []

    def _answer(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append((self.command, self.path, body))
        if self.path == "/auth/token":
            if body == {"username": "admin", "password": "right"}:
                return self._answer(201, {"access_token": "tok"})
            return self._answer(401, {"detail": "Invalid credentials"})
        if self.headers.get("Authorization") != "Bearer tok":
            return self._answer(401, {"detail": "Not authenticated"})
        if self.command == "POST" and self.path.endswith("/dagRuns"):
            return self._answer(200, {"dag_run_id": "manual__1"})
        if self.path.endswith("/taskInstances?limit=100"):
            return self._answer(200, {"task_instances": [{"task_id": "train", "state": "running"}]})
        if "/dagRuns/" in self.path:
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return self._answer(200, {"dag_run_id": "manual__1", "state": state})
        return self._answer(200, {})

    do_GET = do_POST = do_PATCH = _handle

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def airflow() -> Iterator[str]:
    _Airflow.seen = []
    _Airflow.states = ["queued", "running", "success"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Airflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_wrong_password_is_an_error_naming_the_call_and_status(airflow: str) -> None:
    with pytest.raises(AirflowApiError, match=r"POST /auth/token: HTTP 401: .*Invalid credentials"):
        AirflowApi(airflow, "admin", "wrong")


def test_trigger_then_follow_the_run_to_its_end(airflow: str) -> None:
    api = AirflowApi(airflow, "admin", "right")
    run_id = api.trigger("train_pipeline", {"force": True})
    assert run_id == "manual__1"
    assert api.wait("train_pipeline", run_id, timeout_s=30, poll_s=0.01)["state"] == "success"
    post = next(s for s in _Airflow.seen if s[1] == "/api/v2/dags/train_pipeline/dagRuns")
    assert post[2] == {"logical_date": None, "conf": {"force": True}}


def test_a_run_that_does_not_end_names_its_tasks_states(airflow: str) -> None:
    _Airflow.states = ["running"]
    api = AirflowApi(airflow, "admin", "right")
    with pytest.raises(TimeoutError, match=r"not finished after 0 s: \{'train': 'running'\}"):
        api.wait("train_pipeline", "manual__1", timeout_s=0.05, poll_s=0.01)


def test_pipeline_run_on_the_stack_without_one_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["pipeline", "run", "--set", "train.max_epochs=1", "--stack", str(tmp_path)])
    assert code == 2
    assert f"no stack runs in {tmp_path}" in capsys.readouterr().err
