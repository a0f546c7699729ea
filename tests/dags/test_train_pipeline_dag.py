"""The DAG folder parses cleanly, does no heavy work at parse time, and has the expected shape."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pandas", "mlflow", "great_expectations", "optuna", "sklearn", "numpy")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["train_pipeline"]


def test_dag_folder_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "train_pipeline" in dagbag.dag_ids


@pytest.mark.integration  # each DAG file parsed in a fresh interpreter (subprocess)
@pytest.mark.parametrize("dag_file", sorted(p.name for p in (REPO / "dags").glob("*.py")))
def test_parsing_imports_nothing_heavy(dag_file, tmp_path):
    code = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(REPO / 'plugins')!r})\n"  # as Airflow does for its plugins folder
        f"runpy.run_path({str(REPO / 'dags' / dag_file)!r})\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('loaded=' + ','.join(loaded))\n"
    )
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "loaded=", (
        f"{dag_file} imports at parse time: {out.stdout}"
    )


def test_task_graph_is_the_expected_chain(dag):
    expected = {
        # start opens the run; its context reaches the tasks through XCom (run_context()), not edges.
        "start": {"ingest_plan"},
        # ingest mapped over chunks of the source's files, merged into one manifest by `ingest`
        "ingest_plan": {"ingest_chunk"},
        "ingest_chunk": {"ingest"},
        "ingest": {"check_changes", "validate", "preprocess"},
        # Nothing changed since the champion: `unchanged`, and everything from validate on is skipped.
        "check_changes": {"after_check", "unchanged"},
        "after_check": {"validate", "unchanged"},
        "unchanged": {"finish"},
        "validate": {"preprocess"},
        "preprocess": {"tune_plan", "tune_worker", "train", "evaluate"},
        "tune_plan": {"tune_worker"},
        "tune_worker": {"tune"},  # mapped: tune.workers instances sharing one Optuna study
        "tune": {"train"},
        "train": {"evaluate", "register"},
        "evaluate": {"gate", "register", "promote"},
        "gate": {"register", "decide", "reject"},
        "register": {"decide", "promote", "reject"},
        "decide": {"promote", "approve", "reject"},
        "approve": {"promote"},  # HITL: a person approves first when gate.require_approval is set
        "promote": {"finish"},
        "reject": {"finish"},
        "finish": set(),
    }
    assert set(dag.task_ids) == set(expected)
    for task_id, downstream in expected.items():
        assert dag.get_task(task_id).downstream_task_ids == downstream, task_id
    order = [
        "start",
        "ingest_plan",
        "ingest_chunk",
        "ingest",
        "check_changes",
        "after_check",
        "validate",
        "preprocess",
        "tune_plan",
        "tune_worker",
        "tune",
        "train",
        "evaluate",
        "gate",
        "register",
        "decide",
    ]
    for earlier, later in zip(order, order[1:]):
        assert later in dag.get_task(earlier).get_flat_relative_ids(upstream=False), (
            earlier,
            later,
        )


def test_start_is_upstream_only_of_what_directly_follows_it(dag):
    """The run context reaches every task from start's XCom (visionops_tasks.run_context), so the graph
    view draws the pipeline's flow instead of an edge from start to every task."""
    assert dag.get_task("start").downstream_task_ids == {"ingest_plan"}
    assert [t.task_id for t in dag.tasks if "start" in t.upstream_task_ids] == ["ingest_plan"]
    source = (REPO / "dags" / "train_pipeline.py").read_text()
    tree = ast.parse(source)
    bodies = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name not in ("train_pipeline", "start")
    ]
    for body in bodies:
        assert "ctx" not in [arg.arg for arg in body.args.args], (
            f"{body.name} takes the run context as an argument: an edge from start"
        )
    pulls = {
        body.name
        for body in bodies
        for call in ast.walk(body)
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "run_context"
    }
    needs_context = set(dag.task_ids) - {
        "start",
        "after_check",
        "unchanged",
        "decide",
        "approve",
    }  # the branches and `unchanged` read only their upstream's result
    assert pulls == needs_context


def _next_run(timetable, now, monkeypatch, last_midnight=None, catchup=False):
    """The next scheduled run's time that ``timetable`` gives at ``now`` (the DAG's start_date applies)."""
    import airflow.timetables.trigger as trigger
    from airflow.timetables.base import DataInterval, TimeRestriction

    monkeypatch.setattr(trigger, "utcnow", lambda: now)
    last = DataInterval(last_midnight, last_midnight) if last_midnight else None
    info = timetable.next_dagrun_info(
        last_automated_data_interval=last,
        restriction=TimeRestriction(datetime(2026, 1, 1, tzinfo=timezone.utc), None, catchup),
    )
    return info.run_after


def test_unpausing_after_a_missed_midnight_starts_no_catch_up_run(dag, monkeypatch):
    """A person's triggered run ("Unpause on trigger") must not queue behind the missed daily run."""
    import pendulum
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.trigger import CronTriggerTimetable

    # What the scheduler holds: the DAG as serialized, its timetable deserialized through the plugin.
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable.timetable
    assert type(timetable).__name__ == "CronWithoutCatchUp"
    morning = pendulum.datetime(2026, 12, 3, 9, 0, tz="UTC")
    midnight = pendulum.datetime(2026, 12, 3, tz="UTC")
    tomorrow = pendulum.datetime(2026, 12, 4, tz="UTC")
    yesterday = pendulum.datetime(2026, 12, 2, tz="UTC")
    # Airflow's own timetable, catchup=False: the missed midnight runs as soon as the DAG is unpaused,
    # whether it ran the day before or never ran (run_immediately does not change that).
    for run_immediately in (False, timedelta(minutes=30)):
        plain = CronTriggerTimetable("0 0 * * *", timezone="UTC", run_immediately=run_immediately)
        assert _next_run(plain, morning, monkeypatch, yesterday) == midnight
        assert _next_run(plain, morning, monkeypatch) == midnight
    # The DAG's: unpaused in the morning, the next run is tomorrow's, after yesterday's run or none.
    assert _next_run(timetable, morning, monkeypatch, yesterday) == tomorrow
    assert _next_run(timetable, morning, monkeypatch) == tomorrow
    # The scheduler a few seconds (or minutes) late at midnight still starts that midnight's run.
    assert _next_run(timetable, midnight + timedelta(seconds=5), monkeypatch, yesterday) == midnight
    assert (
        _next_run(timetable, midnight + timedelta(minutes=20), monkeypatch, yesterday) == midnight
    )
    # After it ran, the next is the next midnight; with catchup=True it behaves as Airflow's own.
    assert _next_run(timetable, midnight + timedelta(seconds=5), monkeypatch, midnight) == tomorrow
    assert _next_run(timetable, morning, monkeypatch, yesterday, catchup=True) == midnight
    # VISIONOPS_SCHEDULE_GRACE_MIN=1440 (the continuous-training e2e test) runs the latest missed day.
    from visionops_schedule import GRACE, CronWithoutCatchUp

    assert timetable._run_immediately == GRACE
    a_day = CronWithoutCatchUp("0 0 * * *", timezone="UTC", run_immediately=timedelta(days=1))
    assert _next_run(a_day, morning, monkeypatch) == midnight


def test_tuning_workers_are_dynamically_mapped(dag):
    worker = dag.get_task("tune_worker")
    assert type(worker).__name__.endswith(
        "MappedOperator"
    )  # N instances, N from tune_plan's list at run time
    assert set(worker.upstream_task_ids) == {"preprocess", "tune_plan"}


def test_branch_and_join(dag):
    from airflow.providers.standard.operators.python import BranchPythonOperator

    assert isinstance(dag.get_task("decide"), BranchPythonOperator)
    # promote follows decide directly or approve: one of them is skipped.
    assert dag.get_task("promote").trigger_rule == "none_failed_min_one_success"
    # finish also runs when a person rejected (promote skipped by approve, reject not chosen).
    assert dag.get_task("finish").trigger_rule == "none_failed"
    # After ingest: train (validate) or stop (unchanged) when nothing changed since the champion.
    assert isinstance(dag.get_task("after_check"), BranchPythonOperator)


def test_approval_step_asks_with_the_decision_and_rejects_by_default(dag):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    approve = dag.get_task("approve")
    assert isinstance(approve, ApprovalOperator)
    assert approve.upstream_task_ids == {"decide"}
    assert "xcom_pull(task_ids='register')['review']" in approve.body
    assert approve.defaults == ["Reject"] and approve.response_timeout is not None
    assert approve.retries == 0  # asking again would send a second request to the person
    assert (
        approve.ignore_downstream_trigger_rules is False
    )  # Reject skips promote only; finish records it


@pytest.mark.parametrize(
    ("passed", "require_approval", "step"),
    [
        (True, False, "promote"),
        (True, True, "approve"),
        (False, True, "reject"),
        (False, False, "reject"),
    ],
)
def test_branch_choice(passed: bool, require_approval: bool, step: str) -> None:
    from visionops.core.contracts import GateDecision, Registered
    from visionops.pipeline.stages import next_step

    decision = GateDecision(
        passed=passed, reasons=["r"], metrics={"accuracy": 0.9, "macro_f1": 0.9}
    ).to_dict()
    registered = Registered(
        model_name="m", version="1", passed=passed, require_approval=require_approval, review=""
    ).to_dict()
    assert next_step(decision, registered) == step


def test_schedule_docs_tags_retries_and_params(dag):
    # Daily, or sooner on an event of a watched source's asset or of the drift asset.
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert dag.timetable.timetable.summary == "0 0 * * *"
    names = {a.name for a in dag.timetable.asset_condition.objects}
    assert "visionops_drift" in names
    assert {f"visionops_source_{c}" for c in ("digits", "coil20", "faces")} <= names
    assert dag.catchup is False
    assert dag.doc_md and "champion" in dag.doc_md
    assert {"visionops", "training"} <= set(dag.tags)
    assert all(t.retries >= 1 for t in dag.tasks if t.task_id != "approve")
    params = dag.params
    for name in ("config", "model", "max_epochs", "n_trials", "overrides", "force"):
        assert name in params, name
        assert params.get_param(name).description, (
            f"param {name} has no description for the trigger form"
        )
    assert params["config"] == "conf/digits.yaml"


def _adapters_called(dag_file: str, module: str) -> list[str]:
    """The ``run_stage(<module>.<adapter>, ...)`` calls of a DAG file's task bodies, in order."""
    tree = ast.parse((REPO / "dags" / dag_file).read_text())
    return [
        call.args[0].attr
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and getattr(call.func, "id", None) == "run_stage"
        and isinstance(call.args[0], ast.Attribute)
        and getattr(call.args[0].value, "id", None) == module
    ]


@pytest.mark.parametrize(
    ("dag_file", "module", "tasks"),
    [
        (
            "train_pipeline.py",
            "stages",
            (
                "start",
                "ingest_plan",
                "ingest_chunk",
                "ingest_merge",
                "check_changes",
                "after_check",
                "unchanged",
                "validate",
                "preprocess",
                "tune_plan",
                "tune_worker",
                "tune_reduce",
                "train",
                "evaluate",
                "gate",
                "register",
                "next_step",
                "promote",
                "reject",
                "finish",
            ),
        ),
        ("batch_predict.py", "batch", ("resolve", "score", "record")),
        ("watch_sources.py", "continuous", ("watch",)),
        ("monitor.py", "continuous", ("check_drift",)),
        ("promote_challenger.py", "approval_tasks", ("describe", "promote")),
    ],
)
def test_task_bodies_reference_their_adapters(
    dag_file: str, module: str, tasks: tuple[str, ...]
) -> None:
    """Rule 1: every task body is one call to an adapter in visionops.pipeline, named directly (no string
    dispatch), and each adapter exists and validates its contracts."""
    import importlib

    source = (REPO / "dags" / dag_file).read_text()
    assert "call(" not in source.replace("run_stage(", "")  # no string dispatch left
    called = _adapters_called(dag_file, module)
    assert sorted(called) == sorted(tasks)
    pipeline_module = {"approval_tasks": "approval"}.get(module, module)
    adapters = importlib.import_module(f"visionops.pipeline.{pipeline_module}")
    for name in called:
        adapter = getattr(adapters, name)
        assert callable(adapter) and hasattr(adapter, "__wrapped__"), (
            f"{name} is not a stage adapter"
        )
