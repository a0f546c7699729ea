"""visionops.core.config: loading, overrides, validation errors that name the key, the config hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionops.core.config import (
    ConfigError,
    PipelineConfig,
    apply_overrides,
    build_config,
    load_config,
    parse_override,
    read_stored_config,
)
from visionops.core.errors import InputError

REPO = Path(__file__).resolve().parents[2]
DIGITS_YAML = REPO / "conf" / "digits.yaml"


def test_defaults_load_with_documented_values() -> None:
    cfg = build_config({})
    assert cfg.data.source == "digits"
    assert cfg.data.image_size == 16
    assert cfg.data.channels == 1
    assert cfg.model.name == "small_cnn"
    assert cfg.train.max_epochs == 15
    assert cfg.gate.min_accuracy == pytest.approx(0.90)
    assert cfg.tune.learning_rate == (1e-4, 1e-2)
    # The pruner that met its goal in bench/pruning.py (bench/README.md).
    tune = cfg.tune
    assert (tune.pruner, tune.pruner_min_epochs, tune.pruner_reduction_factor) == (
        "successive_halving",
        1,
        3,
    )
    assert cfg.validate_.min_images_per_class == 10


def test_load_digits_yaml() -> None:
    cfg = load_config(DIGITS_YAML)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.experiment == "visionops-digits"
    assert cfg.registry.model_name == "visionops-digits"
    assert cfg.data.source == "digits" and cfg.data.path is None
    assert cfg.gate.max_regression == pytest.approx(0.005)
    # The YAML key "validate" comes back under its own name.
    assert cfg.to_dict()["validate"]["min_images_per_class"] == 10
    # The pipeline configs use the default pruner (faces waits 5 of its 20 cheap epochs before the first cut).
    for path in sorted((REPO / "conf").glob("*.yaml")):
        tune = load_config(path).tune
        assert tune.pruner == PipelineConfig().tune.pruner, path


@pytest.mark.parametrize(
    ("item", "key", "value"),
    [
        ("train.max_epochs=3", "train.max_epochs", 3),
        ("gate.min_accuracy=0.5", "gate.min_accuracy", 0.5),
        ("tune.dropout=[1, 2]", "tune.dropout", [1, 2]),
        ("model.name=abc", "model.name", "abc"),
        ("data.path=", "data.path", None),
        (" train.seed = 7", "train.seed", 7),
    ],
)
def test_parse_override_keeps_types(item: str, key: str, value: object) -> None:
    parsed_key, parsed = parse_override(item)
    assert parsed_key == key
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize("item", ["train.max_epochs", "=3", ""])
def test_parse_override_rejects_malformed(item: str) -> None:
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override(item)


def test_parse_override_rejects_bad_yaml_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="train.max_epochs"):
        parse_override("train.max_epochs=[1, 2")


def test_overrides_apply_to_nested_keys_and_leave_the_rest() -> None:
    cfg = load_config(
        DIGITS_YAML,
        {
            "train.max_epochs": 2,
            "gate.min_accuracy": 0.5,
            "tune.dropout": [0.1, 0.2],
            "validate.min_images_per_class": 3,
        },
    )
    assert cfg.train.max_epochs == 2
    assert cfg.train.batch_size == 64  # untouched sibling
    assert cfg.gate.min_accuracy == 0.5
    assert cfg.tune.dropout == (0.1, 0.2)
    assert cfg.validate_.min_images_per_class == 3


def test_apply_overrides_does_not_modify_the_input() -> None:
    raw = {"train": {"max_epochs": 5}}
    merged = apply_overrides(raw, {"train.max_epochs": 1, "gate.min_accuracy": 0.1})
    assert raw == {"train": {"max_epochs": 5}}
    assert merged == {"train": {"max_epochs": 1}, "gate": {"min_accuracy": 0.1}}


def test_override_below_a_scalar_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"experiment is not a section"):
        apply_overrides({"experiment": "x"}, {"experiment.name": "y"})


def test_config_error_is_an_input_error() -> None:
    assert issubclass(ConfigError, InputError)
    assert issubclass(ConfigError, ValueError)


def test_unknown_key_names_the_dotted_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DIGITS_YAML, {"train.max_epoch": 3})
    message = str(info.value)
    assert "train.max_epoch:" in message
    assert "unknown key" in message
    assert str(DIGITS_YAML) in message


def test_unknown_top_level_section_is_named() -> None:
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        build_config({"trian": {"max_epochs": 1}})


@pytest.mark.parametrize(
    ("overrides", "key", "got"),
    [
        ({"train.max_epochs": 0}, "train.max_epochs", "got 0"),
        ({"gate.min_accuracy": 1.5}, "gate.min_accuracy", "got 1.5"),
        ({"preprocess.val_fraction": 0.5}, "preprocess.val_fraction", "got 0.5"),
        ({"data.channels": 2}, "data.channels", "got 2"),
        ({"validate.min_images_per_class": 0}, "validate.min_images_per_class", "got 0"),
        ({"tune.pruner": "asha"}, "tune.pruner", "got 'asha'"),
        ({"tune.pruner_startup_trials": -1}, "tune.pruner_startup_trials", "got -1"),
        ({"tune.pruner_warmup_epochs": 0}, "tune.pruner_warmup_epochs", "got 0"),
        ({"tune.pruner_percentile": 100}, "tune.pruner_percentile", "got 100"),
        ({"tune.pruner_percentile": 0}, "tune.pruner_percentile", "got 0"),
        ({"tune.pruner_min_epochs": 0}, "tune.pruner_min_epochs", "got 0"),
        ({"tune.pruner_reduction_factor": 1}, "tune.pruner_reduction_factor", "got 1"),
    ],
)
def test_out_of_range_value_names_the_key(overrides: dict, key: str, got: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, overrides)
    line = next(line for line in str(info.value).splitlines() if line.strip().startswith(f"{key}:"))
    assert got in line


def test_every_bad_key_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, {"train.max_epochs": 0, "gate.min_accuracy": 1.5})
    assert "train.max_epochs" in str(info.value) and "gate.min_accuracy" in str(info.value)


@pytest.mark.parametrize("value", [0.0, None, 1.5])
def test_a_retired_key_is_an_error_naming_it_and_its_replacement(value: object) -> None:
    # gate.min_gain_over_baseline's meaning changed: read silently, it would judge otherwise than
    # its author asked. Other bad keys are still reported beside it.
    with pytest.raises(ConfigError) as info:
        build_config({"gate": {"min_gain_over_baseline": value}}, {"train.max_epochs": 0})
    message = str(info.value)
    assert "gate.min_gain_over_baseline: no longer a key" in message
    assert "gate.compare_with_baselines: false" in message and "gate.policy" in message
    assert "train.max_epochs" in message


def test_a_config_stored_before_a_key_was_retired_is_read_translated() -> None:
    stored = PipelineConfig().to_dict()
    stored["gate"].pop("compare_with_baselines")
    off = {**stored, "gate": {**stored["gate"], "min_gain_over_baseline": None}}
    assert read_stored_config(off, source="t").gate.compare_with_baselines is False
    assert "min_gain_over_baseline" in off["gate"]  # the caller's dict is left as read
    old_default = {**stored, "gate": {**stored["gate"], "min_gain_over_baseline": 0.0}}
    assert read_stored_config(old_default, source="t") == PipelineConfig()
    assert read_stored_config(PipelineConfig().to_dict(), source="t") == PipelineConfig()


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, {"model.name": "resnet9000"})
    message = str(info.value)
    assert "model.name 'resnet9000'" in message
    assert "face_cnn" in message and "small_cnn" in message


@pytest.mark.parametrize("source", ["imagefolder", "csv"])
def test_path_required_for_file_sources(source: str) -> None:
    with pytest.raises(ConfigError, match=rf"data.path is required when data.source is '{source}'"):
        build_config({"data": {"source": source}})
    assert build_config({"data": {"source": source, "path": "x"}}).data.path == "x"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("tune.dropout", [0.5, 0.1], "tune.dropout must be [low, high]"),
        ("tune.learning_rate", [0.01, 0.01], "tune.learning_rate must be [low, high]"),
        ("tune.weight_decay", [0.0, 0.001], "tune.weight_decay is searched on a log scale"),
        ("tune.dropout", [0.1, 1.0], "tune.dropout high must be < 1"),
    ],
)
def test_invalid_tune_ranges(key: str, value: list[float], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, {key: value})
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("pruner", "key"),
    [
        ("median", "pruner_warmup_epochs"),
        ("percentile", "pruner_warmup_epochs"),
        ("successive_halving", "pruner_min_epochs"),
        ("hyperband", "pruner_min_epochs"),
    ],
)
def test_pruner_that_could_never_act_is_an_error_naming_the_key(pruner: str, key: str) -> None:
    # The first pruning check after the last epoch would never prune: a mistake, reported with both keys.
    with pytest.raises(
        ConfigError, match=rf"tune.{key} \(4\) must be <= tune.epochs_per_trial \(3\)"
    ):
        build_config({}, {"tune.pruner": pruner, "tune.epochs_per_trial": 3, f"tune.{key}": 4})
    assert (
        getattr(
            build_config(
                {}, {"tune.pruner": pruner, "tune.epochs_per_trial": 4, f"tune.{key}": 4}
            ).tune,
            key,
        )
        == 4
    )
    # A setting of another pruner is not checked against the epochs.
    other = "pruner_min_epochs" if key == "pruner_warmup_epochs" else "pruner_warmup_epochs"
    ok = build_config({}, {"tune.pruner": pruner, "tune.epochs_per_trial": 3, f"tune.{other}": 9})
    assert ok.tune.pruner == pruner


def test_config_hash_is_stable_and_value_sensitive() -> None:
    a = load_config(DIGITS_YAML)
    b = load_config(DIGITS_YAML)
    assert a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 16
    # Equal content reached another way hashes the same.
    assert build_config(a.to_dict()).config_hash() == a.config_hash()
    changed = load_config(DIGITS_YAML, {"train.max_epochs": 14})
    assert changed.config_hash() != a.config_hash()


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(missing)


def test_bad_yaml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(bad)
    assert str(bad) in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).config_hash() == build_config({}).config_hash()


def test_train_tta_accepts_none_a_view_or_a_list_of_views() -> None:
    assert build_config({}).train.tta == []  # off by default (hflip is wrong for digits and text)
    assert build_config({}, {"train.tta": "none"}).train.tta == []
    assert build_config({}, {"train.tta": "hflip"}).train.tta == ["hflip"]
    assert build_config({}, {"train.tta": ["hflip", "shift", "crop"]}).train.tta == [
        "hflip",
        "shift",
        "crop",
    ]
    from visionops.core.config import TrainConfig

    assert "wrong for digits" in TrainConfig.model_fields["tta"].description


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("vflip", "train.tta.0: Input should be 'hflip', 'shift' or 'crop' (got 'vflip')"),
        (
            ["hflip", "rotate"],
            "train.tta.1: Input should be 'hflip', 'shift' or 'crop' (got 'rotate')",
        ),
        (["shift", "shift"], "train.tta: train.tta names a view twice"),
        (3, "train.tta: Input should be a valid list"),
    ],
)
def test_bad_train_tta_is_an_error_naming_the_key(value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, {"train.tta": value})
    assert expected in str(info.value)


def test_searched_width_with_pretrained_weights_is_refused_naming_tune_width(
    tmp_path: Path,
) -> None:
    weights = tmp_path / "resnet18.pt"
    weights.write_bytes(b"not read while validating")
    base = {
        "model.name": "resnet18",
        "model.transfer_mode": "feature_extraction",
        "model.weights_path": str(weights),
        "tune.n_trials": 4,
    }
    with pytest.raises(ConfigError, match="tune.width cannot be searched with pretrained weights"):
        build_config({}, {**base, "tune.width": [0.5, 1.0]})
    assert build_config({}, {**base, "tune.width": None}).tune.width is None
    assert (
        build_config({}, {**base, "tune.width": [0.5, 1.0], "tune.n_trials": 0}).tune.n_trials == 0
    )
