"""Unknown people on real photographs, served: one fold of tests/unit/test_face_unknown_yale.py logged to a
real (temporary, SQLite) MLflow store and loaded back as the pyfunc, which takes chips and whole PNG photos
(the Yale faces, ``../shared/datasets/yalefaces``; skipped without it, failed when VISIONOPS_REQUIRE_SHARED=1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mlflow
from testkit import YALE, needs_shared
from testkit import yale_fold as _fold
from visionops.serving.unknown import UNKNOWN

pytestmark = needs_shared(YALE)


@pytest.fixture(scope="module")
def served(yale: dict[str, Any], mlflow_store: Path, tmp_path_factory) -> dict[str, Any]:
    """One fold (three people held out as strangers) logged as the served pyfunc, once per module."""
    from visionops.core import tracking
    from visionops.serving.model import log_classifier

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
            workdir=tmp_path_factory.mktemp("served-face"),
            encoder="dlib_face_v1",
            enrolled=fold["enrolled"],
            network_example=fold["enrolled"][:2],
            unknown={"score": "distance", "threshold": fold["threshold"]},
            faces=yale["settings"],
        )
    return {"fold": fold, "uris": uris}


def test_served_face_model_takes_chips_and_photos(yale: dict[str, Any], served) -> None:
    from visionops.serving.model import predict_probabilities

    fold, uris, chips = served["fold"], served["uris"], yale["chips"]
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
    # Evaluation's figures with unknown off: the same served model asked with the threshold off.
    from visionops.evaluation.scoring import unknown_figures

    truth = [yale["labels"][i] for i in test_rows]
    figures = unknown_figures(model, chips[test_rows], truth, fold["test_answers"])
    named_off = sum(a == t for a, t in zip(fold["test_answers_unknown_off"], truth))
    assert figures["accuracy_unknown_off"] == pytest.approx(named_off / len(truth))
    assert figures["n_answered_unknown"] == fold["test_answers"].count(UNKNOWN)
    assert figures["threshold"] == pytest.approx(fold["threshold"])


def test_a_served_face_model_is_monitored_on_its_embeddings(
    yale: dict[str, Any], served, tmp_path: Path
) -> None:
    """The served model returns its embeddings; registration's reference and a scored batch carry
    them, and the monitor's embedding check (MMD) runs on them: quiet on photos of the enrolled
    people, alarmed by photos of people the model never saw (a new population in service)."""
    import json
    import shutil

    import numpy as np

    from visionops.core.contracts import ModelRef
    from visionops.data.embeddings import embed_chips
    from visionops.monitoring.service import check_batch, record_reference, record_scored
    from visionops.serving.batch import score_folder
    from visionops.serving.model import embedding_matrix

    name = "faces-monitored"
    fold, uris, chips = served["fold"], served["uris"], yale["chips"]
    model = mlflow.pyfunc.load_model(uris["model_uri"])
    test_rows = fold["part"]["test"]
    answer = model.predict(chips[test_rows], params={"input": "chip", "return_embeddings": True})
    emb = embedding_matrix(answer)
    assert emb.shape == (len(test_rows), 128)
    np.testing.assert_allclose(emb, embed_chips(chips[test_rows]), atol=1e-5)

    version = mlflow.register_model(uris["model_uri"], name).version
    reference = record_reference(
        model,
        chips[test_rows],
        answer[["label", "probability"]],
        [yale["labels"][i] for i in test_rows],
        str(tmp_path / "reference"),
        meta={},
    )
    assert reference.embeddings is not None and reference.embeddings.shape == (len(test_rows), 128)
    mlflow.tracking.MlflowClient().set_model_version_tag(
        name, version, "visionops.reference_uri", str(tmp_path / "reference")
    )

    def folder(rows: np.ndarray, label: str) -> Path:
        out = tmp_path / label
        out.mkdir()
        for i in rows:
            shutil.copy(YALE / yale["paths"][i], out / yale["paths"][i].replace("/", "_"))
        (out / "broken.png").write_bytes(b"not a photo")  # not answered: no row in the record
        return out

    ref = ModelRef(name=name, version=str(version), requested=name)
    checks = {}
    batches = {"enrolled": fold["part"]["train"], "strangers": fold["stranger_rows"]}
    for label, rows in batches.items():
        scored = score_folder(ref, str(folder(rows, label)), str(tmp_path / f"{label}.csv"))
        assert scored.embeddings and scored.embeddings.endswith(f"{label}.embeddings.npz")
        recorded = record_scored(scored, run_id=f"manual__{label}")
        assert recorded.n_images == len(rows)
        checks[label] = check_batch(recorded)
        client = mlflow.tracking.MlflowClient()
        result = client.download_artifacts(checks[label].report_run_id, "drift_result.json")
        ran = {c["name"]: c for c in json.loads(Path(result).read_text())["checks"]}
        assert ran["embedding"]["test"] == "mmd_permutation", ran
        assert ran["embedding"]["detail"]["n_current"] == len(rows), ran["embedding"]
    assert checks["enrolled"].drifted is False, checks["enrolled"].summary
    assert checks["strangers"].drifted is True, checks["strangers"].summary
    assert "embedding" in checks["strangers"].extra["drifted_checks"], checks["strangers"].extra
