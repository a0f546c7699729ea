"""The registry as a careless or hostile operator would use it: moving ``champion`` around the gate.

A rollback is meant to bring back a model that was trusted before. Tried here: rolling back to a
version the gate rejected, to one never evaluated, forcing without a reason, and a rollback whose
model fails its smoke test. Each is refused before anything moves, or moves and is recorded, or is
undone; the smoke test runs on every rollback. On a real MLflow registry (SQLite store); v1 good,
v2 bad (tests/integration/conftest.py ``good_and_bad``).
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from visionops.cli.main import main
from visionops.core.constants import CHAMPION, PREVIOUS_CHAMPION
from visionops.core.errors import InputError
from visionops.release import registry
from visionops.release.champion import SmokeTestError, rollback


@pytest.fixture()
def model(good_and_bad: str) -> str:
    """v1 champion (promoted by a pipeline run); v2 registered beside it, not champion."""
    registry.promote_to_champion(good_and_bad, "1", run_key="run-1")
    return good_and_bad


def _champion(name: str) -> str | None:
    mv = registry.get_alias(name, CHAMPION)
    return str(mv.version) if mv else None


def _history(name: str) -> str:
    return MlflowClient().get_registered_model(name).tags.get("visionops.champion_history", "")


def test_a_rollback_to_a_version_the_gate_rejected_is_refused(model: str, capsys) -> None:
    MlflowClient().set_model_version_tag(model, "2", "visionops.gate", "rejected")
    assert main(["registry", "rollback", model, "--to", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{model} v2 has never been champion and its gate said 'rejected'" in err
    assert "--force --reason" in err
    assert _champion(model) == "1" and _history(model) == "1"
    assert "visionops.rolled_back_from" not in MlflowClient().get_model_version(model, "2").tags


def test_a_rollback_to_a_version_never_through_the_gate_is_refused(model: str, capsys) -> None:
    with pytest.raises(InputError, match="was never through the gate"):
        rollback(model, "2", smoke_test=lambda: pytest.fail("nothing may run before the rule"))
    assert _champion(model) == "1"


def test_a_forced_rollback_needs_a_reason_and_is_recorded_and_smoke_tested(
    model: str, capsys
) -> None:
    MlflowClient().set_model_version_tag(model, "2", "visionops.gate", "rejected")
    assert main(["registry", "rollback", model, "--to", "2", "--force"]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert _champion(model) == "1"
    assert main(["registry", "rollback", model, "--to", "2", "--force", "--reason", "inc-7"]) == 0
    assert "[FORCED]" in capsys.readouterr().out
    tags = MlflowClient().get_model_version(model, "2").tags
    assert tags["visionops.forced_rollback"] == "true"
    assert tags["visionops.force_reason"] == "inc-7"
    # The smoke test ran, in a fresh process, on the version now in service.
    assert tags["visionops.smoke_test"] == "passed"
    assert _champion(model) == "2" and _history(model) == "1,2"
    assert str(registry.get_alias(model, PREVIOUS_CHAMPION).version) == "1"


def test_a_version_that_passed_its_gate_or_was_champion_needs_no_force(model: str) -> None:
    MlflowClient().set_model_version_tag(model, "2", "visionops.gate", "passed")
    smoked: list[str] = []
    assert rollback(model, "2", smoke_test=lambda: smoked.append("v2")) == ("1", "2")
    # v1 was champion: going back to it is a plain rollback too (to previous_champion).
    assert rollback(model, smoke_test=lambda: smoked.append("v1")) == ("2", "1")
    assert smoked == ["v2", "v1"] and _history(model) == "1,2,1"
    tags = MlflowClient().get_model_version(model, "2").tags
    assert "visionops.forced_rollback" not in tags


def test_a_rollback_whose_model_fails_its_smoke_test_moves_nothing(model: str) -> None:
    MlflowClient().set_model_version_tag(model, "2", "visionops.gate", "passed")

    def broken() -> None:
        raise RuntimeError("does not load")

    with pytest.raises(SmokeTestError, match="champion restored to v1"):
        rollback(model, "2", smoke_test=broken)
    assert _champion(model) == "1" and _history(model) == "1"
    assert registry.get_alias(model, PREVIOUS_CHAMPION) is None
    tags = MlflowClient().get_model_version(model, "2").tags
    assert tags["visionops.smoke_test"].startswith("failed: does not load")
