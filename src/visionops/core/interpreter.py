"""The Python interpreter settings of the pipeline's own processes: the cyclic garbage collector.

A pipeline process imports torch, MLflow, Airflow, scikit-learn, Optuna and Great Expectations: a few
million objects, nearly all of them alive until the process ends. CPython's default thresholds
(700, 10, 10) run a young collection every 700 container allocations and walk the growing heap again
and again while those imports run, which costs work and frees almost nothing. With the young
threshold at 20,000 (and 20, 20 for the older generations), one ``airflow dags test`` run of the
pipeline with its smoke test used 10-15% less CPU (bench/README.md, "Garbage collection"); the
collector still runs, so reference cycles are still freed, only in larger batches.

``tune_gc`` is called first thing by the ``visionops`` command, by Airflow in each of its processes
(``plugins/airflow_local_settings.py``: ``airflow dags test``, the scheduler, its task processes, the
Celery workers, the API server) and by the smoke test's fresh process. ``VISIONOPS_GC_THRESHOLD``
changes it: ``default`` leaves Python's own thresholds, three integers ``young,middle,old`` set them.
A threshold already higher than the one asked (set by the host process) is kept.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Mapping

log = logging.getLogger("visionops")

THRESHOLD = (20_000, 20, 20)
ENV = "VISIONOPS_GC_THRESHOLD"


def gc_threshold_from(env: Mapping[str, str]) -> tuple[int, int, int] | None:
    """The thresholds ``env`` asks for, or None for Python's own. A malformed value raises a
    ValueError naming the variable and what it holds."""
    value = env.get(ENV, "").strip()
    if not value:
        return THRESHOLD
    if value == "default":
        return None
    parts = value.split(",")
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        numbers = ()
    if len(numbers) != 3 or min(numbers) < 1:
        raise ValueError(
            f"{ENV}={value!r}: expected 'default' or three positive integers 'young,middle,old' "
            f"(e.g. {','.join(map(str, THRESHOLD))})"
        )
    return numbers  # type: ignore[return-value]


def tune_gc(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """Raise the collector's thresholds as ``VISIONOPS_GC_THRESHOLD`` says (default ``THRESHOLD``);
    returns the thresholds in force. Never lowers one, never fails the process: a malformed value is
    logged and Python's thresholds stay."""
    try:
        wanted = gc_threshold_from(os.environ if env is None else env)
    except ValueError as exc:
        log.warning("%s; the garbage collector keeps its thresholds", exc)
        return gc.get_threshold()
    if wanted is not None:
        gc.set_threshold(*(max(w, c) for w, c in zip(wanted, gc.get_threshold(), strict=True)))
    return gc.get_threshold()
