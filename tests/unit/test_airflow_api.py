"""The Airflow REST client's own logic (``visionops.cli.airflow_api``), at its transport seam; and
``visionops pipeline run --stack`` where no stack runs.

Every HTTP request the client makes goes through ``urllib.request.urlopen``: here a scripted answer
takes its place, and the clock is a counter, so what is checked is what the client does with the
requests it sends and the answers it gets, never what Airflow answers. The request it builds (method,
path, JSON body, bearer token, timeout), a refusal turned into an error naming the call and the
status, a run polled until it ends, the timeout naming the tasks' states. What a real API server
answers (the token flow, a wrong password refused, a run triggered and followed to its end) is
asserted in tests/e2e/test_stack_e2e.py, on the stack's Airflow.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from visionops.cli import airflow_api
from visionops.cli.airflow_api import AirflowApi, AirflowApiError
from visionops.cli.main import main

BASE = "http://airflow.invalid:8080"
TOKEN = {("POST", "/auth/token"): [(201, {"access_token": "tok"})]}


@dataclass
class Sent:
    method: str
    url: str
    path: str
    body: Any
    authorization: str | None
    content_type: str | None
    timeout: float | None


class Transport:
    """``urlopen`` answering from a script: (method, path) -> [(status, body), ...], one per request,
    the last one repeated. A status of 400 or more is raised as urllib raises it. A client that
    keeps asking past ``MAX_REQUESTS`` fails the test instead of spinning."""

    MAX_REQUESTS = 100

    def __init__(self, script: dict[tuple[str, str], list[tuple[int, Any]]]) -> None:
        self.script = {key: list(answers) for key, answers in script.items()}
        self.sent: list[Sent] = []

    def urlopen(self, req: urllib.request.Request, timeout: float | None = None) -> io.BytesIO:
        assert len(self.sent) < self.MAX_REQUESTS, (
            f"{self.MAX_REQUESTS} requests: the client does not stop"
        )
        parts = urllib.parse.urlsplit(req.full_url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        method = req.get_method()
        body = json.loads(req.data) if req.data is not None else None
        self.sent.append(
            Sent(
                method,
                req.full_url,
                path,
                body,
                req.get_header("Authorization"),
                req.get_header("Content-type"),
                timeout,
            )
        )
        answers = self.script[(method, path)]
        status, answer = answers.pop(0) if len(answers) > 1 else answers[0]
        data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        if status >= 400:
            raise urllib.error.HTTPError(req.full_url, status, "refused", {}, io.BytesIO(data))  # type: ignore[arg-type]
        return io.BytesIO(data)

    def calls(self, method: str, path: str) -> list[Sent]:
        return [s for s in self.sent if (s.method, s.path) == (method, path)]


class Clock:
    """``time`` for the client: ``sleep`` moves ``monotonic`` on, and is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _airflow(
    monkeypatch: pytest.MonkeyPatch, script: dict[tuple[str, str], list[tuple[int, Any]]]
) -> tuple[Transport, Clock]:
    transport, clock = Transport(script), Clock()
    monkeypatch.setattr(urllib.request, "urlopen", transport.urlopen)
    monkeypatch.setattr(airflow_api, "time", clock)
    return transport, clock


def test_the_token_is_asked_for_with_the_password_then_sent_with_every_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = {
        **TOKEN,
        ("GET", "/api/v2/dags/train_pipeline"): [(200, {"dag_id": "train_pipeline"})],
    }
    transport, _ = _airflow(monkeypatch, script)
    api = AirflowApi(BASE + "/", "admin", "right", timeout_s=7.0)
    assert api.call("GET", "/api/v2/dags/train_pipeline") == {"dag_id": "train_pipeline"}
    login, get = transport.sent
    assert (login.method, login.url) == ("POST", f"{BASE}/auth/token")  # the base's "/" dropped
    assert login.body == {"username": "admin", "password": "right"}
    assert login.authorization is None and login.content_type == "application/json"
    assert get.url == f"{BASE}/api/v2/dags/train_pipeline" and get.body is None
    assert get.authorization == "Bearer tok"
    assert {s.timeout for s in transport.sent} == {7.0}


def test_a_wrong_password_is_an_error_naming_the_call_and_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _airflow(monkeypatch, {("POST", "/auth/token"): [(401, {"detail": "Invalid credentials"})]})
    with pytest.raises(AirflowApiError, match=r"POST /auth/token: HTTP 401: .*Invalid credentials"):
        AirflowApi(BASE, "admin", "wrong")


def test_a_refused_call_names_itself_and_keeps_the_answer_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = "/api/v2/dags/train_pipeline/dagRuns"
    _airflow(monkeypatch, {**TOKEN, ("POST", path): [(403, "x" * 2000)]})
    api = AirflowApi(BASE, "admin", "right")
    with pytest.raises(AirflowApiError) as refused:
        api.trigger("train_pipeline", {})
    assert str(refused.value) == f"POST {path}: HTTP 403: {'x' * 500}"


def test_trigger_posts_the_conf_for_a_run_now_and_returns_its_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = "/api/v2/dags/train_pipeline/dagRuns"
    transport, _ = _airflow(
        monkeypatch, {**TOKEN, ("POST", path): [(200, {"dag_run_id": "manual__1"})]}
    )
    api = AirflowApi(BASE, "admin", "right")
    assert api.trigger("train_pipeline", {"force": True}) == "manual__1"
    (post,) = transport.calls("POST", path)
    assert post.body == {"logical_date": None, "conf": {"force": True}}
    assert post.authorization == "Bearer tok"


def test_wait_follows_the_run_until_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = "manual__2026-01-01T00:00:00+00:00"
    path = "/api/v2/dags/train_pipeline/dagRuns/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    states = [(200, {"dag_run_id": run_id, "state": s}) for s in ("queued", "running", "success")]
    transport, clock = _airflow(monkeypatch, {**TOKEN, ("GET", path): states})
    api = AirflowApi(BASE, "admin", "right")
    run = api.wait("train_pipeline", run_id, timeout_s=30, poll_s=2.0)
    assert run == {"dag_run_id": run_id, "state": "success"}
    assert len(transport.calls("GET", path)) == 3  # the run id quoted into one path segment
    assert clock.sleeps == [2.0, 2.0]  # a pause between polls, none after the last
    # A failed run has ended too.
    failed = [(200, {"dag_run_id": run_id, "state": s}) for s in ("running", "failed")]
    transport, clock = _airflow(monkeypatch, {**TOKEN, ("GET", path): failed})
    api = AirflowApi(BASE, "admin", "right")
    assert api.wait("train_pipeline", run_id, timeout_s=30, poll_s=2.0)["state"] == "failed"
    assert len(transport.calls("GET", path)) == 2


def test_a_run_that_does_not_end_names_its_tasks_states(monkeypatch: pytest.MonkeyPatch) -> None:
    run = "/api/v2/dags/train_pipeline/dagRuns/manual__1"
    script = {
        **TOKEN,
        ("GET", run): [(200, {"dag_run_id": "manual__1", "state": "running"})],
        ("GET", f"{run}/taskInstances?limit=100"): [
            (200, {"task_instances": [{"task_id": "train", "state": "running"}]})
        ],
    }
    _airflow(monkeypatch, script)
    api = AirflowApi(BASE, "admin", "right")
    with pytest.raises(TimeoutError, match=r"not finished after 0 s: \{'train': 'running'\}"):
        api.wait("train_pipeline", "manual__1", timeout_s=0.05, poll_s=0.01)
    # Polled every poll_s until the deadline, not past it; then the tasks' states, once.
    transport, clock = _airflow(monkeypatch, script)
    api = AirflowApi(BASE, "admin", "right")
    with pytest.raises(TimeoutError) as late:
        api.wait("train_pipeline", "manual__1", timeout_s=10, poll_s=3.0)
    assert str(late.value) == (
        "run manual__1 of train_pipeline not finished after 10 s: {'train': 'running'}"
    )
    assert len(transport.calls("GET", run)) == 4 and clock.sleeps == [3.0] * 4  # at 0, 3, 6, 9 s
    assert len(transport.calls("GET", f"{run}/taskInstances?limit=100")) == 1


def test_an_approval_is_answered_on_the_tasks_hitl_details(monkeypatch: pytest.MonkeyPatch) -> None:
    path = "/api/v2/dags/train_pipeline/dagRuns/manual__1/taskInstances/approve/-1/hitlDetails"
    transport, _ = _airflow(monkeypatch, {**TOKEN, ("PATCH", path): [(200, {})]})
    AirflowApi(BASE, "admin", "right").answer("train_pipeline", "manual__1", "approve", "Approve")
    (patch,) = transport.calls("PATCH", path)
    assert patch.body == {"chosen_options": ["Approve"], "params_input": {}}


def test_pipeline_run_on_the_stack_without_one_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["pipeline", "run", "--set", "train.max_epochs=1", "--stack", str(tmp_path)])
    assert code == 2
    assert f"no stack runs in {tmp_path}" in capsys.readouterr().err
