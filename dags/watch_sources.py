"""watch_sources: every few minutes, notice which watched data sources changed, and emit their assets.

One task per watched config (``VISIONOPS_WATCH_CONFIGS``, else ``conf/*.yaml``). It compares the
source's file listing (names, sizes, modification times; a manifest's hash) with the last one seen,
without reading a pixel. A changed source emits its asset event, whose extra says what changed;
``train_pipeline`` is scheduled on those assets. An unchanged source skips its task: no event.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException
from visionops_assets import source_asset, watched_configs

from visionops.pipeline import continuous
from visionops_tasks import run_stage

DOC = """
### Watch the data sources

For each watched config, compares its source's file listing with the last one seen (cheap: no image
is read). **Skipped** = unchanged (or the first look, which records the source). **Success** = it
changed: the source's asset (`visionops://source/<config>`) got an event with what changed in its
extra, and `train_pipeline` starts. Add photos with `visionops data add`, or announce a change
directly with the REST API (`POST /api/v2/assets/events`, see the README).
"""

INTERVAL = timedelta(seconds=int(os.environ.get("VISIONOPS_WATCH_INTERVAL_S", "300")))


@dag(
    dag_id="watch_sources",
    description="Notice changed data sources (file listings) and emit their asset events.",
    schedule=INTERVAL,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["visionops", "continuous-training"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
)
def watch_sources():
    for config in watched_configs():
        asset = source_asset(config)

        @task(task_id=f"watch_{config.stem}", outlets=[asset])
        def watch(config_file: str = str(config), asset=asset) -> dict:  # noqa: ANN001
            change = run_stage(continuous.watch, config_file)
            message = (
                f"{change['source']}: {change['added']} added, {change['modified']} changed, "
                f"{change['removed']} removed"
                if change["changed"]
                else f"{change['source']}: unchanged or first look ({change['n_files']} files)"
            )
            if not change["changed"]:
                raise AirflowSkipException(message)  # a skipped task emits no asset event
            get_current_context()["outlet_events"][asset].extra = {
                k: change[k]
                for k in ("config", "added", "modified", "removed", "n_files", "fingerprint")
            } | {"examples": change["examples"], "message": message}
            return change

        watch()


watch_sources()
