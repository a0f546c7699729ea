"""gate.require_approval end to end: the run waits in Airflow's HITL ``approve`` task for a person.

Real components throughout: ``visionops pipeline run`` (``airflow dags test``) parks ``approve`` in
``awaiting_input``; the answer comes through a real ``airflow api-server`` on the same metadata
database, as the UI's Required Actions page sends it (HITL REST API, a logged-in user). Run 1 is
approved and promoted, recording who approved; run 2 is rejected and the champion stays.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_cli import pipeline_command, pipeline_env
from testkit import free_port, stop_process_group

pytestmark = pytest.mark.e2e

MODEL = "e2e-approval"
ARGS = [
    "--set",
    "gate.require_approval=true",
    "--set",
    "tune.n_trials=0",
    "--set",
    "train.max_epochs=4",
    # The approval mechanics on the small network (the shipped width-2 batch-norm one is slower).
    "--set",
    "model.width=1",
    "--set",
    "model.batch_norm=false",
    "--set",
    f"registry.model_name={MODEL}",
    "--set",
    "experiment=e2e-approval",
    # The approval mechanics: the gate must pass whatever 4 epochs reach (the person decides here).
    "--set",
    "gate.compare_with_baselines=false",
    "--set",
    "gate.min_accuracy=0.5",
    "--set",
    "gate.min_macro_f1=0.5",
    # Nor the per-class rule: 4 epochs of a width-1 network move a digit's recall by tens of points.
    "--set",
    "gate.max_class_regression=null",
]
USER, PASSWORD = "reviewer", "approve-me"


def _env(home: Path) -> dict[str, str]:
    passwords = home / "simple_auth_passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    return {
        **pipeline_env(home),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e-approval")


@pytest.fixture(scope="module")
def api(home: Path) -> Iterator[dict[str, str]]:
    """A real Airflow API server on the run's metadata database, and a user's token for it."""
    from visionops.cli.pipeline import ensure_airflow_db

    env = _env(home)
    airflow = str(Path(sys.executable).parent / "airflow")
    # The migration `visionops pipeline run` does, with its stamp: the runs below do not migrate again.
    ensure_airflow_db(env)
    port = free_port()
    log = (home / "api-server.log").open("w")
    server = subprocess.Popen(
        [airflow, "api-server", "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (home / "api-server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "airflow api-server did not answer in 120 s"
                time.sleep(1)
        token = _request(base, "POST", "/auth/token", {"username": USER, "password": PASSWORD})[
            "access_token"
        ]
        yield {"base": base, "token": token}
    finally:
        stop_process_group(server)
        log.close()


def _request(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _run_answering(
    home: Path, api: dict[str, str], answer: str, *extra: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a run, wait for its approval request, answer it as the user; returns (request, summary)."""
    cmd, summary_file = pipeline_command(home, *ARGS, *extra)
    log = (home / f"run-{answer}.log").open("w")
    # Its own session: a failed test stops the run and the `airflow dags test` it started, together.
    proc = subprocess.Popen(
        cmd, env=_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 480
        pending = None
        while pending is None:
            assert proc.poll() is None, (
                f"the run ended without asking:\n{(home / f'run-{answer}.log').read_text()[-4000:]}"
            )
            assert time.monotonic() < deadline, "no approval request within 480 s"
            details = _request(
                api["base"],
                "GET",
                "/api/v2/dags/train_pipeline/dagRuns/~/hitlDetails",
                token=api["token"],
            )["hitl_details"]
            pending = next((d for d in details if not d["response_received"]), None)
            # The request is written while the task still runs; it waits once it is deferred.
            if pending is not None and pending["task_instance"]["state"] == "running":
                pending = None
            if pending is None:
                time.sleep(2)
        ti = pending["task_instance"]
        assert ti["task_id"] == "approve" and ti["state"] == "awaiting_input"
        run_id = urllib.parse.quote(ti["dag_run_id"], safe="")
        _request(
            api["base"],
            "PATCH",
            f"/api/v2/dags/train_pipeline/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails",
            {"chosen_options": [answer], "params_input": {}},
            token=api["token"],
        )
        assert proc.wait(timeout=300) == 0, (home / f"run-{answer}.log").read_text()[-4000:]
    finally:
        stop_process_group(proc)
        log.close()
    return pending, json.loads(summary_file.read_text())


def _client(home: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        registry_uri=f"sqlite:///{home / 'mlflow.db'}",
    )


@pytest.fixture(scope="module")
def approved(home: Path, api: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    return _run_answering(home, api, "Approve")


def test_the_request_shows_the_decision(approved) -> None:
    request, _ = approved
    assert request["subject"] == f"Promote {MODEL} version 1 to champion?"
    assert f"**{MODEL} version 1** passed the gate" in request["body"]
    assert "accuracy" in request["body"] and "required" in request["body"]
    assert request["options"] == ["Approve", "Reject"] and request["defaults"] == ["Reject"]


def test_approved_run_promotes_and_records_who(approved, home: Path) -> None:
    _, summary = approved
    assert summary["status"] == "FINISHED" and summary["gate"] == "passed"
    assert summary["champion_version"] == "1" and "champion" in summary["model_aliases"]
    assert summary["approval"] == f"approved by {USER}"
    tags = _client(home).get_model_version(MODEL, "1").tags
    assert tags["visionops.approved_by"] == USER and tags["visionops.awaiting_approval"] == "false"
    assert tags["visionops.smoke_test"] == "passed"


def test_rejected_run_keeps_the_champion(approved, home: Path, api: dict[str, str]) -> None:
    # The champion's data, config and code again: without --force the run would stop after ingest.
    request, summary = _run_answering(home, api, "Reject", "--force")
    assert "version 2" in request["subject"]
    assert (
        summary["status"] == "FINISHED" and summary["gate"] == "passed"
    )  # the gate passed; a person said no
    assert summary["approval"] == f"rejected by {USER}"
    assert summary["changes"].startswith("forced: trains although nothing changed")
    assert summary["champion_version"] == "1" and summary["model_version"] == "2"
    assert summary["model_aliases"] == []  # a rejected version is no longer challenger
    client = _client(home)
    assert client.get_model_version(MODEL, "2").tags["visionops.approval"] == f"rejected by {USER}"
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.tags["visionops.promoted"] == "false"
    stages = {
        r.data.tags.get("visionops.stage")
        for r in client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
    }
    assert "promote" not in stages  # approve skipped the promote task
