"""The shipped configs: one set of model/train/tune settings per kind of data.

Glyphs and objects (conf/digits.yaml, conf/coil20.yaml) share theirs: they were chosen together on
validation splits (bench/vs_baselines.py), so a change to one file must be made to the other.
"""

from __future__ import annotations

from pathlib import Path

from visionops.core.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _sections(name: str) -> dict:
    # coil20.yaml's data.path may be absent here: loading a config does not read the data.
    cfg = load_config(REPO / "conf" / name)
    return {key: getattr(cfg, key).model_dump() for key in ("model", "train", "tune")}


def test_digits_and_coil20_carry_the_same_model_train_and_tune_settings() -> None:
    digits, coil20 = _sections("digits.yaml"), _sections("coil20.yaml")
    for key in ("model", "train", "tune"):
        assert coil20[key] == digits[key], key


def test_the_glyph_settings_are_the_ones_chosen_on_validation() -> None:
    s = _sections("digits.yaml")
    assert (s["model"]["name"], s["model"]["width"], s["model"]["batch_norm"]) == (
        "small_cnn",
        2.0,
        True,
    )
    train = s["train"]
    assert (train["max_epochs"], train["patience"], train["scheduler"]) == (100, 15, "cosine")
    assert train["augment"]["strength"] == 0.25 and train["augment"]["hflip"] is False
    assert train["tta"] == []  # shift views did not help on validation; hflip is wrong for glyphs
    assert s["tune"]["n_trials"] == 0
