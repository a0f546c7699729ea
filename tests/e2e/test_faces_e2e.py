"""The face service end to end on real photographs: the shipped ``conf/faces.yaml`` on the Yale faces.

One run reads the CSV manifest through real Airflow and MLflow and promotes (that the same photos as
an image folder are the same data is checked at ingest, in tests/integration/test_face_layouts.py).
Then the champion takes whole photos, as an application sends them. Skipped when
``../shared/datasets/yalefaces`` is absent, failed there when VISIONOPS_REQUIRE_SHARED=1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e2e_cli import run_cli
from testkit import YALE, needs_shared

pytestmark = [pytest.mark.e2e, needs_shared(YALE)]

MODEL = "e2e-faces"
SMALL = [
    "--config",
    "conf/faces.yaml",
    "--set",
    "tune.n_trials=2",
    "--set",
    f"registry.model_name={MODEL}",
    "--set",
    "experiment=e2e-faces",
    "--set",
    "registry.smoke_test_images=4",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e-faces")


@pytest.fixture(scope="module")
def one_run(home):
    first, s1 = run_cli(
        home, *SMALL, "--set", "data.source=csv", "--set", f"data.path={YALE / 'labels.csv'}"
    )
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    return ((first, s1),)


def test_the_shipped_face_config_promotes_on_real_photographs(one_run):
    for proc, summary in one_run:
        assert summary["status"] == "FINISHED", proc.stdout[-3000:]
        assert summary["gate"] == "passed", summary["gate_reasons"]
        assert summary["test_accuracy"] >= 0.95, summary
    ((_, s1),) = one_run
    assert s1["model_version"] == "1"
    # The face model earns its place: it beats the simple baselines on pixels (gate default).
    assert s1["gain_over_baseline_points"] > 0, s1["gate_reasons"]


def test_the_yale_slices_are_in_the_report_and_the_model_card(one_run, home):
    """conf/faces.yaml reads the lighting and the expression of each photo from its file name: the
    evaluation report gives the accuracy per value, the model card the gate's table per value."""
    from mlflow.tracking import MlflowClient

    ((_, summary),) = one_run
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    parent = summary["parent_run_id"]
    report = Path(client.download_artifacts(parent, "evaluation/report.md")).read_text()
    card = Path(client.download_artifacts(parent, "model_card.md")).read_text()
    for name, values in (
        ("lighting", {"center", "left", "right", "other"}),
        ("expression", {"happy", "normal", "sad", "sleepy", "surprised", "wink", "other"}),
    ):
        table = report.split(f"## Slice `{name}`\n\n")[1].split("\n\n")[0].splitlines()
        assert table[0] == "| value | test images | accuracy |", table
        rows = [line.split(" | ")[0].removeprefix("| ") for line in table[2:]]
        assert len(rows) >= 2 and set(rows) <= values, table
        assert f"## Slice `{name}`, worst first" in card


def test_the_duplicate_photos_are_dropped_with_a_warning(one_run):
    ((proc, summary),) = one_run
    warnings = " ".join(summary["validation_warnings"])
    assert "sha256" in warnings, summary["validation_warnings"]  # the 9 byte-identical Yale photos
    assert "data warning" in proc.stdout


def test_the_champion_takes_whole_photos(one_run, home):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    photos = [
        YALE / "images" / "subject02" / "happy.png",
        YALE / "images" / "subject07" / "sad.png",
    ]
    blank = np.full((243, 320), 128, np.uint8)  # no face at all
    batch = [np.asarray(Image.open(p).convert("RGB")) for p in photos] + [
        np.stack([blank] * 3, axis=2)
    ]
    out = model.predict(batch)
    assert list(out["label"][:2]) == ["subject02", "subject07"], out
    assert out["box"].iloc[0] is not None
    assert list(out["status"]) == ["ok", "ok", "rejected"]
    assert out["label"].iloc[2] is None and out["error"].iloc[2] == "no face found"


def test_visionops_predict_labels_a_folder_of_photos(one_run, home, tmp_path):
    import shutil
    import subprocess
    import sys

    import pandas as pd

    from e2e_cli import pipeline_env

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(YALE / "images" / "subject05" / "glasses.png", photos / "a.png")
    Image.fromarray(np.full((243, 320), 128, np.uint8)).save(photos / "blank.png")
    (photos / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "faces.csv"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "visionops"),
            "predict",
            "--model",
            MODEL,
            "--input",
            str(photos),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=pipeline_env(home),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_csv(out).set_index("path")
    a, blank, broken = (rows.loc[str(photos / n)] for n in ("a.png", "blank.png", "broken.jpg"))
    assert (a["label"], a["status"]) == ("subject05", "ok") and len(a["box"].split(",")) == 4
    assert (blank["status"], blank["error"]) == ("rejected", "no face found")
    assert broken["status"] == "invalid"
    assert set(rows["model_version"]) == {1}


def test_the_champion_serves_encoded_photos_over_http(one_run, home, tmp_path):
    import base64

    from e2e_cli import pipeline_env
    from testkit import model_server, post_json

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    # Two Yale photos (320x243 PNG), one of them re-encoded as a smaller JPEG, and a photo without a face.
    small = tmp_path / "small.jpg"
    Image.open(YALE / "images" / "subject09" / "centerlight.png").convert("RGB").resize(
        (240, 182)
    ).save(small)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((100, 80, 3), 90, np.uint8)).save(blank)
    photos = [b64(YALE / "images" / "subject11" / "wink.png"), b64(small), b64(blank)]
    with model_server(f"models:/{MODEL}@champion", tmp_path, env=pipeline_env(home)) as port:
        rows = post_json(
            port, {"dataframe_split": {"columns": ["image"], "data": [[p] for p in photos]}}
        )
    assert [r["label"] for r in rows] == ["subject11", "subject09", None]
    assert [r["status"] for r in rows] == ["ok", "ok", "rejected"]
    assert rows[2]["error"] == "no face found"
    assert len(rows[0]["box"]) == 4 and rows[0]["distance"] >= 0
