"""What makes a function a stage adapter: its inputs are checked against their contracts once, on
entry, and its result leaves as JSON (what XCom carries)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError, validate_call
from pydantic_core import to_jsonable_python

from visionops.core.errors import ContractError

F = TypeVar("F", bound=Callable[..., Any])


def to_json(value: Any) -> Any:
    """A contract (or a list of them, a stage output) as the JSON-able value XCom stores."""
    if isinstance(value, BaseModel):
        # model_dump keeps NaN (ser_json_inf_nan), unlike the generic encoder below
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [to_json(item) for item in value]
    return to_jsonable_python(value)


def stage(func: F | None = None, *, uses_mlflow: bool = True) -> Any:
    """Validate the arguments against the function's annotations (JSON from XCom -> contracts) and
    return the result as JSON. A mismatch is a ``ContractError`` naming the task and the field: bad
    input that a retry cannot fix. ``uses_mlflow`` (default) points MLflow at the project's tracking
    store and registry first; a pure decision (``next_step``) skips it and never imports mlflow."""
    if func is None:
        return functools.partial(stage, uses_mlflow=uses_mlflow)
    checked = validate_call(func, config={"arbitrary_types_allowed": True})

    @functools.wraps(func)
    def adapter(*args: Any, **kwargs: Any) -> Any:
        if uses_mlflow:
            from visionops.core import tracking

            tracking.configure()
        try:
            result = checked(*args, **kwargs)
        except ValidationError as exc:
            if exc.title != func.__name__:
                raise  # raised inside the stage, not by its inputs
            raise ContractError(
                f"task {func.__name__}: its input does not match the contract: {exc}"
            ) from exc
        return to_json(result)

    return adapter  # type: ignore[return-value]
