"""Tuning: one Optuna study (seeded TPE, an Optuna pruner set by ``tune.pruner*``) shared by N workers.

Each trial is a nested MLflow run of the tuning run; storage is a journal file on one machine
or PostgreSQL (RDBStorage) when ``tune.storage_url`` is set.
"""

from visionops.tuning.report import warm_start, write_plots
from visionops.tuning.space import distributions, in_space, suggest
from visionops.tuning.study import (
    TuneResult,
    journal_storage,
    make_pruner,
    make_storage,
    n_finished,
    open_study,
    run_study,
    run_worker,
    summarize,
)

__all__ = [
    "TuneResult",
    "distributions",
    "in_space",
    "journal_storage",
    "make_pruner",
    "make_storage",
    "n_finished",
    "open_study",
    "run_study",
    "run_worker",
    "summarize",
    "suggest",
    "warm_start",
    "write_plots",
]
