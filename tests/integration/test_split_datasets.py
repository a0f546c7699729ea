"""The training, validation and test sets as MLflow datasets, read back from a real (SQLite) store: on
the parent run and the train run with their contexts, digests, source and profile counts, and on the
logged model and its registered version ("Datasets used")."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import mlflow
from visionops.core import tracking
from visionops.core.config import DataConfig
from visionops.core.storage import StageOutput
from visionops.data.split_datasets import log_split_datasets

FINGERPRINT = "0123456789abcdef"
QUALITY = {"label_conflicts": 78, "dropped_classes": 1, "exact_copies": 1}


class _Constant(mlflow.pyfunc.PythonModel):
    """Only the logged model's identity is read here, never its predictions."""

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        return model_input


def _preprocess_output(folder: Path, splits: dict[str, int], **meta) -> StageOutput:
    """A preprocess output as far as the datasets read it: splits.parquet and the stage's meta."""
    folder.mkdir(parents=True)
    rows = [
        {"path": f"/src/{s}/{i}.png", "label": "ab"[i % 2], "sha256": f"{s}{i}", "split": s}
        for s, n in splits.items()
        for i in range(n)
    ]
    pd.DataFrame(rows).assign(class_index=0, group=0).to_parquet(folder / "splits.parquet")
    return StageOutput(str(folder), "fp", {"counts": splits, "n_duplicates_dropped": 2, **meta})


def _parent(name: str) -> str:
    exp = tracking.experiment_id("split-datasets")
    return tracking.start_parent_run(exp, name, {"visionops.data_fingerprint": FINGERPRINT})


def _by_context(run_id: str) -> dict[str, mlflow.entities.Dataset]:
    inputs = MlflowClient().get_run(run_id).inputs.dataset_inputs
    return {{t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset for i in inputs}


@pytest.fixture()
def data(tmp_path: Path) -> DataConfig:
    return DataConfig(source="csv", path=str(tmp_path / "faces.csv"))


def test_the_parent_run_shows_the_three_sets_with_counts(
    mlflow_store: Path, no_active_run: None, tmp_path: Path, data: DataConfig
) -> None:
    out = _preprocess_output(tmp_path / "pre", {"train": 6, "val": 2, "test": 3}, quality=QUALITY)
    parent = _parent("run-1")
    log_split_datasets(out, data, parent)
    log_split_datasets(out, data, parent)  # a retried task: still one input per set

    sets = _by_context(parent)
    assert len(MlflowClient().get_run(parent).inputs.dataset_inputs) == 3
    assert {c: ds.name for c, ds in sets.items()} == {
        "training": "faces-train",
        "validation": "faces-val",
        "test": "faces-test",
    }
    for context, rows in (("training", 6), ("validation", 2), ("test", 3)):
        ds = sets[context]
        assert ds.digest.startswith(f"{FINGERPRINT}-")
        assert ds.source_type == "local"
        assert json.loads(ds.source)["uri"] == f"{out.uri}/splits.parquet"
        profile = json.loads(ds.profile)
        assert profile["num_rows"] == rows
        assert profile["num_classes"] == 2
        assert (profile["n_train"], profile["n_val"], profile["n_test"]) == (6, 2, 3)
        assert profile["quarantined"] == QUALITY
        assert profile["n_duplicates_dropped"] == 2
        assert profile["data_fingerprint"] == FINGERPRINT
        assert (profile["data_source"], profile["data_path"]) == ("csv", data.path)
        columns = {c["name"] for c in json.loads(ds.schema)["mlflow_colspec"]}
        assert columns == {"path", "label", "sha256"}
    assert len({ds.digest for ds in sets.values()}) == 3


def test_another_profile_gets_its_own_digest_and_works_without_quality(
    mlflow_store: Path, no_active_run: None, tmp_path: Path, data: DataConfig
) -> None:
    """MLflow reuses a dataset of the same name and digest in an experiment, its profile included."""
    splits = {"train": 6, "val": 2, "test": 3}
    first = _preprocess_output(tmp_path / "a", splits, quality=QUALITY)
    second = _preprocess_output(tmp_path / "b", splits)  # written before the quality policy
    parent_a, parent_b = _parent("run-a"), _parent("run-b")
    log_split_datasets(first, data, parent_a)
    log_split_datasets(second, data, parent_b)

    a, b = _by_context(parent_a), _by_context(parent_b)
    assert a["training"].digest != b["training"].digest
    assert json.loads(a["training"].profile)["quarantined"] == QUALITY
    assert json.loads(b["training"].profile)["quarantined"] == {}


def test_the_model_and_its_version_list_the_sets(
    mlflow_store: Path, no_active_run: None, tmp_path: Path, data: DataConfig
) -> None:
    out = _preprocess_output(tmp_path / "pre", {"train": 4, "val": 2, "test": 2}, quality=QUALITY)
    parent = _parent("run-model")
    client = MlflowClient()
    with tracking.stage_run(parent, "train") as train_run:
        info = mlflow.pyfunc.log_model(name="model", python_model=_Constant())
        sets = log_split_datasets(out, data, parent, run_id=train_run, model_uri=info.model_uri)
    assert {c: ds.digest for c, ds in _by_context(train_run).items()} == {
        "training": sets["train"].digest,
        "validation": sets["val"].digest,
        "test": sets["test"].digest,
    }
    assert not client.get_run(parent).inputs.dataset_inputs  # only where it was asked

    registered = mlflow.register_model(info.model_uri, "split-datasets-model")
    # The version page's "Source model": the store keeps the logged model as the version's source.
    version = client.get_model_version(registered.name, registered.version)
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert model.model_id == info.model_id
    # What the model page's "Datasets used" reads: the model's metrics with their dataset.
    linked = {(m.key, m.dataset_name, m.dataset_digest, m.value) for m in model.metrics}
    assert linked == {
        (f"n_{s}", ds.name, ds.digest, ds.profile["num_rows"]) for s, ds in sets.items()
    }


def test_a_data_root_mlflow_has_no_source_for_still_names_the_file(
    mlflow_store: Path, no_active_run: None, tmp_path: Path, data: DataConfig
) -> None:
    import fsspec

    local = _preprocess_output(tmp_path / "pre", {"train": 2, "val": 1, "test": 1})
    uri = f"memory://split-datasets-{tmp_path.name}/preprocess"
    fs = fsspec.filesystem("memory")
    fs.put_file(str(Path(local.uri) / "splits.parquet"), f"{uri}/splits.parquet")
    fs.pipe(f"{uri}/_COMPLETE.json", b"{}")
    parent = _parent("run-memory")
    log_split_datasets(StageOutput(uri, "fp-memory", local.meta), data, parent)

    train = _by_context(parent)["training"]
    assert json.loads(train.source) == {"tags": {"uri": f"{uri}/splits.parquet"}}
    assert json.loads(train.profile)["num_rows"] == 2
