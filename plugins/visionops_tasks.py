"""Shared by the DAG files: how a task calls into visionops (in plugins/, which Airflow puts on sys.path).

A task names its adapter directly (``run_stage(stages.ingest, run_context())``), so that a reader or
an editor can follow it to its code; the adapters import their domain modules only when they run, never
at parse time. Bad input (``visionops.core.errors.InputError``, which includes a contract mismatch)
fails the task at once, since a retry cannot fix it. Library logs reach the task log at their own
level, and progress bars not at all (``library_logs_to_task_log``).

``run_context()`` hands a task the run context its DAG's ``start`` task returned, from XCom. Passing
it as an argument instead would draw an edge from ``start`` to every task, and the graph view would
show a bundle of lines instead of the pipeline's flow.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

START_TASK = "start"

# The loggers MLflow's import gives a stream handler of its own (mlflow.utils.logging_utils), with the
# levels it sets; None: MLFLOW_LOGGING_LEVEL if set, else the task's level.
MLFLOW_LOGGERS = {
    "mlflow": None,
    "alembic": logging.WARNING,
    "sqlalchemy.engine": logging.WARNING,
    "huey": logging.WARNING,
}


def library_logs_to_task_log() -> None:
    """Let MLflow's log records reach the task log through Python logging, at their own level.

    Airflow's task runner logs whatever a task writes to stderr at level error, and MLflow writes its
    records there through a handler of its own: its INFO lines would read as errors. So MLflow is told
    not to configure logging when it is imported later (``MLFLOW_CONFIGURE_LOGGING``), its loggers lose
    that handler if it was imported already, and they propagate to the task's handlers. Artifact
    progress bars (tqdm on stderr) are turned off: in a log they are noise. Optuna's logger is routed
    the same way where the study is opened (``visionops.tuning.study``).
    """
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    os.environ["TQDM_DISABLE"] = "1"  # any other tqdm bar, where tqdm is imported from here on
    for name, level in MLFLOW_LOGGERS.items():
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level or os.environ.get("MLFLOW_LOGGING_LEVEL", "NOTSET").upper())


def run_stage(adapter: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a ``visionops.pipeline`` adapter inside a task; bad input fails it without retries.

    The task log gets a line when it starts and one when it ends, with its duration and the figure
    that matters (``visionops.pipeline.progress``): what ``visionops pipeline run`` shows."""
    from visionops.core.errors import InputError
    from visionops.pipeline import progress

    library_logs_to_task_log()
    task = _task_label(adapter.__name__)
    log = logging.getLogger("visionops")
    log.info("%s", progress.started(task))
    began = time.monotonic()
    try:
        result = adapter(*args, **kwargs)
    except InputError as exc:
        log.error("%s", progress.failed(task, time.monotonic() - began, exc))
        raise AirflowFailException(f"{adapter.__name__}: {exc}") from exc
    except Exception as exc:
        log.error("%s", progress.failed(task, time.monotonic() - began, exc))
        raise
    log.info("%s", progress.finished(task, time.monotonic() - began, result, adapter.__name__))
    return result


def _task_label(default: str) -> str:
    """The running task's id (``ingest_chunk[2]`` for a mapped instance), ``default`` outside one."""
    try:
        ti = get_current_context()["ti"]
    except Exception:  # noqa: BLE001 - called outside a task (a test of the adapters)
        return default
    index = getattr(ti, "map_index", -1)
    return ti.task_id + (f"[{index}]" if isinstance(index, int) and index >= 0 else "")


def run_context() -> dict[str, Any]:
    """The run context (``RunContext`` as JSON) that this DAG run's ``start`` task returned."""
    ctx = get_current_context()["ti"].xcom_pull(task_ids=START_TASK)
    if not isinstance(ctx, dict):
        # A task cleared and re-run after `start`'s XCom was cleared with it: start again.
        raise AirflowFailException(
            f"no run context: task {START_TASK!r} of this run has no result (clear and re-run it first)"
        )
    return ctx


class AnsweredApprovalOperator(ApprovalOperator):
    """The standard ApprovalOperator, with the answer (options, who, when) in XCom ``answer`` either way.

    On "Reject" the base class skips the downstream tasks before it returns, so its return value never
    reaches XCom; the pipeline's finish task needs the answer to record who rejected the version.
    """

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = {
            key: (value.isoformat() if hasattr(value, "isoformat") else value)
            for key, value in event.items()
            if key in ("chosen_options", "responded_by_user", "responded_at")
        }
        context["ti"].xcom_push(key="answer", value=answer)
        return super().execute_complete(context, event)
