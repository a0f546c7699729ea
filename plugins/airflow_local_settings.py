"""Airflow's cluster policies for visionops (Airflow imports this module from the plugins folder).

``task_instance_mutation_hook`` sends a ``train_pipeline`` run's GPU work (``tune_worker``, ``train``,
``evaluate`` when ``train.device`` asks for CUDA) to the GPU queue and pool; the rule is
``visionops.pipeline.routing.route``. It runs in the scheduler and must not touch the database.
"""

from __future__ import annotations

from typing import Any


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    if dag_run is None:
        return
    from visionops.pipeline.routing import route

    target = route(task_instance.dag_id, task_instance.task_id, getattr(dag_run, "conf", None))
    if target is not None:
        task_instance.queue = target.queue
        task_instance.pool = target.pool
