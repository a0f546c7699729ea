"""train_pipeline: ingest -> validate -> preprocess -> tune -> train -> evaluate -> gate -> register -> promote.

Thin wiring only: every task is one call to its adapter in ``visionops.pipeline.stages``, which
imports its domain code only when the task runs: nothing heavy is imported while Airflow parses this file.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import (
    AssetAny,
    AssetOrTimeSchedule,
    Param,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException
from visionops_assets import DRIFT, source_asset, trigger_of, watched_configs
from visionops_schedule import CronWithoutCatchUp

from visionops.pipeline import stages
from visionops_tasks import AnsweredApprovalOperator, run_context, run_stage

DOC = """
### Train an image classifier and promote it only when it earns it

Each run resolves one `PipelineConfig` (the **config** file plus the fields below), then
ingests, validates (Great Expectations), preprocesses, tunes (Optuna), trains (PyTorch),
evaluates on the held-out test split, and gates the new model against thresholds and against
the model in service (`models:/<name>@champion`), scored on the same split.

* **Passed**: the version is registered with `challenger`, then `champion` moves to it.
* **Passed, `gate.require_approval: true`**: the `approve` task waits for a person (Browse ->
  Required Actions, or the HITL REST API) with the decision and its evidence. *Approve* promotes
  (the champion is re-checked first, and who approved is recorded on the version); *Reject*, or
  no answer within a day, skips `promote` and `finish` records it.
* **Rejected**: the version is registered without an alias, `promote` is skipped and the
  `reject` task logs the reasons; the champion is unchanged.
* **Nothing changed**: when the data fingerprint, config hash and code fingerprint equal those of the
  champion's training run, the run stops after `check_changes` (`unchanged`; the rest is skipped)
  and registers nothing. Tick **Force** to train anyway.

It runs daily at midnight UTC (a midnight missed while the DAG was paused is not caught up on when
it is unpaused), or sooner when a watched data source changes (`watch_sources`) or the model in
service drifts (`monitor`; such a run asks a person before promoting). The summary and the MLflow
parent run (`visionops.trigger`) say which started it.

Every run is an MLflow parent run (tagged with this DAG run's id); each stage is a child run.
Bad input (config, files, labels) fails the run without retries and names what is wrong.
"""

# A person has a day to answer; then "Reject" applies, so that a forgotten request does not hold the
# next daily run (max_active_runs=1). promote_challenger can still ask for the version later.
APPROVAL_TIMEOUT = timedelta(hours=23)
default_args = {
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
}


@dag(
    dag_id="train_pipeline",
    description="Ingest, validate, preprocess, tune, train, evaluate, gate and promote an image classifier.",
    # Daily, or sooner when a source's asset or the drift asset has an event. A midnight missed while
    # the DAG was paused is not run on unpausing: a person's run would queue behind it.
    schedule=AssetOrTimeSchedule(
        timetable=CronWithoutCatchUp("0 0 * * *", timezone="UTC"),
        assets=AssetAny(*(source_asset(c) for c in watched_configs()), DRIFT),
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # One run at a time by default; a multi-worker stack (docker-compose, `make stack`) allows more,
    # and their promotions serialise on the promotion lock.
    max_active_runs=int(os.environ.get("VISIONOPS_MAX_ACTIVE_RUNS", "1")),
    doc_md=DOC,
    tags=["visionops", "training", "mlflow"],
    default_args=default_args,
    params={
        "config": Param(
            # What scheduled runs train: VISIONOPS_CONFIG where a deployment sets it.
            os.environ.get("VISIONOPS_CONFIG", "conf/digits.yaml"),
            type="string",
            title="Config file",
            description="Pipeline config (YAML), relative to the project directory.",
        ),
        "model": Param(
            None,
            type=["null", "string"],
            title="Model",
            description="Architecture name (overrides model.name), e.g. small_cnn or face_cnn.",
        ),
        "max_epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Max epochs",
            description="Upper bound on training epochs (overrides train.max_epochs).",
        ),
        "n_trials": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            title="Tuning trials",
            description="Optuna trials; 0 skips tuning (overrides tune.n_trials).",
        ),
        "overrides": Param(
            {},
            type="object",
            title="Other overrides",
            description='Dotted config keys, e.g. {"gate.min_accuracy": 0.95}.',
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            description="Train even when data, config and code are the champion's (otherwise the "
            "run stops after check_changes with nothing changed).",
        ),
    },
)
def train_pipeline():
    @task
    def start() -> dict:
        context = get_current_context()
        conf = context["dag_run"].conf or {}
        # request_id is not a form field: the CLI sets it to find its run in MLflow afterwards.
        trigger = trigger_of(context)
        params = {
            **context["params"],
            **({"request_id": conf["request_id"]} if "request_id" in conf else {}),
            "trigger": trigger,
        }
        # An asset event names the config whose source changed (or whose model drifted).
        if trigger.get("detail", {}).get("config") and not conf.get("config"):
            params["config"] = trigger["detail"]["config"]
        return run_stage(
            stages.start, params, dag_id=context["dag"].dag_id, airflow_run_id=context["run_id"]
        )

    # Every task below reads the run context from start's XCom (run_context()) rather than taking it
    # as an argument, so that the graph shows the pipeline's flow, not an edge from start to each task.
    # Ingest in three steps: the plan lists the source and cuts the files to read into chunks
    # (data.ingest_chunk_files), one mapped ingest_chunk per chunk on any worker, and ingest merges
    # them into the manifest (the task the rest of the pipeline reads).
    @task
    def ingest_plan() -> list:
        return run_stage(stages.ingest_plan, run_context())

    @task
    def ingest_chunk(chunk: dict) -> dict:
        return run_stage(stages.ingest_chunk, run_context(), chunk)

    @task
    def ingest(chunks: list) -> dict:
        return run_stage(stages.ingest_merge, run_context(), list(chunks))

    @task
    def check_changes(ingested: dict) -> dict:
        return run_stage(stages.check_changes, run_context(), ingested)

    @task.branch
    def after_check(check: dict) -> str:
        return run_stage(stages.after_check, check)

    @task
    def unchanged(check: dict) -> str:
        return run_stage(stages.unchanged, check)

    @task
    def validate(ingested: dict) -> dict:
        return run_stage(stages.validate, run_context(), ingested)

    @task
    def preprocess(ingested: dict, validated: dict) -> dict:
        return run_stage(stages.preprocess, run_context(), ingested)

    @task
    def tune_plan(preprocessed: dict) -> list:
        return run_stage(stages.tune_plan, run_context(), preprocessed)

    # One mapped instance per item of tune_plan's list (tune.workers of them), all sharing one study.
    @task
    def tune_worker(preprocessed: dict, item: dict) -> dict:
        return run_stage(stages.tune_worker, run_context(), preprocessed, item)

    @task
    def tune(workers: list) -> dict:
        return run_stage(stages.tune_reduce, run_context(), list(workers))

    @task
    def train(preprocessed: dict, tuned: dict) -> dict:
        return run_stage(stages.train, run_context(), preprocessed, tuned)

    @task
    def evaluate(preprocessed: dict, trained: dict) -> dict:
        return run_stage(stages.evaluate, run_context(), preprocessed, trained)

    @task
    def gate(evaluated: dict) -> dict:
        return run_stage(stages.gate, run_context(), evaluated)

    @task
    def register(trained: dict, evaluated: dict, decision: dict) -> dict:
        return run_stage(stages.register, run_context(), trained, evaluated, decision)

    @task.branch
    def decide(decision: dict, registered: dict) -> str:
        return run_stage(stages.next_step, decision, registered)

    # Reached only when the branch chose it (gate.require_approval); "Reject" skips promote.
    approve = AnsweredApprovalOperator(
        task_id="approve",
        subject="Promote {{ ti.xcom_pull(task_ids='register')['model_name'] }} version "
        "{{ ti.xcom_pull(task_ids='register')['version'] }} to champion?",
        body="{{ ti.xcom_pull(task_ids='register')['review'] }}",
        defaults=["Reject"],
        response_timeout=APPROVAL_TIMEOUT,
        retries=0,
    )

    # After decide directly, or after approve: one of the two is skipped, hence the trigger rule.
    # On the `unchanged` path every upstream task is skipped, and so is promote.
    @task(trigger_rule="none_failed_min_one_success")
    def promote(registered: dict | None, evaluated: dict | None) -> dict:
        if registered is None:  # defensive: the rule lets promote run only after register succeeded
            raise AirflowSkipException("nothing registered (nothing changed since the champion)")
        answer = get_current_context()["ti"].xcom_pull(task_ids="approve", key="answer")
        return run_stage(stages.promote, run_context(), registered, evaluated, answer)

    @task
    def reject(registered: dict, decision: dict) -> dict:
        return run_stage(stages.reject, run_context(), registered, decision)

    # none_failed: also after a person rejected (approve skipped promote, and reject was not chosen),
    # and after `unchanged` (everything from validate on skipped, so nothing was registered).
    @task(trigger_rule="none_failed")
    def finish() -> dict:
        ti = get_current_context()["ti"]
        registered = ti.xcom_pull(task_ids="register")
        answer = ti.xcom_pull(task_ids="approve", key="answer")
        return run_stage(stages.finish, run_context(), registered, answer)

    # The data flow; start only opens the run (its context reaches the tasks through XCom).
    chunks = ingest_plan()
    start() >> chunks
    ingested = ingest(ingest_chunk.expand(chunk=chunks))
    check = check_changes(ingested)
    stop = unchanged(check)
    validated = validate(ingested)
    after_check(check) >> [validated, stop]
    preprocessed = preprocess(ingested, validated)
    plan = tune_plan(preprocessed)
    workers = tune_worker.partial(preprocessed=preprocessed).expand(item=plan)
    tuned = tune(workers)
    trained = train(preprocessed, tuned)
    evaluated = evaluate(preprocessed, trained)
    decision = gate(evaluated)
    registered = register(trained, evaluated, decision)
    branch = decide(decision, registered)
    promoted = promote(registered, evaluated)
    rejected = reject(registered, decision)
    branch >> [promoted, approve, rejected]
    approve >> promoted
    [promoted, rejected, stop] >> finish()


train_pipeline()
