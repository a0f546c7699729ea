"""The process stack's services as processes: started in sessions of their own, recorded, checked, stopped.

Each service runs in a session (and process group) of its own with its output in ``<home>/logs/``,
and ``<home>/stack.json`` records its pid, command and log, so that ``visionops stack down`` (another
process, later) can stop each one as a whole: SIGTERM to the service, then after a grace period SIGTERM
and SIGKILL to whatever is left in its session (a Celery worker's task processes, say).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visionops.cli.stack_env import STATE_FILE
from visionops.cli.ui import _signal_all, session_processes


@dataclass
class Service:
    name: str
    pid: int
    command: list[str]
    log: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."


def write_secret_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only (mode 600), whatever was there.

    A fresh temporary file (``mkstemp``: a new name, mode 600, never one left by an earlier crash)
    renamed over the target: the mode does not depend on a file already there, as ``os.open``'s
    would (it applies only when the file is created), and a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StackState:
    """``<home>/stack.json``: the running services and the stack's addresses."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / STATE_FILE
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.services: dict[str, Service] = {
            name: Service(**spec) for name, spec in data.get("services", {}).items()
        }
        self.info: dict[str, Any] = data.get("info", {})

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        payload = {"services": {n: asdict(s) for n, s in self.services.items()}, "info": self.info}
        # The services' environments hold the stack's secrets.
        write_secret_file(self.path, json.dumps(payload, indent=2))

    def alive(self, name: str) -> bool:
        service = self.services.get(name)
        return service is not None and bool(session_processes({service.pid}))


def start_service(
    state: StackState, name: str, command: list[str], env: dict[str, str], cwd: Path
) -> Service:
    """Start ``command`` in a session of its own, its output appended to ``<home>/logs/<name>.log``."""
    logs = state.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = Service(name, proc.pid, command, str(log), env, str(cwd))
    state.services[name] = service
    state.save()
    return service


def stop_service(state: StackState, name: str, grace_s: float = 30.0, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL with ``kill``) to the service, then its whole session after ``grace_s``."""
    service = state.services.get(name)
    if service is None:
        return
    session = {service.pid}
    _signal_all([service.pid], signal.SIGKILL if kill else signal.SIGTERM)
    if kill:
        _signal_all(session_processes(session), signal.SIGKILL)
    steps = [(grace_s, signal.SIGTERM), (10.0, signal.SIGKILL), (10.0, None)]
    deadline = time.monotonic() + steps[0][0]
    while left := session_processes(session):
        _reap(service.pid)
        if time.monotonic() > deadline:
            _, signum = steps.pop(0)
            if signum is None:
                raise RuntimeError(f"stack: {name} would not stop: processes {left}")
            _signal_all(left, signum)
            deadline = time.monotonic() + steps[0][0]
        time.sleep(0.2)
    _reap(service.pid)
    del state.services[name]
    state.save()


def restart_service(state: StackState, name: str, grace_s: float = 30.0) -> Service:
    """Stop the service (if it runs) and start it again with the same command and environment."""
    service = state.services.get(name)
    if service is None:
        raise RuntimeError(f"stack: no service {name!r} (running: {', '.join(state.services)})")
    if state.alive(name):
        stop_service(state, name, grace_s)
    return start_service(state, name, service.command, service.env, Path(service.cwd))


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    state: StackState | None = None,
    service: str | None = None,
) -> None:
    """Poll ``check`` until it holds; fail early (naming the log) when ``service`` has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if state is not None and service is not None and not state.alive(service):
            log = state.services[service].log if service in state.services else "?"
            raise RuntimeError(f"stack: {service} exited while waiting for {what}; see {log}")
        time.sleep(1.0)
    hint = f"; see {state.services[service].log}" if state and service in state.services else ""
    raise RuntimeError(f"stack: {what} not ready after {timeout_s:.0f} s{hint}")
