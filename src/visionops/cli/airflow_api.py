"""A small client of Airflow's REST API (``/api/v2``) with a token from ``/auth/token``.

What ``visionops pipeline run --stack`` uses to trigger ``train_pipeline`` on the multi-service stack
(the run goes through the scheduler and the Celery workers) and to follow it to its end; the stack
tests drive the stack through it as well. The standard library's ``urllib`` is enough for these
few JSON calls (Airflow ships no Python client of its REST API inside apache-airflow itself).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

FINISHED = ("success", "failed")


class AirflowApiError(RuntimeError):
    """A call that Airflow refused: the method, the path, the status and Airflow's answer."""


class AirflowApi:
    """``/api/v2`` of one Airflow API server, as ``user`` (the documented token flow)."""

    def __init__(self, base: str, user: str, password: str, timeout_s: float = 60.0) -> None:
        self.base = base.rstrip("/")
        self.timeout_s = timeout_s
        self.token = ""
        answer = self.call("POST", "/auth/token", {"username": user, "password": password})
        self.token = answer["access_token"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(f"{self.base}{path}", data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AirflowApiError(f"{method} {path}: HTTP {exc.code}: {detail}") from None

    @staticmethod
    def _q(run_id: str) -> str:
        return urllib.parse.quote(run_id, safe="")

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Start a run now with ``conf``; its run id."""
        run = self.call(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}
        )
        return run["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}")

    def tasks(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}/taskInstances?limit=100"
        return self.call("GET", path)["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}/taskInstances/{task_id}/tries"
        return self.call("GET", path)["task_instances"]

    def answer(self, dag_id: str, run_id: str, task_id: str, option: str) -> None:
        """Answer a human-in-the-loop task (the approval) as this user."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}/taskInstances/{task_id}/-1/hitlDetails"
        self.call("PATCH", path, {"chosen_options": [option], "params_input": {}})

    def wait(
        self,
        dag_id: str,
        run_id: str,
        timeout_s: float = 3600,
        poll_s: float = 3.0,
        on_poll: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """The run once it has finished (success or failed); an error naming the tasks' states after
        ``timeout_s``. ``on_poll`` is called at every poll and once more at the end."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if on_poll is not None:
                on_poll()
            if run["state"] in FINISHED:
                return run
            time.sleep(poll_s)
        states = {t["task_id"]: t["state"] for t in self.tasks(dag_id, run_id)}
        raise TimeoutError(
            f"run {run_id} of {dag_id} not finished after {timeout_s:.0f} s: {states}"
        )
