"""``visionops serve``: answer HTTP requests with a registered model (``visionops.serving.server``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from visionops.core.errors import InputError


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from visionops.core import tracking
    from visionops.serving.batch import resolve_model
    from visionops.serving.server import build_app

    tracking.configure()
    if args.max_request_mb <= 0:
        print("error: --max-request-mb must be positive", file=sys.stderr)
        return 2
    try:
        resolved = resolve_model(args.model)  # an alias is pinned now: one version per server
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The stack traces kept out of error answers are logged here, for the operator.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    app = build_app(resolved.uri, int(args.max_request_mb * 1024 * 1024))
    print(
        f"serving {resolved.name} v{resolved.version} on http://{args.host}:{args.port}/invocations",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def add_commands(sub: Any) -> None:
    """``serve``."""
    serve = sub.add_parser(
        "serve",
        help="answer /invocations with a registered model: MLflow's scoring server with a request "
        "size limit, strict JSON and no stack traces in error answers",
    )
    serve.add_argument("model", help="NAME (alias champion), NAME@ALIAS or NAME/VERSION")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument(
        "--max-request-mb",
        type=float,
        default=64.0,
        help="refuse request bodies larger than this (413), before the model reads them",
    )
    serve.set_defaults(func=cmd_serve)
