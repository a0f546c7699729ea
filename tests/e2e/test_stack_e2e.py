"""The multi-service stack (``visionops stack up``, ``make stack``) running for real, and the faults it survives.

One stack serves the module: PostgreSQL databases of its own on the local server, Redis, the MLflow
server with its login, the Airflow API server, scheduler, DAG processor and triggerer, and two Celery
workers under host names of their own. Runs are triggered through the REST API with a token, as the
README shows. In order:

1. refusals: the Airflow API and MLflow without credentials (401), MLflow's read-only user writing (403);
2. a CPU run: tuning tasks on both workers, the scheduler restarted while it tunes, champion promoted;
3. a run asking for a GPU (``train.device: auto``): train, tune and evaluate on the ``gpu`` queue
   and pool, on the gpu worker (on CPU here); the MLflow server stopped for 20 s while it trains: one
   parent run, one registered version;
4. the worker running ``train`` killed (SIGKILL, the whole process group): the retry runs on the other
   worker and resumes from the epoch checkpoint in the same MLflow run, one model logged;
5. two runs of one model waiting for approval, approved at the same moment: both promote tasks run
   at once on the two workers, and the better model ends as champion.

Teardown brings the stack down and checks that no process of it is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
DAG = "train_pipeline"
# Small and quick: the mechanics are under test here, not the model.
SMALL = {"model.width": 1, "model.batch_norm": False, "gate.min_gain_over_baseline": None}
GATE = {"gate.min_accuracy": 0.5, "gate.min_macro_f1": 0.5}
MODEL = "visionops-digits"


def _have_services() -> str | None:
    import socket

    for port, name in ((5432, "PostgreSQL"), (6379, "Redis")):
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return f"no {name} on 127.0.0.1:{port}"
    return None


class Api:
    """The Airflow REST API with a token from ``/auth/token`` (the documented way)."""

    def __init__(self, base: str, user: str, password: str) -> None:
        self.base = base
        body = json.dumps({"username": user, "password": password}).encode()
        req = urllib.request.Request(
            f"{base}/auth/token", body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as response:
            self.token = json.load(response)["access_token"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        req = urllib.request.Request(f"{self.base}{path}", data, headers, method=method)
        with urllib.request.urlopen(req, timeout=60) as response:
            return json.load(response)

    def trigger(self, overrides: dict[str, Any], **params: Any) -> str:
        conf = {"overrides": {**SMALL, **overrides}, **params}
        run = self.call("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def tasks(self, run_id: str) -> list[dict[str, Any]]:
        rid = urllib.parse.quote(run_id, safe="")
        return self.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{rid}/taskInstances?limit=100")[
            "task_instances"
        ]

    def tries(self, run_id: str, task_id: str) -> list[dict[str, Any]]:
        rid = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{DAG}/dagRuns/{rid}/taskInstances/{task_id}/tries"
        return self.call("GET", path)["task_instances"]

    def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        return next(t for t in self.tasks(run_id) if t["task_id"] == task_id)

    def wait(self, run_id: str, timeout_s: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        states = {t["task_id"]: t["state"] for t in self.tasks(run_id)}
        raise AssertionError(f"run {run_id} not finished after {timeout_s} s: {states}")

    def wait_task(self, run_id: str, task_id: str, states: set[str], timeout_s: float = 400):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [t for t in self.tasks(run_id) if t["task_id"] == task_id]
            if found and all(t["state"] in states for t in found):
                return found
            if self.run(run_id)["state"] == "failed":
                raise AssertionError(f"run {run_id} failed while waiting for {task_id}")
            time.sleep(1)
        raise AssertionError(f"{task_id} of {run_id} not {states} after {timeout_s} s")


def _stack(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "visionops"), "stack", *args, "--home", str(home)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done


def _env_values(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and line[0] != "#"
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict[str, Any]]:
    if (why := _have_services()) is not None:
        if os.environ.get("VISIONOPS_REQUIRE_POSTGRES"):
            pytest.fail(f"the stack tests need the local services: {why}")
        pytest.skip(why)
    home = tmp_path_factory.mktemp("stack")
    env_file = home / ".env"
    prefix = f"vstest{os.getpid()}_"
    airflow_port, mlflow_port = free_port(), free_port()
    os.environ["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = "20"
    up = [
        "up", "--env-file", str(env_file), "--airflow-port", str(airflow_port),
        "--mlflow-port", str(mlflow_port), "--db-prefix", prefix, "--redis-db", "9",
    ]  # fmt: skip
    try:
        started = _stack(home / "stack", *up)
    finally:
        os.environ.pop("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", None)
    assert "visionops stack: ready" in started.stdout
    secrets = _env_values(env_file)
    state = json.loads((home / "stack" / "stack.json").read_text())
    api = Api(f"http://127.0.0.1:{airflow_port}", "admin", secrets["AIRFLOW_ADMIN_PASSWORD"])
    api.call("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
    info = {
        "home": home / "stack",
        "api": api,
        "mlflow": f"http://127.0.0.1:{mlflow_port}",
        "secrets": secrets,
        "hosts": state["info"]["worker_hosts"],
        "pids": [s["pid"] for s in state["services"].values()],
        "stdout": started.stdout,
    }
    try:
        yield info
    finally:
        pids = [
            s["pid"]
            for s in json.loads((home / "stack" / "stack.json").read_text())["services"].values()
        ]
        _stack(home / "stack", "down", "--grace", "20", check=False)
        from visionops.cli.ui import session_processes

        left = session_processes(set(pids))
        drop = [
            f"DROP DATABASE IF EXISTS {prefix}{d} WITH (FORCE);"
            for d in ("airflow", "mlflow", "mlflow_auth", "optuna")
        ]
        drop += [f"DROP ROLE IF EXISTS {prefix}{r};" for r in ("airflow", "mlflow", "optuna")]
        for sql in drop:
            subprocess.run(
                ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", sql], capture_output=True
            )
        subprocess.run(["redis-cli", "-n", "9", "FLUSHDB"], capture_output=True)
        assert not left, f"processes of the stack left after `stack down`: {left}"


def _mlflow(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202
    """An MlflowClient of the pipeline's service account against the stack's server."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "visionops")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack["secrets"]["MLFLOW_SERVICE_PASSWORD"])
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return MlflowClient(tracking_uri=stack["mlflow"], registry_uri=stack["mlflow"])


def _status(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> int:
    req = urllib.request.Request(url, data, headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_stack_refuses_who_should_not_get_in(stack: dict[str, Any]) -> None:
    import base64

    api = stack["api"]
    assert _status(f"{api.base}/api/v2/dags") == 401
    assert (
        _status(
            f"{api.base}/api/v2/dags/{DAG}/dagRuns", {"Content-Type": "application/json"}, b"{}"
        )
        == 401
    )
    bad = {"Authorization": "Bearer not-a-token"}
    assert _status(f"{api.base}/api/v2/dags", bad) in (401, 403)  # FAB answers a forged token 403
    assert _status(f"{stack['mlflow']}/api/2.0/mlflow/experiments/search?max_results=1") == 401
    viewer = base64.b64encode(
        f"viewer:{stack['secrets']['MLFLOW_READER_PASSWORD']}".encode()
    ).decode()
    auth = {"Authorization": f"Basic {viewer}", "Content-Type": "application/json"}
    assert (
        _status(f"{stack['mlflow']}/api/2.0/mlflow/experiments/search?max_results=1", auth) == 200
    )
    write = json.dumps({"name": "visionops-digits", "alias": "champion", "version": "1"}).encode()
    assert _status(f"{stack['mlflow']}/api/2.0/mlflow/registered-models/alias", auth, write) in (
        403,
        405,
    )
    assert (
        "visionops-default-worker" in stack["stdout"] and "visionops-gpu-worker" in stack["stdout"]
    )


def _parents(client, run_id: str) -> list:  # noqa: ANN001
    """The MLflow parent runs (no parentRunId) tagged with this Airflow run."""
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, f"tags.`visionops.airflow_run_id` = '{run_id}'")
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def test_cpu_run_spreads_tuning_over_both_workers_and_survives_a_scheduler_restart(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = stack["api"]
    run_id = api.trigger(
        {
            "train.device": "cpu",
            "tune.workers": 2,
            "tune.n_trials": 4,
            "train.max_epochs": 3,
            **GATE,
        }
    )
    api.wait_task(run_id, "tune_worker", {"running", "success"})
    _stack(stack["home"], "restart", "airflow-scheduler")
    run = api.wait(run_id)
    tasks = api.tasks(run_id)
    assert run["state"] == "success", {t["task_id"]: t["state"] for t in tasks}
    tuners = [t for t in tasks if t["task_id"] == "tune_worker"]
    assert {t["hostname"] for t in tuners} == set(stack["hosts"].values()), tuners
    assert all(t["queue"] == "default" for t in tasks if t["state"] == "success")
    client = _mlflow(stack, monkeypatch)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["visionops.airflow_run_id"] == run_id
    assert len(_parents(client, run_id)) == 1


def test_gpu_run_is_routed_to_the_gpu_worker_and_outlives_an_mlflow_outage(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from visionops.cli.stack_proc import StackState, start_service, stop_service

    api = stack["api"]
    run_id = api.trigger(
        {"train.device": "auto", "tune.n_trials": 0, "train.max_epochs": 6, **GATE}, force=True
    )
    api.wait_task(run_id, "train", {"running"})
    state = StackState(stack["home"])
    server = state.services["mlflow"]
    stop_service(state, "mlflow", grace_s=5)
    time.sleep(20)
    start_service(state, "mlflow", server.command, server.env, Path(server.cwd))
    run = api.wait(run_id)
    tasks = {t["task_id"]: t for t in api.tasks(run_id)}
    assert run["state"] == "success", {k: t["state"] for k, t in tasks.items()}
    gpu_host = stack["hosts"]["airflow-worker-gpu"]
    for name in ("train", "evaluate"):
        t = tasks[name]
        assert (t["queue"], t["pool"], t["hostname"]) == ("gpu", "gpu", gpu_host), (name, t)
    assert (tasks["ingest"]["queue"], tasks["ingest"]["pool"]) == ("default", "default_pool")
    client = _mlflow(stack, monkeypatch)
    mine = [
        v
        for v in client.search_model_versions(f"name = '{MODEL}'")
        if v.tags.get("visionops.airflow_run_id") == run_id
    ]
    assert len(mine) == 1, [v.version for v in mine]
    assert len(_parents(client, run_id)) == 1


def test_worker_killed_during_train_is_retried_on_the_other_and_resumes(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from visionops.cli.stack_proc import StackState, start_service, stop_service

    api = stack["api"]
    overrides = {"train.device": "cpu", "tune.n_trials": 0, "train.max_epochs": 12}
    overrides |= {"train.patience": 12, "model.width": 2, **GATE}
    run_id = api.trigger(overrides, force=True)
    (train,) = api.wait_task(run_id, "train", {"running"})
    key = "".join(c if c.isalnum() or c in "_.-" else "_" for c in run_id).strip("._")
    checkpoints = stack["home"] / "data" / "runs" / key / "train-checkpoint"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("*.pt")):
        assert time.monotonic() < deadline, f"no checkpoint in {checkpoints}"
        time.sleep(0.3)
    victim = next(s for s, h in stack["hosts"].items() if h == train["hostname"])
    state = StackState(stack["home"])
    worker = state.services[victim]
    stop_service(state, victim, kill=True)  # the host is gone: no warm shutdown
    try:
        run = api.wait(run_id, timeout_s=600)
    finally:
        start_service(state, victim, worker.command, worker.env, Path(worker.cwd))
    tries = api.tries(run_id, "train")
    assert run["state"] == "success", tries
    assert tries[-1]["state"] == "success" and tries[-1]["hostname"] != train["hostname"], tries
    client = _mlflow(stack, monkeypatch)
    (parent,) = _parents(client, run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    trains = [r for r in children if r.data.tags.get("visionops.stage") == "train"]
    assert len(trains) == 1 and trains[0].info.status == "FINISHED", trains
    resumed = trains[0].data.tags.get("visionops.resumed_after_epoch")
    assert resumed is not None and int(resumed) >= 1
    steps = [m.step for m in client.get_metric_history(trains[0].info.run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, len(steps) + 1)), steps
    models = client.search_logged_models(
        [parent.info.experiment_id], filter_string=f"source_run_id = '{trains[0].info.run_id}'"
    )
    assert len([m for m in models if m.name == "model"]) == 1


def test_two_promotions_at_once_end_with_the_better_model(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = stack["api"]
    race = {"registry.model_name": "visionops-race", "gate.require_approval": True}
    race |= {"train.device": "cpu", "tune.n_trials": 0}
    race |= {"gate.min_accuracy": 0.2, "gate.min_macro_f1": 0.1}  # the worse one must pass too
    worse = api.trigger({**race, "train.max_epochs": 2}, force=True)
    better = api.trigger({**race, "train.max_epochs": 8}, force=True)
    for run_id in (worse, better):
        api.wait_task(run_id, "approve", {"deferred", "awaiting_input"}, timeout_s=600)

    def approve(run_id: str) -> None:
        rid = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{DAG}/dagRuns/{rid}/taskInstances/approve/-1/hitlDetails"
        api.call("PATCH", path, {"chosen_options": ["Approve"], "params_input": {}})

    answers = [threading.Thread(target=approve, args=(r,)) for r in (worse, better)]
    for t in answers:
        t.start()
    for t in answers:
        t.join()
    runs = {r: api.wait(r) for r in (worse, better)}
    promotes = {r: api.task(r, "promote") for r in runs}
    assert all(p["state"] in ("success", "failed") for p in promotes.values()), promotes
    client = _mlflow(stack, monkeypatch)
    versions = {
        v.tags["visionops.airflow_run_id"]: v
        for v in client.search_model_versions("name = 'visionops-race'")
    }
    champion = client.get_model_version_by_alias("visionops-race", "champion")
    accuracy = {r: float(versions[r].tags["visionops.accuracy"]) for r in runs}
    assert accuracy[better] > accuracy[worse], accuracy
    assert champion.version == versions[better].version, (champion.version, accuracy)
    # Both promote tasks overlapped in time, on the two workers.
    hosts = {promotes[r]["hostname"] for r in runs if promotes[r]["hostname"]}
    assert len(hosts) == 2, promotes
