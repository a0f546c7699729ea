"""Continuous training under a running scheduler (``airflow standalone``): the loop closes by itself.

1. A scheduled ``train_pipeline`` run on the champion's data, config and code ends "nothing changed"
   and registers nothing.
2. Photos added with ``visionops data add`` are noticed by ``watch_sources``, whose source asset
   event starts ``train_pipeline`` (trigger ``new_data``) without anyone triggering it.
3. ``batch_predict`` on held-out digits like the reference: ``monitor`` finds no drift, emits
   nothing. On inverted digits: ``monitor`` emits the drift event, which starts ``train_pipeline``
   (trigger ``drift``).
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

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from e2e_cli import pipeline_command, pipeline_env
from testkit import free_port, stop_process_group

pytestmark = pytest.mark.e2e

MODEL = "e2e-ct"
USER, PASSWORD = "operator", "watch-me"
PER_CLASS = 40  # images per digit in the source at first


def _digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return np.clip(np.rint(d.images * 255 / 16), 0, 255).astype(np.uint8), d.target


def _write(images: np.ndarray, labels: np.ndarray | None, folder: Path) -> Path:
    for i, img in enumerate(images):
        sub = folder / str(labels[i]) if labels is not None else folder
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(sub / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("e2e-ct")
    images, labels = _digits()
    # Drawn at random: the set is ordered by writer, and another writer's digits are a real shift.
    order = np.random.default_rng(0).permutation(len(labels))
    first = np.concatenate([order[labels[order] == k][:PER_CLASS] for k in range(10)])
    rest = order[~np.isin(order, first)]
    _write(images[first], labels[first], home / "source")
    added = rest[labels[rest] == 3][:12]  # photos a person adds later
    _write(images[added], None, home / "new_threes")
    held_out = rest[~np.isin(rest, added)][:200]
    _write(images[held_out], None, home / "held_out")
    _write(255 - images[held_out], None, home / "inverted")
    config = {
        "experiment": MODEL,
        "data": {"source": "imagefolder", "path": str(home / "source"), "image_size": 8},
        "tune": {"n_trials": 0},
        "train": {"max_epochs": 15},
        "gate": {
            "min_accuracy": 0.0,
            "min_macro_f1": 0.0,
            "max_regression": 1.0,
            "max_class_regression": None,
            "compare_with_baselines": False,
        },
        "registry": {"model_name": MODEL, "smoke_test_images": 4},
    }
    (home / "ct.json").write_text(json.dumps(config))  # YAML is a superset of JSON
    return home


def _env(home: Path, port: int) -> dict[str, str]:
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    return {
        **pipeline_env(home),
        "VISIONOPS_CONFIG": str(home / "ct.json"),  # what scheduled runs train
        # The latest midnight, however long ago today, still runs when the scheduler starts: the
        # schedule's path without waiting for midnight (by default a missed midnight does not run).
        "VISIONOPS_SCHEDULE_GRACE_MIN": "1440",
        "VISIONOPS_WATCH_CONFIGS": str(home / "ct.json"),
        "VISIONOPS_WATCH_INTERVAL_S": "10",
        # tests/conftest.py turns Airflow's unit-test mode on for the in-process tests; a real
        # stack must not run in it (each process would sign its tokens with its own random key).
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__PARALLELISM": "4",
    }


def _visionops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "visionops"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


class Api:
    def __init__(self, base: str) -> None:
        self.base, self.token = base, ""

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=id&limit=100")["dag_runs"]

    def wait_run(self, dag_id: str, seen: int, timeout: float, home: Path) -> dict[str, Any]:
        """The first finished run of ``dag_id`` after the first ``seen`` ones."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)[seen:]
            if runs and runs[0]["state"] in ("success", "failed"):
                assert runs[0]["state"] == "success", (runs[0], _tail(home))
                return runs[0]
            time.sleep(3)
        raise AssertionError(f"no finished {dag_id} run in {timeout} s: {self.runs(dag_id)}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        quoted = urllib.parse.quote(run_id, safe="")
        tis = self("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")
        return {t["task_id"]: t["state"] for t in tis["task_instances"]}


def _tail(home: Path) -> str:
    return (home / "standalone.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def stack(home: Path) -> Iterator[tuple[Api, dict[str, str]]]:
    """The champion trained once (``visionops pipeline run``), then Airflow running on its own."""
    port = free_port()
    env = _env(home, port)
    cmd, summary = pipeline_command(home, "--config", str(home / "ct.json"))
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert json.loads(summary.read_text())["champion_version"] == "1"
    # The watcher's first look records the source (a first look is not a change).
    watched = _visionops(env, "data", "watch", "--config", str(home / "ct.json"))
    assert "first look" in watched.stdout, watched.stdout + watched.stderr
    log = (home / "standalone.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = Api(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, _tail(home)
            try:
                api.token = api("POST", "/auth/token", {"username": USER, "password": PASSWORD})[
                    "access_token"
                ]
                break
            except OSError:
                assert time.monotonic() < deadline, "airflow did not answer in 240 s"
                time.sleep(2)
        yield api, env
    finally:
        stop_process_group(server)
        log.close()


def _client(home: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _parent(home: Path, airflow_run_id: str):
    """The MLflow parent run of an Airflow run (its stage runs carry the same run id)."""
    runs = _client(home).search_runs(
        [_client(home).get_experiment_by_name(MODEL).experiment_id],
        f"tags.`visionops.airflow_run_id` = '{airflow_run_id}'",
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents[0] if parents else None


def test_the_loop_closes_by_itself(stack, home: Path) -> None:
    api, env = stack
    client = _client(home)

    # 1. The scheduler's daily run (the slot it catches up on start) finds nothing changed.
    scheduled = api.wait_run("train_pipeline", 1, 300, home)  # run 0: the CLI's champion run
    assert scheduled["run_type"] == "scheduled"
    parent = _parent(home, scheduled["dag_run_id"])
    assert parent.data.tags["visionops.trigger"] == "schedule"
    assert parent.data.tags["visionops.unchanged_since"] == "1"
    states = api.task_states("train_pipeline", scheduled["dag_run_id"])
    assert states["unchanged"] == "success" and states["train"] == "skipped"
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1

    # 2. New photos land; the watcher notices; the source's asset event starts a training run.
    added = _visionops(
        env,
        "data",
        "add",
        "--config",
        str(home / "ct.json"),
        "--label",
        "3",
        str(home / "new_threes"),
    )
    assert added.returncode == 0, added.stdout + added.stderr
    new_data = api.wait_run("train_pipeline", 2, 420, home)
    assert new_data["run_type"] == "asset_triggered"
    parent = _parent(home, new_data["dag_run_id"])
    assert parent.data.tags["visionops.trigger"] == "new_data"
    detail = json.loads(parent.data.tags["visionops.trigger_detail"])
    assert detail["added"] == 12 and detail["asset"] == "visionops://source/ct"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"

    # 3. Served batches: held-out digits do not alarm; inverted digits do, and training starts.
    for folder, drifted in (("held_out", False), ("inverted", True)):
        seen = len(api.runs("monitor"))
        api(
            "POST",
            "/api/v2/dags/batch_predict/dagRuns",
            {"logical_date": None, "conf": {"model_name": MODEL, "input_dir": str(home / folder)}},
        )
        monitored = api.wait_run("monitor", seen, 300, home)
        states = api.task_states("monitor", monitored["dag_run_id"])
        assert states["check"] == "success"
        assert states["drift"] == ("success" if drifted else "skipped"), folder
    version = client.get_model_version(MODEL, "2")
    assert version.tags["visionops.drift"] == "true" and version.tags["visionops.drift_report_run"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = [r for r in api.runs("train_pipeline")[3:] if r["run_type"] == "asset_triggered"]
        parent = _parent(home, runs[0]["dag_run_id"]) if runs else None
        # The start task tags the parent run as it opens it and logs its params just after: read
        # it once both are there (read between the two, the params were missing).
        if parent is not None and "require_approval" in parent.data.params:
            break
        time.sleep(3)
    assert parent is not None, "the drift event started no train_pipeline run"
    assert parent.data.tags["visionops.trigger"] == "drift"
    assert parent.data.params["require_approval"] == "True"  # a person decides
    events = api("GET", "/api/v2/assets/events?order_by=-timestamp&limit=50")["asset_events"]
    drift_events = [e for e in events if e["uri"].startswith("visionops://drift")]
    assert len(drift_events) == 1 and drift_events[0]["extra"]["model_version"] == "2"
