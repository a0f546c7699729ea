"""``pipeline run`` migrates Airflow's metadata database only when something it depends on changed.

The Airflow CLI is replaced at its seam (``_airflow``) by a recorder that does what ``db migrate``
does to the home: creates ``airflow.cfg`` and ``airflow.db`` when missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from visionops.cli import pipeline


@pytest.fixture()
def migrations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []

    def fake_airflow(*args: str, env: dict[str, str], log_file: Path | None = None, **_: object):
        calls.append(args)
        home = Path(env["AIRFLOW_HOME"])
        for name in ("airflow.cfg", "airflow.db"):
            if not (home / name).exists():
                (home / name).write_text(name)
        return 0

    monkeypatch.setattr(pipeline, "_airflow", fake_airflow)
    return calls


def test_a_database_at_head_is_not_migrated_again(migrations, tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow")}
    pipeline.ensure_airflow_db(env)
    pipeline.ensure_airflow_db(env)
    assert migrations == [("db", "migrate")]


def test_a_new_database_an_edited_cfg_or_a_torn_stamp_are_migrated(migrations, tmp_path):
    home = tmp_path / "airflow"
    env = {"AIRFLOW_HOME": str(home)}
    pipeline.ensure_airflow_db(env)
    (home / "airflow.db").unlink()  # a new database file (a new inode once recreated)
    pipeline.ensure_airflow_db(env)
    assert len(migrations) == 2
    cfg = home / "airflow.cfg"
    stat = cfg.stat()
    os.utime(cfg, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    pipeline.ensure_airflow_db(env)
    assert len(migrations) == 3
    (home / pipeline.MIGRATED_STAMP).write_text("{not json")
    pipeline.ensure_airflow_db(env)
    assert len(migrations) == 4
    pipeline.ensure_airflow_db(env)
    assert len(migrations) == 4


def test_a_connection_from_the_environment_is_always_migrated(migrations, tmp_path):
    env = {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://db/airflow",
    }
    pipeline.ensure_airflow_db(env)
    pipeline.ensure_airflow_db(env)
    assert len(migrations) == 2


def test_a_failed_migration_stops_naming_its_log(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "_airflow", lambda *a, **k: 1)
    with pytest.raises(SystemExit, match="db-migrate.log"):
        pipeline.ensure_airflow_db({"AIRFLOW_HOME": str(tmp_path / "airflow")})
    assert not (tmp_path / "airflow" / pipeline.MIGRATED_STAMP).exists()
