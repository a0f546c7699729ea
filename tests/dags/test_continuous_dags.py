"""The continuous-training loop's DAG side: the watcher's tasks and assets, and how a run knows why
it started."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins"))

import visionops_assets as assets  # noqa: E402


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_the_watcher_has_one_task_per_watched_config_each_emitting_its_source(dagbag):
    dag = dagbag.dags["watch_sources"]
    assert dag.catchup is False and dag.max_active_runs == 1 and dag.doc_md
    for config in ("digits", "coil20", "faces"):
        task = dag.get_task(f"watch_{config}")
        assert [o.uri for o in task.outlets] == [f"visionops://source/{config}"]


def test_watched_configs_come_from_the_environment_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("VISIONOPS_WATCH_CONFIGS", f"{tmp_path / 'a.yaml'}:conf/b.yaml")
    assert assets.watched_configs() == [tmp_path / "a.yaml", REPO / "conf" / "b.yaml"]
    assert assets.source_asset(tmp_path / "a.yaml").name == "visionops_source_a"


def _event(asset, minute: int, **extra):
    return SimpleNamespace(
        asset=SimpleNamespace(name=asset.name, uri=asset.uri),
        extra=extra,
        timestamp=datetime(2026, 11, 25, 12, minute, tzinfo=timezone.utc),
    )


def _context(run_type: str, *events) -> dict:
    return {
        "dag_run": SimpleNamespace(run_type=run_type),
        "triggering_asset_events": {e.asset.name: [e] for e in events},
    }


def test_trigger_of_says_why_a_run_started():
    digits = assets.source_asset(Path("conf/digits.yaml"))
    assert assets.trigger_of(_context("manual")) == {"kind": "manual"}
    assert assets.trigger_of(_context("scheduled")) == {"kind": "schedule"}
    new_data = assets.trigger_of(
        _context("asset_triggered", _event(digits, 1, added=3, config="conf/digits.yaml"))
    )
    assert new_data == {
        "kind": "new_data",
        "detail": {"added": 3, "config": "conf/digits.yaml", "asset": digits.uri},
    }
    # Drift and new data in the same run: drift wins (its run asks a person before promoting).
    both = assets.trigger_of(
        _context(
            "asset_triggered",
            _event(digits, 1, added=3),
            _event(assets.DRIFT, 2, drifted=["brightness"]),
        )
    )
    assert both["kind"] == "drift" and both["detail"]["drifted"] == ["brightness"]
    assert both["detail"]["events"] == 2


def test_scored_batches_feed_the_monitor_whose_drift_feeds_training(dagbag):
    record = dagbag.dags["batch_predict"].get_task("record")
    assert [o.name for o in record.outlets] == ["visionops_predictions"]
    monitor = dagbag.dags["monitor"]
    assert [a.name for a in monitor.timetable.asset_condition.objects] == ["visionops_predictions"]
    assert [o.name for o in monitor.get_task("drift").outlets] == ["visionops_drift"]
    assert monitor.get_task("check").downstream_task_ids == {"drift"}
    train = dagbag.dags["train_pipeline"]
    assert "visionops_drift" in {a.name for a in train.timetable.asset_condition.objects}
