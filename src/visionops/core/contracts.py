"""The typed contracts between the stages: what each task returns and the next one receives.

Tasks pass references, ids and figures, never data (images, tensors and models live in storage).
Each contract is a pydantic model: it travels through XCom as JSON (``to_dict``) and is validated
once when a stage adapter (``visionops.pipeline.stages``) receives it, so that a stage never reads
loose dict keys. They sit in ``core`` because every layer produces or reads one: training returns
``Trained``, evaluation reads it and returns ``Evaluated``, release reads that, and so on.

The flow, task by task (``train_pipeline``)::

    start      -> RunContext                      (every later task receives it)
    ingest_plan -> list[IngestChunk] -> ingest_chunk -> IngestChunkDone -> ingest -> StageOutput
                                                  (the manifest under the run)
    check_changes -> ChangeCheck                  (unchanged since the champion: the run stops here)
    validate   -> Validated
    preprocess -> StageOutput                     (the arrays and the label map)
    tune_plan  -> list[TuneTask]  -> tune_worker -> TuneReport -> tune -> Tuned
    train      -> Trained
    evaluate   -> Evaluated                       (TestScores of the model, ChampionScore, paired predictions)
    gate       -> GateDecision
    register   -> Registered
    promote / reject -> Promotion
    finish     -> RunSummary

``batch_predict``: ``resolve -> ModelRef``, ``score -> BatchScored``. ``promote_challenger``:
``describe -> Candidate``, ``approve -> ApprovalAnswer``, ``promote -> Promotion``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, computed_field

from visionops.core.constants import REASON_SEPARATOR
from visionops.core.context import RunContext
from visionops.core.storage import StageOutput

__all__ = [
    "ApprovalAnswer",
    "BaselineScore",
    "BatchScored",
    "Candidate",
    "ChangeCheck",
    "DriftChecked",
    "Recorded",
    "SourceChange",
    "ChampionScore",
    "IngestChunk",
    "IngestChunkDone",
    "Contract",
    "Evaluated",
    "GateDecision",
    "ModelRef",
    "Promotion",
    "Registered",
    "RunContext",
    "RunSummary",
    "StageOutput",
    "TestScores",
    "Trained",
    "TuneReport",
    "TuneTask",
    "Tuned",
    "Validated",
    "ensemble_description",
]


class Contract(BaseModel):
    """A stage's result: immutable, no unknown keys, JSON both ways (NaN kept: an empty subset has no score)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form that goes into XCom."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate(data)


class ChangeCheck(Contract):
    """Whether anything changed since the champion was trained: its data fingerprint, config hash and
    code fingerprint against this run's. Nothing changed (and no ``force``): the run stops after ingest."""

    changed: bool
    forced: bool = False  # the run trains although nothing changed (``force``)
    champion_version: str | None = None
    differences: list[str] = []  # what changed, or why there was nothing to compare with

    def message(self) -> str:
        if not self.changed:
            return (
                f"nothing changed since champion v{self.champion_version}: same data fingerprint, "
                "config hash and code; no training, no new version (force to train anyway)"
            )
        forced = "forced: trains although nothing changed; " if self.forced else ""
        return forced + "; ".join(self.differences)


class SourceChange(Contract):
    """What a watch of a data source found (``visionops.data.watch``): the extra of its asset event."""

    config: str  # the config file whose source it is
    source: str
    changed: bool
    first_seen: bool = False  # the first look records the source; it is not a change
    n_files: int
    added: int = 0
    modified: int = 0
    removed: int = 0
    fingerprint: str  # of the file listing (names, sizes, times), not of the pixels
    examples: list[str] = []

    def message(self) -> str:
        if self.first_seen:
            return f"{self.source}: first look, {self.n_files} files recorded"
        if not self.changed:
            return f"{self.source}: unchanged ({self.n_files} files)"
        return (
            f"{self.source}: {self.added} added, {self.modified} changed, {self.removed} removed "
            f"({self.n_files} files now)"
        )


class Validated(Contract):
    """The validation suite passed; its statistics and the warnings it raised (never errors)."""

    success: bool
    statistics: dict[str, Any]
    warnings: list[str]


class IngestChunk(Contract):
    """One chunk of the files an ingest reads (``plan`` None: the whole ingest is reused)."""

    ingest_fingerprint: str
    plan: StageOutput | None
    index: int
    n_chunks: int


class IngestChunkDone(IngestChunk):
    """A chunk read: its records under the run, and the host that read them."""

    records: StageOutput | None
    n_files: int
    host: str


class TuneTask(Contract):
    """One tuning worker's assignment: its index in the shared study (``skip`` when tuning is off)."""

    worker: int
    skip: bool
    tuning_run_id: str
    study_name: str


class TuneReport(TuneTask):
    """What a worker did: how many trials it ran."""

    trials: int


class Tuned(Contract):
    """The parameters training uses: the study's best over the configured values."""

    best_params: dict[str, Any]
    best_value: float | None
    tuning_run_id: str


class Trained(Contract):
    """The model a train stage logged (the served pyfunc and the bare network) and how it got there."""

    model_uri: str
    network_uri: str
    train_run_id: str
    run_key: str
    best_val_accuracy: float
    epochs_trained: int
    resumed_from_epoch: int | None = None
    params: dict[str, Any]
    # train.folds > 1: a soft-voting ensemble of that many members, and its out-of-fold accuracy
    # (then also best_val_accuracy; epochs_trained counts all members' epochs).
    ensemble_members: int = 1
    oof_accuracy: float | None = None


def ensemble_description(members: int | None, oof_accuracy: float | None) -> str | None:
    """``soft-voting ensemble of K members (stratified group K-fold), out-of-fold accuracy X``, or
    None for a single network (``members`` None or 1): the summary, its note and the model card
    say it alike."""
    if not members or members <= 1:
        return None
    text = f"soft-voting ensemble of {members} members (stratified group {members}-fold)"
    return text + (f", out-of-fold accuracy {oof_accuracy:.4f}" if oof_accuracy is not None else "")


class TestScores(Contract):
    """A model's headline figures on a run's test split, and on its clean subset (no near-copy in train)."""

    __test__ = False  # not a pytest test class

    accuracy: float
    macro_f1: float
    clean_accuracy: float
    clean_macro_f1: float
    n_test_clean: int
    # A model that answers ``unknown``: its accuracy with ``unknown`` turned off (reported; the gate
    # judges ``accuracy``, what is served). None for a model without an unknown threshold.
    accuracy_unknown_off: float | None = None


class ChampionScore(TestScores):
    """The champion in service, scored on the candidate's test split."""

    version: str


class BaselineScore(Contract):
    """A simple baseline (``visionops.evaluation.baselines``) fitted on the run's training split and
    scored on its test split, with the paired comparison against the model; or why it was skipped."""

    name: str
    skipped: str | None = None  # the reason when it was not fitted
    accuracy: float | None = None
    macro_f1: float | None = None
    clean_accuracy: float | None = None
    clean_macro_f1: float | None = None
    params: dict[str, Any] = {}  # the setting chosen on the validation split
    fit_seconds: float = 0.0
    note: str = ""  # e.g. the images were shrunk to fit baseline.max_features
    paired: dict[str, Any] = {}  # the model against this baseline (McNemar, bootstrap CI)


class Evaluated(Contract):
    """The candidate (and the champion, if any) on this run's test split; the paired predictions stored."""

    metrics: TestScores
    champion: ChampionScore | None = None
    baselines: list[BaselineScore] = []  # the simple baselines on the same test images
    evaluate_run_id: str
    predictions: StageOutput | None = None  # y_true, candidate, champion, clean per test image
    test_data: StageOutput  # the preprocess output whose test split was scored


class GateDecision(Contract):
    """The gate's answer, with reasons a person can act on (see ``visionops.release.gate``)."""

    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    comparison: dict[str, Any] = {}  # against the champion in service
    baseline: dict[str, Any] = {}  # against the best simple baseline, by the same policy
    # Per class (and per slice), worst first: support, recall, the champion's, the change in points.
    classes: list[dict[str, Any]] = []
    slices: dict[str, list[dict[str, Any]]] = {}
    judged_on: str = (
        "full"  # the test figures judged: "full" split or its "clean" subset (gate.judge_on)
    )

    def summary(self) -> str:
        verdict = "PASSED" if self.passed else "REJECTED"
        return f"gate {verdict}: " + REASON_SEPARATOR.join(self.reasons)


class Registered(Contract):
    """The version the run registered (every gated model is registered; only a passed one is challenger)."""

    model_name: str
    version: str
    passed: bool
    require_approval: bool
    review: str  # what the person asked to approve reads (Markdown)


class Promotion(Contract):
    """Whether ``champion`` moved to the version, and why not."""

    promoted: bool
    version: str
    replaced: str | None = None
    reasons: list[str] = []


class ApprovalAnswer(Contract):
    """A person's answer to an approval request (Airflow HITL): the options chosen, who, when."""

    model_config = ConfigDict(
        frozen=True, extra="ignore"
    )  # Airflow's answer carries more (params_input, ...)

    chosen_options: list[str] = []
    responded_by_user: dict[str, Any] | str | None = None
    responded_at: datetime | str | None = None


class Candidate(Contract):
    """A registered version awaiting approval, with the gate's decision against the champion now."""

    name: str
    version: str
    against: str | None
    passed: bool
    summary: str
    reasons: list[str]


class ModelRef(Contract):
    """A registered model pinned to a version (aliases are resolved once, when scoring starts)."""

    model_config = ConfigDict(
        frozen=True, extra="ignore"
    )  # ``uri`` is computed: dropped on the way back in

    name: str
    version: str
    requested: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class BatchScored(Contract):
    """A scored folder: where the CSV went and what it holds."""

    output: str
    n_images: int
    model: ModelRef
    mlflow_run_id: str
    n_unknown: int
    n_not_scored: int
    embeddings: str | None = (
        None  # an embedding model's vectors beside the CSV (``.embeddings.npz``)
    )
    # serving.shadow: the challenger's version, images both labelled, agreement, its confidence
    shadow: dict[str, Any] | None = None


class Recorded(Contract):
    """A scored batch as the monitor reads it: per image the model-form input statistics, the label
    and its confidence (``visionops.monitoring``); the ``visionops://predictions`` event names it."""

    uri: str
    model_name: str
    model_version: str
    n_images: int


class DriftChecked(Contract):
    """The monitor's verdict on a recorded batch against the version's reference."""

    drifted: bool
    summary: str
    model_name: str
    model_version: str
    config: str | None = None  # the config file of the version's training run (retraining uses it)
    report_run_id: str  # the MLflow run holding drift_report.html
    extra: dict[str, Any] = {}  # what drifted (the drift asset event's extra)


class RunSummary(Contract):
    """What a person wants to know after a pipeline run, read back from its MLflow parent run."""

    status: str
    failed_stage: str | None = None
    error: str | None = None
    experiment: str
    experiment_id: str
    parent_run_id: str
    run_key: str | None = None
    airflow_run_id: str | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    test_clean_accuracy: float | None = None
    test_clean_macro_f1: float | None = None
    n_test_clean: float | None = None
    trigger: str | None = None  # why the run started: manual, schedule, new_data, drift
    trigger_detail: dict[str, Any] = {}  # what the asset events said (counts, fingerprint, drift)
    unchanged_since: str | None = None  # the champion version when nothing changed (no training)
    changes: str | None = None  # what changed since the champion (or that nothing did)
    best_baseline: str | None = None  # the simple baseline with the best test accuracy
    best_baseline_accuracy: float | None = None
    gain_over_baseline_points: float | None = None  # model minus that baseline, points of accuracy
    baselines: dict[str, float] = {}  # each fitted simple baseline's test accuracy, by name
    data_fingerprint: str | None = None
    validation_warnings: list[str] = []
    data_quality: str | None = None  # one line: "1 class dropped (s2), 78 images quarantined (...)"
    data_quality_table: list[dict[str, Any]] = []  # the policy's table (data.quality.Problem rows)
    dropped_classes: dict[str, str] = {}  # class -> why it was left out of this model version
    gate: str | None = None
    gate_reasons: list[str] = []
    model_name: str = ""
    model_version: str | None = None
    model_aliases: list[str] = []
    champion_version: str | None = None
    replaced_version: str | None = None
    approval: str | None = None
    ensemble_members: int | None = None  # train.folds > 1: a soft-voting ensemble of that many
    oof_accuracy: float | None = None  # its out-of-fold accuracy (pooled train and val)
    tuning: str | None = None  # one line: trials, pruned, the best value and the chosen parameters
