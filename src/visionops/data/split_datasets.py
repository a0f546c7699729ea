"""The training, validation and test sets as MLflow datasets (``mlflow.data``), on runs and on the model.

Each split of a preprocess output becomes one MLflow dataset: one row per image (path, label, sha256)
read from ``splits.parquet``, a digest that starts with the data fingerprint, ``splits.parquet`` as
its source, and a profile with every split's count, what the data-quality policy quarantined and where
the data came from. MLflow stores the description only (name, digest, source, schema, profile), never
the rows. A run page lists them under "Datasets"; a logged model lists them under "Datasets used",
and so does the model version through its source model.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from mlflow.utils.time import get_current_time_millis

from visionops.core.config import DataConfig
from visionops.core.constants import TAG_PREFIX
from visionops.core.storage import StageOutput, fingerprint
from visionops.data.split import SPLITS

# MLflow's usual context names; the UI shows them beside each dataset.
CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
ROW_COLUMNS = ("path", "label", "sha256")  # sha256 where the output has it
SPLITS_FILE = "splits.parquet"


class ImageSetDataset(PandasDataset):
    """A split as MLflow records it: the rows give the schema, the profile is the pipeline's.

    PandasDataset's own profile is only its row and cell counts; a person looking at a training set
    needs the counts of all three splits and of what was quarantined, so the profile is replaced
    here (MLflow's ``Dataset`` has no argument for it, and ``MetaDataset`` would lose the schema).
    """

    def __init__(
        self,
        df: pd.DataFrame,
        *,
        source: DatasetSource,
        name: str,
        digest: str,
        profile: dict[str, Any],
    ) -> None:
        self._image_set_profile = profile
        super().__init__(df=df, source=source, targets="label", name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        return self._image_set_profile


def log_split_datasets(
    preprocessed: StageOutput,
    data: DataConfig,
    parent_run_id: str,
    *,
    run_id: str | None = None,
    model_uri: str | None = None,
) -> dict[str, ImageSetDataset]:
    """Log the train/val/test sets of ``preprocessed`` as dataset inputs of ``run_id`` (default: the
    pipeline's parent run), with contexts training, validation and test; return them by split.

    The data fingerprint comes from the parent run's ``visionops.data_fingerprint`` tag (ingest sets
    it). With ``model_uri`` (a ``models:/<model_id>`` URI logged in ``run_id``), each set's image
    count is also logged as a metric of that model on that set (``n_train``, ``n_val``, ``n_test``):
    MLflow 3 ties datasets to a logged model only through such metrics, and its model page lists
    them as "Datasets used". Logging again is harmless: MLflow keeps one input per run and dataset.
    """
    client = MlflowClient()
    tags = client.get_run(parent_run_id).data.tags
    sets = _build(preprocessed, data, tags.get(f"{TAG_PREFIX}data_fingerprint", ""))
    target = run_id or parent_run_id
    # The client, not mlflow.log_input: that logs to the active run, and the parent run never is.
    client.log_inputs(
        target,
        datasets=[
            DatasetInput(
                DatasetEntity(**ds.to_dict()), tags=[InputTag(MLFLOW_DATASET_CONTEXT, CONTEXTS[s])]
            )
            for s, ds in sets.items()
        ],
    )
    if model_uri is not None:
        _link_to_model(client, target, model_uri.removeprefix("models:/"), sets)
    return sets


def _link_to_model(
    client: MlflowClient, run_id: str, model_id: str, sets: dict[str, ImageSetDataset]
) -> None:
    """Each set's image count as a metric of the model on that set, what "Datasets used" lists."""
    now = get_current_time_millis()
    metrics = [
        Metric(
            f"n_{split}",
            ds.profile["num_rows"],
            now,
            0,
            model_id=model_id,
            dataset_name=ds.name,
            dataset_digest=ds.digest,
        )
        for split, ds in sets.items()
    ]
    client.log_batch(run_id, metrics=metrics)


def _build(
    preprocessed: StageOutput, data: DataConfig, data_fingerprint: str
) -> dict[str, ImageSetDataset]:
    """The three datasets of a preprocess output, one row per kept image."""
    frame = pd.read_parquet(preprocessed.local_path() / SPLITS_FILE)
    rows = frame[[c for c in ROW_COLUMNS if c in frame.columns]].astype(str)
    source = _source(f"{preprocessed.uri.rstrip('/')}/{SPLITS_FILE}")
    shared = _shared_profile(preprocessed.meta, data, data_fingerprint)
    sets = {}
    for split in SPLITS:
        part = rows[frame["split"] == split].reset_index(drop=True)
        profile = {
            "num_rows": len(part),
            "num_classes": int(part["label"].nunique()),
            **shared,
        }
        sets[split] = ImageSetDataset(
            part,
            source=source,
            name=f"{_data_name(data)}-{split}",
            digest=_digest(data_fingerprint, split, part, profile),
            profile=profile,
        )
    return sets


def _source(uri: str) -> DatasetSource:
    """The file that holds exactly these rows (with their split), as MLflow's own source for its URI
    scheme (local path, s3://, gs://, ...): the run page shows it, ``mlflow.data.get_source(...).load()``
    fetches it."""
    with warnings.catch_warnings():
        # MLflow registers its local source for the schemes "" and "file" alike and warns that a
        # path matches both: the same source either way.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        try:
            return resolve_dataset_source(uri)
        except MlflowException:  # an fsspec scheme MLflow has no store for (memory://, az://, ...)
            return CodeDatasetSource(tags={"uri": uri})


def _shared_profile(
    meta: dict[str, Any], data: DataConfig, data_fingerprint: str
) -> dict[str, Any]:
    """What every split's profile repeats: all split counts, quarantined counts, data origin."""
    counts = meta.get("counts", {})
    profile: dict[str, Any] = {f"n_{s}": int(counts.get(s, 0)) for s in SPLITS}
    profile["n_duplicates_dropped"] = int(meta.get("n_duplicates_dropped", 0))
    # The data-quality policy's counts by problem kind (label conflicts, dropped classes, ...);
    # outputs written before the policy have none.
    profile["quarantined"] = dict(meta.get("quality", {}))
    profile["data_fingerprint"] = data_fingerprint
    profile["data_source"] = data.source
    if data.path:
        profile["data_path"] = data.path
    return profile


def _data_name(data: DataConfig) -> str:
    """``digits``, or the data's folder or file name without suffix (``faces``, ``labels``)."""
    if not data.path:
        return data.source
    return PurePosixPath(data.path.rstrip("/")).stem or data.source


def _digest(data_fingerprint: str, split: str, rows: pd.DataFrame, profile: dict[str, Any]) -> str:
    """``<data fingerprint>-<8 hex>``: the fingerprint a person finds on the parent run, then the set.

    The suffix covers which images are in the set (content when sha256 is known, in any order) and
    its profile, because MLflow keeps the first dataset of a name and digest in an experiment and
    reuses it, profile included: another split seed, or other quarantine counts, must not show the
    counts of an earlier run.
    """
    key = rows[["sha256" if "sha256" in rows else "path", "label"]]
    hashes = pd.util.hash_pandas_object(key, index=False).sort_values().to_numpy()
    members = hashlib.sha256(hashes.tobytes()).hexdigest()
    tail = fingerprint(split, profile, members)[:8]
    return f"{data_fingerprint}-{tail}" if data_fingerprint else tail
