"""visionops.serving.model and visionops.release.registry against a real (temporary, SQLite) MLflow store.

The input helpers that need no store: tests/unit/test_model_inputs.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

import mlflow
from testkit import left_right
from visionops.core import tracking
from visionops.core.constants import CHALLENGER, CHAMPION
from visionops.data.preprocess import Split
from visionops.models import build_model
from visionops.models.wrappers import NormalizedNet
from visionops.release import registry
from visionops.serving.model import PREPROCESSING_FILE, log_classifier
from visionops.training.engine import fit

LABELS = ["left", "right"]
SIZE = 8


_images = left_right  # uint8 (N, 1, 8, 8): bright left half for class 0, right half for class 1


@pytest.fixture(scope="module")
def logged(mlflow_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small_cnn trained for two epochs on a separable 2-class 8x8 problem, logged once for the module."""
    torch.manual_seed(0)
    net = NormalizedNet(
        build_model("small_cnn", in_channels=1, image_size=SIZE, num_classes=2, dropout=0.0),
        [0.3],
        [0.3],
    )
    xt, yt = _images(64, seed=0)
    xv, yv = _images(16, seed=1)
    result = fit(
        net,
        Split(xt, yt),
        Split(xv, yv),
        max_epochs=2,
        batch_size=16,
        learning_rate=3e-3,
        weight_decay=0.0,
        patience=5,
        seed=0,
        device=torch.device("cpu"),
    )
    assert result.best_val_accuracy == 1.0
    exp_id = tracking.experiment_id("unit-inference")
    workdir = tmp_path_factory.mktemp("logwork")
    with mlflow.start_run(experiment_id=exp_id) as run:
        uris = log_classifier(
            result.model, labels=LABELS, image_size=SIZE, channels=1, example=xv, workdir=workdir
        )
    assert mlflow.active_run() is None
    return {**uris, "run_id": run.info.run_id, "model": result.model, "workdir": workdir}


def test_log_classifier_returns_model_uris_and_preprocessing(
    logged: dict[str, Any], mlflow_store: Path
) -> None:
    assert logged["model_uri"].startswith("models:/")
    assert logged["network_uri"].startswith("models:/")
    assert logged["model_uri"] != logged["network_uri"]
    meta = json.loads((logged["workdir"] / PREPROCESSING_FILE).read_text())
    assert meta["labels"] == LABELS and meta["image_size"] == SIZE and meta["channels"] == 1
    # Artifacts live beside the temporary database, never in the current directory.
    artifact_uri = MlflowClient().get_run(logged["run_id"]).info.artifact_uri
    assert artifact_uri.startswith((mlflow_store / "mlartifacts").as_uri())


def test_pyfunc_predicts_labels_and_probabilities(
    logged: dict[str, Any], no_active_run: None
) -> None:
    model = mlflow.pyfunc.load_model(logged["model_uri"])
    x, y = _images(10, seed=5)
    out = model.predict(x[:, 0])  # raw (N, H, W) uint8, as an application passes them
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["label", "probability", "status", "error"]
    assert len(out) == 10
    assert (out["status"] == "ok").all() and out["error"].isna().all()
    assert out["label"].tolist() == [LABELS[i] for i in y]
    assert out["probability"].between(0.5, 1.0).all()  # the winning class of two
    # The same numbers as the in-memory network on the same batch.
    with torch.no_grad():
        probs = torch.softmax(logged["model"](torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(
        out["probability"].to_numpy(), probs.max(axis=1), rtol=1e-5, atol=1e-6
    )


def test_pyfunc_returns_per_class_probabilities_when_asked(
    logged: dict[str, Any], no_active_run: None
) -> None:
    from visionops.serving.model import model_labels, predict_probabilities

    model = mlflow.pyfunc.load_model(logged["model_uri"])
    x, y = _images(6, seed=7)
    plain = model.predict(x[:, 0])
    assert list(plain.columns) == [
        "label",
        "probability",
        "status",
        "error",
    ]  # no proba_ columns unless asked
    preds, probs = predict_probabilities(model, x[:, 0])
    assert probs.shape == (6, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs.max(axis=1), preds["probability"], rtol=1e-6)
    assert preds["label"].tolist() == plain["label"].tolist()
    assert model_labels(model) == LABELS
    params = model.metadata.get_params_schema()
    assert params is not None and [p.name for p in params.params] == [
        "return_probabilities",
        "return_embeddings",
        "unknown_threshold",
        "input",
    ]


def test_pyfunc_resizes_other_image_sizes(logged: dict[str, Any], no_active_run: None) -> None:
    model = mlflow.pyfunc.load_model(logged["model_uri"])
    x, y = _images(6, seed=9, size=20)
    out = model.predict(x[:, 0])
    assert out["label"].tolist() == [LABELS[i] for i in y]
    one = model.predict(x[:1, 0])  # a batch of one
    assert one["label"].tolist() == [LABELS[y[0]]]


def test_pytorch_flavour_network_loads(logged: dict[str, Any], no_active_run: None) -> None:
    network = mlflow.pytorch.load_model(logged["network_uri"], map_location="cpu")
    x, _ = _images(5, seed=3)
    with torch.no_grad():
        got = network(torch.from_numpy(x))
        expected = logged["model"](torch.from_numpy(x))
    assert got.shape == (5, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# -- registry -------------------------------------------------------------------------------------


def _name() -> str:
    return f"unit-model-{uuid.uuid4().hex[:8]}"


def test_get_alias_missing_model_or_alias_is_none(logged: dict[str, Any]) -> None:
    assert registry.get_alias(_name(), CHAMPION) is None
    name = _name()
    registry.register_version(name, logged["model_uri"], logged["run_id"], {}, "d")
    assert registry.get_alias(name, CHAMPION) is None
    assert registry.get_alias(name, "challenger") is None


def test_register_version_creates_versions_with_tags(logged: dict[str, Any]) -> None:
    name = _name()
    tags = {
        "visionops.accuracy": "0.9876",
        "visionops.gate": "passed",
        "visionops.run_key": "rk1",
        "visionops.comparison": {"b": 2, "a": 1},
        "long": "x" * 6000,
    }
    v1 = registry.register_version(name, logged["model_uri"], logged["run_id"], tags, "first")
    v2 = registry.register_version(
        name, logged["model_uri"], logged["run_id"], {"visionops.run_key": "rk2"}, "2nd"
    )
    assert (v1, v2) == ("1", "2")
    mv = MlflowClient().get_model_version(name, v1)
    assert mv.tags["visionops.accuracy"] == "0.9876"
    assert mv.tags["visionops.gate"] == "passed"
    assert json.loads(mv.tags["visionops.comparison"]) == {"a": 1, "b": 2}
    assert mv.tags["long"] == "x" * 5000  # clipped to the registry's tag limit, not rejected
    assert mv.description == "first"
    assert mv.run_id == logged["run_id"]
    assert (
        MlflowClient().get_registered_model(name).description.startswith("Image classifier trained")
    )


def test_registered_version_serves_predictions(logged: dict[str, Any], no_active_run: None) -> None:
    name = _name()
    version = registry.register_version(name, logged["model_uri"], logged["run_id"], {}, "d")
    registry.set_alias(name, CHAMPION, version)
    out = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(_images(4, seed=2)[0][:, 0])
    assert out["label"].tolist() == ["left", "right", "left", "right"]


def test_promote_to_champion_moves_alias_and_records_lineage(logged: dict[str, Any]) -> None:
    name = _name()
    for _ in range(3):
        registry.register_version(name, logged["model_uri"], logged["run_id"], {}, "d")
    client = MlflowClient()

    assert registry.promote_to_champion(name, "1", run_key="run-a") is None
    assert str(registry.get_alias(name, CHAMPION).version) == "1"
    assert registry.get_alias(name, "previous_champion") is None
    assert client.get_model_version(name, "1").tags["visionops.promoted_by_run"] == "run-a"

    assert registry.promote_to_champion(name, "2", run_key="run-b") == "1"
    assert str(registry.get_alias(name, CHAMPION).version) == "2"
    assert str(registry.get_alias(name, "previous_champion").version) == "1"
    v1, v2 = client.get_model_version(name, "1"), client.get_model_version(name, "2")
    assert v1.tags["visionops.replaced_by_version"] == "2"
    assert v2.tags["visionops.replaced_version"] == "1"
    assert v2.tags["visionops.promoted_by_run"] == "run-b"
    assert sorted(v1.aliases) == ["previous_champion"]
    assert sorted(v2.aliases) == ["champion"]

    # Promoting the champion again changes nothing.
    assert registry.promote_to_champion(name, "2", run_key="run-c") is None
    assert str(registry.get_alias(name, "previous_champion").version) == "1"
    assert client.get_model_version(name, "2").tags["visionops.promoted_by_run"] == "run-b"

    # Rollback: champion back to 1, and 2 becomes previous_champion.
    assert registry.promote_to_champion(name, "1", run_key="rollback") == "2"
    assert str(registry.get_alias(name, CHAMPION).version) == "1"
    assert str(registry.get_alias(name, "previous_champion").version) == "2"


def test_list_versions_newest_first_with_aliases(logged: dict[str, Any]) -> None:
    name = _name()
    for i in range(1, 4):
        registry.register_version(
            name,
            logged["model_uri"],
            logged["run_id"],
            {
                "visionops.accuracy": f"0.9{i}",
                "visionops.macro_f1": f"0.8{i}",
                "visionops.gate": "passed" if i != 2 else "rejected",
                "visionops.run_key": f"rk{i}",
            },
            "d",
        )
    registry.set_alias(name, CHALLENGER, "3")
    registry.promote_to_champion(name, "1", run_key="x")
    registry.promote_to_champion(name, "3", run_key="y")
    rows = registry.list_versions(name)
    assert [r.version for r in rows] == ["3", "2", "1"]
    assert [r.aliases for r in rows] == [["challenger", "champion"], [], ["previous_champion"]]
    assert [r.accuracy for r in rows] == ["0.93", "0.92", "0.91"]
    assert [r.macro_f1 for r in rows] == ["0.83", "0.82", "0.81"]
    assert [r.gate for r in rows] == ["passed", "rejected", "passed"]
    assert [r.run_key for r in rows] == ["rk3", "rk2", "rk1"]
    assert all(isinstance(r.created, int) and r.created > 0 for r in rows)


def test_list_versions_orders_numerically_past_nine(logged: dict[str, Any]) -> None:
    name = _name()
    for _ in range(11):
        registry.register_version(name, logged["model_uri"], logged["run_id"], {}, "d")
    assert [r.version for r in registry.list_versions(name)][:3] == ["11", "10", "9"]
