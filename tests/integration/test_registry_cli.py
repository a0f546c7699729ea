"""``visionops registry promote|rollback`` and the post-promotion smoke test, on a real MLflow registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from visionops.cli.main import main
from visionops.core.constants import CHAMPION, PREVIOUS_CHAMPION
from visionops.core.contracts import GateDecision
from visionops.core.errors import InputError
from visionops.release import registry
from visionops.release.champion import SmokeTestError, promote_safely, rollback
from visionops.serving.model import to_raw_images
from visionops.serving.smoke import smoke_test


@pytest.fixture()
def model(good_and_bad: str) -> str:
    """v1 good, v2 bad (tests/integration/conftest.py)."""
    return good_and_bad


FAST = [
    "--skip-smoke-test"
]  # the smoke test (a fresh process, ~10 s) runs in the tests that are about it


def _champion(name: str) -> str | None:
    mv = registry.get_alias(name, CHAMPION)
    return str(mv.version) if mv else None


def test_promote_runs_the_gate_and_rejects_a_worse_version(model: str, capsys) -> None:
    assert main(["registry", "promote", model, "1", *FAST]) == 0
    assert _champion(model) == "1"
    assert "gate PASSED" in capsys.readouterr().out
    assert main(["registry", "promote", model, "2"]) == 1
    out = capsys.readouterr()
    assert "accuracy 0.0000 < required 0.9000" in out.out
    assert "below champion v1" in out.out
    assert "use --force" in out.err
    assert _champion(model) == "1"  # unchanged


def test_forced_promotion_is_recorded(model: str, capsys) -> None:
    assert main(["registry", "promote", model, "1", *FAST]) == 0
    assert main(["registry", "promote", model, "2", "--force", "--reason", "incident 42"]) == 0
    assert "[FORCED]" in capsys.readouterr().out
    assert _champion(model) == "2"
    tags = MlflowClient().get_model_version(model, "2").tags
    assert tags["visionops.forced_promotion"] == "true"
    assert tags["visionops.force_reason"] == "incident 42"
    assert tags["visionops.promoted_by"].startswith("cli:")
    assert str(registry.get_alias(model, PREVIOUS_CHAMPION).version) == "1"
    # This promotion ran the smoke test: the forced bad model loads and labels like it does in-process.
    assert tags["visionops.smoke_test"] == "passed"
    assert (
        MlflowClient()
        .get_model_version(model, "1")
        .tags["visionops.smoke_test"]
        .startswith("skipped")
    )


def test_rollback_restores_previous_champion_and_records_it(model: str, capsys) -> None:
    assert main(["registry", "promote", model, "1", *FAST]) == 0
    assert main(["registry", "promote", model, "2", "--force", *FAST]) == 0
    assert main(["registry", "rollback", model]) == 0
    assert "version 2 -> 1" in capsys.readouterr().out
    assert _champion(model) == "1"
    assert str(registry.get_alias(model, PREVIOUS_CHAMPION).version) == "2"
    client = MlflowClient()
    assert client.get_model_version(model, "1").tags["visionops.rolled_back_from"] == "2"
    assert client.get_registered_model(model).tags["visionops.last_rollback"].startswith("v2 -> v1")
    assert client.get_registered_model(model).tags["visionops.champion_history"] == "1,2,1"
    assert main(["registry", "rollback", model, "--to", "2"]) == 0
    assert _champion(model) == "2"


def test_rollback_without_history_or_to_unknown_version_fails_clearly(model: str, capsys) -> None:
    assert main(["registry", "rollback", model]) == 2
    assert "no previous_champion" in capsys.readouterr().err
    assert main(["registry", "promote", model, "1", *FAST]) == 0
    assert main(["registry", "rollback", model, "--to", "9"]) == 2
    assert _champion(model) == "1"
    with pytest.raises(InputError, match="no previous_champion"):
        rollback(model)


def test_promote_unknown_version_fails_without_moving(model: str, capsys) -> None:
    assert main(["registry", "promote", model, "7"]) == 2
    assert _champion(model) is None


def test_smoke_test_in_a_fresh_process(model: str, sqlite_store: dict[str, Any]) -> None:
    registry.set_alias(model, CHAMPION, "1")
    x = np.load(sqlite_store["test_split"] / "test_x.npy")[:6]
    y = np.load(sqlite_store["test_split"] / "test_y.npy")[:6]
    right = [["left", "right"][i] for i in y]
    smoke_test(f"models:/{model}@champion", to_raw_images(x), right)
    with pytest.raises(RuntimeError, match="in a fresh process labelled"):
        smoke_test(f"models:/{model}@champion", to_raw_images(x), right[::-1])
    with pytest.raises(RuntimeError, match="failed in a fresh process"):
        smoke_test(f"models:/{model}@nonexistent", to_raw_images(x), right)


def test_failed_smoke_test_puts_the_aliases_back(model: str) -> None:
    registry.promote_to_champion(model, "1", run_key="setup")

    def broken() -> None:
        raise RuntimeError("model did not load")

    with pytest.raises(SmokeTestError, match="champion restored to v1"):
        promote_safely(
            model,
            "2",
            evaluated_against="1",
            recheck=lambda v: GateDecision(passed=True, reasons=[], metrics={}),
            run_key="r",
            smoke_test=broken,
        )
    assert _champion(model) == "1"
    assert registry.get_alias(model, PREVIOUS_CHAMPION) is None
    assert (
        MlflowClient()
        .get_model_version(model, "2")
        .tags["visionops.smoke_test"]
        .startswith("failed:")
    )
