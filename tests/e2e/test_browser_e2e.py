"""The UIs as a user meets them, in a real browser, on one real ``visionops ui``.

Chromium (Debian's) driven by Playwright, against ``visionops ui`` (``airflow standalone`` and the
MLflow server) in a temporary home. The tests share that one stack and run in order:

1. it is sized for the machine (no 32 idle LocalExecutor workers, no MLflow job runner);
2. a person logs in to Airflow, triggers ``train_pipeline`` through its form and follows the run to
   its end (nothing queued before it: no catch-up run on unpausing), clicks through to its MLflow
   parent run (the summary, the evaluation figures, the registered version), opens the validation
   report and finds every expectation listed, and opens the model version page;
3. every task's extra links, read from the API server's links endpoint, lead to the MLflow runs;
4. the task logs as Airflow wrote them: library INFO at INFO, nothing at error, no progress bars,
   each stage's MLflow run URL;
5. SIGTERM to ``visionops ui`` leaves no process behind.

Each browser step leaves a screenshot under ``$VISIONOPS_TEST_ARTIFACTS/browser`` (default
``.visionops/test-artifacts/browser``). Skipped when Chromium or Playwright is missing, unless
``VISIONOPS_REQUIRE_BROWSER=1`` (CI: ``.ci/run`` installs Chromium), then failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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

from e2e_cli import pipeline_env
from testkit import free_port, stop_process_group

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DAG = "train_pipeline"
MODEL = "browser-digits"
USER, PASSWORD = "reviewer", "look-closely"
VIEW = "?workflowType=machine_learning"  # MLflow's model-training view, whatever the browser chose
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
PROGRESS_BAR_MARKS = ("it/s]", "%|", "\u2588", "\r")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (requirements.txt)"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (make browser)"
    return None


if (why := _missing()) is not None:
    if os.environ.get("VISIONOPS_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"VISIONOPS_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why, allow_module_level=True)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _get(url: str, token: str = "") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET, redirects not followed."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def _live(sessions: set[int]) -> list[str]:
    """The live processes of these sessions (``visionops ui`` starts each server in its own)."""
    import psutil

    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:120]}")
        except (OSError, psutil.Error):
            continue
    return left


class Stack:
    """``visionops ui`` on free ports in a test home, and the Airflow REST API with a token."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.airflow_port, self.mlflow_port = free_port(), free_port()
        self.airflow = f"http://127.0.0.1:{self.airflow_port}"
        self.mlflow = f"http://127.0.0.1:{self.mlflow_port}"
        self.token = ""
        self.server: subprocess.Popen | None = None
        self.sessions: set[int] = set()
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
        for key in [k for k in self.env if k.startswith("AIRFLOW__CORE__PARALLELISM")]:
            del self.env[key]  # the ui sizes itself; that is under test

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

    def wait_ready(self, timeout_s: float = 600) -> None:
        import psutil

        assert self.server is not None
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.server.poll() is None, self.log_tail()
            try:
                self.token = self.api(
                    "POST", "/auth/token", {"username": USER, "password": PASSWORD}
                )["access_token"]
                with urllib.request.urlopen(self.mlflow + "/health", timeout=5):
                    pass
                self.api("GET", f"/api/v2/dags/{DAG}")  # the DAG processor's first parse is done
                break
            except OSError:
                assert time.monotonic() < deadline, f"the UIs did not answer in {timeout_s} s"
                time.sleep(2)
        children = psutil.Process(self.server.pid).children(recursive=True)
        self.sessions = {os.getsid(c.pid) for c in children} - {os.getsid(self.server.pid)}

    def wait_run(self, run_id: str, timeout_s: float = 900) -> dict[str, Any]:
        quoted = urllib.parse.quote(run_id, safe="")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.api("GET", f"/api/v2/dags/{DAG}/dagRuns/{quoted}")
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
    # What scheduled and form runs train: the digits at 8 px, a short run (two short tuning trials,
    # so the tune_worker logs hold Optuna's lines); the gate is the shipped one but for the baselines,
    # which a model this short is not trained to beat.
    config = {
        "experiment": MODEL,
        "data": {"image_size": 8},
        "model": {"width": 1.0, "batch_norm": False},
        "tune": {"n_trials": 2, "epochs_per_trial": 1},
        "train": {"max_epochs": 20, "patience": 3},
        "gate": {"compare_with_baselines": False},
        "registry": {"model_name": MODEL, "smoke_test_images": 4},
    }
    (home / "browser.json").write_text(json.dumps(config))  # YAML is a superset of JSON
    stack = Stack(home)
    log = (home / "ui.log").open("w")
    stack.server = subprocess.Popen(
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
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        stack.wait_ready()
        yield stack
    finally:
        stop_process_group(stack.server)  # a test failed before the SIGTERM test: leave nothing
        for line in _live(stack.sessions):
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except OSError:
                pass
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    base = Path(os.environ.get("VISIONOPS_TEST_ARTIFACTS", REPO / ".visionops" / "test-artifacts"))
    folder = base / "browser"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def test_the_ui_is_sized_for_the_machine(stack: Stack) -> None:
    from visionops.cli.ui import ui_settings

    def processes(marker: str) -> list[str]:
        return [p for p in _live(stack.sessions) if marker in p]

    parallelism = int(ui_settings()["AIRFLOW__CORE__PARALLELISM"])
    deadline = time.monotonic() + 120  # the scheduler forks its executor's workers when it starts
    while len(processes("LocalExecutor")) < parallelism:
        assert time.monotonic() < deadline, _live(stack.sessions)
        time.sleep(2)
    # Out of the box: 32 idle LocalExecutor workers and the MLflow job runner's 8 processes.
    assert len(processes("LocalExecutor")) == parallelism
    assert processes("huey") == [] and processes("_job_runner") == []
    assert len(_live(stack.sessions)) <= parallelism + 14, _live(stack.sessions)


@pytest.fixture(scope="module")
def journey(stack: Stack, browser: Any, shots: Path) -> dict[str, Any]:
    """Log in, trigger through the form, follow the run to its end; the page stays logged in."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(90_000)
    page.goto(stack.airflow + "/", wait_until="networkidle")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.screenshot(path=shots / "01-login.png")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(stack.airflow + "/")

    page.goto(f"{stack.airflow}/dags/{DAG}", wait_until="networkidle")
    page.get_by_role("button", name="Trigger").last.click()
    form = page.get_by_role("dialog")
    form.get_by_text("Max epochs").wait_for()
    form.locator("input[name=element_max_epochs]").fill("12")
    page.screenshot(path=shots / "02-trigger-form.png")
    form.get_by_role("button", name="Trigger").click()  # "Unpause on trigger" left ticked
    page.wait_for_url(re.compile(rf".*/dags/{DAG}/runs/.+"))
    run_id = urllib.parse.unquote(page.url.rsplit("/runs/", 1)[1])
    assert run_id.startswith("manual__"), run_id
    run = stack.wait_run(run_id)
    assert run["state"] == "success", stack.log_tail()
    page.reload(wait_until="networkidle")
    page.get_by_text("Success").first.wait_for()
    page.screenshot(path=shots / "03-airflow-run.png", full_page=True)
    return {"page": page, "run_id": run_id}


def _parent_run(stack: Stack, run_id: str):  # noqa: ANN202 - an MLflow Run
    client = stack.client()
    experiment = client.get_experiment_by_name(MODEL)
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`visionops.airflow_run_id` = '{run_id}'"
    )
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


def test_the_persons_run_was_not_queued_behind_a_catch_up_run(stack: Stack, journey) -> None:
    runs = stack.api("GET", f"/api/v2/dags/{DAG}/dagRuns?order_by=id")["dag_runs"]
    assert [(r["dag_run_id"], r["run_type"]) for r in runs] == [(journey["run_id"], "manual")]


def test_one_click_leads_from_the_airflow_run_to_its_mlflow_run(
    stack: Stack, journey, shots: Path
) -> None:
    page = journey["page"]
    parent = _parent_run(stack, journey["run_id"])
    version = stack.client().get_model_version_by_alias(MODEL, "champion").version
    # The run page's "MLflow run" tab: the plugin's page on Airflow's origin, whose button opens
    # MLflow (which refuses to be framed) in a tab of its own.
    page.get_by_text("MLflow run", exact=True).click()
    frame = page.frame_locator("iframe").first
    frame.get_by_role("link", name="Open the MLflow run").wait_for()
    page.screenshot(path=shots / "04-airflow-mlflow-tab.png")
    with page.context.expect_page() as opened:
        frame.get_by_role("link", name="Open the MLflow run").click()
    mlflow = opened.value
    mlflow.set_default_timeout(90_000)
    mlflow.wait_for_url(re.compile(rf".*#/experiments/\d+/runs/{parent.info.run_id}.*"))
    # A name a person can tell apart, and the run summary as its description.
    mlflow.get_by_text(parent.info.run_name).first.wait_for()
    assert parent.info.run_name.startswith("browser · small_cnn · manual · ")
    mlflow.get_by_text("Gate: PASSED").first.wait_for()
    mlflow.get_by_role("link", name=f"{MODEL} v{version}").first.wait_for()
    mlflow.get_by_text("test accuracy").first.wait_for()
    # "Registered models" lists the version the run made.
    registered = mlflow.get_by_text("Registered models", exact=True).first
    registered.wait_for()
    mlflow.get_by_text(f"v{version}", exact=True).first.wait_for()
    mlflow.screenshot(path=shots / "05-mlflow-parent-run.png", full_page=True)
    # The evaluation figures are on the parent run, not two levels down.
    mlflow.get_by_role("tab", name="Artifacts").click()
    mlflow.get_by_text("evaluation", exact=True).first.click()
    mlflow.get_by_text("confusion_matrix.png").first.click()
    mlflow.get_by_text("evaluation/confusion_matrix.png").first.wait_for()
    mlflow.locator("img").last.wait_for()
    mlflow.screenshot(path=shots / "06-mlflow-parent-figures.png")
    journey["mlflow"] = mlflow


def test_the_validation_report_lists_every_expectation(stack: Stack, journey, shots: Path) -> None:
    client = stack.client()
    parent = _parent_run(stack, journey["run_id"])
    validate = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.mlflow.runName = 'validate'",
    )[0]
    local = client.download_artifacts(validate.info.run_id, "validation/report.json")
    expected = json.loads(Path(local).read_text())["statistics"]["evaluated_expectations"]
    page = journey.get("mlflow") or journey["page"]
    page.goto(
        f"{stack.mlflow}/#/experiments/{parent.info.experiment_id}/runs/{validate.info.run_id}"
        f"/artifacts/validation_report.html{VIEW}",
        wait_until="load",
    )
    report = page.frame_locator("iframe").first  # MLflow shows an HTML artifact in a frame
    report.get_by_text("Data validation").wait_for()
    results = report.locator("tr td.result").all_inner_texts()
    assert len(results) == expected > 5, results
    # Above the suites, the data-quality policy's table: one row per minority problem, all "ok" here.
    severities = report.locator("table.quality td.severity").all_inner_texts()
    assert severities and set(severities) == {"ok"}, severities
    assert set(results) == {"passed"}, results
    assert report.locator("tr td code").first.inner_text().startswith("expect_")
    page.screenshot(path=shots / "07-validation-report.png")


def test_the_model_version_page_shows_the_champion_and_its_card(
    stack: Stack, journey, shots: Path
) -> None:
    page = journey.get("mlflow") or journey["page"]
    version = stack.client().get_model_version_by_alias(MODEL, "champion").version
    page.goto(f"{stack.mlflow}/#/models/{MODEL}/versions/{version}{VIEW}", wait_until="load")
    page.get_by_text(re.compile(r"@\s*champion")).first.wait_for()
    page.get_by_text("Against simple baselines").first.wait_for()  # the model card
    page.get_by_text("Gate decision").first.wait_for()
    page.screenshot(path=shots / "08-model-version.png", full_page=True)


def test_every_task_links_to_its_mlflow_runs(stack: Stack, journey) -> None:
    run = urllib.parse.quote(journey["run_id"], safe="")
    parent = _parent_run(stack, journey["run_id"])

    def links(task_id: str) -> dict[str, str | None]:
        path = f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances/{task_id}/links"
        return stack.api("GET", path)["extra_links"]

    def followed(link: str) -> str:
        status, headers, body = _get(f"{stack.airflow}{link}")
        assert status == 307, body
        location = headers["location"]
        assert location.startswith(f"{stack.mlflow}/#/experiments/") and location.endswith(VIEW)
        return location.removesuffix(VIEW).rsplit("/", 1)[1]

    start, train, decide = links("start"), links("train"), links("decide")
    assert start["MLflow stage run"] is None and decide["MLflow stage run"] is None
    assert start["MLflow run"] == train["MLflow run"] == decide["MLflow run"]
    assert followed(start["MLflow run"]) == parent.info.run_id
    stage = stack.client().get_run(followed(train["MLflow stage run"]))
    assert stage.data.tags["visionops.stage"] == "train"
    assert stage.data.tags["mlflow.parentRunId"] == parent.info.run_id


def _task_logs(stack: Stack, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every task's log as Airflow wrote it (JSON lines), first attempts."""
    folder = stack.home / "airflow" / "logs" / f"dag_id={DAG}" / f"run_id={run_id}"
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("task_id=*/**/attempt=1.log")):
        task_id = path.relative_to(folder).parts[0].removeprefix("task_id=")
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        logs.setdefault(task_id, []).extend(lines)
    return logs


def _show(lines: list[tuple[str, dict[str, Any]]]) -> str:
    return "\n".join(
        f"{task}: {line['level']} {line.get('logger')}: {line['event']!r:.300}"
        for task, line in lines
    )


def test_task_logs_speak_at_the_right_level_and_name_their_mlflow_runs(
    stack: Stack, journey
) -> None:
    logs = _task_logs(stack, journey["run_id"])
    assert {"start", "tune_plan", "tune_worker", "tune", "train", "finish"} <= set(logs)
    everything = [(task, line) for task, lines in logs.items() for line in lines]
    # A successful run has nothing to report as an error: whatever a task writes to stderr the task
    # runner logs at level error, and MLflow's and Optuna's own handlers wrote their INFO there.
    errors = [(t, line) for t, line in everything if line["level"] in ("error", "critical")]
    assert not errors, _show(errors)
    assert not [(t, line) for t, line in everything if line.get("logger") == "task.stderr"]
    bars = [
        (t, line)
        for t, line in everything
        if any(mark in str(line["event"]) for mark in PROGRESS_BAR_MARKS)
    ]
    assert not bars, _show(bars)
    # The libraries still speak, at their own level, under their own logger names.
    mlflow_train = [line for line in logs["train"] if str(line.get("logger")).startswith("mlflow")]
    assert any(line["level"] == "info" for line in mlflow_train), _show(
        [("train", x) for x in logs["train"]]
    )
    assert any(
        str(line.get("logger")).startswith("optuna")
        and line["level"] == "info"
        and "finished" in str(line["event"])
        for line in logs["tune_worker"]
    ), _show([("tune_worker", x) for x in logs["tune_worker"]])

    parent = _parent_run(stack, journey["run_id"])
    exp = parent.info.experiment_id
    (train,) = stack.client().search_runs(
        [exp],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`visionops.stage` = 'train'",
    )

    def urls(task: str) -> list[str]:
        return [
            str(line["event"])
            for line in logs[task]
            if str(line["event"]).startswith("MLflow run: ") and line["level"] == "info"
        ]

    ui = stack.mlflow
    assert urls("start") == [
        f"MLflow run: {ui}/#/experiments/{exp}/runs/{parent.info.run_id}{VIEW}"
    ]
    assert urls("train") == [f"MLflow run: {ui}/#/experiments/{exp}/runs/{train.info.run_id}{VIEW}"]
    for task in ("ingest", "validate", "preprocess", "evaluate", "gate", "register"):
        assert len(urls(task)) == 1, task


def test_sigterm_stops_every_process(stack: Stack) -> None:
    assert stack.server is not None
    assert len(stack.sessions) == 2 and _live(stack.sessions)  # airflow standalone's, mlflow's
    stack.server.send_signal(signal.SIGTERM)
    assert stack.server.wait(timeout=120) == 0, stack.log_tail()
    deadline = time.monotonic() + 10  # orphans' zombies are reaped by init
    while _live(stack.sessions) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _live(stack.sessions) == [], stack.log_tail()
