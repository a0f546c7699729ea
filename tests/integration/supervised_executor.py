"""An Airflow executor for tests that read task logs: each task runs under Airflow's own task supervisor,
as on a worker (a forked task process whose stdout, stderr and Python logging become the JSON task log
under ``AIRFLOW_HOME/logs``), against the execution API inside this process instead of an API server.

``dag.test()`` alone runs tasks in the test's process, where nothing turns stderr into log lines; with
``AIRFLOW__CORE__EXECUTOR=supervised_executor.SupervisedExecutor`` (this folder on ``PYTHONPATH``),
``dag.test(use_executor=True)`` runs them here, one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.executors.base_executor import BaseExecutor


class SupervisedExecutor(BaseExecutor):
    is_local = True
    serve_logs = False
    _client: Any = None

    def _process_workloads(self, workload_items: Sequence[Any]) -> None:
        from airflow.jobs.triggerer_job_runner import in_process_api_server
        from airflow.sdk.api.client import Client
        from airflow.sdk.execution_time.supervisor import supervise_task

        if self._client is None:
            # The client the triggerer and the DAG processor use: the execution API in this process.
            # Held for the executor's life: a forked task process that dropped the last reference would
            # run its finalizer, which stops an event loop that only this process has.
            self._client = Client(
                base_url=None, token="", dry_run=True, transport=in_process_api_server().transport
            )
            self._client.base_url = "http://in-process.invalid./"
        for workload in workload_items:
            self.queued_tasks.pop(workload.key)
            self.running.add(workload.key)
            code = supervise_task(
                ti=workload.ti,
                bundle_info=workload.bundle_info,
                dag_rel_path=workload.dag_rel_path,
                token=workload.token,
                log_path=workload.log_path,
                client=self._client,
            )
            (self.success if code == 0 else self.fail)(workload.key)

    def end(self) -> None:
        """Nothing to wait for: every task ran to its end inside ``_process_workloads``."""

    def terminate(self) -> None:
        """Nothing runs in the background."""
