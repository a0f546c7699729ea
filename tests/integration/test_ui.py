"""``visionops ui`` as a user meets it: sized for the machine, its links to MLflow, and a clean stop.

One real ``visionops ui`` (``airflow standalone`` and ``mlflow server``) on free ports in a temporary
home, shared by the tests of this module, which run in order: the processes it started; a run of
train_pipeline triggered through the REST API (it fails at ingest, on a folder that does not exist,
after start opened its MLflow parent run) and its extra links from the API server's links endpoint,
followed to the MLflow runs; no catch-up run after unpausing; and SIGTERM stopping every process.
Starting takes about a minute on the 2-core development machine (longer under load).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import free_port

REPO = Path(__file__).resolve().parents[2]
DAG = "train_pipeline"
MISSING_FOLDER = "/nonexistent/visionops-ui-test-photos"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _get(url: str, token: str | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET, redirects not followed."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _api(base: str, method: str, path: str, token: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())


def _answers(url: str) -> bool:
    try:
        return _get(url, timeout=5)[0] == 200
    except OSError:
        return False


def _sessions_of(pid: int) -> set[int]:
    """The session ids of a process's descendants (visionops ui starts each server in its own)."""
    import psutil

    return {os.getsid(child.pid) for child in psutil.Process(pid).children(recursive=True)}


def _live(sessions: set[int]) -> list[str]:
    import psutil

    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:120]}")
        except (OSError, psutil.Error):
            continue
    return left


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("ui") / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        # The test session's Airflow and MLflow settings: the ui sets its own, under its home.
        if not k.startswith(("AIRFLOW", "MLFLOW_", "VISIONOPS_"))
    }
    env.update(
        VISIONOPS_HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    )
    airflow_port, mlflow_port = free_port(), free_port()
    log_path = home.parent / "ui.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "visionops.cli.main", "ui"]
            + ["--airflow-port", str(airflow_port), "--mlflow-port", str(mlflow_port)],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    info = {
        "proc": proc,
        "home": home,
        "log": log_path,
        "airflow": f"http://127.0.0.1:{airflow_port}",
        "mlflow": f"http://127.0.0.1:{mlflow_port}",
        "sessions": set(),
    }
    try:
        deadline = time.monotonic() + 600
        while not (
            _answers(f"{info['airflow']}/api/v2/monitor/health")
            and _answers(f"{info['mlflow']}/health")
        ):
            assert proc.poll() is None, f"visionops ui exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, (
                f"no answer in 600 s:\n{log_path.read_text()[-4000:]}"
            )
            time.sleep(2)
        info["sessions"] = _sessions_of(proc.pid)
        passwords = home / "airflow" / "simple_auth_manager_passwords.json.generated"
        password = json.loads(passwords.read_text())["admin"]
        request = urllib.request.Request(
            f"{info['airflow']}/auth/token",
            data=json.dumps({"username": "admin", "password": password}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            info["token"] = json.loads(resp.read())["access_token"]
        yield info
    finally:
        if proc.poll() is None:  # a test failed before the stop test: leave nothing running
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        for pid in _live(info["sessions"] | _safe_sessions(proc)):
            try:
                os.kill(int(pid.split()[0]), signal.SIGKILL)
            except OSError:
                pass


def _safe_sessions(proc: subprocess.Popen) -> set[int]:
    try:
        return _sessions_of(proc.pid) if proc.poll() is None else set()
    except Exception:  # noqa: BLE001 - gone already
        return set()


def _processes(sessions: set[int], marker: str) -> list[str]:
    return [p for p in _live(sessions) if marker in p]


def test_the_ui_is_sized_for_the_machine(ui: dict[str, Any]) -> None:
    from visionops.cli.ui import ui_settings

    parallelism = int(ui_settings()["AIRFLOW__CORE__PARALLELISM"])
    deadline = time.monotonic() + 120  # the scheduler forks its executor's workers when it starts
    while len(_processes(ui["sessions"], "LocalExecutor")) < parallelism:
        assert time.monotonic() < deadline, _live(ui["sessions"])
        time.sleep(2)
    time.sleep(3)
    # Out of the box: 32 idle LocalExecutor workers and the MLflow job runner's 8 processes.
    assert len(_processes(ui["sessions"], "LocalExecutor")) == parallelism
    assert (
        _processes(ui["sessions"], "huey") == [] and _processes(ui["sessions"], "_job_runner") == []
    )
    assert len(_live(ui["sessions"])) <= parallelism + 14, _live(ui["sessions"])


def test_a_dag_run_links_to_its_mlflow_runs_and_unpausing_starts_no_catch_up(
    ui: dict[str, Any],
) -> None:
    base, token = ui["airflow"], ui["token"]
    deadline = time.monotonic() + 300
    while True:  # the DAG processor's first parse
        try:
            _api(base, "GET", f"/api/v2/dags/{DAG}", token)
            break
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline, "train_pipeline not parsed in 300 s"
            time.sleep(2)
    conf = {"overrides": {"data.source": "imagefolder", "data.path": MISSING_FOLDER}}
    run_id = _api(
        base, "POST", f"/api/v2/dags/{DAG}/dagRuns", token, {"logical_date": None, "conf": conf}
    )["dag_run_id"]
    # What "Unpause on trigger" does; the DAG is paused at creation.
    _api(base, "PATCH", f"/api/v2/dags/{DAG}", token, {"is_paused": False})
    run = urllib.parse.quote(run_id, safe="")
    deadline = time.monotonic() + 600
    while True:
        states = {
            ti["task_id"]: ti["state"]
            for ti in _api(base, "GET", f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances", token)[
                "task_instances"
            ]
        }
        if states.get("ingest") in ("failed", "success"):
            break
        assert states.get("start") not in ("failed", "upstream_failed"), states
        assert time.monotonic() < deadline, f"ingest did not finish in 600 s: {states}"
        time.sleep(3)
    assert states["start"] == "success" and states["ingest"] == "failed", states

    def links(task_id: str) -> dict[str, str | None]:
        path = f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances/{task_id}/links"
        return _api(base, "GET", path, token)["extra_links"]

    start, ingest, decide = links("start"), links("ingest"), links("decide")
    assert start["MLflow stage run"] is None and decide["MLflow stage run"] is None
    assert start["MLflow run"] == ingest["MLflow run"] == decide["MLflow run"]
    assert "stage=ingest" in ingest["MLflow stage run"]

    def mlflow_run(link: str) -> dict[str, Any]:
        status, headers, body = _get(f"{base}{link}")
        assert status == 307, body
        location = headers["location"]
        assert location.startswith(f"{ui['mlflow']}/#/experiments/"), location
        mlflow_run_id = location.rsplit("/", 1)[1]
        _, _, got = _get(f"{ui['mlflow']}/api/2.0/mlflow/runs/get?run_id={mlflow_run_id}")
        found = json.loads(got)["run"]
        return {
            "run_id": found["info"]["run_id"],
            "status": found["info"]["status"],
            "tags": {t["key"]: t["value"] for t in found["data"].get("tags", [])},
        }

    parent = mlflow_run(start["MLflow run"])
    assert parent["tags"]["visionops.airflow_run_id"] == run_id
    # ingest reached the run context through XCom (no edge from start): it read the run's config.
    assert parent["tags"]["visionops.failed_stage"] == "ingest"
    assert MISSING_FOLDER in parent["tags"]["visionops.error"]
    stage = mlflow_run(ingest["MLflow stage run"])
    assert stage["tags"]["visionops.stage"] == "ingest" and stage["status"] == "FAILED"
    assert stage["tags"]["mlflow.parentRunId"] == parent["run_id"]
    # The run page's tab: the plugin's page on the Airflow origin, linking to the parent run.
    plugins = _api(base, "GET", "/api/v2/plugins", token)["plugins"]
    view = next(v for p in plugins for v in p["external_views"] if v["destination"] == "dag_run")
    page_url = view["href"].replace("{DAG_ID}", DAG).replace("{RUN_ID}", run)
    status, headers, page = _get(f"{base}{page_url}")
    assert status == 200 and "x-frame-options" not in {k.lower() for k in headers}
    assert f"{ui['mlflow']}/#/experiments/" in page.decode()
    # Unpausing after a missed midnight (here: since start_date) started no scheduled run.
    time.sleep(5)
    runs = _api(base, "GET", f"/api/v2/dags/{DAG}/dagRuns", token)["dag_runs"]
    assert [r["run_type"] for r in runs] == ["manual"], runs


def test_sigterm_stops_every_process(ui: dict[str, Any]) -> None:
    proc, sessions = ui["proc"], ui["sessions"] | _sessions_of(ui["proc"].pid)
    assert len(sessions) == 2 and _live(sessions)  # airflow standalone's and mlflow server's
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, ui["log"].read_text()[-3000:]
    deadline = time.monotonic() + 10  # orphans' zombies are reaped by init
    while _live(sessions) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _live(sessions) == [], ui["log"].read_text()[-3000:]
