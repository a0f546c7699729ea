"""visionops.pipeline.summary.format_summary: the text printed at the end of a run (a pure function
of the run summary)."""

from __future__ import annotations

from typing import Any

from visionops.core.contracts import RunSummary
from visionops.pipeline.summary import format_summary

URI = "sqlite:////tmp/x/mlflow.db"


def _summary(**kw: Any) -> RunSummary:
    base: dict[str, Any] = {
        "status": "FINISHED",
        "failed_stage": None,
        "error": None,
        "experiment": "visionops-digits",
        "experiment_id": "1",
        "parent_run_id": "abc123",
        "run_key": "manual_1",
        "airflow_run_id": None,
        "test_accuracy": 0.97123,
        "test_macro_f1": 0.96555,
        "gate": "passed",
        "gate_reasons": [
            "accuracy 0.9712 >= required 0.9000",
            "macro_f1 0.9656 >= required 0.9000",
        ],
        "model_name": "visionops-digits",
        "model_version": "4",
        "model_aliases": ["challenger", "champion"],
        "champion_version": "4",
    }
    base.update(kw)
    return RunSummary.model_validate(base)


def test_successful_run() -> None:
    text = format_summary(_summary(), URI)
    lines = text.splitlines()
    assert "visionops pipeline run: FINISHED" in lines
    assert "  MLflow experiment : visionops-digits (id 1)" in lines
    assert "  parent run        : abc123" in lines
    assert "  test accuracy     : 0.9712" in lines
    assert "  test macro-F1     : 0.9656" in lines
    assert "  gate              : PASSED" in lines
    assert "    - accuracy 0.9712 >= required 0.9000" in lines
    assert "    - macro_f1 0.9656 >= required 0.9000" in lines
    assert "  registered model  : visionops-digits version 4 (challenger, champion)" in lines
    assert "  champion          : models:/visionops-digits@champion -> version 4" in lines
    assert f"  tracking store    : {URI}" in lines
    assert "FAILED" not in text
    assert lines[1] == lines[-1] == "=" * 72


def test_rejected_version_without_alias_keeps_the_old_champion() -> None:
    text = format_summary(
        _summary(
            gate="rejected",
            gate_reasons=["accuracy 0.8700 < required 0.9000"],
            model_version="5",
            model_aliases=[],
            champion_version="4",
        ),
        URI,
    )
    assert "  gate              : REJECTED" in text
    assert "    - accuracy 0.8700 < required 0.9000" in text
    assert "version 5 (no alias)" in text
    assert "@champion -> version 4" in text


def test_failed_stage_is_shown_with_its_error() -> None:
    text = format_summary(
        _summary(
            status="FAILED",
            failed_stage="preprocess",
            error="bad.png: cannot decode",
            test_accuracy=None,
            test_macro_f1=None,
            gate=None,
            gate_reasons=[],
            model_version=None,
            model_aliases=[],
            champion_version=None,
        ),
        URI,
    )
    lines = text.splitlines()
    assert "visionops pipeline run: FAILED" in lines
    assert "  FAILED at stage   : preprocess" in lines
    assert "  error             : bad.png: cannot decode" in lines
    for absent in ("test accuracy", "gate ", "registered model", "champion "):
        assert absent not in text


def test_replaced_champion_and_rollback_hint() -> None:
    text = format_summary(_summary(replaced_version="3"), URI)
    assert (
        "  replaced champion : version 3 (alias previous_champion; "
        "`visionops registry rollback visionops-digits` restores it)"
    ) in text.splitlines()
    assert "replaced champion" not in format_summary(_summary(), URI)


def test_clean_subset_line() -> None:
    text = format_summary(
        _summary(test_clean_accuracy=0.91, test_clean_macro_f1=0.9, n_test_clean=120), URI
    )
    assert (
        "clean test subset : accuracy 0.9100, macro-F1 0.9000 on 120 images without a near-copy"
        in text
    )
    assert "clean test subset" not in format_summary(_summary(), URI)


def test_data_warnings_are_listed() -> None:
    warning = (
        "expect_column_values_to_be_unique on 'sha256': 9 exact copies with the same label were "
        "dropped (kept one of each)"
    )
    text = format_summary(_summary(validation_warnings=[warning]), URI)
    assert f"  data warning      : {warning}" in text.splitlines()
    assert "data warning" not in format_summary(_summary(), URI)


def test_an_ensemble_says_so_with_its_out_of_fold_accuracy() -> None:
    lines = format_summary(_summary(ensemble_members=5, oof_accuracy=0.98765), URI).splitlines()
    assert (
        "  model             : soft-voting ensemble of 5 members (stratified group 5-fold), "
        "out-of-fold accuracy 0.9877"
    ) in lines
    single = format_summary(_summary(ensemble_members=None), URI).splitlines()
    assert "  model             : one network (train.folds = 1)" in single
    assert not any("soft-voting" in line for line in single)
    untrained = format_summary(_summary(test_accuracy=None, test_macro_f1=None), URI)
    assert "  model   " not in untrained  # nothing was trained (an unchanged or failed run)


def test_the_tuning_line_says_what_the_search_did_and_chose() -> None:
    line = "8 trials (5 pruned, 0 failed), best val_loss 0.0312: learning_rate 0.00231"
    lines = format_summary(_summary(tuning=line), URI).splitlines()
    assert f"  tuning            : {line}" in lines
    assert "tuning" not in format_summary(_summary(), URI)


def test_the_model_is_shown_against_each_baseline() -> None:
    lines = format_summary(
        _summary(
            test_accuracy=0.99,
            best_baseline="pca_svm",
            best_baseline_accuracy=0.98,
            gain_over_baseline_points=1.0,
            baselines={"pca_svm": 0.98, "logistic_regression": 0.965},
        ),
        URI,
    ).splitlines()
    assert (
        "  best baseline     : pca_svm 0.9800 (model +1.00 points; paired evidence under gate)"
        in lines
    )
    assert "  other baseline    : logistic_regression 0.9650 (model +2.50 points)" in lines
    assert not any(line.startswith("  other baseline    : pca_svm") for line in lines)
