"""batch_predict: label a folder of images with the champion and write a CSV under the data root.

Thin wiring only: each task is one call to its adapter in ``visionops.pipeline.batch``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task
from visionops_assets import PREDICTIONS

from visionops.pipeline import batch
from visionops_tasks import run_stage

DOC = """
### Score a folder of images with the model in service

`resolve` pins `models:/<model_name>@<alias>` to a version when the run starts (a promotion
during the run cannot mix two models in one file); `score` labels every image under
**input_dir** and writes `path,label,probability,model_version` as CSV to **output_path**
(default: `<data_root>/predictions/<model>/v<version>/<run id>.csv`; an existing file is refused
unless **overwrite**; the file appears whole, never half-written), and logs it to MLflow
(experiment `visionops-batch-predict`). With **shadow** (or the model's `serving.shadow`), the
version behind `challenger` scores the same images unseen: its agreement with the model in service,
its confidence and the labels where they differ are metrics of the batch run and an entry on the
challenger's version, which `promote_challenger` can require (`registry.min_shadow_batches`).
`record` keeps what the batch held and got (per image the
input statistics, the label, its confidence) and emits the `visionops://predictions` asset event,
on which the `monitor` DAG checks the model in service for drift.
"""


@dag(
    dag_id="batch_predict",
    description="Label a folder of images with models:/NAME@champion and write a CSV.",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=DOC,
    tags=["visionops", "serving", "mlflow"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param("visionops-digits", type="string", title="Registered model"),
        "alias": Param(
            "champion", type="string", title="Alias", description="Resolved to a version at start."
        ),
        "input_dir": Param(
            "", type="string", title="Input folder", description="Folder of images (recursive)."
        ),
        "output_path": Param(
            None,
            type=["null", "string"],
            title="Output CSV",
            description="Path or URL; default under the data root's predictions/. An existing "
            "file is refused unless overwrite is on.",
        ),
        "overwrite": Param(
            False, type="boolean", title="Overwrite", description="Replace an existing output_path."
        ),
        "shadow": Param(
            None,
            type=["null", "boolean"],
            title="Shadow",
            description="Also score with the version behind challenger and record its agreement "
            "with the model in service; empty: as the model's serving.shadow says.",
        ),
    },
)
def batch_predict():
    @task
    def resolve() -> dict:
        params = get_current_context()["params"]
        return run_stage(batch.resolve, params["model_name"], params["alias"])

    @task
    def score(resolved: dict) -> dict:
        context = get_current_context()
        params = context["params"]
        return run_stage(
            batch.score,
            resolved,
            params["input_dir"],
            params.get("output_path"),
            run_id=context["run_id"],
            overwrite=bool(params.get("overwrite")),
            shadow=params.get("shadow"),
        )

    @task(outlets=[PREDICTIONS])
    def record(scored: dict) -> dict:
        context = get_current_context()
        recorded = run_stage(batch.record, scored, run_id=context["run_id"])
        context["outlet_events"][PREDICTIONS].extra = recorded
        return recorded

    record(score(resolve()))


batch_predict()
