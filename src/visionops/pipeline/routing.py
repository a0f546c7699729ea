"""Which Celery queue and pool a ``train_pipeline`` task goes to: GPU work to the GPU workers.

``tune_worker``, ``train`` and ``evaluate`` go to the GPU queue when the run's resolved config asks
for CUDA: ``train.device`` is ``cuda``, or ``auto`` (use a GPU where there is one: on a cluster, a
GPU worker). Everything else, and ``train.device: cpu``, stays on the default queue. Routing is on
only where the deployment names its GPU queue (``VISIONOPS_GPU_QUEUE``; the GPU pool, which caps GPU
tasks at once, is ``VISIONOPS_GPU_POOL``, default ``gpu``): without one, as under ``airflow
standalone``, nothing changes, and a pool that does not exist can never hold a task back.

Airflow applies it in the scheduler through ``plugins/airflow_local_settings.py`` (its
``task_instance_mutation_hook``), many times per run: the resolution is cached per run's params.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

log = logging.getLogger("visionops")

DAG_ID = "train_pipeline"
GPU_TASKS = frozenset({"tune_worker", "train", "evaluate"})
CUDA_DEVICES = frozenset({"cuda", "auto"})


@dataclass(frozen=True)
class Route:
    queue: str
    pool: str


def gpu_route() -> Route | None:
    """The deployment's GPU queue and pool, or None when routing is off."""
    queue = os.environ.get("VISIONOPS_GPU_QUEUE", "").strip()
    if not queue:
        return None
    return Route(queue, os.environ.get("VISIONOPS_GPU_POOL", "").strip() or "gpu")


@lru_cache(maxsize=256)
def _device(conf_json: str) -> str | None:
    from visionops.core.run import resolve_config

    params = json.loads(conf_json)
    try:
        cfg, _ = resolve_config(params)
    except Exception as exc:  # noqa: BLE001 - never crash the scheduler; `start` reports the error
        log.warning("routing: cannot resolve the run's config (%s); no GPU routing", exc)
        return None
    return cfg.train.device


def route(dag_id: str, task_id: str, conf: dict[str, Any] | None) -> Route | None:
    """The GPU route for this task of this run, or None to leave it where the DAG put it."""
    target = gpu_route()
    if target is None or dag_id != DAG_ID or task_id not in GPU_TASKS:
        return None
    # A scheduled run's conf is empty: it trains the deployment's config (the DAG's default).
    params = {"config": os.environ.get("VISIONOPS_CONFIG"), **(conf or {})}
    params = {k: v for k, v in params.items() if v is not None}
    device = _device(json.dumps(params, sort_keys=True, default=str))
    return target if device in CUDA_DEVICES else None
