"""visionops.pipeline.run_note: the parent run's Markdown description (a pure function of the run
summary; written on a real store: tests/integration/test_tracking_runs.py)."""

from __future__ import annotations

from typing import Any

import pytest

from visionops.core.contracts import RunSummary
from visionops.pipeline.run_note import airflow_run_url, clip_note, run_note

AIRFLOW = "http://127.0.0.1:8080/dags/train_pipeline/runs/manual__1"


def _summary(**kw: Any) -> RunSummary:
    base: dict[str, Any] = {
        "status": "FINISHED",
        "experiment": "visionops-digits",
        "experiment_id": "1",
        "parent_run_id": "abc123",
        "airflow_run_id": "manual__1",
        "trigger": "manual",
        "test_accuracy": 0.97123,
        "test_macro_f1": 0.96555,
        "test_clean_accuracy": 0.96,
        "test_clean_macro_f1": 0.95,
        "n_test_clean": 120,
        "best_baseline": "pca_svm",
        "best_baseline_accuracy": 0.9611,
        "gain_over_baseline_points": 1.01,
        "changes": "no champion of visionops-digits in service",
        "gate": "passed",
        "gate_reasons": [
            "accuracy 0.9712 >= required 0.9000",
            "macro_f1 0.9656 >= required 0.9000",
        ],
        "model_name": "visionops-digits",
        "model_version": "4",
        "model_aliases": ["challenger", "champion"],
        "champion_version": "4",
        "replaced_version": "3",
    }
    base.update(kw)
    return RunSummary.model_validate(base)


def test_a_promoted_run_says_status_gate_version_figures_and_where_to_look() -> None:
    note = run_note(_summary(), AIRFLOW)
    lines = note.splitlines()
    assert lines[0] == "**Run FINISHED**, started by manual"
    assert "**Gate: PASSED**" in lines
    assert "- accuracy 0.9712 >= required 0.9000" in lines
    assert (
        "**Registered:** [visionops-digits v4](#/models/visionops-digits/versions/4?workflowType=machine_learning) "
        "(`challenger`, `champion`)"
    ) in lines
    assert any(
        line.startswith("**Champion:** [visionops-digits v4]") and "replaced v3" in line
        for line in lines
    )
    assert "**Since the champion:** no champion of visionops-digits in service" in lines
    assert "| test accuracy | 0.9712 |" in lines and "| test macro-F1 | 0.9656 |" in lines
    assert "| best simple baseline | pca_svm 0.9611 (model +1.01 points) |" in lines
    assert any("on 120 images without a near-copy" in line for line in lines)
    assert f"**Airflow run:** [manual__1]({AIRFLOW})" in lines
    artifacts = next(line for line in lines if line.startswith("**Artifacts of this run:**"))
    for name in ("evaluation/confusion_matrix.png", "evaluation/report.md", "model_card.md"):
        assert f"`{name}`" in artifacts
    assert "(#/experiments/1/runs?workflowType=machine_learning)" in note


def test_a_rejected_version_has_no_alias_and_the_reasons() -> None:
    note = run_note(
        _summary(
            gate="rejected",
            gate_reasons=["accuracy 0.8700 < required 0.9000"],
            model_version="5",
            model_aliases=[],
            replaced_version=None,
        ),
        AIRFLOW,
    )
    assert "**Gate: REJECTED**" in note
    assert "- accuracy 0.8700 < required 0.9000" in note
    assert (
        "[visionops-digits v5](#/models/visionops-digits/versions/5?workflowType=machine_learning) (no alias)"
        in note
    )
    assert "**Champion:** [visionops-digits v4]" in note


def test_an_unchanged_run_says_nothing_changed_and_registers_nothing() -> None:
    message = (
        "nothing changed since champion v1: same data fingerprint, config hash and code; "
        "no training, no new version (force to train anyway)"
    )
    note = run_note(
        _summary(
            unchanged_since="1",
            changes=message,
            test_accuracy=None,
            test_macro_f1=None,
            test_clean_accuracy=None,
            n_test_clean=None,
            best_baseline=None,
            best_baseline_accuracy=None,
            gate=None,
            gate_reasons=[],
            model_version=None,
            model_aliases=[],
            champion_version="1",
            replaced_version=None,
        ),
        AIRFLOW,
    )
    assert f"**Not registered:** {message}" in note.splitlines()
    assert "Gate" not in note and "| figure |" not in note
    assert "model_card.md" not in note and "confusion_matrix" not in note
    assert "Since the champion" not in note  # said once, above


def test_a_failed_run_names_the_stage_and_error() -> None:
    note = run_note(
        _summary(status="FAILED", failed_stage="preprocess", error="bad.png: cannot decode"),
        None,
    )
    assert "**Failed at stage `preprocess`:** bad.png: cannot decode" in note
    assert "Airflow run" not in note


def test_table_cells_escape_pipes() -> None:
    note = run_note(_summary(best_baseline="a|b"), None)
    assert "| best simple baseline | a\\|b 0.9611 (model +1.01 points) |" in note


def test_airflow_run_url_quotes_the_run_id_and_follows_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VISIONOPS_AIRFLOW_UI_URL", raising=False)
    run_id = "manual__2026-12-03T09:41:00+00:00"
    assert airflow_run_url("train_pipeline", run_id) == (
        "http://127.0.0.1:8080/dags/train_pipeline/runs/manual__2026-12-03T09%3A41%3A00%2B00%3A00"
    )
    monkeypatch.setenv("VISIONOPS_AIRFLOW_UI_URL", "https://airflow.example/")
    assert airflow_run_url("d", "r").startswith("https://airflow.example/dags/d/runs/r")


def test_a_long_note_is_cut_at_a_line_and_says_so() -> None:
    text = "\n".join(f"- reason {i} " + "x" * 50 for i in range(200))
    cut = clip_note(text, limit=1000)
    assert len(cut) <= 1000 and cut.endswith("has it all)*")
    assert cut.split("\n\n*(cut")[0].splitlines()[-1].startswith("- reason ")
    assert clip_note("short") == "short"


def test_an_ensemble_is_named_among_the_figures() -> None:
    lines = run_note(_summary(ensemble_members=3, oof_accuracy=0.9), AIRFLOW).splitlines()
    assert (
        "| model | soft-voting ensemble of 3 members (stratified group 3-fold), "
        "out-of-fold accuracy 0.9000 |"
    ) in lines
    assert "soft-voting" not in run_note(_summary(), AIRFLOW)
