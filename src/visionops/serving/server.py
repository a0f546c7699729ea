"""``visionops serve``: MLflow's scoring server for one registered model version, with a guard in front.

The app is MLflow's own (``mlflow.pyfunc.scoring_server.init``: ``/invocations``, ``/ping``,
``/health``, ``/version``, the same request formats as ``mlflow models serve``). The guard, a small
ASGI middleware written here because MLflow's server has no hook for it, adds what a server facing
clients needs:

- a request body larger than ``--max-request-mb`` is refused with 413 before the model sees it
  (the body is read in chunks; past the limit nothing is kept, and the rest is read and dropped up
  to four times the limit so that the client gets the answer);
- every JSON answer is strict JSON: a missing number is ``null``, never ``NaN`` or ``Infinity``;
- error answers carry ``error_code`` and ``message`` only: MLflow puts a ``stack_trace`` with the
  server's file paths into them, which a client has no use for (it is logged here instead), and a
  message is clipped (MLflow's may repeat the whole request).

The per-request budget (rows, decoded pixels, ``inputs.Budget``) is the model's own and holds under
``mlflow models serve`` too.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("visionops.serve")

MAX_MESSAGE = 2000
DRAIN_FACTOR = 4  # a body past the limit is read and dropped up to this many times the limit
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def strict(value: Any) -> Any:
    """``value`` with non-finite floats as None and no ``stack_trace`` keys, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items() if k != "stack_trace"}
    if isinstance(value, list):
        return [strict(v) for v in value]
    return value


def clean_body(status: int, body: bytes) -> bytes:
    """A JSON answer made strict (and an error's message clipped); anything else unchanged."""
    try:
        payload = json.loads(body)  # Python's parser takes NaN and Infinity: read them to drop them
    except (ValueError, UnicodeDecodeError):
        return body
    if status >= 400 and isinstance(payload, dict):
        if payload.get("stack_trace"):
            log.warning("error answer %s: %s", status, payload["stack_trace"])
        message = payload.get("message")
        if isinstance(message, str) and len(message) > MAX_MESSAGE:
            # MLflow puts the request before the reason ("Failed to predict data '...'. Error:"):
            # both ends are kept.
            half = MAX_MESSAGE // 2
            payload["message"] = f"{message[:half]} ... (clipped) ... {message[-half:]}"
    return json.dumps(strict(payload), allow_nan=False).encode()


async def _answer(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: Callable, max_request_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = {
            "error_code": "REQUEST_TOO_LARGE",
            "message": f"the request body is larger than {self.max_request_bytes} bytes "
            "(visionops serve --max-request-mb); send fewer or smaller images per request",
        }
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size <= self.max_request_bytes:
                chunks.append(chunk)
            elif size > DRAIN_FACTOR * self.max_request_bytes or not more:
                # Past the limit nothing is kept; the rest is read (up to a bound) and dropped, so
                # that a client still sending gets the answer instead of a broken connection.
                await _answer(send, 413, too_large)
                return
            else:
                chunks.clear()
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        start: Message = {}
        parts: list[bytes] = []

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            parts.append(message.get("body", b""))
            if message.get("more_body"):
                return
            headers = dict(start.get("headers") or [])
            content = b"".join(parts)
            if headers.get(b"content-type", b"").startswith(b"application/json"):
                content = clean_body(start["status"], content)
            headers[b"content-length"] = str(len(content)).encode()
            await send({**start, "headers": list(headers.items())})
            await send({"type": "http.response.body", "body": content})

        await self.app(scope, replay, rewrite)


def build_app(model_uri: str, max_request_bytes: int) -> Guard:
    """MLflow's scoring app for ``model_uri`` behind the guard."""
    from mlflow.pyfunc import scoring_server

    import mlflow

    model = mlflow.pyfunc.load_model(model_uri)
    return Guard(scoring_server.init(model), max_request_bytes)
