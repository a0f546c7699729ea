"""The one typed pipeline configuration: loaded from YAML, overridden in one place, validated once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from visionops.core.config.data_sections import (  # noqa: F401 - re-exported: the public config types
    DataConfig,
    FacesConfig,
    PreprocessConfig,
    ValidateConfig,
)
from visionops.core.config.sections import (  # noqa: F401 - re-exported: the public config types
    BaselineConfig,
    GateConfig,
    ModelConfig,
    RegistryConfig,
    ServingConfig,
    TuneConfig,
    _Section,
)
from visionops.core.config.train_section import (  # noqa: F401 - re-exported: the public config types
    AugmentConfig,
    TrainConfig,
)
from visionops.core.errors import InputError


class ConfigError(InputError):
    """A configuration file or override is invalid; the message names the key."""


class PipelineConfig(_Section):
    experiment: str = Field("visionops-digits", min_length=1)
    data: DataConfig = DataConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    preprocess: PreprocessConfig = PreprocessConfig()
    faces: FacesConfig = FacesConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    gate: GateConfig = GateConfig()
    baseline: BaselineConfig = BaselineConfig()
    registry: RegistryConfig = RegistryConfig()
    serving: ServingConfig = ServingConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _tuned_width_fits_the_weights(self) -> PipelineConfig:
        # Pretrained weights fix the channel widths: every trial would fail on a searched width.
        if self.tune.width is not None and self.tune.n_trials > 0 and self.model.weights_path:
            raise ValueError(
                f"tune.width cannot be searched with pretrained weights (model.weights_path, "
                f"model.transfer_mode {self.model.transfer_mode!r}): set tune.width to null"
            )
        return self

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


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        loc = loc.replace("validate_", "validate")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = err.get("input")
        detail = (
            f" (got {got!r})"
            if err["type"] not in ("extra_forbidden", "model_type") and not isinstance(got, dict)
            else ""
        )
        lines.append(f"  {loc or '<root>'}: {msg}{detail}")
    return lines


# Keys a config may no longer set, and what replaced each. A config that sets one gets an error
# saying so rather than "unknown key" (or a silent translation: the key's meaning changed, and
# reading it as its replacement would judge otherwise than its author asked). The resolved configs
# that earlier runs stored are read with ``read_stored_config``, which translates them.
RETIRED_KEYS = {
    "gate.min_gain_over_baseline": (
        "the comparison with the best simple baseline now follows gate.policy, "
        "gate.max_regression, gate.non_inferiority_on and gate.alpha, as the champion comparison "
        "does: remove the key, or set gate.compare_with_baselines: false to turn the comparison "
        "off (what null did)"
    ),
}


def _pop_retired(raw: dict[str, Any]) -> dict[str, Any]:
    """The retired keys ``raw`` sets (dotted -> value), taken out of it."""
    found: dict[str, Any] = {}
    for dotted in RETIRED_KEYS:
        section, _, key = dotted.partition(".")
        node = raw.get(section)
        if isinstance(node, dict) and key in node:
            found[dotted] = node.pop(key)
    return found


def build_config(
    raw: dict[str, Any], overrides: dict[str, Any] | None = None, *, source: str = "<dict>"
) -> PipelineConfig:
    """Validate ``raw`` (plus overrides) into a PipelineConfig, or raise ConfigError naming the keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    merged = apply_overrides(raw, overrides or {})
    lines = [f"  {key}: no longer a key: {RETIRED_KEYS[key]}" for key in _pop_retired(merged)]
    try:
        cfg = PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        lines += _error_lines(exc)
    else:
        if not lines:
            return cfg
    raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines)) from None


def read_stored_config(raw: dict[str, Any], *, source: str) -> PipelineConfig:
    """A resolved config an earlier run stored (its ``config.json``), validated like any config.

    Such a file holds every key, so one written before a key was retired still sets it: it is
    translated here instead of refused (a version trained then must stay promotable by hand).
    ``gate.min_gain_over_baseline``: null becomes ``gate.compare_with_baselines: false``; a number
    is dropped, and the current policy judges the baseline comparison."""
    raw = apply_overrides(raw, {})  # a copy: the caller's dict stays as read
    retired = _pop_retired(raw)
    if "gate.min_gain_over_baseline" in retired and retired["gate.min_gain_over_baseline"] is None:
        raw["gate"]["compare_with_baselines"] = False
    return build_config(raw, source=source)


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
