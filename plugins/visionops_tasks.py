"""Shared by the DAG files: how a task calls into visionops (in plugins/, which Airflow puts on sys.path).

The import of the domain module happens inside the task, never at parse time; bad input
(``visionops.errors.InputError``) fails the task at once, since a retry cannot fix it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException


def call(module: str, func: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``visionops.<module>.<func>(*args, **kwargs)`` inside a task."""
    from visionops.errors import InputError

    target = getattr(import_module(f"visionops.{module}"), func)
    try:
        return target(*args, **kwargs)
    except InputError as exc:
        raise AirflowFailException(f"{func}: {exc}") from exc


class AnsweredApprovalOperator(ApprovalOperator):
    """The standard ApprovalOperator, with the answer (options, who, when) in XCom ``answer`` either way.

    On "Reject" the base class skips the downstream tasks before it returns, so its return value never
    reaches XCom; the pipeline's finish task needs the answer to record who rejected the version.
    """

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = {key: (value.isoformat() if hasattr(value, "isoformat") else value)
                  for key, value in event.items() if key in ("chosen_options", "responded_by_user", "responded_at")}
        context["ti"].xcom_push(key="answer", value=answer)
        return super().execute_complete(context, event)
