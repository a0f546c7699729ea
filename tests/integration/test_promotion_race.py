"""Two processes promote against the same registry at the same moment: the better model ends as champion.

Each process does what a pipeline run's promote task does (``promote_safely`` with the pipeline's
re-check against its own stored predictions), and a barrier releases both together. Both evaluated
against "no champion": without the lock both would move the alias and the last writer would win.
With it, exactly one finds the champion changed and decides again. On SQLite, on PostgreSQL, and
through an MLflow tracking server (the project's ``mlflow/start.sh`` on PostgreSQL) where the lock is
the advisory lock named by VISIONOPS_PROMOTION_LOCK_URL. The PostgreSQL cases are skipped only when
PostgreSQL does not answer, unless VISIONOPS_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from visionops.core.constants import CHAMPION, PREVIOUS_CHAMPION

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

WORKER = r"""
import json, sys, time
from pathlib import Path
from visionops.core import tracking
from visionops.release.champion import promote_safely
from visionops.core.config import GateConfig
from visionops.core.contracts import Evaluated
from visionops.release.stages import recheck_against
import visionops.evaluation.stage  # noqa: F401 - imported before the barrier so that both start together

tracking.configure()
name, version, evaluated_file, barrier, me = sys.argv[1:6]
evaluated = Evaluated.model_validate_json(Path(evaluated_file).read_text())
Path(barrier, me).touch()
while len(list(Path(barrier).iterdir())) < 2:
    time.sleep(0.005)
result = promote_safely(name, version, evaluated_against=None,
                        recheck=recheck_against(evaluated, name, GateConfig(min_accuracy=0, min_macro_f1=0)),
                        run_key=me)
print(json.dumps(result.__dict__))
"""


@pytest.fixture(params=["sqlite", "postgres", "mlflow-server"])
def race_store(request, tmp_path: Path, helpers, trained_nets) -> Iterator[dict[str, Any]]:
    from mlflow.tracking import MlflowClient

    import mlflow
    from visionops.core import tracking

    # The PostgreSQL fixture creates a fresh database and drops it after the test.
    lock_url = None
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path}/mlflow.db"
    elif request.param == "postgres":
        uri = request.getfixturevalue("postgres_url")
    else:  # the multi-service layout: clients talk HTTP to the server, the lock is in PostgreSQL
        lock_url = request.getfixturevalue("postgres_url")
        uri = request.getfixturevalue("mlflow_server")(lock_url)
    saved = {
        k: os.environ.get(k)
        for k in (
            "MLFLOW_TRACKING_URI",
            "MLFLOW_REGISTRY_URI",
            "VISIONOPS_HOME",
            "VISIONOPS_PROMOTION_LOCK_URL",
        )
    }
    os.environ.update({"MLFLOW_TRACKING_URI": uri, "VISIONOPS_HOME": str(tmp_path / "home")})
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    os.environ.pop("VISIONOPS_PROMOTION_LOCK_URL", None)
    if lock_url:
        os.environ["VISIONOPS_PROMOTION_LOCK_URL"] = lock_url
    try:
        tracking.configure()
        # Artifacts in the temp folder, whatever the store (a database store would default to ./mlartifacts).
        exp = MlflowClient().create_experiment(
            "race", artifact_location=(tmp_path / "artifacts").as_uri()
        )
        models = {
            k: helpers.log_model(net, tmp_path / f"work-{k}", exp)
            for k, net in trained_nets.items()
        }
        yield {
            "uri": uri,
            "models": models,
            "split": helpers.write_test_split(tmp_path / "preprocess"),
            "kind": request.param,
            "tmp": tmp_path,
        }
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        tracking.configure()  # MLflow keeps the URI it was given: point it back at the session's store


def _evaluated(store: dict[str, Any], kind: str, labels: list[str]) -> dict[str, Any]:
    """What evaluate hands to promote: metrics and references to the stored paired predictions."""
    import mlflow
    from visionops.serving.model import to_raw_images

    x = np.load(store["split"] / "test_x.npy")
    y = [labels[i] for i in np.load(store["split"] / "test_y.npy")]
    pred = (
        mlflow.pyfunc.load_model(store["models"][kind]["model_uri"])
        .predict(to_raw_images(x))["label"]
        .tolist()
    )
    folder = store["tmp"] / f"evaluate-{kind}"
    folder.mkdir()
    pd.DataFrame({"y_true": y, "candidate": pred, "champion": None}).to_parquet(
        folder / "predictions.parquet"
    )
    (folder / "labels.json").write_text(
        json.dumps({"candidate_labels": labels, "champion_labels": None})
    )
    acc = float(np.mean(np.array(pred) == np.array(y)))
    # No near-copies in this split: its clean subset is the whole test split.
    return {
        "metrics": {
            "accuracy": acc,
            "macro_f1": acc,
            "clean_accuracy": acc,
            "clean_macro_f1": acc,
            "n_test_clean": len(y),
        },
        "champion": None,
        "evaluate_run_id": f"evaluate-{kind}",
        "predictions": {"uri": str(folder), "fingerprint": kind, "meta": {"n": len(y)}},
        "test_data": {"uri": str(store["split"]), "fingerprint": "t", "meta": {}},
    }


def test_concurrent_promotions_end_with_the_better_model(
    race_store: dict[str, Any], helpers
) -> None:
    from mlflow.tracking import MlflowClient

    from visionops.release import registry

    name = f"race-{uuid.uuid4().hex[:6]}"
    versions = {}
    for kind in ("good", "bad"):
        m = race_store["models"][kind]
        versions[kind] = registry.register_version(name, m["model_uri"], m["run_id"], {}, kind)
    barrier = race_store["tmp"] / "barrier"
    barrier.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": race_store["uri"]}
    procs = {}
    for kind in ("good", "bad"):
        evaluated_file = race_store["tmp"] / f"{kind}.json"
        evaluated_file.write_text(json.dumps(_evaluated(race_store, kind, helpers.labels)))
        procs[kind] = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                name,
                versions[kind],
                str(evaluated_file),
                str(barrier),
                kind,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=race_store["tmp"],
        )
    results = {}
    for kind, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results[kind] = json.loads(out.strip().splitlines()[-1])
    champion = registry.get_alias(name, CHAMPION)
    assert str(champion.version) == versions["good"], results
    expected_lock = (
        "file" if race_store["kind"] == "sqlite" else "postgres-advisory"
    )  # also for the server
    assert {r["lock"] for r in results.values()} == {expected_lock}
    # Serialised: exactly one of the two saw the other's promotion and decided again.
    rechecked = [kind for kind, r in results.items() if r["rechecked_against"] is not None]
    assert len(rechecked) == 1, results
    if rechecked == ["bad"]:  # good went first; bad was compared with it and rejected
        assert results["bad"]["promoted"] is False
        assert any("below champion" in r for r in results["bad"]["reasons"])
        assert (
            MlflowClient().get_model_version(name, versions["bad"]).tags["visionops.gate"]
            == "rejected"
        )
    else:  # bad went first; good was compared with it, passed, and replaced it
        assert (
            results["good"]["promoted"] is True and results["good"]["replaced"] == versions["bad"]
        )
        assert str(registry.get_alias(name, PREVIOUS_CHAMPION).version) == versions["bad"]


def test_promotion_through_a_tracking_server_without_a_lock_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against an MLflow server MLflow's API offers no lock: refuse before anything moves, naming the fix."""
    import mlflow
    from visionops.core.errors import InputError
    from visionops.release.champion import promote_safely

    monkeypatch.delenv("VISIONOPS_PROMOTION_LOCK_URL", raising=False)
    previous = mlflow.get_registry_uri()
    mlflow.set_registry_uri(
        "http://127.0.0.1:9"
    )  # nothing listens: any request would fail differently
    try:

        def never(_current: str):
            raise AssertionError("no gate re-check may run without the lock")

        with pytest.raises(InputError, match="VISIONOPS_PROMOTION_LOCK_URL"):
            promote_safely("m", "1", evaluated_against=None, recheck=never, run_key="r")
        monkeypatch.setenv("VISIONOPS_PROMOTION_LOCK_URL", "redis://127.0.0.1:6379/0")
        with pytest.raises(InputError, match="must be a postgresql:// URL"):
            promote_safely("m", "1", evaluated_against=None, recheck=never, run_key="r")
    finally:
        mlflow.set_registry_uri(previous)
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
