"""No secret of the deployment has a usable committed default, and docker/make_secrets.py makes them all.

docker-compose.yaml is parsed and every ``${VAR...}`` in it read: each variable that names a password,
secret, key or token must be required (``${VAR:?...}``), every password inside a connection URL must
be one of them, and make_secrets.py must write exactly the required ones into a mode-600 .env that a
second run leaves as it was. The login itself: tests/integration/test_mlflow_auth.py.
"""

from __future__ import annotations

import importlib.util
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
SECRET_WORDS = ("PASSWORD", "SECRET", "KEY", "TOKEN")
# ${NAME}, ${NAME:-default}, ${NAME:?message}, ... and $NAME; $$ is compose's escaped dollar.
REFERENCE = re.compile(
    r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?[^}]*\}|(?P<bare>[A-Za-z_]\w*))"
)
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?P<password>[^@]*)@")
REQUIRED = re.compile(r"^\$\{[A-Za-z_]\w*:\?[^}]*\}$")


def load_make_secrets() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_secrets", REPO / "docker" / "make_secrets.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_secrets = load_make_secrets()


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def references(document: Any) -> list[tuple[str, str]]:
    """(variable, operator) of every reference; the operator is '' for a plain ${VAR} or $VAR."""
    found = []
    for text in strings(document):
        for match in REFERENCE.finditer(text):
            found.append((match["braced"] or match["bare"], match["op"] or ""))
    return found


def is_secret(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def required(compose: dict[str, Any]) -> set[str]:
    return {name for name, op in references(compose) if op == ":?"}


def test_every_secret_variable_is_required_never_defaulted(compose: dict[str, Any]) -> None:
    secret = [(name, op) for name, op in references(compose) if is_secret(name)]
    assert len({name for name, _ in secret}) >= 10, "the secrets were not found in the file"
    defaulted = sorted({name for name, op in secret if op != ":?"})
    assert not defaulted, (
        f"secrets with a default or without ':?' in docker-compose.yaml: {defaulted}"
    )


def test_only_secrets_are_required(required: set[str]) -> None:
    # Ports, images and URLs keep their defaults; a required one would be a secret without the name.
    assert {name for name in required if not is_secret(name)} == set()


def test_every_password_in_a_url_is_a_required_variable(compose: dict[str, Any]) -> None:
    urls = [text for text in strings(compose) if URL_PASSWORD.search(text)]
    assert len(urls) >= 5, "the connection URLs were not found"
    for text in urls:
        for match in URL_PASSWORD.finditer(text):
            assert REQUIRED.match(match["password"]), f"a password written out in {text!r}"


def test_every_secret_setting_of_a_service_is_a_required_variable(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if is_secret(key):
                assert REQUIRED.match(str(value)), f"{name}: {key} is {value!r}"


def test_make_secrets_writes_every_required_variable_mode_600(
    tmp_path: Path, required: set[str]
) -> None:
    env_file = tmp_path / ".env"
    made, kept = make_secrets.make_secrets(env_file)
    assert set(make_secrets.SECRETS) == required, "make_secrets.py and docker-compose.yaml disagree"
    assert set(made) == required and kept == []
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = make_secrets.read_env(env_file)
    assert set(values) == required
    assert all(len(value) >= 12 for value in values.values())  # MLflow's minimum for passwords
    # URL-safe, since passwords go into connection URLs as they are.
    assert all(re.fullmatch(r"[A-Za-z0-9_=-]+", value) for value in values.values())
    assert len(set(values.values())) == len(values), "two secrets are the same"


def test_the_fernet_key_is_one_airflow_accepts(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    make_secrets.make_secrets(tmp_path / ".env")
    key = make_secrets.read_env(tmp_path / ".env")["AIRFLOW_FERNET_KEY"]
    token = Fernet(key.encode()).encrypt(b"conn")
    assert Fernet(key.encode()).decrypt(token) == b"conn"


def test_make_secrets_keeps_existing_values_and_other_settings(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# mine\nMLFLOW_PUBLISHED_PORT=5001\nPOSTGRES_PASSWORD=chosen-by-me-1234\nMLFLOW_READER_PASSWORD=\n"
    )
    env_file.chmod(0o644)
    made, kept = make_secrets.make_secrets(env_file)
    assert kept == ["POSTGRES_PASSWORD"]
    assert "MLFLOW_READER_PASSWORD" in made  # an empty value is no secret: it is filled in
    first = env_file.read_text()
    assert first.startswith(
        "# mine\nMLFLOW_PUBLISHED_PORT=5001\nPOSTGRES_PASSWORD=chosen-by-me-1234\n"
    )
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = make_secrets.read_env(env_file)
    assert values["MLFLOW_READER_PASSWORD"]

    made, kept = make_secrets.make_secrets(env_file)
    assert made == [] and set(kept) == set(make_secrets.SECRETS)
    assert env_file.read_text() == first


def test_the_env_file_is_never_committed_nor_sent_to_an_image_build() -> None:
    for ignore_file in (".gitignore", ".dockerignore"):
        lines = (REPO / ignore_file).read_text(encoding="utf-8").splitlines()
        assert ".env" in lines, f".env is missing from {ignore_file}"


def test_no_secret_starts_with_a_dash() -> None:
    """A value starting with "-" is read as an option by Airflow's CLI (``users create -p``); one
    token_urlsafe draw in 64 starts so, which made the stack's start fail now and then."""
    drawn = [make_secrets.new_secret(kind) for kind in ("password", "key") for _ in range(1500)]
    assert not [value for value in drawn if value.startswith("-")]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", value) for value in drawn)
