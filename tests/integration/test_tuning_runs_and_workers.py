"""Tuning against services and processes: trials as MLflow child runs, warm start from the registry's
champion (a real, temporary SQLite MLflow store), and one study shared by two worker processes over a
journal file and over PostgreSQL (skipped when PostgreSQL does not answer, unless
VISIONOPS_REQUIRE_POSTGRES=1). The search space, pruning and plots: tests/unit/test_tuning.py.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import mlflow
from testkit import left_right_split
from testkit import run_tuning as _run
from testkit import tuning_config as _cfg
from visionops.release.lineage import champion_params
from visionops.tuning import journal_storage, open_study, run_worker, warm_start

optuna.logging.set_verbosity(optuna.logging.WARNING)


_split = left_right_split  # two classes: bright left half (0) or right half (1), with noise


def test_trials_are_child_runs_marked_complete_pruned_or_failed(
    mlflow_store: Path, tmp_path: Path
) -> None:
    client = mlflow.tracking.MlflowClient()
    exp = mlflow.create_experiment(
        "tuning-test"
    )  # not set_experiment: no active experiment left behind
    parent = client.create_run(exp, run_name="tune").info.run_id
    cfg = _cfg(
        **{"tune.n_trials": 6, "tune.epochs_per_trial": 4, "tune.learning_rate": [1e-9, 1e-2]}
    )
    storage = journal_storage(tmp_path / "j.log")
    study = open_study(cfg.tune, storage, "nested")
    study.enqueue_trial({"learning_rate": 1e-2})  # learns: the bar the next one is measured against
    study.enqueue_trial({"learning_rate": 1e-9})  # cannot learn in 4 epochs: pruned after the first
    result = _run(cfg, storage, "nested", tuning_run_id=parent)
    trials = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(trials) == 6 == result.n_complete + result.n_pruned
    assert result.n_pruned >= 1
    # Pruning is no failure: every trial's run is FINISHED (green in the UI), a pruned one says so.
    assert {t.info.status for t in trials} == {"FINISHED"}
    pruned = [t for t in trials if t.data.tags["optuna.state"] == "PRUNED"]
    assert len(pruned) == result.n_pruned
    for run in pruned:
        epoch = int(run.data.tags["optuna.pruned_at_epoch"])
        assert 1 <= epoch < 4 and run.data.metrics["pruned_at_epoch"] == epoch
        assert run.data.tags["visionops.pruned"] == "true"
        assert run.data.tags["mlflow.note.content"].startswith(f"Pruned at epoch {epoch} of 4 (")
    hopeless = next(t for t in trials if t.data.tags["mlflow.runName"] == "trial-1")
    assert hopeless in pruned
    complete = [t for t in trials if t.data.tags["optuna.state"] == "COMPLETE"]
    assert len(complete) == result.n_complete
    assert not any("visionops.pruned" in t.data.tags for t in complete)
    assert mlflow.active_run() is None
    # Every trial fails (the network cannot take 8x8 images): marked FAILED, and the study says why.
    bad = _cfg(**{"model.name": "face_cnn", "tune.n_trials": 2})
    with pytest.raises(RuntimeError, match="no trial completed \\(2 failed"):
        _run(bad, journal_storage(tmp_path / "j.log"), "failing", tuning_run_id=parent)
    failed = client.search_runs(
        [exp], f"tags.mlflow.parentRunId = '{parent}' and tags.`optuna.state` = 'FAIL'"
    )
    assert len(failed) == 2 and all(r.info.status == "FAILED" for r in failed)
    assert "too small" in failed[0].data.tags["optuna.error"]


def test_warm_start_enqueues_the_champions_parameters(
    mlflow_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow.tracking.MlflowClient()
    exp = mlflow.create_experiment("warm-start")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_params(
            {"learning_rate": 0.0042, "weight_decay": 1e-5, "dropout": 0.11, "model": "small_cnn"}
        )
    client.create_registered_model("warm-model")
    version = client.create_model_version(
        "warm-model", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias("warm-model", "champion", version.version)
    cfg = _cfg(**{"registry.model_name": "warm-model", "tune.n_trials": 2})
    storage = journal_storage(tmp_path / "j.log")
    study = open_study(cfg.tune, storage, "warm")
    params = champion_params("warm-model")
    assert warm_start(study, cfg, params) == {
        "learning_rate": 0.0042,
        "weight_decay": 1e-5,
        "dropout": 0.11,
    }
    assert (
        warm_start(study, cfg, params) == {}
    )  # the study is no longer fresh: nothing enqueued twice
    _run(cfg, storage, "warm")
    first = optuna.load_study(study_name="warm", storage=storage).trials[0]
    assert first.params == {"learning_rate": 0.0042, "weight_decay": 1e-5, "dropout": 0.11}
    assert first.user_attrs["warm_start"] == "champion"
    # No champion: nothing enqueued.
    other = open_study(cfg.tune, storage, "cold")
    assert champion_params("no-such-model") == {}
    assert (
        warm_start(
            other,
            _cfg(**{"registry.model_name": "no-such-model"}),
            champion_params("no-such-model"),
        )
        == {}
    )


N_SHARED = 6


def _worker(storage_spec: str, study: str, worker: int, barrier, out) -> None:  # noqa: ANN001
    """One tuning worker process; the barrier makes both start on the study together."""
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # two processes on a small machine: no oversubscription
    storage = (
        journal_storage(Path(storage_spec))
        if not storage_spec.startswith("postgresql")
        else storage_spec
    )
    cfg = _cfg(**{"tune.n_trials": N_SHARED, "tune.epochs_per_trial": 2, "tune.pruner": "none"})
    barrier.wait(timeout=120)
    out.put(
        (
            worker,
            run_worker(
                cfg,
                _split(128, 0),
                _split(32, 1),
                mean=[0.3],
                std=[0.3],
                num_classes=2,
                storage=storage,
                study_name=study,
                tuning_run_id=None,
                worker=worker,
            ),
        )
    )


def _two_workers(storage_spec: str, study: str) -> dict[int, int]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(storage_spec, study, i, barrier, out)) for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    return dict(out.get(timeout=5) for _ in procs)


def _check_shared(counts: dict[int, int], study: optuna.Study) -> None:
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert sum(counts.values()) == len(trials)  # the workers' counts add up to the study's
    assert (
        N_SHARED <= len(finished) <= N_SHARED + 1
    )  # the budget is shared (one in flight may overshoot)
    assert all(counts[w] >= 1 for w in (0, 1)), counts  # both really worked on it
    by_worker = {w: sum(t.user_attrs.get("worker") == w for t in trials) for w in (0, 1)}
    assert by_worker == counts
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(
        trials
    )  # no twin proposals


def test_two_worker_processes_share_one_journal_study(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    counts = _two_workers(str(journal), "shared")
    _check_shared(counts, optuna.load_study(study_name="shared", storage=journal_storage(journal)))


def test_two_worker_processes_share_one_postgres_study(postgres_url: str) -> None:
    from visionops.tuning import make_storage

    cfg = _cfg(**{"tune.storage_url": postgres_url})
    storage = make_storage(cfg.tune, Path("/nonexistent"))
    assert isinstance(storage, optuna.storages.RDBStorage)
    open_study(cfg.tune, storage, "shared-pg")  # created once, before the workers race to load it
    counts = _two_workers(postgres_url, "shared-pg")
    _check_shared(counts, optuna.load_study(study_name="shared-pg", storage=postgres_url))
