"""Airflow's cluster policies for visionops (Airflow imports this module from the plugins folder).

``task_instance_mutation_hook`` sends a ``train_pipeline`` run's GPU work (``tune_worker``, ``train``,
``evaluate`` when ``train.device`` asks for CUDA) to the GPU queue and pool; the rule is
``visionops.pipeline.routing.route``. It runs in the scheduler and must not touch the database.

Airflow imports this module early in every one of its processes. In the processes that fork the
tasks (a Celery worker, a LocalExecutor scheduler) it imports the tasks' domain modules once
(``visionops.pipeline.preload``), so that each task process starts with them loaded. Before that it
raises the garbage collector's thresholds for the process (``visionops.core.interpreter``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def _tune_gc() -> None:
    try:
        from visionops.core.interpreter import tune_gc

        tune_gc()
    except Exception as exc:  # a speed-up: Airflow must start without it
        logging.getLogger("visionops").warning("visionops gc thresholds not set: %s", exc)


def _preload_task_modules() -> None:
    try:
        from airflow.configuration import conf

        from visionops.pipeline.preload import forks_tasks, preload

        if forks_tasks(sys.argv[1:], conf.get("core", "executor", fallback="")):
            preload()
    except Exception as exc:  # noqa: BLE001 - a speed-up: Airflow must start without it
        logging.getLogger("visionops").warning("visionops preload skipped: %s", exc)


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    if dag_run is None:
        return
    from visionops.pipeline.routing import route

    target = route(task_instance.dag_id, task_instance.task_id, getattr(dag_run, "conf", None))
    if target is not None:
        task_instance.queue = target.queue
        task_instance.pool = target.pool


_tune_gc()
_preload_task_modules()
