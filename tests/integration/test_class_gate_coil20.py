"""The per-class gate on real photographs (COIL-20): a candidate better on average that no longer
recognises one object is rejected, the reason naming it; with a support bar above the test split's
the classes are listed as not judged. Through the pipeline's stages on an MLflow store.

The champion trains briefly on eight objects. The candidate trains longer on the same split (its
``split`` column is the champion's), except that one object's training and validation views are
replaced by their own pixels shuffled: it learns that object as noise, and its clean test views,
the same images the champion is scored on, go to other objects.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from testkit import COIL20, needs_shared
from visionops.core.storage import StageOutput
from visionops.evaluation.paired import load_answers, load_paired
from visionops.release.gate import decide

pytestmark = [pytest.mark.integration, needs_shared(COIL20)]

OBJECTS = [f"obj{i}" for i in range(1, 9)]
LOST = "obj5"
NAME = "coil20-classes"


def _params(repo: Path, source: Path, epochs: int, **overrides: object) -> dict:
    return {
        "config": str(repo / "conf" / "digits.yaml"),
        "overrides": {
            "data.source": "csv",
            "data.path": str(source),
            # 15 test views an object: enough for the per-class rule's default support of 10.
            "preprocess.test_fraction": 0.3,
            "tune.n_trials": 0,
            "train.max_epochs": epochs,
            "train.patience": epochs,
            "gate.min_accuracy": 0.0,
            "gate.min_macro_f1": 0.0,
            "gate.compare_with_baselines": False,
            # The average comparison lets a worse model through: only the per-class rule is judged.
            "gate.max_regression": 1.0,
            "experiment": NAME,
            "registry.model_name": NAME,
            **overrides,
        },
    }


def _run(params: dict, run: str) -> tuple[dict, dict, dict, dict, dict]:
    from visionops.pipeline import stages as pipeline

    ctx = pipeline.start(params, dag_id="train_pipeline", airflow_run_id=f"manual__{run}")
    pre = pipeline.preprocess(ctx, pipeline.ingest(ctx))
    trained = pipeline.train(ctx, pre, pipeline.tune(ctx, pre))
    evaluated = pipeline.evaluate(ctx, pre, trained)
    return ctx, pre, trained, evaluated, pipeline.gate(ctx, evaluated)


@pytest.fixture(scope="module")
def runs(mlflow_store: Path, repo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from visionops.pipeline import stages as pipeline

    folder = tmp_path_factory.mktemp("coil20-classes")
    labels = pd.read_csv(COIL20 / "labels.csv")
    labels = labels[labels["label"].isin(OBJECTS)].copy()
    (folder / "images").mkdir()
    for p in labels["path"]:  # a manifest's files lie under its folder
        shutil.copyfile(COIL20 / p, folder / p)
    labels.to_csv(folder / "champion.csv", index=False)
    ctx, pre, trained, evaluated, decision = _run(
        _params(repo, folder / "champion.csv", 3), "champ"
    )
    registered = pipeline.register(ctx, trained, evaluated, decision)
    assert pipeline.promote(ctx, registered, evaluated)["promoted"]

    # The champion's split, as the candidate's split column; the lost object's training views shuffled.
    splits = pd.read_parquet(StageOutput(**pre).local_path() / "splits.parquet")
    rng = np.random.default_rng(0)
    rows = []
    for path, label, split in splits[["path", "label", "split"]].itertuples(index=False):
        if label == LOST and split != "test":
            pixels = np.asarray(Image.open(path))
            shuffled = rng.permutation(pixels.reshape(-1)).reshape(pixels.shape)
            path = str(folder / "shuffled" / Path(path).name)
            Path(path).parent.mkdir(exist_ok=True)
            Image.fromarray(shuffled).save(path)
        rows.append({"path": Path(path).relative_to(folder), "label": label, "split": split})
    pd.DataFrame(rows).to_csv(folder / "candidate.csv", index=False)
    # A split given by the source: its near-copies across splits are the champion's too (warned).
    params = _params(repo, folder / "candidate.csv", 12, **{"validate.leakage_severity": "warning"})
    *_, cand_evaluated, cand_decision = _run(params, "candidate")
    return {"champion": evaluated, "candidate": cand_evaluated, "decision": cand_decision}


def test_better_on_average_but_one_object_lost_is_rejected_naming_it(runs: dict) -> None:
    decision, candidate = runs["decision"], runs["candidate"]
    assert candidate["metrics"]["accuracy"] > candidate["champion"]["accuracy"]  # better on average
    assert decision["passed"] is False, decision["reasons"]
    lost = [r for r in decision["reasons"] if r.startswith(f"class {LOST!r}: recall")]
    assert len(lost) == 1 and "points down > gate.max_class_regression 10" in lost[0], decision
    worst = decision["classes"][0]
    assert worst["group"] == LOST and worst["judged"] and worst["delta_points"] < -10
    assert f"for champion v1 on the same {worst['support']} test images" in lost[0]
    # Only that rule rejected it: no other object was lost.
    assert not any(r.startswith("class ") and r not in lost for r in decision["reasons"])
    paired = load_paired(StageOutput(**candidate["predictions"]))
    off = decide(
        candidate["metrics"],
        candidate["champion"],
        _gate(runs).model_copy(update={"max_class_regression": None}),
        paired,
    )
    assert off.passed, off.reasons  # without the per-class rule the model would have gone through


def test_classes_below_the_support_are_listed_as_not_judged(runs: dict) -> None:
    candidate = runs["candidate"]
    paired = load_paired(StageOutput(**candidate["predictions"]))
    strict = _gate(runs).model_copy(update={"min_class_support": 16})
    decision = decide(candidate["metrics"], candidate["champion"], strict, paired)
    assert decision.passed, decision.reasons  # nothing judged, nothing rejected
    (listed,) = [r for r in decision.reasons if r.startswith("not judged")]
    assert listed.startswith("not judged, fewer than gate.min_class_support=16 test images: class ")
    small = [r for r in decision.classes if r["support"] < 16]
    assert len(small) >= len(OBJECTS) // 2, decision.classes  # about 15 test views an object
    assert all(f"{r['group']} ({r['support']})" in listed for r in small), listed
    assert {r["group"] for r in decision.classes if not r["judged"]} == {r["group"] for r in small}
    # The floor, without a champion: the lost object is below any useful recall.
    answers = load_answers(StageOutput(**candidate["predictions"]))
    floor = _gate(runs).model_copy(update={"min_class_recall": 0.5})
    alone = decide(candidate["metrics"], None, floor, baselines=answers)
    assert any(r.startswith(f"class {LOST!r}: recall") for r in alone.reasons), alone.reasons


def _gate(runs: dict):  # noqa: ANN202
    from visionops.core.config import GateConfig

    return GateConfig(min_accuracy=0.0, min_macro_f1=0.0, max_regression=1.0)
