"""``visionops stack up|down|status``: the multi-service deployment of docker-compose.yaml, as processes.

``make stack`` brings up on this machine the services compose describes, with compose's own settings
(``visionops.cli.stack_env`` reads them from docker-compose.yaml): PostgreSQL with the three databases
(the local server, or one started in ``<home>/postgres`` when none answers), Redis (likewise), the
MLflow server on PostgreSQL with its login and artifact proxy, the Airflow API server, scheduler, DAG
processor and triggerer, and two Celery workers, ``default`` and ``gpu``, each under a host name of
its own (a UTS namespace, where ``unshare`` may make one), as on two hosts. It checks each one's
health, then prints the URLs, the logs and how to stop it; ``make stack-down`` stops everything.

Secrets: made on the first start into the stack's env file (``.env`` at the repository root, which
compose reads too; mode 600, git-ignored) by docker/make_secrets.py; kept afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from visionops.cli.stack_env import (
    Addresses,
    compose_variables,
    load_compose,
    service_command,
    service_environment,
)
from visionops.cli.stack_proc import (
    StackState,
    free_port,
    http_ok,
    port_open,
    restart_service,
    start_service,
    stop_service,
    wait_until,
    write_secret_file,
)
from visionops.cli.ui import ui_settings
from visionops.core.storage import project_dir, visionops_home

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
WORKERS = {"airflow-worker": "default", "airflow-worker-gpu": "gpu"}
# Stopped in this order: workers first (a task in flight ends or is given up), the databases last.
STOP_ORDER = (*WORKERS, *reversed(AIRFLOW_SERVICES), "mlflow", "redis", "postgres")


def default_home() -> Path:
    return visionops_home() / "stack"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _run(cmd: list[str], env: dict[str, str], log: Path, what: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        code = subprocess.call(
            cmd, env=env, cwd=project_dir(), stdout=out, stderr=subprocess.STDOUT
        )
    if code != 0:
        raise RuntimeError(f"stack: {what} failed (exit {code}); see {log}")


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if not found:
        raise RuntimeError(f"stack: PostgreSQL's {name} is not installed (Debian: postgresql)")
    return str(found)


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the ``postgres`` user there."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def ensure_postgres(state: StackState, at: Addresses, own: bool) -> Addresses:
    """The local server when it answers (and ``own`` is not asked), else one of the stack's own."""
    if not own and port_open(at.pg_port, at.pg_host):
        state.info["postgres"] = f"local server {at.pg_host}:{at.pg_port}"
        return at
    data = state.home / "postgres"
    port = free_port()
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres")
            shutil.chown(state.home, "postgres")
        _run(
            _as_postgres_user(
                [_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
            ),
            dict(os.environ),
            state.home / "logs" / "postgres-init.log",
            "initdb",
        )
    cmd = _as_postgres_user(
        [_pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(data), "-h", "127.0.0.1"]
    )
    start_service(state, "postgres", cmd, dict(os.environ), state.home)
    wait_until("PostgreSQL", lambda: port_open(port), 60, state, "postgres")
    state.info["postgres"] = f"own server in {data}, 127.0.0.1:{port}"
    return Addresses(**{**at.__dict__, "pg_port": port})


def ensure_redis(state: StackState, at: Addresses, redis_db: int, own: bool) -> Addresses:
    if not own and port_open(6379):
        state.info["redis"] = f"local server 127.0.0.1:6379, database {redis_db}"
        return Addresses(**{**at.__dict__, "redis_url": f"redis://127.0.0.1:6379/{redis_db}"})
    port = free_port()
    folder = state.home / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--dir",
        str(folder),
    ]
    start_service(state, "redis", cmd, dict(os.environ), state.home)
    wait_until("Redis", lambda: port_open(port), 30, state, "redis")
    state.info["redis"] = f"own server 127.0.0.1:{port}"
    return Addresses(**{**at.__dict__, "redis_url": f"redis://127.0.0.1:{port}/{redis_db}"})


def create_databases(variables: dict[str, str], at: Addresses, log: Path) -> None:
    """docker/postgres-init.sql, the same file the postgres image runs, with the stack's name prefix."""
    env = {
        **os.environ,
        **{
            k: variables[k]
            for k in ("AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "OPTUNA_DB_PASSWORD")
        },
        "VISIONOPS_DB_PREFIX": at.db_prefix,
        "PGUSER": os.environ.get("PGUSER", "postgres"),
    }
    cmd = [_pg_bin("psql"), "-q", "-h", at.pg_host, "-p", str(at.pg_port), "-d", "postgres"]
    _run(
        [*cmd, "-f", str(project_dir() / "docker" / "postgres-init.sql")],
        env,
        log,
        "creating the databases",
    )


def airflow_env(
    compose: dict[str, Any], variables: dict[str, str], at: Addresses
) -> dict[str, str]:
    """Compose's Airflow environment on this machine, plus what only a process stack needs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "MLFLOW_", "VISIONOPS_"))
    }
    env.update(service_environment(compose, "airflow-scheduler", variables, at))
    airflow_home = at.home / "airflow"
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            # compose mounts these into the image's AIRFLOW_HOME; here they stay in the repository.
            "AIRFLOW__CORE__DAGS_FOLDER": str(at.repo / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(at.repo / "plugins"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": at.airflow_url.rsplit(":", 1)[1],
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # Links between the UIs, as a browser on this machine reaches them.
            "VISIONOPS_MLFLOW_UI_URL": at.mlflow_url,
            "VISIONOPS_AIRFLOW_UI_URL": at.airflow_url,
            "VISIONOPS_AIRFLOW_API_URL": at.airflow_url,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    # One API server worker and DAG parser per two cores, as `visionops ui` (settings given win).
    sizes = ui_settings()
    for key in ("AIRFLOW__API__WORKERS", "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES"):
        env.setdefault(key, os.environ.get(key, sizes[key]))
    # Faster notice of a lost worker or of a task message the broker never delivered (Airflow
    # requeues a task "stuck in queued"), and the schedule's grace, where the caller asks for them
    # (the fault tests do).
    for key in (
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY",
        # How late a scheduled time may still start its run (plugins/visionops_schedule.py).
        "VISIONOPS_SCHEDULE_GRACE_MIN",
    ):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def start_mlflow(
    state: StackState, compose: dict[str, Any], variables: dict[str, str], at: Addresses
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AIRFLOW"))}
    env.update(service_environment(compose, "mlflow", variables, at))
    port = at.mlflow_url.rsplit(":", 1)[1]
    env.update(
        {
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": port,
            "MLFLOW_WORKERS": os.environ.get("MLFLOW_WORKERS", ui_settings()["MLFLOW_WORKERS"]),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    start_service(state, "mlflow", ["bash", str(at.repo / "mlflow" / "start.sh")], env, at.repo)
    wait_until(
        "the MLflow server", lambda: http_ok(f"{at.mlflow_url}/health"), 120, state, "mlflow"
    )
    init = {**env, **service_environment(compose, "mlflow-init", variables, at)}
    _run(
        [_bin("python"), str(at.repo / "mlflow" / "setup_auth.py")],
        init,
        state.home / "logs" / "mlflow-init.log",
        "MLflow accounts",
    )


def init_airflow(
    env: dict[str, str], variables: dict[str, str], state: StackState, gpu_slots: int
) -> None:
    """What compose's airflow-init does: migrate, the admin user; and the GPU pool."""
    log = state.home / "logs" / "airflow-init.log"
    _run([_bin("airflow"), "db", "migrate"], env, log, "airflow db migrate")
    user = variables.get("AIRFLOW_ADMIN_USERNAME") or "admin"
    password = variables["AIRFLOW_ADMIN_PASSWORD"]
    # `users create` refuses an existing name: then the password is set to .env's (rotation).
    # --password=VALUE: a password of the user's own that starts with "-" is not read as an option.
    cmd = ["users", "create", "-u", user, f"--password={password}", "-r", "Admin"]
    cmd += ["-e", "admin@example.org"]
    made = subprocess.run(
        [_bin("airflow"), *cmd, "-f", "Admin", "-l", "User"],
        env=env,
        capture_output=True,
        text=True,
    )
    with log.open("a") as out:
        out.write(made.stdout + made.stderr)
    if made.returncode != 0 or "already exist" in made.stdout + made.stderr:
        reset = ["users", "reset-password", "-u", user, f"--password={password}"]
        _run([_bin("airflow"), *reset], env, log, "the Airflow admin's password")
    pool = env.get("VISIONOPS_GPU_POOL", "gpu")
    _run(
        [
            _bin("airflow"),
            "pools",
            "set",
            pool,
            str(gpu_slots),
            "GPU tasks at once (train, tune, evaluate)",
        ],
        env,
        log,
        "the GPU pool",
    )


def _unshare_works() -> bool:
    return (
        shutil.which("unshare") is not None
        and subprocess.call(
            ["unshare", "--uts", "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        == 0
    )


def worker_command(
    compose: dict[str, Any], service: str, variables: dict[str, str], host: str, uts: bool
) -> list[str]:
    """compose's ``celery worker ...`` as an Airflow command, under host name ``host`` where possible."""
    cmd = [
        _bin("airflow"),
        *service_command(compose, service, variables),
        "--celery-hostname",
        f"{host}@{host}",
    ]
    if os.environ.get("AIRFLOW__CELERY__WORKER_CONCURRENCY") and "--concurrency" not in cmd:
        cmd += ["--concurrency", os.environ["AIRFLOW__CELERY__WORKER_CONCURRENCY"]]
    if not uts:
        return cmd
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *cmd]


def worker_hosts(state: StackState) -> dict[str, str]:
    return dict(state.info.get("worker_hosts", {}))


def celery_ping(env: dict[str, str], names: list[str]) -> bool:
    code = (
        "import sys\n"
        "from airflow.providers.celery.executors.celery_executor import app\n"
        "names = sys.argv[1:]\n"
        "answers = app.control.ping(destination=names, timeout=3.0) or []\n"
        "sys.exit(0 if {k for a in answers for k in a} >= set(names) else 1)\n"
    )
    return (
        subprocess.call(
            [_bin("python"), "-c", code, *names],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        == 0
    )


def api_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
            health = json.load(response)
    except (OSError, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(p) or {}).get("status") == "healthy" for p in parts)


def start_worker(
    state: StackState,
    compose: dict[str, Any],
    variables: dict[str, str],
    env: dict[str, str],
    service: str,
) -> None:
    host = worker_hosts(state)[service]
    wenv = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
    start_service(
        state,
        service,
        worker_command(compose, service, variables, host, state.info["uts"]),
        wenv,
        project_dir(),
    )


def compose_settings(env_file: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The compose file and its variables: the secrets in ``env_file`` (made when missing), sized
    for this machine (a setting given in .env or the environment wins): the gpu worker is always
    there, so GPU routing is on; one task per worker per two cores."""
    make_secrets = project_dir() / "docker" / "make_secrets.py"
    subprocess.check_call([sys.executable, str(make_secrets), "--env-file", str(env_file)])
    compose = load_compose(project_dir() / "docker-compose.yaml")
    variables = compose_variables(env_file)
    slots = str(max(1, (os.cpu_count() or 2) // 2))
    variables.setdefault("VISIONOPS_GPU_QUEUE", "gpu")
    variables.setdefault("AIRFLOW_GPU_WORKER_CONCURRENCY", slots)
    os.environ.setdefault("AIRFLOW__CELERY__WORKER_CONCURRENCY", slots)
    return compose, variables


def cmd_up(args: argparse.Namespace) -> int:
    home = Path(args.home).resolve()
    state = StackState(home)
    running = [name for name in state.services if state.alive(name)]
    if running:
        print(f"stack: already running in {home} ({', '.join(running)}); `make stack-down` first")
        return 1
    state.services.clear()
    env_file = Path(args.env_file).resolve()
    compose, variables = compose_settings(env_file)
    at = Addresses(
        db_prefix=args.db_prefix,
        mlflow_url=f"http://127.0.0.1:{args.mlflow_port}",
        airflow_url=f"http://127.0.0.1:{args.airflow_port}",
        repo=project_dir(),
        home=home,
    )
    for port in (args.mlflow_port, args.airflow_port):
        if port_open(port):
            print(f"stack: port {port} is taken (another `make ui` or stack?); choose another")
            return 1
    try:
        at = ensure_postgres(state, at, args.own_postgres)
        at = ensure_redis(state, at, args.redis_db, args.own_redis)
        create_databases(variables, at, home / "logs" / "postgres-databases.log")
        start_mlflow(state, compose, variables, at)
        env = airflow_env(compose, variables, at)
        env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] = str(free_port())
        env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
        init_airflow(env, variables, state, args.gpu_slots)
        for service in AIRFLOW_SERVICES:
            start_service(
                state,
                service,
                [_bin("airflow"), *service_command(compose, service, variables)],
                env,
                project_dir(),
            )
        state.info.update(
            uts=_unshare_works(),
            worker_hosts={s: f"visionops-{q}-worker" for s, q in WORKERS.items()},
            env=env,
            urls={"airflow": at.airflow_url, "mlflow": at.mlflow_url},
            env_file=str(env_file),
        )
        for service in WORKERS:
            start_worker(state, compose, variables, env, service)
        wait_until(
            "the Airflow components",
            lambda: api_healthy(at.airflow_url),
            180,
            state,
            "airflow-apiserver",
        )
        hosts = list(worker_hosts(state).values())
        wait_until(
            "the Celery workers",
            lambda: celery_ping(env, [f"{h}@{h}" for h in hosts]),
            120,
            state,
            "airflow-worker",
        )
    except BaseException:
        print(
            f"stack: start failed; stopping what started (logs in {home / 'logs'})", file=sys.stderr
        )
        stop_all(state)
        raise
    write_env_file(home, env)
    print_ready(state, env_file)
    return 0


def write_env_file(home: Path, env: dict[str, str]) -> None:
    """``<home>/stack.env`` (mode 600: it holds secrets), to use the stack's Airflow CLI from a shell."""
    keep = {k: v for k, v in env.items() if k.startswith(("AIRFLOW", "MLFLOW_", "VISIONOPS_"))}
    text = "".join(f"export {k}={json.dumps(v)}\n" for k, v in sorted(keep.items()))
    write_secret_file(home / "stack.env", text)


def print_ready(state: StackState, env_file: Path) -> None:
    urls, home = state.info["urls"], state.home
    print("visionops stack: ready")
    print(
        f"  Airflow UI/API : {urls['airflow']}  (user admin, AIRFLOW_ADMIN_PASSWORD in {env_file})"
    )
    print(
        f"  MLflow         : {urls['mlflow']}  (user viewer, MLFLOW_READER_PASSWORD; the pipeline logs in as visionops)"
    )
    print(f"  PostgreSQL     : {state.info['postgres']};  Redis: {state.info['redis']}")
    hosts = ", ".join(f"{h} ({s})" for s, h in worker_hosts(state).items())
    print(
        f"  Celery workers : {hosts}{'' if state.info['uts'] else ' (one host name: unshare --uts not allowed)'}"
    )
    print(
        f"  logs           : {home / 'logs'}/<service>.log, task logs in {home / 'airflow' / 'logs'}"
    )
    print(f"  Airflow CLI    : source {home / 'stack.env'}; airflow dags list")
    print("  stop           : make stack-down")


def stop_all(state: StackState, grace_s: float = 30.0) -> None:
    for name in [n for n in STOP_ORDER if n in state.services] + [
        n for n in state.services if n not in STOP_ORDER
    ]:
        stop_service(state, name, grace_s)


def cmd_down(args: argparse.Namespace) -> int:
    state = StackState(Path(args.home).resolve())
    if not state.services:
        print(f"stack: nothing running in {state.home}")
        return 0
    stop_all(state, args.grace)
    print(f"visionops stack: stopped ({state.home})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = StackState(Path(args.home).resolve())
    for name, service in state.services.items():
        print(
            f"{name:24} {'running' if state.alive(name) else 'EXITED'}  pid {service.pid}  {service.log}"
        )
    urls = state.info.get("urls", {})
    if urls:
        print(f"Airflow {urls['airflow']}  healthy: {api_healthy(urls['airflow'])}")
        print(f"MLflow  {urls['mlflow']}  healthy: {http_ok(urls['mlflow'] + '/health')}")
    return 0 if state.services and all(state.alive(n) for n in state.services) else 1


def cmd_restart(args: argparse.Namespace) -> int:
    state = StackState(Path(args.home).resolve())
    restart_service(state, args.service, args.grace)
    print(f"visionops stack: {args.service} restarted")
    return 0


def add_commands(sub: Any) -> None:
    """``stack up|down|status``."""
    stack = sub.add_parser(
        "stack", help="the multi-service deployment (docker-compose.yaml) as processes"
    )
    actions = stack.add_subparsers(dest="action", required=True)
    for name, func, text in (
        ("up", cmd_up, "start every service, check health, print the URLs"),
        ("down", cmd_down, "stop every service of the stack"),
        ("status", cmd_status, "which services run, and whether they answer"),
        ("restart", cmd_restart, "stop one service and start it again with the same settings"),
    ):
        p = actions.add_parser(name, help=text)
        p.add_argument(
            "--home", default=str(default_home()), help="state, logs, data (%(default)s)"
        )
        p.set_defaults(func=func)
        if name == "up":
            p.add_argument(
                "--env-file", default=str(project_dir() / ".env"), help="secrets (%(default)s)"
            )
            p.add_argument("--airflow-port", type=int, default=8080)
            p.add_argument("--mlflow-port", type=int, default=5000)
            p.add_argument(
                "--db-prefix", default="visionops_", help="before every database and role name"
            )
            p.add_argument("--redis-db", type=int, default=0)
            p.add_argument(
                "--gpu-slots", type=int, default=1, help="the GPU pool's slots (GPU tasks at once)"
            )
            p.add_argument("--own-postgres", action="store_true", help="start a server of its own")
            p.add_argument("--own-redis", action="store_true", help="start a server of its own")
        if name == "restart":
            p.add_argument("service", help="e.g. airflow-scheduler, airflow-worker, mlflow")
        if name in ("down", "restart"):
            p.add_argument(
                "--grace", type=float, default=30.0, help="seconds before what is left is killed"
            )
