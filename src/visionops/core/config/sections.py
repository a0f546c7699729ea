"""The config sections of model, tuning, gate, registry and serving (the data sections are in
``data_sections``, training in ``train_section``; see ``visionops.core.config``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from visionops.core.config.catalog import FEATURE_MODELS, MODEL_NAMES, TRANSFER_MODELS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = "small_cnn"
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    width: float = Field(
        1.0,
        gt=0.0,
        le=4.0,
        description="Channel multiplier (cnn, vgg, vit; resnet18 only "
        "without pretrained weights, whose channel widths are fixed).",
    )
    batch_norm: bool = Field(False, description="Batch norm after each conv (cnn, vgg).")
    init: Literal["default", "paper"] = Field(
        "default", description="vgg: 'paper' = N(0, 0.01^2), zero bias."
    )
    transfer_mode: Literal["scratch", "feature_extraction", "finetune_last_n", "full_finetune"] = (
        "scratch"
    )
    weights_path: str | None = Field(
        None, description="Local pretrained state dict (resnet18); never downloaded."
    )
    finetune_blocks: int = Field(
        1, ge=1, le=4, description="finetune_last_n: residual stages that train."
    )
    patch_size: int | None = Field(
        None, ge=1, description="vit_tiny patch side; default about an 8x8 grid."
    )
    depth: int = Field(12, ge=1, le=48, description="vit_tiny transformer blocks.")
    hidden_units: int = Field(
        128,
        ge=0,
        le=4096,
        description="face_embedding: units of the hidden layer "
        "of the head on the 128-d face embedding (0 = a linear head).",
    )

    @model_validator(mode="after")
    def _known_model(self) -> ModelConfig:
        if self.name not in sorted(MODEL_NAMES):
            raise ValueError(
                f"model.name {self.name!r} is not a known model; choose one of {sorted(MODEL_NAMES)}"
            )
        if self.transfer_mode != "scratch":
            if self.name not in TRANSFER_MODELS:
                raise ValueError(
                    f"model.transfer_mode {self.transfer_mode!r} applies to {sorted(TRANSFER_MODELS)}, "
                    f"not {self.name!r}"
                )
            if not self.weights_path:
                raise ValueError(
                    f"model.transfer_mode {self.transfer_mode!r} needs model.weights_path: a local "
                    "pretrained weights file (nothing is downloaded)"
                )
        if self.name in FEATURE_MODELS and self.width != 1.0:
            raise ValueError(
                f"model.width {self.width} does not apply to {self.name!r} (a head on a frozen "
                "embedding): set model.hidden_units instead"
            )
        if self.weights_path and self.width != 1.0 and self.name in TRANSFER_MODELS:
            raise ValueError(
                f"model.width {self.width} cannot be used with pretrained weights (model.transfer_mode "
                f"{self.transfer_mode!r}): the weights fix the channel widths; set model.width to 1.0 "
                "and leave tune.width null"
            )
        return self


class TuneConfig(_Section):
    n_trials: int = Field(4, ge=0, le=1000, description="0 skips tuning and uses train.* as given.")
    epochs_per_trial: int = Field(3, ge=1, le=100)
    # What a trial is ranked by: the lowest validation loss over its epochs (default: it keeps
    # separating candidates after validation accuracy has reached 1.0) or the highest accuracy.
    objective: Literal["val_loss", "val_accuracy"] = "val_loss"
    seed: int = 42
    # The search space: a [low, high] range or a list of choices; null leaves the key at train.*/model.*.
    learning_rate: tuple[float, float] | None = (1e-4, 1e-2)  # log-uniform
    weight_decay: tuple[float, float] | None = (1e-6, 1e-3)  # log-uniform
    dropout: tuple[float, float] | None = (0.0, 0.5)
    batch_size: list[int] | None = None
    optimizer: list[Literal["adamw", "adam", "sgd"]] | None = None
    width: tuple[float, float] | None = None
    augment_strength: tuple[float, float] | None = None
    label_smoothing: tuple[float, float] | None = None
    # Pruners (all Optuna's): successive_halving (asynchronous SHA) keeps going the top 1/reduction_factor
    # of the trials that reached epoch min_epochs * reduction_factor**k; hyperband runs several such
    # brackets; median/percentile stop a trial whose best epoch so far is below that percentile of the
    # completed trials at the same epoch. successive_halving is the default: bench/pruning.py.
    pruner: Literal["successive_halving", "median", "percentile", "hyperband", "none"] = (
        "successive_halving"
    )
    pruner_startup_trials: int = Field(
        2,
        ge=0,
        le=1000,
        description="median/percentile: trials that finish before any trial is pruned.",
    )
    pruner_warmup_epochs: int = Field(
        1,
        ge=1,
        le=100,
        description="median/percentile: the first epoch after which a trial may be pruned.",
    )
    pruner_percentile: float = Field(
        50.0,
        gt=0.0,
        lt=100.0,
        description="percentile: the top share (%) of "
        "trials kept at each epoch; 50 is the median pruner.",
    )
    pruner_min_epochs: int = Field(
        1,
        ge=1,
        le=100,
        description="successive_halving/hyperband: epochs before "
        "the first comparison (min_resource).",
    )
    pruner_reduction_factor: int = Field(
        3,
        ge=2,
        le=10,
        description="successive_halving/hyperband: 1 in this "
        "many trials goes on at each comparison.",
    )
    workers: int = Field(1, ge=1, le=64, description="Parallel tuning workers sharing one study.")
    storage_url: str | None = Field(
        None, description="Optuna RDB URL (postgresql://...); default a journal file."
    )
    warm_start: bool = Field(
        True, description="Enqueue the champion's parameters as the first trial."
    )
    plots: bool = Field(True, description="Optuna plots as HTML artifacts of the tuning run.")

    @model_validator(mode="after")
    def _ranges(self) -> TuneConfig:
        limits = {
            "learning_rate": (0.0, 10.0, True),
            "weight_decay": (0.0, 1.0, True),
            "dropout": (0.0, 1.0, False),
            "width": (0.0, 4.0, True),
            "augment_strength": (0.0, 1.0, False),
            "label_smoothing": (0.0, 1.0, False),
        }
        for key, (lo_min, hi_max, positive) in limits.items():
            if getattr(self, key) is None:
                continue
            low, high = getattr(self, key)
            if not 0.0 <= low < high:
                raise ValueError(
                    f"tune.{key} must be [low, high] with 0 <= low < high, got {[low, high]}"
                )
            if positive and low <= lo_min:
                raise ValueError(
                    f"tune.{key} is searched on a log scale: low must be > 0, got {low}"
                )
            if high > hi_max or (key in ("dropout", "label_smoothing") and high >= 1.0):
                raise ValueError(
                    f"tune.{key} high must be {'<' if hi_max == 1.0 else '<='} {hi_max}, got {high}"
                )
        for key in ("batch_size", "optimizer"):
            choices = getattr(self, key)
            if choices is not None and len(choices) == 0:
                raise ValueError(f"tune.{key}: give at least one choice, or null to leave it out")
        if self.batch_size and any(b < 1 for b in self.batch_size):
            raise ValueError(f"tune.batch_size choices must be >= 1, got {self.batch_size}")
        # A pruner that may first act after the last epoch never prunes: a mistake, not a setting.
        first = {
            "median": "pruner_warmup_epochs",
            "percentile": "pruner_warmup_epochs",
            "successive_halving": "pruner_min_epochs",
            "hyperband": "pruner_min_epochs",
        }
        key = first.get(self.pruner)
        if key:
            if getattr(self, key) > self.epochs_per_trial:
                raise ValueError(
                    f"tune.{key} ({getattr(self, key)}) must be <= tune.epochs_per_trial "
                    f"({self.epochs_per_trial}) with tune.pruner {self.pruner}"
                )
        return self


class GateConfig(_Section):
    min_accuracy: float = Field(0.90, ge=0.0, le=1.0)
    min_macro_f1: float = Field(0.90, ge=0.0, le=1.0)
    max_regression: float = Field(
        0.005, ge=0.0, le=1.0, description="Allowed drop against the champion (0.005 = 0.5 points)."
    )
    policy: Literal["non_inferiority", "superiority"] = Field(
        "non_inferiority",
        description="non_inferiority: not worse than the champion by more than "
        "max_regression; superiority: a significant improvement (McNemar exact test at alpha).",
    )
    non_inferiority_on: Literal["delta", "ci_lower"] = Field(
        "delta",
        description="Judge non-inferiority on the observed accuracy difference (delta) or on "
        "the lower bound of its paired bootstrap confidence interval (ci_lower, stricter).",
    )
    alpha: float = Field(
        0.05, gt=0.0, lt=0.5, description="Significance level; the CI is (1 - alpha)."
    )
    bootstrap_samples: int = Field(2000, ge=100, le=100000)
    on_class_change: Literal["compare_on_shared", "reject", "skip_comparison"] = Field(
        "compare_on_shared",
        description="When the class set differs from the champion's: compare on "
        "test images of shared classes, reject the candidate, or skip the comparison.",
    )
    top_k: int | None = Field(
        None, ge=1, description="k of top-k accuracy; default 3 with more than 3 classes."
    )
    judge_on: Literal["full", "clean"] = Field(
        "full",
        description="Test figures the thresholds and the champion comparison use: the full test split, "
        "or its clean subset (test images without a near-copy in the training split).",
    )
    require_approval: bool = Field(
        False,
        description="A person approves (Airflow HITL task `approve` in "
        "train_pipeline) before champion moves; no answer in a day rejects.",
    )
    max_class_regression: float | None = Field(
        10.0,
        ge=0.0,
        le=100.0,
        description="Points of recall any judged class (person) may lose against the champion, "
        "on the same test images; more rejects the model, naming the class. null turns it off.",
    )
    min_class_support: int = Field(
        10,
        ge=1,
        description="Test images a class (or a slice's value) needs to be judged by the per-class "
        "rules; smaller ones are listed as not judged (one image of five is 20 points).",
    )
    min_class_recall: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Lowest recall any judged class may have, champion or not (null: no floor).",
    )
    compare_with_baselines: bool = Field(
        True,
        description="Compare the model with the best simple baseline (baseline.models, fitted on "
        "the same training split, scored on the same test images) under the same policy, margin "
        "and evidence as the champion comparison; false turns it off.",
    )


class BaselineConfig(_Section):
    """Classical models fitted beside every evaluation, on the same splits (see
    ``visionops.evaluation.baselines``): what a deep model must beat to earn its place."""

    models: list[Literal["logistic_regression", "pca_svm"]] = Field(
        ["logistic_regression", "pca_svm"],
        description="Baselines fitted at evaluation: logistic regression on standardised pixels, "
        "PCA + an RBF SVM; [] fits none.",
    )
    max_train_images: int = Field(
        5000,
        ge=1,
        description="A training (and validation) split with more images is cut to a stratified "
        "subsample of this many, every class kept, for the baselines' fit (the report says so): "
        "their fit time grows faster than linearly with the images. The whole test split is scored.",
    )
    max_features: int = Field(
        4096,
        ge=16,
        description="Pixels x channels a baseline sees; larger images are shrunk (area averaging) "
        "to fit, and the report says so.",
    )


class RegistryConfig(_Section):
    model_name: str = Field(
        "visionops-digits", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
    )
    smoke_test_images: int = Field(
        8,
        ge=0,
        le=1000,
        description="Held-out images the promoted champion must label in a fresh process "
        "(0 skips the post-promotion smoke test).",
    )
    min_shadow_batches: int = Field(
        0,
        ge=0,
        description="Batches this version must have scored in shadow beside the champion in "
        "service (serving.shadow) before promote_challenger promotes it; 0: none needed.",
    )
    min_shadow_agreement: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Pooled agreement with the champion over those batches that promotion needs.",
    )


class ServingConfig(_Section):
    """How the served model answers: ``unknown`` when it is not confident enough; and what one
    request may cost (packaged with the model; ``VISIONOPS_SERVING_MAX_ROWS`` /
    ``VISIONOPS_SERVING_MAX_PIXELS_PER_REQUEST`` override them where it is served)."""

    shadow: bool = Field(
        False,
        description="batch_predict also scores every batch with the version behind challenger and "
        "records how often it agrees with the champion (README: what agreement does not prove).",
    )
    max_rows: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Rows one request may hold; rows past it are answered 'invalid', unread.",
    )
    max_pixels_per_request: int = Field(
        100_000_000,
        ge=1,
        le=2_000_000_000,
        description="Pixels one request may decode in all (from each image's header, before "
        "decoding); rows past it are answered 'invalid', undecoded.",
    )
    max_decoded_side: int = Field(
        4096,
        ge=64,
        le=65_536,
        description="An image with a longer side is shrunk as it is decoded (JPEG: at decode time).",
    )

    # Off by default: a closed-set task (digits, objects) has no strangers, and the threshold would only
    # turn right answers into 'unknown'. The face service (conf/faces.yaml) turns it on.
    unknown_threshold: Literal["auto"] | float | None = Field(
        None,
        description="auto: chosen from the enrolled images at train time (face_embedding: a distance "
        "to the nearest enrolled face embedding, unknown above it, from the held-out distances of the "
        "enrolled faces and dlib's 0.6 when they are few; other models: a minimum winning-class "
        "probability on the validation split, unknown below it); null: never answer 'unknown'; a "
        "number: that threshold.",
    )
    unknown_quantile: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="auto: the share of held-out "
        "known images the threshold keeps answering by name (lower answers "
        "'unknown' more often; distances: the split-conformal rank, so a new photo of an enrolled "
        "person is named at about this rate); null: 0.98 for face_embedding distances, 1.0 for "
        "probabilities.",
    )

    @field_validator("unknown_threshold")
    @classmethod
    def _non_negative(cls, value: object) -> object:
        if isinstance(value, float) and value < 0:
            raise ValueError(f"serving.unknown_threshold must be auto, null or >= 0, got {value}")
        return value
