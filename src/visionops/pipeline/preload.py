"""The domain modules the tasks import, loaded once in the process that forks the tasks.

Airflow runs each task in a process forked from its executor's worker: the scheduler's LocalExecutor
workers (``airflow standalone``, ``make ui``) or a Celery worker's pool. The adapters of
``visionops.pipeline`` import their domain modules only when they run (the DAG files must parse
without torch, pandas or MLflow), so every task process would import MLflow, torch, scikit-learn,
Great Expectations and the stage's own modules again: 2 to 6 s of CPU a task on the 2-core machine,
more than many tasks' own work. Imported once in the parent (``plugins/airflow_local_settings.py``
calls ``preload`` in a scheduler that runs LocalExecutor and in a Celery worker), they reach every
task through the fork at no cost. Only imports happen here: no thread pool, connection or CUDA
context is started before a fork. ``VISIONOPS_PRELOAD=0`` turns it off.
"""

from __future__ import annotations

import importlib
import logging
import os
import time

log = logging.getLogger("visionops")

# Every module an adapter of visionops.pipeline imports when it runs (tests/unit/test_preload.py
# reads the adapters and keeps this list complete).
TASK_MODULES = (
    "visionops.core.run",
    "visionops.data.ingest_stage",
    "visionops.data.stage",
    "visionops.data.watch",
    "visionops.release.lineage",
    "visionops.release.registry",
    "visionops.release.register",
    "visionops.release.stages",
    "visionops.release.version_gate",  # promote's recheck and smoke test, approval's gate
    "visionops.evaluation.scoring",
    "visionops.serving.smoke",
    "visionops.release.approval",
    "visionops.tuning.stage",
    "visionops.training.stage",
    "visionops.evaluation.stage",
    "visionops.pipeline.summary",
    "visionops.serving.batch",
    "visionops.monitoring.service",
)


def forks_tasks(argv: list[str], executor: str) -> bool:
    """Whether this Airflow process is one that tasks are forked from: a Celery worker, or a
    scheduler whose executor is LocalExecutor (``airflow standalone`` starts one). ``argv`` is the
    command line after the program name; ``executor`` Airflow's ``[core] executor``. An API server,
    DAG processor, triggerer or a CeleryExecutor scheduler runs no task: preloading there would only
    cost memory. ``VISIONOPS_PRELOAD=0`` says no for every process."""
    if os.environ.get("VISIONOPS_PRELOAD", "1") == "0":
        return False
    if argv[:2] == ["celery", "worker"]:
        return True
    return argv[:1] == ["scheduler"] and "LocalExecutor" in executor


def preload(modules: tuple[str, ...] = TASK_MODULES) -> list[str]:
    """Import ``modules``; one that fails is logged and skipped (its task will raise the error in its
    own log, where a person looks). Returns the modules that could not be imported."""
    started = time.monotonic()
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - never stop the scheduler or worker over a preload
            failed.append(name)
            log.warning("visionops preload: %s not imported: %s", name, exc)
    log.info(
        "visionops preload: %d task modules imported in %.1f s",
        len(modules) - len(failed),
        time.monotonic() - started,
    )
    return failed
