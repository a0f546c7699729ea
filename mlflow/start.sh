#!/usr/bin/env bash
# Start the MLflow tracking server (UI, REST API, model registry and artifact proxy) from
# environment variables. It is the entrypoint of the mlflow/ image and runs as is on a
# developer machine, e.g.
#
#   MLFLOW_BACKEND_STORE_URI=postgresql://postgres@127.0.0.1:5432/mlflow mlflow/start.sh
#
# Variables (all optional):
#   MLFLOW_BACKEND_STORE_URI      tracking + registry store   (sqlite:////mlflow/mlflow.db)
#   MLFLOW_ARTIFACTS_DESTINATION  where proxied artifacts go  (/mlflow/artifacts)
#   MLFLOW_HOST                   interface to bind           (0.0.0.0)
#   MLFLOW_PORT                   port                        (5000)
#   MLFLOW_WORKERS                server worker processes     (2)
#   MLFLOW_DB_WAIT_TRIES          connection attempts before giving up on a database server (30)
#   MLFLOW_DB_WAIT_INTERVAL       seconds between attempts    (2)
#   MLFLOW_SERVER_ALLOWED_HOSTS   read by mlflow itself: Host headers accepted besides the default
#                                 localhost and private IPs (set it when clients use a DNS name)
#   MLFLOW_AUTH                   basic: MLflow's basic-auth app (basic_auth.ini beside this
#                                 script); none: no login at all, for a server on this machine only
#                                 (basic)
#   MLFLOW_AUTH_CONFIG_TEMPLATE   the auth ini                (basic_auth.ini beside this script)
#   MLFLOW_AUTH_DATABASE_URI      users, roles and grants     (the ini's database_uri)
#   MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY
#                                 read by mlflow itself with MLFLOW_AUTH=basic: the admin created on
#                                 the first start, and the key that signs CSRF tokens (no defaults)
# Extra arguments are passed on to `mlflow server`.
set -euo pipefail

export MLFLOW_BACKEND_STORE_URI="${MLFLOW_BACKEND_STORE_URI:-sqlite:////mlflow/mlflow.db}"
export MLFLOW_ARTIFACTS_DESTINATION="${MLFLOW_ARTIFACTS_DESTINATION:-/mlflow/artifacts}"
MLFLOW_HOST="${MLFLOW_HOST:-0.0.0.0}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MLFLOW_WORKERS="${MLFLOW_WORKERS:-2}"
export MLFLOW_DB_WAIT_TRIES="${MLFLOW_DB_WAIT_TRIES:-30}"
export MLFLOW_DB_WAIT_INTERVAL="${MLFLOW_DB_WAIT_INTERVAL:-2}"
MLFLOW_AUTH="${MLFLOW_AUTH:-basic}"
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MLFLOW_AUTH_CONFIG_TEMPLATE="${MLFLOW_AUTH_CONFIG_TEMPLATE:-$script_dir/basic_auth.ini}"

if ! mlflow_bin="$(command -v mlflow)"; then
    echo "start.sh: the 'mlflow' command is not on PATH (pip install mlflow, or activate the venv)" >&2
    exit 127
fi
# The database probe must run on the interpreter that has mlflow (and so SQLAlchemy and the
# DB driver); prefer the python beside the mlflow script, which is that venv's interpreter.
python_bin="$(dirname "$mlflow_bin")/python"
[[ -x "$python_bin" ]] || python_bin="$(command -v python3)"

# Prints the local filesystem path behind a sqlite:/file: URI or a plain path; nothing for a
# remote location (postgresql://, s3://, ...).
local_path_of() {
    local uri="${1%%\?*}"
    case "$uri" in
        sqlite:///:memory:) ;;
        sqlite:///*) printf '%s\n' "${uri#sqlite:///}" ;;
        file://*) printf '%s\n' "${uri#file://}" ;;
        *:/*) ;;
        *) printf '%s\n' "$uri" ;;
    esac
}

# Waits until the database server accepts connections: in compose the server container can
# start before PostgreSQL is ready, and mlflow gives up at once on a refused connection.
wait_for_database() {
    "$python_bin" - <<'PY'
import os
import sys
import time

import sqlalchemy
from sqlalchemy.exc import OperationalError

tries = int(os.environ["MLFLOW_DB_WAIT_TRIES"])
interval = float(os.environ["MLFLOW_DB_WAIT_INTERVAL"])
# The URI is read from the environment and never printed: it may hold a password.
engine = sqlalchemy.create_engine(os.environ["MLFLOW_BACKEND_STORE_URI"])
for attempt in range(1, tries + 1):
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except OperationalError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0:1]
        print(
            f"start.sh: database not ready ({attempt}/{tries}): {' '.join(reason)}",
            file=sys.stderr,
        )
        if attempt < tries:
            time.sleep(interval)
    else:
        engine.dispose()
        sys.exit(0)
print(f"start.sh: database still unreachable after {tries} tries, giving up", file=sys.stderr)
sys.exit(1)
PY
}

# A bare postgresql:// URI means psycopg (3) to SQLAlchemy 2.1 but psycopg2 to SQLAlchemy 2.0;
# name the driver that is installed so that the URI works with either.
if [[ "$MLFLOW_BACKEND_STORE_URI" == postgresql://* ]]; then
    pg_driver="$("$python_bin" -c 'import importlib.util as u
print(next((d for d in ("psycopg", "psycopg2") if u.find_spec(d)), ""))')"
    if [[ -n "$pg_driver" ]]; then
        MLFLOW_BACKEND_STORE_URI="postgresql+${pg_driver}://${MLFLOW_BACKEND_STORE_URI#postgresql://}"
    fi
fi

case "$MLFLOW_BACKEND_STORE_URI" in
    postgresql*|mysql*|mssql*) wait_for_database ;;
    *)
        db_path="$(local_path_of "$MLFLOW_BACKEND_STORE_URI")"
        if [[ -n "$db_path" ]]; then
            mkdir -p "$(dirname "$db_path")"
        fi
        ;;
esac

artifacts_path="$(local_path_of "$MLFLOW_ARTIFACTS_DESTINATION")"
if [[ -n "$artifacts_path" ]]; then
    mkdir -p "$artifacts_path"
fi

# MLflow reads the auth store's URI from the ini only, so the ini is copied with the URI of
# MLFLOW_AUTH_DATABASE_URI into a folder only this user can read (the URI may hold a password),
# and a SQLite store's folder is made as for the tracking store.
configure_auth() {
    [[ -r "$MLFLOW_AUTH_CONFIG_TEMPLATE" ]] || {
        echo "start.sh: no auth config at $MLFLOW_AUTH_CONFIG_TEMPLATE" >&2
        exit 1
    }
    local folder
    folder="$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")"  # mode 700
    export MLFLOW_AUTH_CONFIG_PATH="$folder/basic_auth.ini"
    auth_db_uri="$("$python_bin" - "$MLFLOW_AUTH_CONFIG_TEMPLATE" "$MLFLOW_AUTH_CONFIG_PATH" <<'PY'
import configparser
import os
import sys

template, target = sys.argv[1:3]
config = configparser.ConfigParser(interpolation=None)
config.read(template)
uri = os.environ.get("MLFLOW_AUTH_DATABASE_URI") or config["mlflow"]["database_uri"]
# MLflow reads the file with configparser's default interpolation, where % must be doubled
# (a percent-encoded password).
config["mlflow"]["database_uri"] = uri.replace("%", "%%")
with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
    config.write(handle)
print(uri)
PY
)"
    local auth_db_path
    auth_db_path="$(local_path_of "$auth_db_uri")"
    if [[ -n "$auth_db_path" ]]; then
        mkdir -p "$(dirname "$auth_db_path")"
    fi
}

app_args=()
case "$MLFLOW_AUTH" in
    basic)
        configure_auth
        app_args=(--app-name basic-auth)
        ;;
    none) ;;
    *)
        echo "start.sh: MLFLOW_AUTH must be basic or none, not '$MLFLOW_AUTH'" >&2
        exit 2
        ;;
esac

# The backend store URI reaches mlflow through MLFLOW_BACKEND_STORE_URI (mlflow reads that
# variable itself), which keeps a database password off the process list.
exec "$mlflow_bin" server \
    "${app_args[@]}" \
    --host "$MLFLOW_HOST" \
    --port "$MLFLOW_PORT" \
    --workers "$MLFLOW_WORKERS" \
    --serve-artifacts \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    "$@"
