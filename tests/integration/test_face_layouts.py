"""The same Yale photos as a CSV manifest and as an image folder are the same data: one fingerprint
(the fingerprint is of the photos' bytes and labels, not of where the source lists them)."""

from __future__ import annotations

from testkit import YALE, needs_shared
from visionops.pipeline import stages as pipeline


@needs_shared(YALE)
def test_two_layouts_of_the_same_photos_have_one_data_fingerprint(mlflow_store, repo):
    fingerprints = []
    for source, path in (("csv", YALE / "labels.csv"), ("imagefolder", YALE / "images")):
        params = {
            "config": str(repo / "conf" / "faces.yaml"),
            "overrides": {"data.source": source, "data.path": str(path), "experiment": "layouts"},
        }
        context = pipeline.start(
            params, dag_id="train_pipeline", airflow_run_id=f"manual__{source}"
        )
        ingested = pipeline.ingest(context)
        assert ingested["meta"]["n_images"] >= 150, ingested["meta"]
        fingerprints.append(ingested["meta"]["data_fingerprint"])
    assert fingerprints[0] == fingerprints[1]
