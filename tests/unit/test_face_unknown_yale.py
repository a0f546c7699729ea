"""Unknown people on real photographs (the Yale faces, ``../shared/datasets/yalefaces``; skipped without it).

Five folds: each holds three people out of training as strangers (every person is a stranger once).
The enrolled twelve are split train/val/test as preprocess splits; the ``face_embedding`` head is
trained by the project's engine on dlib embeddings; the unknown threshold is chosen on the
held-out known faces as the train stage does (``visionops.unknown``). Pooled over the folds: at least 90% of the strangers'
photos must be answered ``unknown`` and at least 95% of the enrolled people's test photos named
correctly. One fold also goes through the served pyfunc, from chips and from whole PNG photos.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from visionops.data.embeddings import embed_chips
from visionops.data.preprocess import Split, stratified_split
from visionops.models import build_model
from visionops.training.engine import fit
from visionops.unknown import UNKNOWN, choose_threshold, distance_scores, nearest_distance, unknown_mask

YALE = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "yalefaces"
pytestmark = pytest.mark.skipif(not (YALE / "labels.csv").is_file(), reason=f"Yale faces not found at {YALE}")


@pytest.fixture(scope="module")
def yale() -> dict[str, Any]:
    """Chips (dlib-aligned, via the faces module's photo_to_face) and embeddings of every distinct photo."""
    from visionops.config import FacesConfig
    from visionops.data.faces import face_settings, photo_to_face
    from PIL import Image

    settings = face_settings(FacesConfig(enabled=True))
    rows, seen = [], set()
    for rec in pd.read_csv(YALE / "labels.csv").to_dict("records"):
        data = (YALE / rec["path"]).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:  # byte-identical copies (normal = noglasses) would sit in train and test
            continue
        seen.add(digest)
        face = photo_to_face(np.asarray(Image.open(YALE / rec["path"]).convert("RGB")), settings)
        if face.chip is not None:
            rows.append((rec["path"], rec["label"], face.chip))
    paths, labels, chips = zip(*rows)
    chips = np.stack(chips)
    return {"paths": list(paths), "labels": np.asarray(labels), "chips": chips, "emb": embed_chips(chips),
            "settings": settings}


def _fold(yale: dict[str, Any], strangers: list[str]) -> dict[str, Any]:
    labels, emb = yale["labels"], yale["emb"]
    known = ~np.isin(labels, strangers)
    names = sorted(set(labels[known]))
    idx = np.flatnonzero(known)
    split = stratified_split(labels[idx].tolist(), 0.15, 0.15, seed=42)
    part = {s: idx[split == s] for s in ("train", "val", "test")}
    y = {s: np.asarray([names.index(lb) for lb in labels[part[s]]]) for s in part}
    torch.manual_seed(0)
    head = build_model("face_embedding", in_channels=128, image_size=1, num_classes=len(names), dropout=0.1)
    result = fit(head, Split(emb[part["train"]], y["train"]), Split(emb[part["val"]], y["val"]), max_epochs=40,
                 batch_size=32, learning_rate=1e-2, weight_decay=1e-4, patience=40, seed=0,
                 device=torch.device("cpu"))
    # As the train stage chooses it (training.packaging.served_extras), with the default quantile.
    scores = distance_scores(emb[part["train"]], y["train"], emb[part["val"]], y["val"])
    threshold = choose_threshold("auto", None, scores, "distance")
    enrolled = np.concatenate([emb[part["train"]], emb[part["val"]]])

    def answer(rows: np.ndarray) -> list[str]:
        with torch.no_grad():
            best = result.model(torch.from_numpy(emb[rows])).argmax(1).numpy()
        far = unknown_mask(nearest_distance(emb[rows], enrolled)[0], threshold, "distance")
        return [UNKNOWN if f else names[b] for f, b in zip(far, best)]

    return {"names": names, "part": part, "y": y, "model": result.model, "threshold": threshold,
            "enrolled": enrolled, "test_answers": answer(part["test"]),
            "stranger_rows": np.flatnonzero(~known), "stranger_answers": answer(np.flatnonzero(~known))}


def test_strangers_are_unknown_and_enrolled_people_are_named(yale: dict[str, Any]) -> None:
    people = sorted(set(yale["labels"]))
    right = named = unknown = strangers = 0
    for k in range(0, len(people), 3):
        fold = _fold(yale, people[k:k + 3])
        truth = [yale["labels"][i] for i in fold["part"]["test"]]
        right += sum(a == t for a, t in zip(fold["test_answers"], truth))
        named += len(truth)
        unknown += sum(a == UNKNOWN for a in fold["stranger_answers"])
        strangers += len(fold["stranger_answers"])
    print(f"\nYale, 5 folds x 3 strangers: enrolled test photos named correctly {right}/{named} "
          f"({right / named:.1%}); strangers' photos answered unknown {unknown}/{strangers} "
          f"({unknown / strangers:.1%})")
    assert unknown / strangers >= 0.90
    assert right / named >= 0.95


def test_served_face_model_takes_chips_and_photos(yale: dict[str, Any], mlflow_store: Path, tmp_path: Path) -> None:
    from visionops import tracking
    from visionops.inference import log_classifier, predict_probabilities

    people = sorted(set(yale["labels"]))
    fold = _fold(yale, people[:3])
    chips = yale["chips"]
    with mlflow.start_run(experiment_id=tracking.experiment_id("unit-faces")):
        uris = log_classifier(fold["model"], labels=fold["names"], image_size=150, channels=3,
                              example=chips[:2].transpose(0, 3, 1, 2), workdir=tmp_path, encoder="dlib_face_v1",
                              enrolled=fold["enrolled"], network_example=fold["enrolled"][:2],
                              unknown={"score": "distance", "threshold": fold["threshold"]},
                              faces=yale["settings"])
    model = mlflow.pyfunc.load_model(uris["model_uri"])
    test_rows = fold["part"]["test"]
    out = model.predict(chips[test_rows])  # chips at the model's size: taken as chips (evaluation's call)
    assert out["label"].tolist() == fold["test_answers"]
    assert {"box", "status", "distance"} <= set(out.columns)
    preds, probs = predict_probabilities(model, chips[test_rows])
    assert preds["label"].tolist() == fold["test_answers"] and probs.shape == (len(test_rows), 12)
    # Whole photos, encoded, of different sizes in one call: the model finds and aligns each face.
    from PIL import Image
    import io

    photos = []
    for i in list(fold["stranger_rows"][:3]) + list(test_rows[:3]):
        img = Image.open(YALE / yale["paths"][i])
        if len(photos) % 2:
            img = img.resize((img.width // 2 * 2 + 40, img.height + 30))  # another size in the same request
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
