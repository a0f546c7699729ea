"""Checks of the deployment files that need no container engine and no process.

docker-compose.yaml is parsed and checked for the services, shared settings and repository
paths it relies on; the Airflow and MLflow Dockerfiles copy only paths that exist; MLflow asks for a
login and the pipeline's processes log in. Running the commands (``bash -n mlflow/start.sh``,
``docker compose config``, start.sh really started on SQLite): tests/integration/test_deployment_commands.py;
the login itself: tests/integration/test_mlflow_auth.py; the secrets: test_deployment_secrets.py.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
AIRFLOW_DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"
MLFLOW_DOCKERFILE = REPO / "mlflow" / "Dockerfile"

EXPECTED_SERVICES = {
    "postgres",
    "redis",
    "mlflow",
    "mlflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
    "airflow-init",
}
SHARED_AIRFLOW_SETTINGS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "VISIONOPS_DATA_ROOT",
    "VISIONOPS_OPTUNA_STORAGE",
    "VISIONOPS_PROMOTION_LOCK_URL",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict), "docker-compose.yaml is not a mapping"
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def airflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in services.items() if name.startswith("airflow-")}


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a KEY=VALUE list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def dependencies_of(service: dict[str, Any]) -> list[str]:
    depends_on = service.get("depends_on") or []
    return list(depends_on)  # a list of names, or a mapping keyed by name


def repo_path(relative: str) -> Path:
    return (REPO / relative).resolve()


def bind_sources(service: dict[str, Any]) -> list[str]:
    """Host paths of the service's bind mounts (short or long syntax), as written."""
    sources = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source = volume.split(":", 1)[0]
        elif volume.get("type") == "bind":
            source = volume["source"]
        else:
            continue
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def build_paths(service: dict[str, Any]) -> tuple[str, str] | None:
    """(context, dockerfile) of a service that builds its image, both relative to the repo."""
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return build, str(Path(build) / "Dockerfile")
    context = build.get("context", ".")
    return context, str(Path(context) / build.get("dockerfile", "Dockerfile"))


def test_compose_file_is_valid_yaml_with_the_expected_services(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert isinstance(services, dict)
    missing = EXPECTED_SERVICES - services.keys()
    assert not missing, f"services missing from docker-compose.yaml: {sorted(missing)}"
    assert {"postgres-data", "mlflow-artifacts", "visionops-data"} <= set(compose["volumes"])


def test_every_airflow_service_shares_executor_database_broker_and_tracking(
    services: dict[str, dict[str, Any]],
) -> None:
    airflow = airflow_services(services)
    assert len(airflow) >= 7
    environments = {name: environment_of(spec) for name, spec in airflow.items()}
    for name, env in environments.items():
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", name
    for setting in SHARED_AIRFLOW_SETTINGS:
        values = {name: env.get(setting) for name, env in environments.items()}
        assert None not in values.values(), f"{setting} missing in some Airflow service: {values}"
        assert len(set(values.values())) == 1, f"{setting} differs between services: {values}"

    env = environments["airflow-scheduler"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["VISIONOPS_DATA_ROOT"] == "/opt/visionops/data"
    assert env["VISIONOPS_OPTUNA_STORAGE"].startswith("postgresql+psycopg2://")
    assert env["VISIONOPS_OPTUNA_STORAGE"].endswith("@postgres:5432/optuna")
    # Promotions through the MLflow server are serialised by an advisory lock in PostgreSQL.
    assert env["VISIONOPS_PROMOTION_LOCK_URL"].startswith("postgresql+psycopg2://")
    assert env["VISIONOPS_PROMOTION_LOCK_URL"].endswith("@postgres:5432/optuna")


def test_airflow_services_mount_the_project_and_the_shared_data_volume(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, spec in airflow_services(services).items():
        targets = {
            (v.split(":")[0], v.split(":")[1]) if isinstance(v, str) else (v["source"], v["target"])
            for v in spec["volumes"]
        }
        assert ("./dags", "/opt/airflow/dags") in targets, name
        assert ("./plugins", "/opt/airflow/plugins") in targets, name
        assert ("./conf", "/opt/visionops/conf") in targets, name
        assert ("visionops-data", "/opt/visionops/data") in targets, name
        assert build_paths(spec) == (".", "docker/airflow.Dockerfile"), name


def test_workers_listen_on_their_queues_and_the_gpu_worker_reserves_a_gpu(
    services: dict[str, dict[str, Any]],
) -> None:
    assert "--queues default" in services["airflow-worker"]["command"]
    gpu_worker = services["airflow-worker-gpu"]
    # gpu first, default in a free slot; the queues are a setting (AIRFLOW_GPU_WORKER_QUEUES).
    assert "--queues ${AIRFLOW_GPU_WORKER_QUEUES:-gpu,default}" in gpu_worker["command"]
    devices = gpu_worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_mlflow_service_builds_from_mlflow_folder_on_postgres(
    services: dict[str, dict[str, Any]],
) -> None:
    mlflow = services["mlflow"]
    context, dockerfile = build_paths(mlflow)
    assert repo_path(context) == repo_path("mlflow")
    assert repo_path(dockerfile) == repo_path("mlflow/Dockerfile")
    env = environment_of(mlflow)
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    # Workers call the server as mlflow:5000, which MLflow's Host check must let through.
    assert "mlflow:*" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_mlflow_asks_for_a_login_and_the_pipeline_logs_in_as_its_service_account(
    services: dict[str, dict[str, Any]],
) -> None:
    server = environment_of(services["mlflow"])
    assert server["MLFLOW_AUTH"] == "basic"
    assert server["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert server["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert server["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_FLASK_SECRET_KEY:?")

    init = services["mlflow-init"]
    assert init["entrypoint"] == ["python", "/opt/mlflow/setup_auth.py"]
    assert init["image"] == services["mlflow"]["image"]
    assert init["depends_on"]["mlflow"]["condition"] == "service_healthy"
    setup = environment_of(init)
    assert setup["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert setup["MLFLOW_AUTH_ADMIN_PASSWORD"] == server["MLFLOW_AUTH_ADMIN_PASSWORD"]

    # The account mlflow-init makes is the one every Airflow process logs in with.
    for name, spec in airflow_services(services).items():
        env = environment_of(spec)
        assert env["MLFLOW_TRACKING_USERNAME"] == setup["MLFLOW_SERVICE_USERNAME"], name
        assert env["MLFLOW_TRACKING_PASSWORD"] == setup["MLFLOW_SERVICE_PASSWORD"], name
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        condition = services[worker]["depends_on"]["mlflow-init"]["condition"]
        assert condition == "service_completed_successfully", worker


def test_the_auth_config_refuses_by_default_and_holds_no_secret() -> None:
    config = configparser.ConfigParser()
    config.read(REPO / "mlflow" / "basic_auth.ini")
    auth = config["mlflow"]
    # An account sees only what it is granted (mlflow/basic_auth.ini says why not READ).
    assert auth["default_permission"] == "NO_PERMISSIONS"
    assert "admin_password" not in auth  # from MLFLOW_AUTH_ADMIN_PASSWORD only
    assert auth["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"


def test_every_service_has_a_healthcheck_except_the_one_off_init(
    services: dict[str, dict[str, Any]],
) -> None:
    without = {name for name, spec in services.items() if "healthcheck" not in spec}
    assert without == {"airflow-init", "mlflow-init"}


def test_every_depends_on_names_an_existing_service(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, spec in services.items():
        for dependency in dependencies_of(spec):
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
            assert dependency != name


def test_every_repository_path_used_by_the_compose_file_exists(
    services: dict[str, dict[str, Any]],
) -> None:
    used: set[str] = set()
    for spec in services.values():
        used.update(bind_sources(spec))
        paths = build_paths(spec)
        if paths is not None:
            used.update(paths)
    assert {"./dags", "./plugins", "./conf", "./docker/postgres-init.sql"} <= used
    missing = sorted(path for path in used if not repo_path(path).exists())
    assert not missing, f"paths used by docker-compose.yaml missing from the repo: {missing}"


def pins(text: str) -> dict[str, str]:
    """name (lower case) -> version of the ``name==version`` pins in requirements.txt."""
    found = {}
    for line in text.splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            found[name.strip().lower()] = version.strip()
    return found


def test_mlflow_image_installs_what_requirements_pins_and_copies_existing_files() -> None:
    text = MLFLOW_DOCKERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    pinned = pins((REPO / "requirements.txt").read_text(encoding="utf-8"))
    for package, arg in {
        "mlflow": "MLFLOW_VERSION",
        "psycopg2-binary": "PSYCOPG2_VERSION",
        "flask-wtf": "FLASK_WTF_VERSION",  # the basic-auth app needs it
    }.items():
        assert args[arg] == pinned[package], f"{arg} differs from requirements.txt's {package}"
    copied = [
        word
        for line in text.splitlines()
        if line.startswith("COPY ")
        for word in line.split()[1:-1]
        if not word.startswith("--")
    ]
    assert {"start.sh", "basic_auth.ini", "setup_auth.py"} <= set(copied)
    assert all((REPO / "mlflow" / source).exists() for source in copied)


def test_airflow_dockerfile_copies_only_existing_paths() -> None:
    copied = []
    for line in AIRFLOW_DOCKERFILE.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            copied.extend(s for s in sources if not any(c in s for c in "*?["))
    assert "requirements.txt" in copied
    missing = [source for source in copied if not repo_path(source).exists()]
    assert not missing, f"airflow.Dockerfile copies paths missing from the repo: {missing}"
