"""Shadow scoring through the real stages: a champion whose config asks for shadow scoring and a
challenger that must shadow it for two batches before promotion. Each batch is scored by both on
the same images; the agreement is recorded on the batch run and on the challenger's version;
``promote_challenger``'s tasks refuse it after one batch, naming what was seen, and promote it after
two."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import mlflow
from visionops.core.storage import StageOutput
from visionops.data.preprocess import load_split
from visionops.serving.model import to_raw_images

pytestmark = pytest.mark.integration
NAME = "shadow-flow"
OPEN_GATE = {
    "gate.min_accuracy": 0.0,
    "gate.min_macro_f1": 0.0,
    "gate.max_regression": 1.0,
    "gate.max_class_regression": None,
    "gate.compare_with_baselines": False,
}


def _version(repo: Path, run: str, **overrides: object) -> tuple[dict, dict, dict]:
    from visionops.pipeline import stages as pipeline

    params = {
        "config": str(repo / "conf" / "digits.yaml"),
        "overrides": {
            "tune.n_trials": 0,
            "data.image_size": 8,
            "experiment": NAME,
            "registry.model_name": NAME,
            "registry.smoke_test_images": 2,
            **OPEN_GATE,
            **overrides,
        },
    }
    ctx = pipeline.start(params, dag_id="train_pipeline", airflow_run_id=f"manual__{run}")
    pre = pipeline.preprocess(ctx, pipeline.ingest(ctx))
    trained = pipeline.train(ctx, pre, pipeline.tune(ctx, pre))
    evaluated = pipeline.evaluate(ctx, pre, trained)
    registered = pipeline.register(ctx, trained, evaluated, pipeline.gate(ctx, evaluated))
    return ctx, pre, {"registered": registered, "evaluated": evaluated}


def _batch(images: np.ndarray, folder: Path) -> str:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
    return str(folder)


def test_the_challenger_shadows_two_batches_before_it_may_be_promoted(mlflow_store, repo, tmp_path):
    from visionops.pipeline import approval, batch
    from visionops.pipeline import stages as pipeline

    ctx, pre, first = _version(repo, "champion", **{"train.max_epochs": 2, "serving.shadow": True})
    assert pipeline.promote(ctx, first["registered"], first["evaluated"])["promoted"]
    _, _, second = _version(
        repo,
        "challenger",
        **{
            "train.max_epochs": 4,
            "registry.min_shadow_batches": 2,
            "registry.min_shadow_agreement": 0.5,
        },
    )
    challenger = second["registered"]["version"]
    assert second["registered"]["passed"] and challenger == "2"

    refused = approval.describe(NAME)
    assert refused["passed"] is False
    assert (
        "shadow scoring: 0 batch(es) scored beside champion v1, registry.min_shadow_batches=2 "
        "needed" in refused["reasons"]
    )

    val = load_split(StageOutput(**pre).local_path(), "val")
    images = to_raw_images(np.asarray(val.x))
    champion = batch.resolve(NAME, "champion")
    client = mlflow.tracking.MlflowClient()
    for i, rows in enumerate((slice(0, 40), slice(40, 100))):
        folder = _batch(images[rows], tmp_path / f"batch{i}")
        # shadow=None: the champion's serving.shadow asks for it.
        scored = batch.score(champion, folder, None, run_id=f"manual__batch{i}")
        shadow = scored["shadow"]
        assert (shadow["version"], shadow["n"]) == (challenger, rows.stop - rows.start)
        assert 0.5 <= shadow["agreement"] <= 1.0  # two networks trained on the same digits
        run = client.get_run(scored["mlflow_run_id"])
        assert run.data.metrics["shadow_agreement"] == pytest.approx(shadow["agreement"])
        assert run.data.tags["visionops.shadow_version"] == challenger
        assert "shadow/disagreements.json" in [
            a.path for a in client.list_artifacts(run.info.run_id, "shadow")
        ]
        if i == 0:
            after_one = approval.describe(NAME)
            assert after_one["passed"] is False
            (why,) = [r for r in after_one["reasons"] if r.startswith("shadow scoring")]
            assert why.startswith(
                "shadow scoring: 1 batch(es) scored beside champion v1 (40 images"
            )
            assert why.endswith("registry.min_shadow_batches=2 needed")

    tags = client.get_model_version(NAME, challenger).tags
    entries = json.loads(tags["visionops.shadow_batches"])
    assert [(e["champion_version"], e["n"]) for e in entries] == [("1", 40), ("1", 60)]
    assert tags["visionops.shadow_summary"].startswith("2 batch(es) beside champion v1: 100 images")
    # The batch's CSV holds the champion's answers only: the challenger is never seen.
    assert set(pd.read_csv(scored["output"])["model_version"].astype(str)) == {"1"}
    described = approval.describe(NAME)
    assert described["passed"], described["reasons"]
    assert any(r.startswith("shadow scoring: 2 batch(es)") for r in described["reasons"])
    answer = {"chosen_options": ["Approve"], "responded_by_user": {"name": "reviewer"}}
    promoted = approval.promote(described, answer)
    assert promoted["promoted"] and promoted["version"] == challenger
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == challenger
