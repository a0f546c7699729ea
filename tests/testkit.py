"""Small helpers shared by the tests (pytest puts this folder on ``sys.path`` through its conftest).

``left_right``: the two-class "bright left half / bright right half" images, separable by a tiny
CNN in a few steps; mirroring swaps the classes (which the test-time augmentation tests rely on).
``free_port`` and ``stop_process_group``: for the servers a test starts; ``model_server`` runs
``mlflow models serve`` on a registered model and ``post_json`` sends it a request.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def left_right(n: int, seed: int, size: int = 8, *, noise: int = 40, bright: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(n, 1, size, size)`` images and int64 labels: class 0 bright on the left half, 1 on the right."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, noise, (n, 1, size, size))
    half = size // 2
    x[y == 0, :, :, :half] += bright
    x[y == 1, :, :, half:] += bright
    return x.astype(np.uint8), y.astype(np.int64)


def left_right_split(n: int, seed: int, size: int = 8, *, noise: int = 60, bright: int = 180):  # noqa: ANN201
    """The same as a ``visionops.data.preprocess.Split`` (the trainer's input), noisier by default."""
    from visionops.data.preprocess import Split

    return Split(*left_right(n, seed, size, noise=noise, bright=bright))


def stop_process_group(server: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session=True`` and everything it started (uvicorn, workers)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    try:  # children may outlive the script's own process for a moment
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def model_server(model_uri: str, workdir: Path, env: dict[str, str] | None = None,
                 timeout_s: float = 180) -> Iterator[int]:
    """``mlflow models serve`` (local environment) on a free port, ready when ``/ping`` answers; yields the port."""
    port = free_port()
    env = dict(env or os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_path = workdir / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri,
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"mlflow models serve did not answer /ping in {timeout_s} s"
                time.sleep(1)
            yield port
        finally:
            stop_process_group(proc)


def post_json(port: int, body: dict[str, Any], timeout_s: float = 120) -> list[dict[str, Any]]:
    """POST ``body`` to a model server's ``/invocations``; its ``predictions``."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())["predictions"]
