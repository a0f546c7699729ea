"""The ``train`` section: the loop, its optimiser, schedule, loss, augmentation, precision, test-time
augmentation of the packaged model, and K-fold ensembles (see ``visionops.core.config``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from visionops.core.config.sections import _Section
from visionops.core.constants import TTA_VIEWS


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
    patience: int = Field(
        3, ge=1, description="Epochs without validation improvement before stopping."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 42
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only.")
    nesterov: bool = False
    scheduler: Literal["plateau", "cosine", "step", "none"] = Field(
        "plateau", description="plateau: x0.1 when val accuracy stalls (the VGG recipe)."
    )
    step_size: int = Field(10, ge=1, description="step scheduler: epochs between decays.")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step scheduler: decay factor.")
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0)
    class_weights: Literal["none", "balanced"] = "none"
    augment: AugmentConfig = AugmentConfig()
    accumulate_steps: int = Field(1, ge=1, le=256, description="Batches per optimizer step.")
    amp: bool = Field(
        True,
        description="Mixed precision on CUDA: bf16 autocast where the GPU supports it, "
        "else fp16 autocast with loss scaling (ignored on CPU).",
    )
    channels_last: bool = Field(
        True, description="channels_last memory format on CUDA (ignored on CPU)."
    )
    compile: bool = Field(
        False, description="torch.compile the model (slow to start; for long runs)."
    )
    deterministic: bool = Field(False, description="Deterministic kernels (slower on CUDA).")
    max_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Training and validation images up to this size are held whole in memory (on "
        "the GPU on CUDA), the fastest feed; larger splits are streamed from their memory-mapped "
        "files batch by batch. null: half of the available memory (within a container's limit; "
        "and of the GPU's free memory) when training starts.",
    )
    max_steps_per_epoch: int | None = Field(
        None,
        ge=1,
        description="Train on only the first this many batches of each epoch (null: the whole "
        "split). For measuring memory and speed on large data (bench/scale.py), not for a model.",
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes training the one network together (PyTorch DistributedDataParallel "
        "launched by torchrun from the train task: gloo on CPU, NCCL with one GPU each on CUDA); "
        "each takes its share of every batch. 1: the train task trains it alone. Needs folds: 1.",
    )
    loader_workers: int = Field(
        2,
        ge=0,
        le=64,
        description="Worker processes reading batches when the splits are streamed (0: in the "
        "training process).",
    )
    checkpoint: bool = Field(True, description="Checkpoint every epoch so a retried task resumes.")
    folds: int = Field(
        1,
        ge=1,
        le=20,
        description="1: one network, trained on the train split and early-stopped on the val "
        "split. K > 1: train and val pooled and cut into K stratified folds that keep near-copy "
        "groups whole (StratifiedGroupKFold); K networks, each trained on K-1 folds and "
        "early-stopped on the one left out, served as one soft-voting ensemble (the mean of their "
        "probabilities). Every class needs at least K groups of images.",
    )
    tta: list[Literal[TTA_VIEWS]] = Field(
        default_factory=list,
        description="Test-time augmentation of the packaged model (evaluation and "
        "serving alike): none, or views averaged with the original image: hflip (mirror; wrong for digits "
        "and text), shift (4 small shifts), crop (central 87.5%, resized back). Probabilities are the mean "
        "softmax over the views.",
    )

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

    @model_validator(mode="after")
    def _one_network_for_processes(self) -> TrainConfig:
        if self.processes > 1 and self.folds > 1:
            raise ValueError(
                f"train.processes: {self.processes} processes train one network together; "
                f"with train.folds {self.folds} set processes: 1 (the members train one by one)"
            )
        return self
