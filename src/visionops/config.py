"""The one typed pipeline configuration: loaded from YAML, overridden in one place, validated once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visionops.errors import InputError


class ConfigError(InputError):
    """A configuration file or override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    source: Literal["digits", "imagefolder", "csv"] = "digits"
    path: str | None = Field(
        None, description="Image folder (imagefolder) or manifest CSV (csv); unused for digits."
    )
    image_size: int = Field(16, ge=4, le=1024, description="Square side length after resizing.")
    channels: Literal[1, 3] = 1

    @model_validator(mode="after")
    def _path_required(self) -> DataConfig:
        if self.source != "digits" and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        return self


class ValidateConfig(_Section):
    min_images_per_class: int = Field(10, ge=1)


class PreprocessConfig(_Section):
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    seed: int = 42


class ModelConfig(_Section):
    name: str = "small_cnn"
    dropout: float = Field(0.25, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _known_model(self) -> ModelConfig:
        from visionops.models import available_models

        if self.name not in available_models():
            raise ValueError(
                f"model.name {self.name!r} is not a known model; choose one of {available_models()}"
            )
        return self


class TrainConfig(_Section):
    max_epochs: int = Field(15, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=4096)
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    patience: int = Field(3, ge=1, description="Epochs without validation improvement before stopping.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 42


class TuneConfig(_Section):
    n_trials: int = Field(4, ge=0, le=1000, description="0 skips tuning and uses train.* as given.")
    epochs_per_trial: int = Field(3, ge=1, le=100)
    seed: int = 42
    learning_rate: tuple[float, float] = (1e-4, 1e-2)
    weight_decay: tuple[float, float] = (1e-6, 1e-3)
    dropout: tuple[float, float] = (0.0, 0.5)

    @model_validator(mode="after")
    def _ranges(self) -> TuneConfig:
        for key in ("learning_rate", "weight_decay", "dropout"):
            low, high = getattr(self, key)
            if not 0.0 <= low < high:
                raise ValueError(f"tune.{key} must be [low, high] with 0 <= low < high, got {[low, high]}")
            if key != "dropout" and low <= 0.0:
                raise ValueError(f"tune.{key} is searched on a log scale: low must be > 0, got {low}")
        if self.dropout[1] >= 1.0:
            raise ValueError(f"tune.dropout high must be < 1, got {self.dropout[1]}")
        return self


class GateConfig(_Section):
    min_accuracy: float = Field(0.90, ge=0.0, le=1.0)
    min_macro_f1: float = Field(0.90, ge=0.0, le=1.0)
    max_regression: float = Field(
        0.005, ge=0.0, le=1.0, description="Allowed drop against the champion (0.005 = 0.5 points)."
    )


class RegistryConfig(_Section):
    model_name: str = Field("visionops-digits", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class PipelineConfig(_Section):
    experiment: str = Field("visionops-digits", min_length=1)
    data: DataConfig = DataConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, with the YAML key names."""
        return self.model_dump(mode="json", by_alias=True)

    def config_hash(self) -> str:
        """Short, stable hash of the resolved configuration."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``key.sub=value``; the value is read as YAML so ``3``, ``0.5``, ``[1, 2]`` keep their type."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from exc
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides set; unknown sections are caught by validation."""
    merged = json.loads(json.dumps(raw))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = merged
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return merged


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        loc = loc.replace("validate_", "validate")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = err.get("input")
        detail = f" (got {got!r})" if err["type"] not in ("extra_forbidden", "model_type") and not isinstance(got, dict) else ""
        lines.append(f"  {loc or '<root>'}: {msg}{detail}")
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def build_config(raw: dict[str, Any], overrides: dict[str, Any] | None = None, *, source: str = "<dict>") -> PipelineConfig:
    """Validate ``raw`` (plus overrides) into a PipelineConfig, or raise ConfigError naming the keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    merged = apply_overrides(raw, overrides or {})
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load ``conf/*.yaml`` and apply overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    return build_config(raw, overrides, source=str(path))
