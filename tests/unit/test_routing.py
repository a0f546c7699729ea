"""GPU routing: which train_pipeline tasks go to the GPU queue and pool, and when."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionops.pipeline.routing import Route, _device, route

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "conf" / "digits.yaml")


@pytest.fixture(autouse=True)
def _routing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONOPS_GPU_QUEUE", "gpu")
    monkeypatch.delenv("VISIONOPS_GPU_POOL", raising=False)
    monkeypatch.delenv("VISIONOPS_CONFIG", raising=False)
    _device.cache_clear()


@pytest.mark.parametrize("device", ["auto", "cuda"])
@pytest.mark.parametrize("task", ["tune_worker", "train", "evaluate"])
def test_gpu_work_of_a_run_asking_for_cuda_goes_to_the_gpu_queue(task: str, device: str) -> None:
    conf = {"config": CONFIG, "overrides": {"train.device": device}}
    assert route("train_pipeline", task, conf) == Route("gpu", "gpu")


def test_cpu_runs_other_tasks_and_other_dags_stay_where_they_are() -> None:
    cpu = {"config": CONFIG, "overrides": {"train.device": "cpu"}}
    assert route("train_pipeline", "train", cpu) is None
    auto = {"config": CONFIG}
    assert route("train_pipeline", "ingest", auto) is None
    assert route("batch_predict", "train", auto) is None


def test_routing_is_off_without_a_gpu_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISIONOPS_GPU_QUEUE")
    assert route("train_pipeline", "train", {"config": CONFIG}) is None


def test_pool_setting_and_scheduled_runs_use_the_deployment_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VISIONOPS_GPU_POOL", "a100")
    monkeypatch.setenv("VISIONOPS_CONFIG", CONFIG)
    assert route("train_pipeline", "train", {}) == Route("gpu", "a100")  # conf of a scheduled run


def test_a_config_that_does_not_load_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    assert route("train_pipeline", "train", {"config": "/nowhere/missing.yaml"}) is None
    bad = {"config": CONFIG, "overrides": {"train.device": "tpu"}}
    assert route("train_pipeline", "train", bad) is None
    assert "no GPU routing" in caplog.text
