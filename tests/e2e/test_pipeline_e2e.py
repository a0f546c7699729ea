"""Whole pipeline runs through real Airflow (``airflow dags test`` via the CLI) and a real MLflow registry.

Run 1 promotes version 1; the same run again stops after ingest; a weak run (version 2) is rejected
and the champion stays; a stronger one (version 3) scores that champion on its own test split, passes
and takes the champion alias; a run on broken data stops at validate, names the files and leaves the
champion alone; rollback brings version 1 back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e2e_cli import pipeline_env, run_cli

pytestmark = pytest.mark.e2e

MODEL = "e2e-digits"
SMALL = [
    "--set",
    "train.max_epochs=8",
    # The mechanics across runs on the small network: the shipped width-2 batch-norm one is slower,
    # and the COIL-20 e2e and bench/vs_baselines.py run it against the baselines.
    "--set",
    "model.width=1",
    "--set",
    "model.batch_norm=false",
    "--set",
    "tune.n_trials=2",
    "--set",
    "tune.epochs_per_trial=2",
    "--set",
    "tune.workers=2",
    "--set",
    f"registry.model_name={MODEL}",
    "--set",
    "experiment=e2e-digits",
    # These runs test the mechanics across runs (promotion, rejection, rollback) with short training:
    # the check against the simple baselines (tests/integration/test_baselines_in_pipeline.py,
    # tests/unit/test_gate.py) would judge the short training instead.
    "--set",
    "gate.compare_with_baselines=false",
    # The bar for these short runs: two tuning workers sharing a 2-trial study make run 1's model vary
    # (it once reached 0.86 against the shipped 0.90 and was rejected, failing the mechanics tests).
    "--set",
    "gate.min_accuracy=0.8",
    "--set",
    "gate.min_macro_f1=0.8",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def two_runs(home):
    """Run 1, then the same data, config and code again (nothing to do)."""
    first, s1 = run_cli(home, *SMALL)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    again, s_again = run_cli(home, *SMALL)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    home.joinpath("unchanged.json").write_text(json.dumps({"stdout": again.stdout, **s_again}))
    return first, s1


def _client(home: Path):
    from mlflow.tracking import MlflowClient

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{home / 'mlflow.db'}")
    return MlflowClient()


def test_first_run_promotes_version_1(two_runs, home):
    proc, summary = two_runs
    assert summary["status"] == "FINISHED"
    assert summary["gate"] == "passed"
    assert summary["model_version"] == "1"
    assert "champion" in summary["model_aliases"]
    assert "gate              : PASSED" in proc.stdout
    assert f"models:/{MODEL}@champion -> version 1" in proc.stdout


def test_the_run_shows_each_task_as_it_runs(two_runs):
    """Between "running DAG train_pipeline" and the summary, a line per task as it starts and ends,
    with the figure that matters, and the epochs while it trains (README "Running it")."""
    first, _ = two_runs
    lines = first.stdout.splitlines()
    tasks = [line for line in lines if line.startswith("visionops task ")]
    starts = [
        t.split(":")[0].removeprefix("visionops task ") for t in tasks if t.endswith(": started")
    ]
    expected = ["start", "ingest_plan", "ingest_chunk[0]", "ingest", "check_changes"]
    expected += ["after_check", "validate", "preprocess", "tune_plan", "tune_worker[0]"]
    expected += ["tune_worker[1]", "tune", "train", "evaluate", "gate", "register", "decide"]
    expected += ["promote", "finish"]
    assert sorted(starts) == sorted(expected), tasks
    assert starts.index("ingest") < starts.index("validate") < starts.index("train")
    assert starts.index("train") < starts.index("gate") < starts.index("promote")
    done = {t.split(":")[0].removeprefix("visionops task "): t for t in tasks if ": done in " in t}
    assert set(done) == set(expected), tasks
    assert re.search(r": 1797 images in 10 classes \(\d+ read\)$", done["ingest"]), done
    assert re.search(r": best trial \d\.\d{4}: \{", done["tune"]), done
    assert re.search(r": \d+ epochs, best val_accuracy \d\.\d{4}$", done["train"]), done
    assert re.search(r": test accuracy \d\.\d{4}$", done["evaluate"]), done
    assert done["gate"].endswith(")") and ": passed (" in done["gate"], done
    assert done["promote"].endswith(": champion moved"), done
    # The epochs between train's start and its end, indented.
    at = lines.index(next(t for t in tasks if t.startswith("visionops task train: started")))
    end = lines.index(done["train"])
    epochs = [line for line in lines[at:end] if line.startswith("  epoch ")]
    assert len(epochs) >= 2 and epochs[0].startswith("  epoch 1: train_loss "), lines[at:end]
    assert lines.index(tasks[-1]) < lines.index(next(x for x in lines if x.startswith("=====")))


def test_unchanged_run_stops_after_ingest_and_makes_no_version(two_runs, home):
    again = json.loads(home.joinpath("unchanged.json").read_text())
    assert again["status"] == "FINISHED" and again["unchanged_since"] == "1", again["changes"]
    assert again["model_version"] is None and again["gate"] is None
    assert again["trigger"] == "manual"
    assert "NOTHING CHANGED   : since champion v1" in again["stdout"]
    client = _client(home)
    parent = client.get_run(again["parent_run_id"])
    assert parent.data.tags["visionops.unchanged_since"] == "1"
    assert "nothing changed since champion v1" in parent.data.tags["mlflow.note.content"]
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {c.data.tags["visionops.stage"] for c in children} == {"ingest"}
    # Version 2 is the weak run's (test_weak_run_...): this one registered nothing.


def test_parent_and_child_runs_are_tracked(two_runs, home):
    _, summary = two_runs
    client = _client(home)
    parent = client.get_run(summary["parent_run_id"])
    tags = parent.data.tags
    for key in ("dag_id", "airflow_run_id", "config_hash", "code_version", "data_fingerprint"):
        assert tags.get(f"visionops.{key}"), key
    assert tags["visionops.dag_id"] == "train_pipeline"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    stages = {c.data.tags["visionops.stage"] for c in children}
    assert {
        "ingest",
        "validate",
        "preprocess",
        "tune",
        "train",
        "evaluate",
        "gate",
        "register",
        "promote",
    } <= stages
    tune_run = next(c for c in children if c.data.tags["visionops.stage"] == "tune")
    trials = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{tune_run.info.run_id}'"
    )
    assert len(trials) == 2
    assert all("val_accuracy" in t.data.metrics for t in trials)
    # Ranked by the default objective, the validation loss, and said in one line on the parent.
    complete = [t for t in trials if t.data.tags.get("optuna.state") == "COMPLETE"]
    assert complete and all("best_val_loss" in t.data.metrics for t in complete)
    assert re.fullmatch(
        r"2 trials \(\d pruned, 0 failed\), best val_loss \d\.\d{4}: .*learning_rate .*",
        tags["visionops.tuning"],
    ), tags["visionops.tuning"]
    assert summary["tuning"] == tags["visionops.tuning"]
    assert (
        tune_run.data.tags["visionops.tune_workers"] == "2"
    )  # two mapped workers shared the study
    assert "tuning/tuning_plots.html" in [
        a.path for a in client.list_artifacts(tune_run.info.run_id, "tuning")
    ]
    train_run = next(c for c in children if c.data.tags["visionops.stage"] == "train")
    history = client.get_metric_history(train_run.info.run_id, "val_accuracy")
    assert len(history) >= 2  # one point per epoch
    validate_run = next(c for c in children if c.data.tags["visionops.stage"] == "validate")
    docs = [a.path for a in client.list_artifacts(validate_run.info.run_id, "data_docs")]
    assert "data_docs/index.html" in docs


def test_a_later_run_compares_with_the_champion_and_takes_over(weak_then_strong, home):
    s = weak_then_strong["strong"]
    out = weak_then_strong["strong_out"]
    assert s["status"] == "FINISHED" and s["model_version"] == "3"
    # The champion (v1) was scored on this run's test split and the decision says so.
    assert any("vs champion v1" in r for r in s["gate_reasons"]), s["gate_reasons"]
    assert any("McNemar exact p" in r for r in s["gate_reasons"])  # paired, same images
    client = _client(home)
    evaluate = client.search_runs(
        [s["experiment_id"]],
        f"tags.mlflow.parentRunId = '{s['parent_run_id']}' and tags.`visionops.stage` = 'evaluate'",
    )[0]
    assert "champion_test_accuracy" in evaluate.data.metrics
    v3 = client.get_model_version(MODEL, "3")
    assert v3.tags["visionops.gate"] == s["gate"] == "passed"
    assert v3.tags["visionops.compared_with_version"] == "1"
    assert "gate              : PASSED" in out
    assert s["champion_version"] == "3" and s["replaced_version"] == "1"
    assert "champion" in s["model_aliases"]
    assert f"models:/{MODEL}@champion -> version 3" in out


def test_champion_labels_held_out_digits(weak_then_strong, home):
    import pandas as pd

    import mlflow

    client = _client(home)
    version = client.get_model_version_by_alias(MODEL, "champion")
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    splits = next((home / "data" / "runs").glob("*/preprocess/splits.parquet"))
    test = pd.read_parquet(splits).query("split == 'test'")
    images = np.stack([np.asarray(Image.open(p)) for p in test["path"]])  # raw 8x8 uint8, as stored
    assert images.dtype == np.uint8 and images.ndim == 3
    predicted = model.predict(images)
    accuracy = float((predicted["label"].to_numpy() == test["label"].to_numpy()).mean())
    # The served champion on the raw files gives the accuracy its evaluation recorded (one image is
    # 0.004), and clears these runs' gate bar (SMALL: 0.8; a width-1 network whose 2-trial tuning is
    # shared by two workers has ended between 0.86 and 0.99 here, so a fixed 0.9 was a coin toss).
    assert accuracy == pytest.approx(float(version.tags["visionops.accuracy"]), abs=1e-3)
    assert accuracy >= 0.8, accuracy
    assert predicted["probability"].between(0, 1).all()


def test_broken_data_stops_at_validate_and_keeps_the_champion(weak_then_strong, home, tmp_path):
    digits = home / "sources" / "digits"
    data = tmp_path / "broken"
    for label in ("0", "1", "2"):
        (data / label).mkdir(parents=True)
        for src in sorted((digits / label).glob("*.png"))[:12]:
            shutil.copy(src, data / label / src.name)
    corrupt = data / "1" / "corrupt.png"
    corrupt.write_bytes((digits / "1" / sorted(os.listdir(digits / "1"))[0]).read_bytes()[:40])
    duplicate = data / "2" / "copy_of_0.png"
    original = sorted((data / "0").glob("*.png"))[0]
    shutil.copy(original, duplicate)
    client = _client(home)
    champion_before = client.get_model_version_by_alias(MODEL, "champion").version
    versions_before = len(client.search_model_versions(f"name = '{MODEL}'"))

    proc, summary = run_cli(
        home,
        *SMALL,
        "--set",
        "data.source=imagefolder",
        "--set",
        f"data.path={data}",
        "--set",
        "validate.min_images_per_class=5",
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert summary["status"] == "FAILED" and summary["failed_stage"] == "validate"
    assert str(corrupt) in output and str(duplicate) in output and str(original) in output
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion_before
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == versions_before


def test_invalid_config_fails_fast_naming_the_key(home):
    proc, summary = run_cli(home, "--set", "train.max_epochs=0", "--set", "train.max_epoch=3")
    assert proc.returncode == 2
    assert "train.max_epochs" in proc.stderr and "train.max_epoch:" in proc.stderr
    assert summary is None


# -- gate, promotion and rollback across runs (issue 5) -------------------------------------------

WEAK = ["--set", "train.max_epochs=1", "--set", "tune.n_trials=0"]
# Not worse than the champion beyond the margin: the first runs' config, trained longer. The margin is
# widened to 2 points so that training noise on 270 test images cannot make this mechanics test flaky,
# and a class's recall may move by 25 (7 of its ~27 test images) for the same reason; the gate's own
# unit tests pin the margin, significance and per-class rules.
STRONG = ["--set", "train.max_epochs=12", "--set", "gate.max_regression=0.02"]
STRONG += ["--set", "gate.max_class_regression=25"]


@pytest.fixture(scope="module")
def weak_then_strong(two_runs, home):
    """After the first two runs: a deliberately weak run (rejected), then a stronger one (promoted)."""
    client = _client(home)
    champion_before = str(client.get_model_version_by_alias(MODEL, "champion").version)
    weak, s_weak = run_cli(home, *SMALL, *WEAK)
    assert weak.returncode == 0, weak.stdout[-4000:] + weak.stderr[-4000:]
    champion_after_weak = str(client.get_model_version_by_alias(MODEL, "champion").version)
    strong, s_strong = run_cli(home, *SMALL, *STRONG)
    assert strong.returncode == 0, strong.stdout[-4000:] + strong.stderr[-4000:]
    return {
        "before": champion_before,
        "after_weak": champion_after_weak,
        "weak": s_weak,
        "strong": s_strong,
        "strong_out": strong.stdout,
    }


def test_weak_run_is_rejected_with_reasons_and_the_champion_stays(weak_then_strong, home):
    s = weak_then_strong["weak"]
    assert s["gate"] == "rejected", s["gate_reasons"]
    assert any("< required" in r or "below champion" in r for r in s["gate_reasons"]), s[
        "gate_reasons"
    ]
    assert any(
        "McNemar exact p" in r for r in s["gate_reasons"]
    )  # paired evidence on the same images
    assert weak_then_strong["after_weak"] == weak_then_strong["before"]
    assert s["model_aliases"] == []
    version = _client(home).get_model_version(MODEL, s["model_version"])
    assert version.tags["visionops.gate"] == "rejected"


def test_strong_run_is_promoted_recording_the_previous_champion(weak_then_strong, home):
    s = weak_then_strong["strong"]
    assert s["gate"] == "passed", s["gate_reasons"]
    client = _client(home)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == s["model_version"]
    previous = weak_then_strong["before"]
    assert str(client.get_model_version_by_alias(MODEL, "previous_champion").version) == previous
    tags = client.get_model_version(MODEL, s["model_version"]).tags
    assert tags["visionops.replaced_version"] == previous
    assert tags["visionops.smoke_test"] == "passed"
    evaluate = client.search_runs(
        [s["experiment_id"]],
        f"tags.mlflow.parentRunId = '{s['parent_run_id']}' and tags.`visionops.stage` = 'evaluate'",
    )[0]
    artifacts = {a.path for a in client.list_artifacts(evaluate.info.run_id, "evaluation")}
    assert {
        "evaluation/report.json",
        "evaluation/report.md",
        "evaluation/reliability.png",
        "evaluation/misclassified.png",
        "evaluation/confusion_matrix.png",
    } <= artifacts
    assert {"test_ece", "test_top_3_accuracy"} <= set(evaluate.data.metrics)
    # The simple baselines are fitted and scored beside the model in every evaluation.
    assert {
        "baseline_logistic_regression_test_accuracy",
        "baseline_pca_svm_test_accuracy",
        "gain_over_best_baseline_points",
    } <= set(evaluate.data.metrics)
    register = client.search_runs(
        [s["experiment_id"]],
        f"tags.mlflow.parentRunId = '{s['parent_run_id']}' and tags.`visionops.stage` = 'register'",
    )[0]
    assert "model_card.md" in {a.path for a in client.list_artifacts(register.info.run_id)}


def test_rollback_restores_the_previous_champion(weak_then_strong, home):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "visionops"), "registry", "rollback", MODEL],
        capture_output=True,
        text=True,
        env=pipeline_env(home),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = _client(home)
    assert (
        str(client.get_model_version_by_alias(MODEL, "champion").version)
        == weak_then_strong["before"]
    )
    assert (
        str(client.get_model_version_by_alias(MODEL, "previous_champion").version)
        == weak_then_strong["strong"]["model_version"]
    )
