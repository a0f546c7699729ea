"""The process stack's environment, read from docker-compose.yaml: one source for both ways to run.

``make stack`` starts the services compose describes as processes on this machine. Their settings are
not written a second time: each service's ``environment`` is taken from the compose file, with its
``${VAR:?...}`` references filled in from the stack's ``.env`` as compose fills them, and only the
addresses that differ between a container network and one machine rewritten (``ADDRESSES``):
``postgres:5432`` becomes the local server (with the stack's database name prefix), ``redis:6379``,
``mlflow:5000`` and ``airflow-apiserver:8080`` their ports on 127.0.0.1, and the image's paths
(``/opt/visionops``, ``/opt/airflow``) the repository and the stack's home. A setting added to
compose reaches the process stack on its next start; ``tests/unit/test_stack_env.py`` checks both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The stack's record of its services and addresses under its home (``visionops stack up`` writes it).
STATE_FILE = "stack.json"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; $$ is a literal $.
_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}")
# A PostgreSQL URL on the compose network: user, database.
_PG_URL = re.compile(
    r"(postgresql(?:\+\w+)?://)([A-Za-z0-9_]+)(:[^@]*)?@postgres:5432/([A-Za-z0-9_]+)"
)


class ComposeError(Exception):
    """A setting compose needs is missing (the message is compose's own ``:?`` text)."""


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Fill ``${...}`` references the way docker compose does."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        present = name in variables
        value = variables.get(name, "")
        if op in (":-", ":?") and not value or op in ("-", "?") and not present:
            if op.endswith("?"):
                raise ComposeError(f"{name}: {arg or 'is not set'}")
            if op.endswith("-"):
                return interpolate(arg, variables)
        if op is None and not present:
            return ""
        return value

    return _REFERENCE.sub(one, value)


@dataclass(frozen=True)
class Addresses:
    """Where the compose services are on this machine."""

    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    db_prefix: str = "visionops_"
    redis_url: str = "redis://127.0.0.1:6379/0"
    mlflow_url: str = "http://127.0.0.1:5000"
    airflow_url: str = "http://127.0.0.1:8080"
    repo: Path = field(default_factory=lambda: Path.cwd())
    home: Path = field(default_factory=lambda: Path.cwd() / ".visionops" / "stack")

    @property
    def data_root(self) -> str:
        # An fsspec URL, as a shared store is named on several hosts (here: a folder all processes reach).
        return (self.home / "data").as_uri()


def localise(value: str, at: Addresses) -> str:
    """A compose value with its container addresses and paths replaced by this machine's."""

    def pg(match: re.Match[str]) -> str:
        scheme, user, password, db = match.groups()
        return f"{scheme}{at.db_prefix}{user}{password or ''}@{at.pg_host}:{at.pg_port}/{at.db_prefix}{db}"

    value = _PG_URL.sub(pg, value)
    replacements = [
        ("redis://redis:6379/0", at.redis_url),
        ("http://mlflow:5000", at.mlflow_url),
        ("http://airflow-apiserver:8080", at.airflow_url),
        ("/opt/visionops/data/home", str(at.home / "home")),
        ("/opt/visionops/data", at.data_root),
        ("/opt/visionops", str(at.repo)),
        ("/opt/airflow", str(at.home / "airflow")),
        ("/mlflow/artifacts", str(at.home / "mlflow-artifacts")),
    ]
    for old, new in replacements:
        value = value.replace(old, new)
    return value


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (compose's .env format; comments and blanks skipped, quotes removed)."""
    found: dict[str, str] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[key.strip()] = value
    return found


def load_compose(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))  # resolves the << merge keys
    if not isinstance(document, dict) or "services" not in document:
        raise ComposeError(f"{path}: not a compose file (no services)")
    return document


def service_environment(
    compose: dict[str, Any], service: str, variables: dict[str, str], at: Addresses
) -> dict[str, str]:
    """The environment compose would give ``service``, as it applies on this machine."""
    try:
        spec = compose["services"][service]
    except KeyError:
        raise ComposeError(f"docker-compose.yaml has no service {service!r}") from None
    env = spec.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {
        key: localise(interpolate(str(value), variables), at)
        for key, value in env.items()
        if value is not None
    }


def service_command(compose: dict[str, Any], service: str, variables: dict[str, str]) -> list[str]:
    """The service's command (an Airflow sub-command for the airflow-* services), interpolated."""
    command = compose["services"][service].get("command") or []
    if isinstance(command, str):
        command = command.split()
    return [interpolate(str(part), variables) for part in command]


def compose_variables(env_file: Path) -> dict[str, str]:
    """What compose interpolates from: the env file, then this process's environment (which wins)."""
    return {**read_env_file(env_file), **os.environ}
