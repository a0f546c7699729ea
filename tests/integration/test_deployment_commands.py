"""Deployment files, run: mlflow/start.sh is syntax-checked and then really started on SQLite, and an
artifact is uploaded through its artifact proxy; ``docker compose config`` accepts docker-compose.yaml
with the secrets docker/make_secrets.py makes, and refuses it without them, where a compose command is
installed. No container engine is needed. (The checks that only read the
files: tests/unit/test_deployment_files.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
START_SH = REPO / "mlflow" / "start.sh"


def test_start_script_is_executable_bash_without_syntax_errors() -> None:
    assert os.access(START_SH, os.X_OK), "mlflow/start.sh is not executable"
    result = subprocess.run(
        ["bash", "-n", str(START_SH)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def compose_command() -> list[str] | None:
    """`docker compose` where the plugin is installed, else a standalone `docker-compose`."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone is not None else None


def compose_config(command: list[str], env_file: Path) -> subprocess.CompletedProcess:
    # `config` parses, interpolates and validates the file without talking to an engine. The
    # environment would win over the env file: no secret of this shell may take part.
    env = {
        k: v
        for k, v in os.environ.items()
        if not any(w in k for w in ("PASSWORD", "SECRET", "KEY"))
    }
    return subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "--profile", "gpu"]
        + ["config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
        timeout=120,
    )


def test_docker_compose_accepts_the_file_with_the_secrets_and_refuses_it_without(
    tmp_path: Path,
) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env_file = tmp_path / ".env"
    made = subprocess.run(
        [sys.executable, str(REPO / "docker" / "make_secrets.py"), "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    result = compose_config(command, env_file)
    assert result.returncode == 0, result.stderr

    env_file.write_text("")  # no secrets: an error naming one, not a default
    result = compose_config(command, env_file)
    assert result.returncode != 0
    assert "docker/make_secrets.py" in result.stderr


def http(method: str, url: str, body: bytes | None = None, json_body: Any = None) -> bytes:
    headers = {}
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, f"{method} {url} answered {response.status}"
        return response.read()


def test_start_script_serves_tracking_and_artifacts_on_sqlite(
    tmp_path: Path, mlflow_server
) -> None:
    database = tmp_path / "m.db"
    base_url = mlflow_server(f"sqlite:///{database}")
    artifacts = next(tmp_path.glob("mlflow-server-*")) / "artifacts"
    assert database.is_file()

    api = f"{base_url}/api/2.0/mlflow"
    experiment = json.loads(
        http("POST", f"{api}/experiments/create", json_body={"name": "deployment-check"})
    )["experiment_id"]
    run = json.loads(http("POST", f"{api}/runs/create", json_body={"experiment_id": experiment}))
    artifact_uri = run["run"]["info"]["artifact_uri"]
    # --serve-artifacts: runs get proxied artifact URIs, stored under the destination.
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri
    relative = artifact_uri.removeprefix("mlflow-artifacts:/").strip("/")
    http(
        "PUT",
        f"{base_url}/api/2.0/mlflow-artifacts/artifacts/{relative}/hello.txt",
        body=b"hello from the deployment test",
    )
    stored = artifacts / relative / "hello.txt"
    assert stored.read_bytes() == b"hello from the deployment test"
