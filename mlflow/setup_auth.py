#!/usr/bin/env python3
"""Create visionops' two accounts on an MLflow server running the basic-auth app, and grant them.

- the pipeline's service account (MLFLOW_SERVICE_USERNAME, `visionops`): role `visionops-pipeline`,
  EDIT on every experiment (create runs, log, tag) and MANAGE on every registered model (register
  versions, set and delete aliases: MLflow counts deleting an alias as a delete, which needs MANAGE);
- a read-only account (MLFLOW_READER_USERNAME, `viewer`): role `visionops-reader`, READ on every
  experiment and registered model (browse the UI, load `models:/<name>@champion`).

Idempotent, so it runs after every start (compose's `mlflow-init` service): a missing user or role is
created, a missing grant added, a different one set back, and the passwords are set to the ones in the
environment (so rotating a secret in .env takes effect on the next start). People get read access by
being assigned the `visionops-reader` role. Needs only mlflow (it runs in the server's image).

Environment: MLFLOW_TRACKING_URI (the server), MLFLOW_AUTH_ADMIN_USERNAME (admin) and
MLFLOW_AUTH_ADMIN_PASSWORD (the admin it calls as), MLFLOW_SERVICE_USERNAME, MLFLOW_SERVICE_PASSWORD,
MLFLOW_READER_USERNAME, MLFLOW_READER_PASSWORD, MLFLOW_SETUP_WAIT_S (60: how long to wait for the server).
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

from mlflow.exceptions import MlflowException, RestException
from mlflow.server.auth.client import AuthServiceClient

# Workspaces are off (basic_auth.ini), and MLflow then keeps every role in this one.
WORKSPACE = "default"
MIN_PASSWORD = 12  # MLflow's own rule; checked first to name the variable in the error
PIPELINE_ROLE = "visionops-pipeline"
READER_ROLE = "visionops-reader"
# (resource type, pattern) -> permission; "*" also covers experiments and models made later.
GRANTS: dict[str, dict[tuple[str, str], str]] = {
    PIPELINE_ROLE: {("experiment", "*"): "EDIT", ("registered_model", "*"): "MANAGE"},
    READER_ROLE: {("experiment", "*"): "READ", ("registered_model", "*"): "READ"},
}
SECRETS_HINT = "run docker/make_secrets.py and start the stack with its .env"


class SetupError(Exception):
    """A setting is missing or wrong; the message names it."""


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name) or default
    if not value:
        raise SetupError(f"{name} is not set: {SECRETS_HINT}")
    return value


def password(name: str) -> str:
    value = setting(name)
    if len(value) < MIN_PASSWORD:
        raise SetupError(f"{name} is shorter than {MIN_PASSWORD} characters: {SECRETS_HINT}")
    return value


def wait_for_server(url: str, timeout_s: float) -> None:
    """Wait for /health (exempt from login): compose may start this before the server answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SetupError(f"no answer from {url}/health within {timeout_s:.0f} s")
        time.sleep(1)


def ensure_user(client: AuthServiceClient, username: str, secret: str) -> str:
    """Create the user, or set its password to ``secret``; never an admin. Returns what was done."""
    try:
        user = client.get_user(username)
    except RestException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(username, secret)
        return "created"
    client.update_user_password(username, secret)
    if user.is_admin:  # an admin would bypass every grant below
        client.update_user_admin(username, False)
        return "password set, admin rights removed"
    return "password set"


def ensure_role(client: AuthServiceClient, name: str, grants: dict[tuple[str, str], str]) -> int:
    """The role with exactly these permissions on its patterns (others it has are left alone)."""
    role = next((r for r in client.list_roles(WORKSPACE) if r.name == name), None)
    if role is None:
        role = client.create_role(WORKSPACE, name, "visionops (mlflow/setup_auth.py)")
    held = {(p.resource_type, p.resource_pattern): p for p in client.list_role_permissions(role.id)}
    for (resource_type, pattern), permission in grants.items():
        current = held.get((resource_type, pattern))
        if current is None:
            client.add_role_permission(role.id, resource_type, pattern, permission)
        elif current.permission != permission:
            client.update_role_permission(current.id, permission)
    return role.id


def ensure_assigned(client: AuthServiceClient, username: str, role_id: int) -> None:
    if all(role.id != role_id for role in client.list_user_roles(username)):
        client.assign_role(username, role_id)


def setup(tracking_uri: str) -> list[str]:
    """Make the accounts and their roles on the server; returns one line per account."""
    admin = setting("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    accounts = {
        PIPELINE_ROLE: (
            setting("MLFLOW_SERVICE_USERNAME", "visionops"),
            password("MLFLOW_SERVICE_PASSWORD"),
        ),
        READER_ROLE: (
            setting("MLFLOW_READER_USERNAME", "viewer"),
            password("MLFLOW_READER_PASSWORD"),
        ),
    }
    names = [admin] + [username for username, _ in accounts.values()]
    if len(set(names)) != len(names):
        raise SetupError(f"the admin, service and reader accounts need three names, not {names}")
    # AuthServiceClient sends the credentials MLflow's client reads from the environment.
    os.environ["MLFLOW_TRACKING_USERNAME"] = admin
    os.environ["MLFLOW_TRACKING_PASSWORD"] = setting("MLFLOW_AUTH_ADMIN_PASSWORD")
    client = AuthServiceClient(tracking_uri)
    try:
        client.get_user(admin)
    except MlflowException as exc:
        if exc.get_http_status_code() == 401:
            raise SetupError(
                f"the server refused the login of {admin}: MLflow applies MLFLOW_AUTH_ADMIN_PASSWORD "
                "only on its first start, so it must be the admin's password now"
            ) from exc
        raise
    done = []
    for role, (username, secret) in accounts.items():
        what = ensure_user(client, username, secret)
        ensure_assigned(client, username, ensure_role(client, role, GRANTS[role]))
        done.append(f"{username}: {what}, role {role}")
    return done


def main() -> int:
    try:
        tracking_uri = setting("MLFLOW_TRACKING_URI").rstrip("/")
        wait_for_server(tracking_uri, float(os.environ.get("MLFLOW_SETUP_WAIT_S", "60")))
        for line in setup(tracking_uri):
            print(f"setup_auth: {line}")
    except (SetupError, MlflowException) as exc:  # MlflowException: a refused login, too
        print(f"setup_auth: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
