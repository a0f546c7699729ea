#!/usr/bin/env python3
"""Make the secrets of the multi-service deployment: every password and key docker-compose.yaml needs.

    docker/make_secrets.py              # writes the repository's .env (read by docker compose)
    docker/make_secrets.py --env-file /path/to/.env

Each missing (or empty) secret gets a fresh random value; a value already there is never changed,
so running it again is safe and other settings in the file stay as they are. The file is written
with mode 600, and the values are never printed. compose refuses to start without them
(``${VAR:?...}``).

A plain script on the standard library, not a ``visionops`` command: a container host needs only
python3 and docker, not the project's virtualenv (torch, Airflow, ...).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> kind. Passwords go into connection URLs, so they use URL-safe characters only.
SECRETS: dict[str, str] = {
    "POSTGRES_PASSWORD": "password",
    "AIRFLOW_DB_PASSWORD": "password",
    "MLFLOW_DB_PASSWORD": "password",
    "OPTUNA_DB_PASSWORD": "password",
    "AIRFLOW_ADMIN_PASSWORD": "password",
    "AIRFLOW_JWT_SECRET": "key",
    "AIRFLOW_API_SECRET_KEY": "key",
    "AIRFLOW_FERNET_KEY": "fernet",
    "MLFLOW_ADMIN_PASSWORD": "password",
    "MLFLOW_FLASK_SECRET_KEY": "key",
    "MLFLOW_SERVICE_PASSWORD": "password",
    "MLFLOW_READER_PASSWORD": "password",
}
HEADER = "# Secrets of docker-compose.yaml, made by docker/make_secrets.py. Keep this file private."
LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def new_secret(kind: str) -> str:
    """A random value of the kind: a Fernet key is 32 random bytes, URL-safe base64 (as Fernet.generate_key)."""
    if kind == "fernet":
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    # Drawn again when it starts with "-": Airflow's CLI (``users create -p``, as the stack and the
    # official image's entrypoint call it) would read such a password as an option, and the stack's
    # start failed on one value in 64.
    while (value := secrets.token_urlsafe(48 if kind == "key" else 32)).startswith("-"):
        pass
    return value


def unquoted(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def read_env(path: Path) -> dict[str, str]:
    """The KEY=VALUE settings of an env file (comments and blank lines skipped)."""
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            found[match.group(1)] = unquoted(match.group(2))
    return found


def make_secrets(path: Path) -> tuple[list[str], list[str]]:
    """Fill in the missing secrets of ``path`` (mode 600); returns the names (made, kept)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    existing = read_env(path)
    kept = [name for name in SECRETS if existing.get(name)]
    made = [name for name in SECRETS if name not in kept]
    values = {name: new_secret(SECRETS[name]) for name in made}
    out = []
    for line in lines:  # an empty secret's line is replaced where it stands
        match = LINE.match(line)
        name = match.group(1) if match and not line.lstrip().startswith("#") else None
        if name in values:
            out.append(f"{name}={values.pop(name)}")
        else:
            out.append(line)
    if values:
        if HEADER not in lines:
            out.append(HEADER)
        out.extend(f"{name}={value}" for name, value in values.items())
    write_private(path, "\n".join(out) + "\n")
    return made, kept


def write_private(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    # mkstemp creates the file with mode 600, so the secrets are not readable by others even for
    # a moment, and the rename gives an existing .env that mode too.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=REPO / ".env", help="default: %(default)s")
    args = parser.parse_args(argv)
    made, kept = make_secrets(args.env_file)
    print(f"{args.env_file}: made {', '.join(made) or 'nothing'}; kept {len(kept)} already set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
