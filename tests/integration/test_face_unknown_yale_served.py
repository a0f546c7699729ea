"""Unknown people on real photographs, served: one fold of tests/unit/test_face_unknown_yale.py logged to a
real (temporary, SQLite) MLflow store and loaded back as the pyfunc, which takes chips and whole PNG photos
(the Yale faces, ``../shared/datasets/yalefaces``; skipped without it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mlflow
from testkit import YALE
from testkit import yale_fold as _fold
from visionops.serving.unknown import UNKNOWN

pytestmark = pytest.mark.skipif(
    not (YALE / "labels.csv").is_file(), reason=f"Yale faces not found at {YALE}"
)


def test_served_face_model_takes_chips_and_photos(
    yale: dict[str, Any], mlflow_store: Path, tmp_path: Path
) -> None:
    from visionops.core import tracking
    from visionops.serving.model import log_classifier, predict_probabilities

    people = sorted(set(yale["labels"]))
    fold = _fold(yale, people[:3])
    chips = yale["chips"]
    with mlflow.start_run(experiment_id=tracking.experiment_id("unit-faces")):
        uris = log_classifier(
            fold["model"],
            labels=fold["names"],
            image_size=150,
            channels=3,
            example=chips[:2].transpose(0, 3, 1, 2),
            workdir=tmp_path,
            encoder="dlib_face_v1",
            enrolled=fold["enrolled"],
            network_example=fold["enrolled"][:2],
            unknown={"score": "distance", "threshold": fold["threshold"]},
            faces=yale["settings"],
        )
    model = mlflow.pyfunc.load_model(uris["model_uri"])
    test_rows = fold["part"]["test"]
    out = model.predict(
        chips[test_rows]
    )  # chips at the model's size: taken as chips (evaluation's call)
    assert out["label"].tolist() == fold["test_answers"]
    assert {"box", "status", "distance"} <= set(out.columns)
    preds, probs = predict_probabilities(model, chips[test_rows])
    assert preds["label"].tolist() == fold["test_answers"] and probs.shape == (len(test_rows), 12)
    # Whole photos, encoded, of different sizes in one call: the model finds and aligns each face.
    import io

    from PIL import Image

    photos = []
    for i in list(fold["stranger_rows"][:3]) + list(test_rows[:3]):
        img = Image.open(YALE / yale["paths"][i])
        if len(photos) % 2:
            img = img.resize(
                (img.width // 2 * 2 + 40, img.height + 30)
            )  # another size in the same request
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        photos.append(buf.getvalue())
    blank = io.BytesIO()
    Image.new("L", (200, 160), 128).save(blank, format="JPEG")
    answer = model.predict(pd.DataFrame({"image": photos + [blank.getvalue(), "not base64!"]}))
    assert answer["status"].tolist()[-2:] == ["rejected", "invalid"]
    assert answer["label"].iloc[-1] is None and answer["box"].iloc[-1] is None
    assert all(b is not None and len(b) == 4 for b in answer["box"][:6])
    assert answer["label"].tolist()[:3] == [UNKNOWN] * 3  # the strangers
    assert answer["status"].tolist()[:3] == ["unknown"] * 3
    # The stored threshold can be overridden per call: a huge one names everybody.
    loose = model.predict(chips[fold["stranger_rows"][:2]], params={"unknown_threshold": 10.0})
    assert UNKNOWN not in loose["label"].tolist()
