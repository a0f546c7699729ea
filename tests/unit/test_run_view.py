"""visionops.core.run_view: the parent run's name and the params a person compares (pure functions;
on a real store: tests/integration/test_tracking_runs.py)."""

from __future__ import annotations

from datetime import datetime

from visionops.core.config import PipelineConfig
from visionops.core.run_view import (
    config_name,
    data_params,
    params_to_log,
    parent_run_name,
    start_params,
)


def test_config_name_is_the_file_stem() -> None:
    assert config_name("/repo/conf/digits.yaml") == "digits"
    assert config_name("conf/faces.yml") == "faces"


def test_parent_run_name_tells_runs_apart() -> None:
    at = datetime(2026, 12, 3, 9, 41, 59)
    assert parent_run_name("digits", "small_cnn", "manual", at) == (
        "digits · small_cnn · manual · 12-03 09:41"
    )
    names = {
        parent_run_name("digits", "small_cnn", "manual", at),
        parent_run_name("digits", "small_cnn", "drift", at),
        parent_run_name("digits", "resnet18", "manual", at),
        parent_run_name("faces", "small_cnn", "manual", at),
        parent_run_name("digits", "small_cnn", "manual", datetime(2026, 12, 3, 9, 42)),
    }
    assert len(names) == 5


def test_start_params_are_a_few_comparable_values_not_the_config() -> None:
    cfg = PipelineConfig.model_validate(
        {"model": {"name": "resnet18"}, "data": {"image_size": 32}, "tune": {"n_trials": 7}}
    )
    params = start_params(cfg, "digits")
    assert params == {
        "config": "digits",
        "data_source": cfg.data.source,
        "model": "resnet18",
        "image_size": 32,
        "max_epochs": cfg.train.max_epochs,
        "scheduler": cfg.train.scheduler,
        "n_trials": 7,
        "seed": cfg.train.seed,
        "require_approval": False,
    }
    assert not any("." in key for key in params)  # short names, not flattened config keys


def test_data_params_shorten_the_fingerprint() -> None:
    assert data_params("0123456789abcdef", 1797, 10) == {
        "data_fingerprint": "01234567",
        "n_images": 1797,
        "n_classes": 10,
    }


def test_params_to_log_skips_what_is_logged_and_stringifies() -> None:
    new = params_to_log({"model": "small_cnn", "n_trials": 4, "long": "x" * 7000}, {"model": "x"})
    assert new == {"n_trials": "4", "long": "x" * 6000}
