"""The UIs as a user meets them, in a real browser: Chromium (Debian's) driven by Playwright.

``visionops ui`` runs Airflow (standalone) and the MLflow UI in a temporary home. A person logs in to
Airflow, triggers ``train_pipeline`` through its form, follows the run to its end, clicks through
to its MLflow parent run (summary, evaluation figures, the registered version), opens the
validation report and finds every expectation, and opens the model version page. Each step leaves
a screenshot under ``$VISIONOPS_TEST_ARTIFACTS/browser`` (default ``.visionops/test-artifacts``).

Skipped when Chromium or Playwright is missing, unless ``VISIONOPS_REQUIRE_BROWSER=1`` (CI: ``.ci/run``
installs Chromium), then failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_cli import pipeline_env
from testkit import free_port, stop_process_group

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MODEL = "browser-digits"
USER, PASSWORD = "reviewer", "look-closely"
# What a person passes to Chromium on this kind of machine: no sandbox as root, and none of the
# background connections a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (requirements.txt)"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


if (why := _missing()) is not None:
    if os.environ.get("VISIONOPS_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"VISIONOPS_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why, allow_module_level=True)


def _shots() -> Path:
    base = Path(os.environ.get("VISIONOPS_TEST_ARTIFACTS", REPO / ".visionops" / "test-artifacts"))
    folder = base / "browser"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


class Stack:
    """``visionops ui`` on free ports in a test home, and the Airflow REST API with a token."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.airflow_port, self.mlflow_port = free_port(), free_port()
        self.airflow = f"http://127.0.0.1:{self.airflow_port}"
        self.mlflow = f"http://127.0.0.1:{self.mlflow_port}"
        self.token = ""
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({USER: PASSWORD}))
        self.env = {
            **pipeline_env(home),
            "VISIONOPS_CONFIG": str(home / "browser.json"),
            # tests/conftest.py turns Airflow's unit-test mode on for in-process tests; a real
            # stack must not run in it (each process would sign its tokens with its own key).
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        }

    def api(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.airflow + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())

    def log_tail(self) -> str:
        return (self.home / "ui.log").read_text()[-4000:]

    def wait_ready(self, server: subprocess.Popen, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert server.poll() is None, self.log_tail()
            try:
                self.token = self.api(
                    "POST", "/auth/token", {"username": USER, "password": PASSWORD}
                )["access_token"]
                with urllib.request.urlopen(self.mlflow + "/health", timeout=5):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"the UIs did not answer in {timeout_s} s"
                time.sleep(2)

    def wait_run(self, run_id: str, timeout_s: float = 600) -> dict[str, Any]:
        quoted = urllib.parse.quote(run_id, safe="")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.api("GET", f"/api/v2/dags/train_pipeline/dagRuns/{quoted}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        raise AssertionError(f"run {run_id} did not finish in {timeout_s} s")

    def client(self):  # noqa: ANN201 - an MlflowClient on the stack's store
        from mlflow.tracking import MlflowClient

        uri = f"sqlite:///{self.home / 'mlflow.db'}"
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("browser")
    config = {
        "experiment": MODEL,
        "data": {"image_size": 8},
        "model": {"width": 1.0, "batch_norm": False},
        "tune": {"n_trials": 2, "epochs_per_trial": 1},
        "train": {"max_epochs": 20, "patience": 3},
        "gate": {"min_gain_over_baseline": None},
        "registry": {"model_name": MODEL, "smoke_test_images": 4},
    }
    (home / "browser.json").write_text(json.dumps(config))  # YAML is a superset of JSON
    stack = Stack(home)
    log = (home / "ui.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "visionops"),
            "ui",
            "--airflow-port",
            str(stack.airflow_port),
            "--mlflow-port",
            str(stack.mlflow_port),
        ],
        env=stack.env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        stack.wait_ready(server)
        yield stack
    finally:
        stop_process_group(server)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def journey(stack: Stack, browser: Any) -> dict[str, Any]:
    """Log in, trigger through the form, follow the run to its end; the page stays logged in."""
    shots = _shots()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(90_000)
    page.goto(stack.airflow + "/", wait_until="networkidle")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.screenshot(path=shots / "01-login.png")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(stack.airflow + "/")

    page.goto(stack.airflow + "/dags/train_pipeline", wait_until="networkidle")
    page.get_by_role("button", name="Trigger").last.click()
    form = page.get_by_role("dialog")
    form.get_by_text("Max epochs").wait_for()
    form.locator("input[name=element_max_epochs]").fill("12")
    page.screenshot(path=shots / "02-trigger-form.png")
    form.get_by_role("button", name="Trigger").click()
    page.wait_for_url(re.compile(r".*/dags/train_pipeline/runs/.+"))
    run_id = urllib.parse.unquote(page.url.rsplit("/runs/", 1)[1])
    assert run_id.startswith("manual__"), run_id
    run = stack.wait_run(run_id)
    assert run["state"] == "success", stack.log_tail()
    # The person's run was the only one: no catch-up run queued before it.
    runs = stack.api("GET", "/api/v2/dags/train_pipeline/dagRuns?order_by=id")["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run_id], runs
    page.reload(wait_until="networkidle")
    page.get_by_text("Success").first.wait_for()
    page.screenshot(path=shots / "03-run.png", full_page=True)
    return {"page": page, "run_id": run_id, "shots": shots}


def _parent_run(stack: Stack, run_id: str):  # noqa: ANN202 - an MLflow Run
    client = stack.client()
    experiment = client.get_experiment_by_name(MODEL)
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`visionops.airflow_run_id` = '{run_id}'"
    )
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


def test_a_person_triggers_a_run_and_follows_it_to_mlflow(stack: Stack, journey) -> None:
    page, shots = journey["page"], journey["shots"]
    parent = _parent_run(stack, journey["run_id"])
    version = stack.client().get_model_version_by_alias(MODEL, "champion")

    # One click from the Airflow run to its MLflow parent run.
    with page.context.expect_page() as opened:
        page.get_by_role("link", name=re.compile("MLflow run")).first.click()
    mlflow_page = opened.value
    mlflow_page.wait_for_url(re.compile(rf".*#/experiments/\d+/runs/{parent.info.run_id}.*"))
    mlflow_page.get_by_text(parent.info.run_name).first.wait_for()
    # The description is the run summary: the gate's decision and the version it made.
    mlflow_page.get_by_text(re.compile(r"gate\W+passed", re.I)).first.wait_for()
    mlflow_page.get_by_text(re.compile(rf"version {version.version}")).first.wait_for()
    mlflow_page.screenshot(path=shots / "04-mlflow-parent-run.png", full_page=True)


def test_the_validation_report_lists_every_expectation(stack: Stack, journey) -> None:
    page, shots = journey["page"], journey["shots"]
    client = stack.client()
    parent = _parent_run(stack, journey["run_id"])
    validate = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.mlflow.runName = 'validate'",
    )[0]
    local = client.download_artifacts(validate.info.run_id, "validation/report.json")
    expected = json.loads(Path(local).read_text())["statistics"]["evaluated_expectations"]
    query = urllib.parse.urlencode(
        {"path": "validation_report.html", "run_uuid": validate.info.run_id}
    )
    page.goto(f"{stack.mlflow}/get-artifact?{query}", wait_until="load")
    results = page.locator("tr td.result").all_inner_texts()
    assert len(results) == expected > 10, page.content()[:3000]
    assert set(results) == {"passed"}, results
    assert page.locator("tr td code").first.inner_text().startswith("expect_")
    page.screenshot(path=shots / "05-validation-report.png", full_page=True)


def test_the_model_version_page_shows_the_champion(stack: Stack, journey) -> None:
    page, shots = journey["page"], journey["shots"]
    version = stack.client().get_model_version_by_alias(MODEL, "champion")
    page.goto(f"{stack.mlflow}/#/models/{MODEL}/versions/{version.version}", wait_until="load")
    page.get_by_text("champion").first.wait_for()
    page.get_by_text(re.compile("accuracy", re.I)).first.wait_for()
    page.screenshot(path=shots / "06-model-version.png", full_page=True)
