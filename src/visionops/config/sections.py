"""The sections of the pipeline configuration, one model per stage (see ``visionops.config``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    source: Literal["digits", "imagefolder", "csv", "urls"] = "digits"
    path: str | None = Field(
        None, description="Image folder (imagefolder), manifest CSV (csv: path,label or "
        "path,name,int_label) or URL manifest (urls: name,url[,x1,y1,x2,y2][,md5]); unused for digits."
    )
    image_size: int = Field(16, ge=4, le=1024, description="Square side length after resizing.")
    channels: Literal[1, 3] = 1
    max_pixels: int = Field(40_000_000, ge=1, description="Images with more pixels are rejected "
                            "undecoded (decompression-bomb guard).")
    download_timeout_s: float = Field(10.0, gt=0.0, le=600.0)
    download_retries: int = Field(2, ge=0, le=10, description="Retries after the first try, with backoff.")
    download_workers: int = Field(4, ge=1, le=32)
    max_download_bytes: int = Field(20_000_000, ge=1)
    min_download_side: int = Field(16, ge=1, description="Downloaded images smaller than this are placeholders.")
    placeholder_repeats: int = Field(3, ge=2, description="Same content at this many URLs = placeholder.")
    max_rejected_fraction: float = Field(0.2, ge=0.0, le=1.0, description="URL rows rejected above "
                                         "this fraction fail the ingest stage.")

    @model_validator(mode="after")
    def _path_required(self) -> DataConfig:
        if self.source != "digits" and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        return self


Severity = Literal["error", "warning"]


class ValidateConfig(_Section):
    min_images_per_class: int = Field(10, ge=1)
    classes: list[str] | None = Field(None, description="Declared class set; other labels are errors.")
    modes: list[str] | None = Field(None, description="Accepted PIL modes (e.g. [L]); None = any.")
    convert_modes: bool = Field(True, description="Other modes are converted (warning) instead of errors.")
    min_side: int = Field(1, ge=1)
    max_side: int = Field(10_000, ge=1)
    max_imbalance: float = Field(10.0, ge=1.0, description="Largest/smallest class size ratio.")
    imbalance_severity: Severity = "warning"
    duplicate_severity: Severity = Field("warning", description="Exact copies (same sha256) with the same "
                                         "label: one is kept, the others dropped and listed. Copies with "
                                         "different labels are always errors.")
    near_duplicate_bits: int = Field(4, ge=0, le=64, description="dHash Hamming distance at or below "
                                     "which two images may be near-copies (grouped by the split).")
    near_duplicate_max_diff: float = Field(5.0, ge=0.0, le=255.0, description="Mean absolute difference "
                                           "(0-255) of 16x16 grey thumbnails confirming a dHash match.")
    leakage_severity: Severity = Field("error", description="A held-out image near-copying a train image "
                                       "under a user-given split (a `split` column); planned splits keep "
                                       "near-copies together and only report the links they had to cut.")
    schema_change_severity: Severity = "warning"
    max_drift_psi: float = Field(0.25, gt=0.0, description="PSI per feature vs the champion's data.")
    drift_severity: Severity = "warning"


class PreprocessConfig(_Section):
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    seed: int = 42
    workers: int = Field(1, ge=1, le=64, description="Worker processes decoding and resizing images.")
    max_group_fraction: float | None = Field(
        None, gt=0.0, le=1.0, description="Largest share of its class a near-copy group may hold; larger "
        "groups (chains of near-copies) are cut into contiguous pieces. null = the smaller of val_fraction "
        "and test_fraction, the largest bound that still lets every class reach train, val and test.")


class FacesConfig(_Section):
    """Face-recognition use: keep photos with exactly one usable face, align it with dlib's 5 landmarks."""

    enabled: bool = False
    detector: Literal["dlib", "haar"] = Field("dlib", description="dlib: HOG, then the CNN (MMOD) detector "
                                              "when HOG finds nothing; haar: OpenCV's Haar cascade.")
    upsample: int = Field(1, ge=0, le=3, description="dlib HOG: times the photo is doubled before searching "
                          "(1 finds faces down to ~40 px).")
    min_score: float = Field(0.5, ge=-1.0, le=3.0, description="dlib HOG: beside the strongest face, a "
                             "detection counts as another face (several faces: rejected) only from this score.")
    cnn_fallback: bool = Field(True, description="dlib: run the CNN detector on photos where HOG finds no face "
                               "(faces that fill the frame); ~20x slower than HOG, only on those photos.")
    cnn_upsample: int = Field(0, ge=0, le=2, description="dlib CNN fallback: times the photo is doubled.")
    detect_max_side: int = Field(1600, ge=0, description="dlib: larger photos are searched shrunk to this "
                                 "longest side (0: never); landmarks and chips use the full photo.")
    min_face: int = Field(40, ge=8, description="Smallest face side in pixels (in the photo).")
    margin: float = Field(0.25, ge=0.0, le=1.0, description="Padding of the aligned chip (dlib.get_face_chip); "
                          "0.25 is what dlib's face-embedding ResNet expects.")
    size: int = Field(150, ge=16, le=1024, description="Side of the aligned chip; 150 for dlib's face embedding.")
    max_roll_deg: float = Field(20.0, ge=0.0, le=90.0, description="Photos whose eye line is tilted more "
                                "are rejected.")
    scale_factor: float = Field(1.1, gt=1.0, le=2.0, description="haar only.")
    min_neighbors: int = Field(5, ge=1, description="haar only.")
    balance: Literal["none", "downsample", "weights"] = Field(
        "weights", description="weights: sample each person equally often, no photo thrown away; downsample: "
        "cut every person to the smallest count.")


class ModelConfig(_Section):
    name: str = "small_cnn"
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    width: float = Field(1.0, gt=0.0, le=4.0, description="Channel multiplier (cnn, vgg, vit; resnet18 only "
                         "without pretrained weights, whose channel widths are fixed).")
    batch_norm: bool = Field(False, description="Batch norm after each conv (cnn, vgg).")
    init: Literal["default", "paper"] = Field("default", description="vgg: 'paper' = N(0, 0.01^2), zero bias.")
    transfer_mode: Literal["scratch", "feature_extraction", "finetune_last_n", "full_finetune"] = "scratch"
    weights_path: str | None = Field(None, description="Local pretrained state dict (resnet18); never downloaded.")
    finetune_blocks: int = Field(1, ge=1, le=4, description="finetune_last_n: residual stages that train.")
    patch_size: int | None = Field(None, ge=1, description="vit_tiny patch side; default about an 8x8 grid.")
    depth: int = Field(12, ge=1, le=48, description="vit_tiny transformer blocks.")
    hidden_units: int = Field(128, ge=0, le=4096, description="face_embedding: units of the hidden layer "
                              "of the head on the 128-d face embedding (0 = a linear head).")

    @model_validator(mode="after")
    def _known_model(self) -> ModelConfig:
        from visionops.models import FEATURE_MODELS, TRANSFER_MODELS, available_models

        if self.name not in available_models():
            raise ValueError(
                f"model.name {self.name!r} is not a known model; choose one of {available_models()}"
            )
        if self.transfer_mode != "scratch":
            if self.name not in TRANSFER_MODELS:
                raise ValueError(f"model.transfer_mode {self.transfer_mode!r} applies to {sorted(TRANSFER_MODELS)}, "
                                 f"not {self.name!r}")
            if not self.weights_path:
                raise ValueError(f"model.transfer_mode {self.transfer_mode!r} needs model.weights_path: a local "
                                 "pretrained weights file (nothing is downloaded)")
        if self.name in FEATURE_MODELS and self.width != 1.0:
            raise ValueError(f"model.width {self.width} does not apply to {self.name!r} (a head on a frozen "
                             "embedding): set model.hidden_units instead")
        if self.weights_path and self.width != 1.0 and self.name in TRANSFER_MODELS:
            raise ValueError(f"model.width {self.width} cannot be used with pretrained weights (model.transfer_mode "
                             f"{self.transfer_mode!r}): the weights fix the channel widths; set model.width to 1.0 "
                             "and leave tune.width null")
        return self


class AugmentConfig(_Section):
    """Training-split augmentation; strength 0 turns it off."""

    strength: float = Field(0.0, ge=0.0, le=1.0)
    hflip: bool = Field(False, description="Horizontal flips (wrong for digits and text).")
    crop: Literal["pad", "resized", "none"] = "pad"
    jitter: bool = True
    erasing: bool = True


class TrainConfig(_Section):
    max_epochs: int = Field(15, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=4096)
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    patience: int = Field(3, ge=1, description="Epochs without validation improvement before stopping.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 42
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only.")
    nesterov: bool = False
    scheduler: Literal["plateau", "cosine", "step", "none"] = Field(
        "plateau", description="plateau: x0.1 when val accuracy stalls (the VGG recipe).")
    step_size: int = Field(10, ge=1, description="step scheduler: epochs between decays.")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step scheduler: decay factor.")
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0)
    class_weights: Literal["none", "balanced"] = "none"
    augment: AugmentConfig = AugmentConfig()
    accumulate_steps: int = Field(1, ge=1, le=256, description="Batches per optimizer step.")
    amp: bool = Field(True, description="Mixed precision on CUDA: bf16 autocast where the GPU supports it, "
                      "else fp16 autocast with loss scaling (ignored on CPU).")
    channels_last: bool = Field(True, description="channels_last memory format on CUDA (ignored on CPU).")
    compile: bool = Field(False, description="torch.compile the model (slow to start; for long runs).")
    deterministic: bool = Field(False, description="Deterministic kernels (slower on CUDA).")
    checkpoint: bool = Field(True, description="Checkpoint every epoch so a retried task resumes.")
    tta: list[Literal["hflip", "shift", "crop"]] = Field(
        default_factory=list, description="Test-time augmentation of the packaged model (evaluation and "
        "serving alike): none, or views averaged with the original image: hflip (mirror; wrong for digits "
        "and text), shift (4 small shifts), crop (central 87.5%, resized back). Probabilities are the mean "
        "softmax over the views.")

    @field_validator("tta", mode="before")
    @classmethod
    def _tta_views(cls, value: object) -> object:
        # `tta: none` and `tta: hflip` read as the lists [] and [hflip].
        if value is None or value == "none":
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("tta")
    @classmethod
    def _tta_once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"train.tta names a view twice: {value}")
        return value


class TuneConfig(_Section):
    n_trials: int = Field(4, ge=0, le=1000, description="0 skips tuning and uses train.* as given.")
    epochs_per_trial: int = Field(3, ge=1, le=100)
    seed: int = 42
    # The search space: a [low, high] range or a list of choices; null leaves the key at train.*/model.*.
    learning_rate: tuple[float, float] | None = (1e-4, 1e-2)      # log-uniform
    weight_decay: tuple[float, float] | None = (1e-6, 1e-3)       # log-uniform
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
    pruner: Literal["successive_halving", "median", "percentile", "hyperband", "none"] = "successive_halving"
    pruner_startup_trials: int = Field(2, ge=0, le=1000, description="median/percentile: trials that finish "
                                       "before any trial is pruned.")
    pruner_warmup_epochs: int = Field(1, ge=1, le=100, description="median/percentile: the first epoch after "
                                      "which a trial may be pruned.")
    pruner_percentile: float = Field(50.0, gt=0.0, lt=100.0, description="percentile: the top share (%) of "
                                     "trials kept at each epoch; 50 is the median pruner.")
    pruner_min_epochs: int = Field(1, ge=1, le=100, description="successive_halving/hyperband: epochs before "
                                   "the first comparison (min_resource).")
    pruner_reduction_factor: int = Field(3, ge=2, le=10, description="successive_halving/hyperband: 1 in this "
                                         "many trials goes on at each comparison.")
    workers: int = Field(1, ge=1, le=64, description="Parallel tuning workers sharing one study.")
    storage_url: str | None = Field(None, description="Optuna RDB URL (postgresql://...); default a journal file.")
    warm_start: bool = Field(True, description="Enqueue the champion's parameters as the first trial.")
    plots: bool = Field(True, description="Optuna plots as HTML artifacts of the tuning run.")

    @model_validator(mode="after")
    def _ranges(self) -> TuneConfig:
        limits = {"learning_rate": (0.0, 10.0, True), "weight_decay": (0.0, 1.0, True), "dropout": (0.0, 1.0, False),
                  "width": (0.0, 4.0, True), "augment_strength": (0.0, 1.0, False),
                  "label_smoothing": (0.0, 1.0, False)}
        for key, (lo_min, hi_max, positive) in limits.items():
            if getattr(self, key) is None:
                continue
            low, high = getattr(self, key)
            if not 0.0 <= low < high:
                raise ValueError(f"tune.{key} must be [low, high] with 0 <= low < high, got {[low, high]}")
            if positive and low <= lo_min:
                raise ValueError(f"tune.{key} is searched on a log scale: low must be > 0, got {low}")
            if high > hi_max or (key in ("dropout", "label_smoothing") and high >= 1.0):
                raise ValueError(f"tune.{key} high must be {'<' if hi_max == 1.0 else '<='} {hi_max}, got {high}")
        for key in ("batch_size", "optimizer"):
            choices = getattr(self, key)
            if choices is not None and len(choices) == 0:
                raise ValueError(f"tune.{key}: give at least one choice, or null to leave it out")
        if self.batch_size and any(b < 1 for b in self.batch_size):
            raise ValueError(f"tune.batch_size choices must be >= 1, got {self.batch_size}")
        # A pruner that may first act after the last epoch never prunes: a mistake, not a setting.
        first = {"median": "pruner_warmup_epochs", "percentile": "pruner_warmup_epochs",
                 "successive_halving": "pruner_min_epochs", "hyperband": "pruner_min_epochs"}
        key = first.get(self.pruner)
        if key:
            if getattr(self, key) > self.epochs_per_trial:
                raise ValueError(f"tune.{key} ({getattr(self, key)}) must be <= tune.epochs_per_trial "
                                 f"({self.epochs_per_trial}) with tune.pruner {self.pruner}")
        return self


class GateConfig(_Section):
    min_accuracy: float = Field(0.90, ge=0.0, le=1.0)
    min_macro_f1: float = Field(0.90, ge=0.0, le=1.0)
    max_regression: float = Field(
        0.005, ge=0.0, le=1.0, description="Allowed drop against the champion (0.005 = 0.5 points)."
    )
    policy: Literal["non_inferiority", "superiority"] = Field(
        "non_inferiority", description="non_inferiority: not worse than the champion by more than "
        "max_regression; superiority: a significant improvement (McNemar exact test at alpha).")
    non_inferiority_on: Literal["delta", "ci_lower"] = Field(
        "delta", description="Judge non-inferiority on the observed accuracy difference (delta) or on "
        "the lower bound of its paired bootstrap confidence interval (ci_lower, stricter).")
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="Significance level; the CI is (1 - alpha).")
    bootstrap_samples: int = Field(2000, ge=100, le=100000)
    on_class_change: Literal["compare_on_shared", "reject", "skip_comparison"] = Field(
        "compare_on_shared", description="When the class set differs from the champion's: compare on "
        "test images of shared classes, reject the candidate, or skip the comparison.")
    top_k: int | None = Field(None, ge=1, description="k of top-k accuracy; default 3 with more than 3 classes.")
    judge_on: Literal["full", "clean"] = Field(
        "full", description="Test figures the thresholds and the champion comparison use: the full test split, "
        "or its clean subset (test images without a near-copy in the training split).")
    require_approval: bool = Field(False, description="A person approves (Airflow HITL task `approve` in "
                                   "train_pipeline) before champion moves; no answer in a day rejects.")


class RegistryConfig(_Section):
    model_name: str = Field("visionops-digits", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    smoke_test_images: int = Field(
        8, ge=0, le=1000, description="Held-out images the promoted champion must label in a fresh process "
        "(0 skips the post-promotion smoke test).")


class ServingConfig(_Section):
    """How the served model answers: ``unknown`` when it is not confident enough."""

    # Off by default: a closed-set task (digits, objects) has no strangers, and the threshold would only
    # turn right answers into 'unknown'. The face service (conf/faces.yaml) turns it on.
    unknown_threshold: Literal["auto"] | float | None = Field(
        None, description="auto: chosen on the validation split at train time (face_embedding: a distance "
        "to the nearest enrolled face embedding, unknown above it; other models: a minimum winning-class "
        "probability, unknown below it); null: never answer 'unknown'; a number: that threshold.")
    unknown_quantile: float | None = Field(None, gt=0.0, le=1.0, description="auto: the share of held-out "
                                           "known images the threshold keeps answering by name (lower answers "
                                           "'unknown' more often); null: 0.98 for face_embedding distances "
                                           "(measured on Yale), 1.0 for probabilities.")

    @field_validator("unknown_threshold")
    @classmethod
    def _non_negative(cls, value: object) -> object:
        if isinstance(value, float) and value < 0:
            raise ValueError(f"serving.unknown_threshold must be auto, null or >= 0, got {value}")
        return value
