"""What ``visionops pipeline run`` shows while a run goes on: the task lines and the epochs picked out
of Airflow's log (whatever its renderer wraps them in), each task's figure, and the run on the stack
followed through the REST API's task states. Following a growing log: tests/integration/test_pipeline_progress.py."""

from __future__ import annotations

import io

from visionops.cli.follow import TaskStates
from visionops.pipeline.progress import failed, finished, progress_line, started


def test_task_lines_and_epochs_are_picked_out_of_any_rendering() -> None:
    console = (
        "2026-12-08T00:26:29.192232Z [info     ] visionops task ingest: done in 3.2s: 1797 images "
        "in 10 classes (1797 read) [visionops] loc=visionops_tasks.py:79"
    )
    assert progress_line(console) == (
        "visionops task ingest: done in 3.2s: 1797 images in 10 classes (1797 read)",
        False,
    )
    as_json = '{"event": "visionops task gate: started", "level": "info", "logger": "visionops"}'
    assert progress_line(as_json) == ("visionops task gate: started", False)
    epoch = "[2026-12-08] INFO - epoch 3: train_loss 0.5777 val_accuracy 0.9767 (5.8s) [visionops]"
    assert progress_line(epoch) == ("epoch 3: train_loss 0.5777 val_accuracy 0.9767 (5.8s)", True)
    assert progress_line("[info] Filling up the DagBag from dags/") is None


def test_each_task_ends_with_the_figure_that_matters() -> None:
    assert started("train") == "visionops task train: started"
    trained = {"epochs_trained": 12, "best_val_accuracy": 0.98125}
    assert finished("train", 31.44, trained) == (
        "visionops task train: done in 31.4s: 12 epochs, best val_accuracy 0.9812"
    )
    ingested = {"meta": {"n_images": 1797, "n_classes": 10, "n_reread": 12}}
    assert finished("ingest", 2.0, ingested, "ingest_merge").endswith(
        ": 1797 images in 10 classes (12 read)"
    )
    assert finished("gate", 0.3, {"passed": False, "reasons": ["a", "b"]}).endswith(
        ": rejected (2 reasons)"
    )
    assert finished("decide", 0.0, "reject", "next_step").endswith(": -> reject")
    assert finished("finish", 0.1, None) == "visionops task finish: done in 0.1s"
    assert failed("validate", 1.0, ValueError("bad label")) == (
        "visionops task validate: failed after 1.0s: ValueError: bad label"
    )


def test_a_run_on_the_stack_is_followed_by_its_task_states() -> None:
    out = io.StringIO()
    states = TaskStates(out)
    states.show([{"task_id": "start", "state": "running", "start_date": "1"}])
    states.show(
        [
            {"task_id": "start", "state": "success", "duration": 4.25, "start_date": "1"},
            {"task_id": "ingest_chunk", "map_index": 0, "state": "running", "start_date": "2"},
        ]
    )
    states.show([{"task_id": "start", "state": "success", "duration": 4.25, "start_date": "1"}])
    assert out.getvalue().splitlines() == [
        "visionops task start: started",
        "visionops task start: success after 4.2s",
        "visionops task ingest_chunk[0]: started",
    ]
