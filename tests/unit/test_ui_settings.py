"""``visionops ui`` sizes Airflow and MLflow for the machine; a setting the user made wins."""

from __future__ import annotations

from visionops.cli.ui import sized_env, ui_settings


def test_the_servers_are_sized_from_the_cpu_count() -> None:
    small = ui_settings(2)
    # Out of the box the LocalExecutor forks 32 workers and MLflow starts 4 workers and its job runner.
    assert small["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert small["AIRFLOW__API__WORKERS"] == "1"
    assert small["AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES"] == "1"
    assert small["MLFLOW_WORKERS"] == "1"
    assert small["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    big = ui_settings(16)
    assert big["AIRFLOW__CORE__PARALLELISM"] == "16" and big["MLFLOW_WORKERS"] == "4"
    assert (
        ui_settings(1)["AIRFLOW__CORE__PARALLELISM"] == "2"
    )  # a task and the watcher side by side
    assert int(ui_settings()["AIRFLOW__CORE__PARALLELISM"]) >= 2  # this machine's count


def test_the_users_own_settings_win() -> None:
    env = sized_env({"AIRFLOW__CORE__PARALLELISM": "8", "PATH": "/bin"}, cpus=2)
    assert env["AIRFLOW__CORE__PARALLELISM"] == "8"
    assert env["AIRFLOW__API__WORKERS"] == "1" and env["PATH"] == "/bin"
