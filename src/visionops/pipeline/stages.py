"""The ``train_pipeline`` tasks: one adapter per task, each parsing its contracts, calling one domain
function and returning the next contract (see ``visionops.core.contracts`` for the flow).

Domain modules are imported inside the adapters: the DAG files import this module while Airflow
parses them, and nothing heavy (torch, pandas, mlflow) may load then.
"""

from __future__ import annotations

from typing import Any

from visionops.core.context import RunContext
from visionops.core.contracts import (
    ApprovalAnswer,
    ChangeCheck,
    Evaluated,
    GateDecision,
    IngestChunk,
    IngestChunkDone,
    Promotion,
    Registered,
    RunSummary,
    StageOutput,
    Trained,
    Tuned,
    TuneReport,
    TuneTask,
    Validated,
)
from visionops.pipeline.adapter import stage


@stage
def start(params: dict[str, Any], *, dag_id: str, airflow_run_id: str) -> RunContext:
    """Resolve and validate the config, open the MLflow parent run, store the config under the run."""
    from visionops.core.run import start_run

    return start_run(params, dag_id=dag_id, airflow_run_id=airflow_run_id)


@stage
def ingest(ctx: RunContext) -> StageOutput:
    """The whole ingest in this process (plan, every chunk, merge)."""
    from visionops.data.ingest_stage import ingest_stage

    return ingest_stage(ctx)


@stage
def ingest_plan(ctx: RunContext) -> list[IngestChunk]:
    """List (or download) the source; the chunks of files to read, at least one."""
    from visionops.data.ingest_stage import plan_ingest

    return plan_ingest(ctx)


@stage(uses_mlflow=False)
def ingest_chunk(ctx: RunContext, chunk: IngestChunk) -> IngestChunkDone:
    """Decode and hash one chunk of the source's files, on whichever worker takes it."""
    from visionops.data.ingest_stage import read_chunk

    return read_chunk(ctx, chunk)


@stage
def ingest_merge(ctx: RunContext, chunks: list[IngestChunkDone]) -> StageOutput:
    """The manifest from the chunks; faces; the ingest's MLflow run."""
    from visionops.data.ingest_stage import merge_ingest

    return merge_ingest(ctx, chunks)


@stage
def check_changes(ctx: RunContext, ingested: StageOutput) -> ChangeCheck:
    """Data, config and code against the champion's: nothing changed stops the run (unless forced).
    ``ingested`` orders the task after ingest, which recorded the data fingerprint."""
    from visionops.release.lineage import changes_since_champion, record_changes

    check = changes_since_champion(ctx)
    record_changes(ctx, check)
    return check


@stage(uses_mlflow=False)
def after_check(check: ChangeCheck) -> str:
    """The branch after the change check: ``validate`` (train) or ``unchanged`` (stop, skip the rest)."""
    return "validate" if check.changed else "unchanged"


@stage(uses_mlflow=False)
def unchanged(check: ChangeCheck) -> str:
    """The end of a run with nothing to do: its message (``finish`` writes the summary)."""
    return check.message()


@stage
def validate(ctx: RunContext, ingested: StageOutput) -> Validated:
    """The suite on the manifest, with the champion's training data as the drift reference."""
    from visionops.data.stage import validate_stage
    from visionops.release.lineage import champion_reference

    return validate_stage(ctx, ingested, champion_reference(ctx.config().registry.model_name))


@stage
def preprocess(ctx: RunContext, ingested: StageOutput) -> StageOutput:
    from visionops.data.stage import preprocess_stage

    return preprocess_stage(ctx, ingested)


@stage
def tune(ctx: RunContext, preprocessed: StageOutput) -> Tuned:
    """The whole tune stage in one process (plan, each worker in turn, reduce); the best parameters."""
    from visionops.release.lineage import champion_params
    from visionops.tuning.stage import tune_stage

    return tune_stage(ctx, preprocessed, champion_params(ctx.config().registry.model_name))


@stage
def tune_plan(ctx: RunContext, preprocessed: StageOutput) -> list[TuneTask]:
    """Open the tuning run and the shared study (warm-started from the champion); one task per worker."""
    from visionops.release.lineage import champion_params
    from visionops.tuning.stage import plan_stage

    return plan_stage(ctx, preprocessed, champion_params(ctx.config().registry.model_name))


@stage
def tune_worker(ctx: RunContext, preprocessed: StageOutput, item: TuneTask) -> TuneReport:
    """One tuning worker: trials of the shared study until it has ``tune.n_trials``."""
    from visionops.tuning.stage import worker_stage

    return worker_stage(ctx, preprocessed, item)


@stage
def tune_reduce(ctx: RunContext, workers: list[TuneReport]) -> Tuned:
    """The study's best parameters (over the configured values), counts and plots in the tuning run."""
    from visionops.tuning.stage import reduce_stage

    return reduce_stage(ctx, workers)


@stage
def train(ctx: RunContext, preprocessed: StageOutput, tuned: Tuned) -> Trained:
    from visionops.training.stage import train_stage

    return train_stage(ctx, preprocessed, tuned.best_params)


@stage
def evaluate(ctx: RunContext, preprocessed: StageOutput, trained: Trained) -> Evaluated:
    """The candidate and the champion in service now, on this run's test split."""
    from visionops.evaluation.stage import evaluate_stage
    from visionops.release.registry import champion_version

    return evaluate_stage(
        ctx, preprocessed, trained, champion_version(ctx.config().registry.model_name)
    )


@stage
def gate(ctx: RunContext, evaluated: Evaluated) -> GateDecision:
    from visionops.release.stages import gate_stage

    return gate_stage(ctx, evaluated)


@stage(uses_mlflow=False)
def next_step(decision: GateDecision, registered: Registered | None = None) -> str:
    """The branch after registration: ``reject`` when the gate failed, else ``promote``, or ``approve``
    (a person decides first) when the run's config sets ``gate.require_approval``."""
    if not decision.passed:
        return "reject"
    return "approve" if registered is not None and registered.require_approval else "promote"


@stage
def register(
    ctx: RunContext, trained: Trained, evaluated: Evaluated, decision: GateDecision
) -> Registered:
    from visionops.release.register import register_stage

    return register_stage(ctx, trained, evaluated, decision)


@stage
def promote(
    ctx: RunContext,
    registered: Registered,
    evaluated: Evaluated,
    approval: ApprovalAnswer | None = None,
) -> Promotion:
    from visionops.release.stages import promote_stage

    return promote_stage(ctx, registered, evaluated, approval)


@stage
def reject(ctx: RunContext, registered: Registered, decision: GateDecision) -> Promotion:
    from visionops.release.stages import reject_stage

    return reject_stage(ctx, registered, decision)


@stage
def finish(
    ctx: RunContext, registered: Registered | None = None, approval: ApprovalAnswer | None = None
) -> RunSummary:
    """Close the parent run and store the run's summary (MLflow and the run folder).

    ``approval`` is the answer of the ``approve`` task when the run asked a person; a rejection (or no
    answer before the deadline) is recorded on the run and the version here, since promote was skipped.
    """
    from visionops.pipeline.summary import finish_run

    return finish_run(ctx, registered, approval)
