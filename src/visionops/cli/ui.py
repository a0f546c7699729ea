"""``visionops ui``: Airflow (standalone) and the MLflow UI on 127.0.0.1, against the project's state.

Sized for the machine it runs on: out of the box, Airflow's LocalExecutor forks 32 idle workers,
and the MLflow server runs 4 workers and 8 processes of its (GenAI) job runner, about 54 processes
and 3.3 GiB (PSS) on a 2-core machine. ``ui_settings`` derives them from the CPU count; a variable
the user sets (``AIRFLOW__CORE__PARALLELISM``, ``MLFLOW_WORKERS``, ...) wins.

Each server starts in a session (and process group) of its own, so that the terminal's Ctrl-C reaches
only this process, which then stops both as a whole: on SIGINT, SIGTERM or SIGHUP (also when started
in the background, where a shell ignores SIGINT) it asks each server to stop, waits, and then sends
SIGTERM and SIGKILL to whatever is left in their sessions (Airflow's tasks run in process groups of
their own, inside the session). A second Ctrl-C kills at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from visionops.cli.pipeline import airflow_env, ensure_airflow_db
from visionops.core.constants import MLFLOW_ML_VIEW_QUERY
from visionops.core.storage import project_dir, visionops_home

STOP_GRACE_S = 30.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def ui_settings(cpus: int | None = None) -> dict[str, str]:
    """The servers' sizes for a machine with ``cpus`` cores (default: this one's), as environment."""
    cpus = max(1, cpus or os.cpu_count() or 1)
    return {
        # The LocalExecutor forks `parallelism` workers when the scheduler starts (32 by default).
        "AIRFLOW__CORE__PARALLELISM": str(max(2, cpus)),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": str(max(1, cpus // 2)),
        "MLFLOW_WORKERS": str(max(1, min(4, cpus // 2))),
        # The MLflow server's job runner (GenAI scorers and trace jobs: 8 processes, ~2 GiB); unused.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def sized_env(env: dict[str, str], cpus: int | None = None) -> dict[str, str]:
    """``env`` with ``ui_settings`` added where the user did not set them."""
    return {**ui_settings(cpus), **env}


class _Stop(Exception):
    """A stop signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signum)


def session_processes(session_ids: set[int]) -> list[int]:
    """Live (not zombie) processes of these sessions."""
    import psutil

    found = []
    for pid in psutil.pids():
        try:
            if (
                os.getsid(pid) in session_ids
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            ):
                found.append(pid)
        except (OSError, psutil.Error):
            continue
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def stop_servers(
    procs: dict[str, tuple[subprocess.Popen, int]], grace_s: float = STOP_GRACE_S
) -> None:
    """Stop each server with its own signal, then everything left in their sessions.

    ``procs`` maps a name to the server's process and the signal it stops on. After ``grace_s``
    whatever is left of their sessions (a task still running, say) gets SIGTERM, and 10 s later SIGKILL.
    """
    sessions = {proc.pid for proc, _ in procs.values()}  # each leads its own session

    def kill_now(*_: Any) -> None:  # Ctrl-C again
        _signal_all(session_processes(sessions), signal.SIGKILL)

    signal.signal(signal.SIGINT, kill_now)
    for sig in _STOP_SIGNALS[1:]:
        signal.signal(sig, signal.SIG_IGN)
    for proc, signum in procs.values():
        if proc.poll() is None:
            _signal_all([proc.pid], signum)
    steps = [(grace_s, signal.SIGTERM), (10.0, signal.SIGKILL), (10.0, None)]
    deadline = time.monotonic() + steps[0][0]
    while True:
        for proc, _ in procs.values():
            proc.poll()  # reap our own children
        left = session_processes(sessions)
        if not left:
            break
        if time.monotonic() > deadline:
            _, signum = steps.pop(0)
            if signum is None:
                print(f"visionops ui: {len(left)} processes would not stop: {left}", flush=True)
                break
            print(
                f"visionops ui: {len(left)} processes still running, sending {signum.name}",
                flush=True,
            )
            _signal_all(left, signum)
            deadline = time.monotonic() + steps[0][0]
        time.sleep(0.2)
    for proc, _ in procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def cmd_ui(args: argparse.Namespace) -> int:
    """Start ``airflow standalone`` and the MLflow UI on 127.0.0.1; stop both, whole, on a signal."""
    from visionops.core.tracking import tracking_uri

    for sig in _STOP_SIGNALS:  # also when started in the background, where SIGINT is ignored
        signal.signal(sig, _raise_stop)
    # Each server with the signal it stops on: airflow standalone stops its components on SIGINT only
    # (on SIGTERM it exits alone); the mlflow command passes SIGTERM on to its uvicorn.
    procs: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        env = sized_env(airflow_env())
        ensure_airflow_db(env)
        mlflow_cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            tracking_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(args.mlflow_port),
            "--default-artifact-root",
            (visionops_home() / "mlartifacts").as_uri(),
        ]
        env_af = {
            **env,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(args.airflow_port),
            # Tasks talk to the API server's execution API: it must follow the port.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{args.airflow_port}/execution/",
            # The plugin's links to MLflow, and the MLflow runs' links to Airflow, as a browser on
            # this machine reaches them.
            "VISIONOPS_MLFLOW_UI_URL": f"http://127.0.0.1:{args.mlflow_port}",
            "VISIONOPS_AIRFLOW_UI_URL": f"http://127.0.0.1:{args.airflow_port}",
        }
        password_file = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        # MLflow 3.17 opens in whichever view the browser last chose (GenAI when it never chose):
        # this address opens the model-training one; "Model training" in its sidebar keeps it.
        print(
            f"MLflow UI : http://127.0.0.1:{args.mlflow_port}/#/experiments?{MLFLOW_ML_VIEW_QUERY} "
            "(sidebar: 'Model training')"
        )
        print(
            f"Airflow UI: http://127.0.0.1:{args.airflow_port} (user 'admin'; the password is in {password_file})"
        )
        print(
            "sized for {} CPUs: LocalExecutor parallelism {}, {} API server worker, {} MLflow "
            "worker(s) (override with AIRFLOW__CORE__PARALLELISM, AIRFLOW__API__WORKERS, "
            "MLFLOW_WORKERS); Ctrl-C stops both".format(
                os.cpu_count(),
                env["AIRFLOW__CORE__PARALLELISM"],
                env["AIRFLOW__API__WORKERS"],
                env["MLFLOW_WORKERS"],
            ),
            flush=True,
        )
        common = {"stdin": subprocess.DEVNULL, "start_new_session": True}
        procs["mlflow"] = (subprocess.Popen(mlflow_cmd, env=env, **common), signal.SIGTERM)
        airflow_bin = shutil.which("airflow", path=env["PATH"]) or "airflow"
        standalone = subprocess.Popen(
            [airflow_bin, "standalone"], env=env_af, cwd=project_dir(), **common
        )
        procs["airflow"] = (standalone, signal.SIGINT)
        while True:
            for name, (proc, _) in procs.items():
                if proc.poll() is not None:
                    print(
                        f"visionops ui: {name} exited with {proc.returncode}; stopping", flush=True
                    )
                    return proc.returncode or 1
            time.sleep(0.5)
    except _Stop as stop:
        print(f"visionops ui: {stop}, stopping Airflow and MLflow", flush=True)
        return 0
    finally:
        if procs:
            stop_servers(procs)


def add_commands(sub: Any) -> None:
    """``ui``."""
    ui = sub.add_parser("ui", help="start airflow standalone and the MLflow UI on 127.0.0.1")
    ui.add_argument("--airflow-port", type=int, default=8080)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
