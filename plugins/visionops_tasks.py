"""Shared by the DAG files: how a task calls into visionops (in plugins/, which Airflow puts on sys.path).

The import of the domain module happens inside the task, never at parse time; bad input
(``visionops.errors.InputError``) fails the task at once, since a retry cannot fix it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from airflow.sdk.exceptions import AirflowFailException


def call(module: str, func: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``visionops.<module>.<func>(*args, **kwargs)`` inside a task."""
    from visionops.errors import InputError

    target = getattr(import_module(f"visionops.{module}"), func)
    try:
        return target(*args, **kwargs)
    except InputError as exc:
        raise AirflowFailException(f"{func}: {exc}") from exc
