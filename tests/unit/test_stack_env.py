"""The process stack takes its settings from docker-compose.yaml: compose's values, this machine's addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionops.cli.stack_env import (
    Addresses,
    ComposeError,
    interpolate,
    load_compose,
    localise,
    service_command,
    service_environment,
)

REPO = Path(__file__).resolve().parents[2]


def test_interpolation_follows_compose() -> None:
    v = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${MISSING}-$$HOME", v) == "x--$HOME"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${MISSING-d}", v) == "d  d"
    with pytest.raises(ComposeError, match="MISSING: run make_secrets"):
        interpolate("${MISSING:?run make_secrets}", v)
    with pytest.raises(ComposeError, match="EMPTY"):
        interpolate("${EMPTY:?empty}", v)


def test_addresses_and_paths_are_this_machines(tmp_path: Path) -> None:
    at = Addresses(pg_port=5433, db_prefix="p_", mlflow_url="http://127.0.0.1:15000",
                   airflow_url="http://127.0.0.1:18080", repo=tmp_path / "repo", home=tmp_path / "h")  # fmt: skip
    url = "postgresql+psycopg2://airflow:pw@postgres:5432/airflow"
    assert localise(url, at) == "postgresql+psycopg2://p_airflow:pw@127.0.0.1:5433/p_airflow"
    assert localise("http://mlflow:5000", at) == "http://127.0.0.1:15000"
    assert localise("/opt/visionops/data", at) == (tmp_path / "h" / "data").as_uri()
    assert localise("/opt/visionops/data/home", at) == str(tmp_path / "h" / "home")


def test_every_airflow_setting_of_compose_reaches_the_process_stack(tmp_path: Path) -> None:
    compose = load_compose(REPO / "docker-compose.yaml")
    secrets = {name: f"secret-{name.lower()}" for name in (
        "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "OPTUNA_DB_PASSWORD", "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY", "MLFLOW_SERVICE_PASSWORD",
    )}  # fmt: skip
    at = Addresses(repo=tmp_path, home=tmp_path / "stack")
    env = service_environment(compose, "airflow-scheduler", secrets, at)
    declared = compose["x-airflow-common"]["environment"]
    assert set(env) == set(declared)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/0"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "secret-airflow_jwt_secret"
    assert "@postgres" not in "".join(env.values()) and "/opt/" not in "".join(env.values())
    assert env["VISIONOPS_DATA_ROOT"].startswith("file://")
    assert service_command(compose, "airflow-worker", {}) == [
        "celery",
        "worker",
        "--queues",
        "default",
    ]
    gpu = service_command(compose, "airflow-worker-gpu", {"AIRFLOW_GPU_WORKER_QUEUES": "gpu"})
    assert gpu[:4] == ["celery", "worker", "--queues", "gpu"]


def test_a_missing_secret_is_an_error_naming_it(tmp_path: Path) -> None:
    compose = load_compose(REPO / "docker-compose.yaml")
    with pytest.raises(ComposeError, match="AIRFLOW_DB_PASSWORD"):
        service_environment(
            compose, "airflow-scheduler", {}, Addresses(repo=tmp_path, home=tmp_path)
        )


@pytest.mark.parametrize("existing", [False, True])
def test_the_admin_password_reaches_airflow_even_when_it_starts_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """make_secrets draws URL-safe passwords, one in 64 of which starts with "-": passed as ``-p VALUE``,
    Airflow's CLI read it as an option and the stack did not start. The commands the stack runs are
    parsed here by Airflow's own CLI parser."""
    from types import SimpleNamespace

    from airflow.cli import cli_parser

    from visionops.cli import stack

    calls: list[list[str]] = []

    def run(cmd: list[str], *args: object, **kwargs: object) -> SimpleNamespace:
        calls.append(list(cmd))
        return SimpleNamespace(returncode=0, stdout="already exists" if existing else "", stderr="")

    monkeypatch.setattr(stack.subprocess, "run", run)
    monkeypatch.setattr(stack, "_run", lambda cmd, *args, **kwargs: calls.append(list(cmd)))
    (tmp_path / "logs").mkdir()
    password = "-Fq3_kX9"  # as make_secrets may draw it
    stack.init_airflow({}, {"AIRFLOW_ADMIN_PASSWORD": password}, SimpleNamespace(home=tmp_path), 1)
    users = [cmd[1:] for cmd in calls if cmd[1:2] == ["users"]]
    assert [u[1] for u in users] == (["create", "reset-password"] if existing else ["create"])
    for argv in users:
        parsed = cli_parser.get_parser().parse_args(argv)
        assert (parsed.username, parsed.password) == ("admin", password), argv
