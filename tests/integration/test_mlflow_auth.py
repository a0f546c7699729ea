"""MLflow with a login, as the deployment runs it: who may do what.

One server for the module: the project's ``mlflow/start.sh`` with ``MLFLOW_AUTH=basic`` (MLflow's
basic-auth app with ``mlflow/basic_auth.ini``) on SQLite, tracking and auth stores in a temporary
folder; ``mlflow/setup_auth.py`` run twice, as compose's ``mlflow-init`` runs it on every start.
Then: an anonymous request or a wrong password is refused (401); the read-only account browses,
reads the champion and downloads its files, but is refused (403) when it would write; the service
account creates runs, registers versions and moves ``champion``, as the pipeline does.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import start_project_mlflow_server, stop_process_group

REPO = Path(__file__).resolve().parents[2]
SETUP_AUTH = REPO / "mlflow" / "setup_auth.py"
ADMIN = ("admin", secrets.token_urlsafe(16))
SERVICE = ("visionops", secrets.token_urlsafe(16))
READER = ("viewer", secrets.token_urlsafe(16))
MODEL = f"auth-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's URL, once it answers /health (which needs no login)."""
    folder = tmp_path_factory.mktemp("mlflow-auth")
    process, url = start_project_mlflow_server(
        folder,
        f"sqlite:///{folder}/mlflow.db",
        {
            "MLFLOW_AUTH": "basic",
            "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{folder}/auth/basic_auth.db",
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
        },
        timeout_s=120,
    )
    try:
        assert (folder / "auth" / "basic_auth.db").is_file(), (
            "the auth store is not where it was told"
        )
        yield url
    finally:
        stop_process_group(process)


def setup_env(
    url: str, reader_password: str = READER[1], admin_password: str = ADMIN[1]
) -> dict[str, str]:
    """What compose's mlflow-init is given."""
    return {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_SERVICE_USERNAME": SERVICE[0],
        "MLFLOW_SERVICE_PASSWORD": SERVICE[1],
        "MLFLOW_READER_USERNAME": READER[0],
        "MLFLOW_READER_PASSWORD": reader_password,
    }


@pytest.fixture(scope="module")
def accounts(server: str) -> str:
    """The two accounts, made by the real command."""
    env = {**os.environ, **setup_env(server), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    result = subprocess.run(
        [sys.executable, str(SETUP_AUTH)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": created, role visionops-") == 2, result.stdout
    return server


@pytest.fixture()
def setup_again(
    accounts: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``setup_again(reader_password=...)``: setup_auth.py's main once more, in this process
    (the command itself ran in ``accounts``; another interpreter would only add seconds)."""
    spec = importlib.util.spec_from_file_location("setup_auth", SETUP_AUTH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # main() logs in as the admin through these; monkeypatch puts them back afterwards.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)

    def run(
        reader_password: str = READER[1], admin_password: str = ADMIN[1]
    ) -> tuple[int, str, str]:
        for key, value in setup_env(accounts, reader_password, admin_password).items():
            monkeypatch.setenv(key, value)
        code = module.main()
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def status(method: str, url: str, user: tuple[str, str] | None = None, body: Any = None) -> int:
    """The HTTP status of one REST call, as the given user or anonymous."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(user).encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture()
def login(
    accounts: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[tuple[str, str]], Any]]:
    """``login(user)``: an MlflowClient that sends the user's credentials, as compose's services do."""
    import mlflow
    from mlflow import MlflowClient

    # Earlier test modules leave MLflow's process-wide URIs on their own stores (set_registry_uri
    # also exports MLFLOW_REGISTRY_URI): mlflow.artifacts must resolve models:/ on this server.
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())

    def as_user(user: tuple[str, str]) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", accounts)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", accounts)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
        mlflow.set_tracking_uri(accounts)
        mlflow.set_registry_uri(accounts)
        return MlflowClient(accounts, accounts)

    yield as_user
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def register_version(client: Any, name: str, experiment_id: str, tmp: Path) -> tuple[str, str]:
    """What the pipeline's train and register stages do, small: a run, a logged model, a version."""
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "val_accuracy", 0.9)
    model = client.create_logged_model(experiment_id, source_run_id=run.info.run_id, name="net")
    folder = tmp / model.model_id
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text(f"model_id: {model.model_id}\nflavors: {{}}\n")
    client.log_model_artifacts(model.model_id, str(folder))
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(
        name, f"models:/{model.model_id}", run.info.run_id, model_id=model.model_id
    )
    return version.version, run.info.run_id


@pytest.fixture(scope="module")
def champion(accounts: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The service account's experiment and registered model, version 1 as ``champion``."""
    from mlflow import MlflowClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", accounts)
        patch.setenv("MLFLOW_TRACKING_USERNAME", SERVICE[0])
        patch.setenv("MLFLOW_TRACKING_PASSWORD", SERVICE[1])
        client = MlflowClient(accounts, accounts)
        experiment_id = client.create_experiment(f"{MODEL}-experiment")
        client.create_registered_model(MODEL)
        version, run_id = register_version(
            client, MODEL, experiment_id, tmp_path_factory.mktemp("models")
        )
        client.set_registered_model_alias(MODEL, "champion", version)
    return {"experiment_id": experiment_id, "version": version, "run_id": run_id}


def test_anonymous_requests_and_wrong_passwords_are_refused(accounts: str) -> None:
    search = f"{accounts}/api/2.0/mlflow/experiments/search?max_results=10"
    assert status("GET", search) == 401
    assert status("GET", search, (READER[0], "not-the-password")) == 401
    assert status("GET", search, ("nobody", READER[1])) == 401
    assert status("GET", f"{accounts}/api/2.0/mlflow/registered-models/search") == 401
    assert status("GET", search, READER) == 200
    assert status("GET", f"{accounts}/health") == 200  # the health checks need no login


def test_service_account_registers_versions_and_moves_champion(
    login: Callable, tmp_path: Path, champion: dict[str, str]
) -> None:
    client = login(SERVICE)
    first = champion["version"]
    second, run_id = register_version(client, MODEL, champion["experiment_id"], tmp_path)
    client.set_registered_model_alias(MODEL, "champion", second)
    client.set_model_version_tag(MODEL, second, "visionops.gate", "passed")
    assert client.get_model_version_by_alias(MODEL, "champion").version == second
    # A rollback deletes and sets the alias: MLflow counts the delete as one, which needs MANAGE.
    # It ends where it began, so that the reader's test finds version 1 in whatever order.
    client.delete_registered_model_alias(MODEL, "champion")
    client.set_registered_model_alias(MODEL, "champion", first)
    assert client.get_model_version_by_alias(MODEL, "champion").version == first
    assert client.get_run(run_id).info.status == "FINISHED"


def test_reader_browses_and_loads_the_champion(
    login: Callable, champion: dict[str, str], tmp_path: Path
) -> None:
    import mlflow

    client = login(READER)
    names = [e.name for e in client.search_experiments()]
    assert f"{MODEL}-experiment" in names
    runs = client.search_runs([champion["experiment_id"]])
    assert champion["run_id"] in [r.info.run_id for r in runs]
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert (version.version, version.run_id) == (champion["version"], champion["run_id"])
    assert client.get_registered_model(MODEL).aliases["champion"] == champion["version"]
    # Loading the model starts with its files, downloaded through the server's artifact proxy.
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion", dst_path=str(tmp_path))
    assert (Path(local) / "MLmodel").is_file()


def test_reader_is_refused_every_write(accounts: str, champion: dict[str, str]) -> None:
    api = f"{accounts}/api/2.0/mlflow"
    writes = {
        "set champion": (
            "POST",
            f"{api}/registered-models/alias",
            {"name": MODEL, "alias": "champion", "version": champion["version"]},
        ),
        "delete champion": (
            "DELETE",
            f"{api}/registered-models/alias",
            {"name": MODEL, "alias": "champion"},
        ),
        "create a run": (
            "POST",
            f"{api}/runs/create",
            {"experiment_id": champion["experiment_id"]},
        ),
        "tag a version": (
            "POST",
            f"{api}/model-versions/set-tag",
            {"name": MODEL, "version": champion["version"], "key": "k", "value": "v"},
        ),
        "create a user": ("POST", f"{api}/users/create", {"username": "x", "password": "x" * 16}),
        "grant itself": (
            "POST",
            f"{accounts}/api/3.0/mlflow/users/permissions/grant",
            {
                "username": READER[0],
                "resource_type": "registered_model",
                "resource_id": "*",
                "permission": "MANAGE",
            },
        ),
    }
    answers = {
        what: status(method, url, READER, body) for what, (method, url, body) in writes.items()
    }
    assert answers == dict.fromkeys(writes, 403)
    # and anonymously not even that far
    method, url, body = writes["set champion"]
    assert status(method, url, None, body) == 401


def test_setup_again_changes_nothing_but_applies_a_changed_password(
    accounts: str, setup_again: Callable[..., tuple[int, str, str]]
) -> None:
    search = f"{accounts}/api/2.0/mlflow/experiments/search?max_results=1"
    rotated = secrets.token_urlsafe(16)
    try:
        code, out, err = setup_again(reader_password=rotated)
        assert code == 0, err
        assert out.count(": password set, role visionops-") == 2, out
        assert status("GET", search, (READER[0], rotated)) == 200
        assert status("GET", search, READER) == 401
    finally:
        assert setup_again()[0] == 0
    assert status("GET", search, READER) == 200


def test_setup_refuses_a_short_password_and_a_wrong_admin(
    setup_again: Callable[..., tuple[int, str, str]],
) -> None:
    code, _, err = setup_again(reader_password="short")
    assert code == 1
    assert "MLFLOW_READER_PASSWORD is shorter than 12 characters" in err
    code, _, err = setup_again(admin_password="not-the-admin-password")
    assert code == 1
    assert "the server refused the login of admin" in err
