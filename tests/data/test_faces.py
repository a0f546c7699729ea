"""Faces: detection (dlib by default, Haar as an option), alignment, rejections, the crop cache, balance
and the class-loss error, on a face composed from a real photograph.

The faces come from scikit-image's astronaut photo (shipped inside the scikit-image package, nothing
downloaded) and compositions of it: two copies side by side (several faces), a shrunken copy (too
small), a blank canvas (no face). Tests on the Yale face photos are in test_faces_yale.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from visionops.core.config import FacesConfig
from visionops.core.errors import InputError
from visionops.data.faces import (
    FaceResult,
    balance,
    choose_face,
    crop_faces,
    face_settings,
    faces_dir,
    photo_to_face,
    reason_kind,
)
from visionops.data.ingest import build_manifest
from visionops.data.sources import Item

data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def _photos(tmp_path: Path, astronaut: Image.Image, small: int) -> dict[str, Item]:
    canvas = Image.new("RGB", (1024, 512))
    canvas.paste(astronaut, (0, 0))
    canvas.paste(astronaut, (512, 0))
    photos = {
        "one": astronaut,
        "two": canvas,
        "small": astronaut.resize((small, small)),
        "none": Image.new("RGB", (300, 300), (120, 140, 160)),
        "given": astronaut,  # the source gives the face rectangle: no detection, still aligned
    }
    items = {}
    for name, image in photos.items():
        path = tmp_path / "photos" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=92 if name != "given" else 91)  # another file: another hash
        items[name] = Item(str(path), "eileen", (170, 60, 280, 170) if name == "given" else None)
    return items


# dlib's HOG (upsample 1) does not search below ~40 px, where a face is "no face found": to see "too
# small", the dlib case shrinks the photo to a ~45 px face and asks for 60.
@pytest.mark.parametrize(("detector", "small", "min_face"), [("dlib", 256, 60), ("haar", 128, 40)])
def test_crop_and_rejections(
    tmp_path: Path, astronaut: Image.Image, detector: str, small: int, min_face: int
) -> None:
    items = _photos(tmp_path, astronaut, small)
    cfg = FacesConfig(enabled=True, detector=detector, min_face=min_face, size=96, balance="none")
    crops, report = crop_faces(build_manifest(list(items.values())), tmp_path / "faces", cfg)

    reasons = {Path(r["path"]).stem: r["reason"] for r in report["rejected"]}
    assert reasons["two"] == f"several faces (2 of at least {min_face} px)"
    assert (
        reasons["small"].startswith("face too small (")
        and f"< faces.min_face={min_face}" in reasons["small"]
    )
    assert reasons["none"] == "no face found"
    assert set(crops["source_path"]) == {items["one"].path, items["given"].path}
    assert report == {**report, "photos": 5, "faces": 2, "cached": 0}
    assert report["per_class"]["eileen"] == {
        "photos": 5,
        "kept": 2,
        "lost": {"several faces": 1, "face too small": 1, "no face found": 1},
    }
    for path in crops["path"]:
        with Image.open(path) as img:
            assert img.size == (96, 96) and img.mode == "RGB"
        assert Path(path).is_relative_to(tmp_path / "faces")
    assert crops.set_index("source_path").loc[items["given"].path, "box"] == "170,60,280,170"
    # The astronaut's face (roughly x 177-272, y 66-161 in the photo) is what was kept: skin tones, not
    # the dark space suit or background.
    for name in ("one", "given"):
        face = np.asarray(Image.open(crops.set_index("source_path").loc[items[name].path, "path"]))
        assert face[24:72, 24:72, 0].mean() > face[24:72, 24:72, 2].mean() + 20
    assert abs(crops["roll_deg"]).max() < 20

    again, report2 = crop_faces(build_manifest(list(items.values())), tmp_path / "faces", cfg)
    assert (
        report2["cached"] == 5 and again["path"].tolist() == crops["path"].tolist()
    )  # nothing re-detected
    json.dumps(report2)  # the report is written as ingest_report.json


def test_photo_to_face_interface(astronaut: Image.Image) -> None:
    settings = face_settings(FacesConfig())
    assert json.loads(json.dumps(settings)) == settings  # travels with the model
    assert settings["size"] == 150 and settings["margin"] == 0.25 and settings["detector"] == "dlib"
    face = photo_to_face(np.asarray(astronaut), settings)
    assert isinstance(face, FaceResult) and face.reason is None
    assert (
        face.chip is not None and face.chip.shape == (150, 150, 3) and face.chip.dtype == np.uint8
    )
    x1, y1, x2, y2 = face.box
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 180
    grey = photo_to_face(
        np.asarray(astronaut.convert("L")), settings
    )  # grey photos are accepted too
    assert grey.reason is None and grey.chip.shape == (150, 150, 3)
    with pytest.raises(InputError, match="RGB uint8"):
        photo_to_face(np.zeros((10, 10, 3), np.float32), settings)


def test_every_crop_setting_changes_the_cache_folder() -> None:
    base = FacesConfig(enabled=True)
    changed = {
        "detector": "haar",
        "upsample": 2,
        "min_score": 0.2,
        "cnn_fallback": False,
        "cnn_upsample": 1,
        "detect_max_side": 800,
        "detect_min_side": 100,
        "max_upscale": 2.0,
        "min_face": 50,
        "margin": 0.3,
        "size": 96,
        "max_roll_deg": 15.0,
        "scale_factor": 1.2,
        "min_neighbors": 3,
    }
    assert set(changed) | {"version"} == set(face_settings(base))
    folders = {faces_dir(base.model_copy(update={k: v})) for k, v in changed.items()}
    assert len(folders) == len(changed) and faces_dir(base) not in folders
    assert faces_dir(base.model_copy(update={"balance": "downsample"})) == faces_dir(
        base
    )  # not a crop setting


def test_choose_face_rules() -> None:
    assert choose_face([(0, 0, 50, 50)], 40) == ((0, 0, 50, 50), None)
    assert choose_face([(0, 0, 50, 50), (60, 0, 80, 20)], 40) == (
        (0, 0, 50, 50),
        None,
    )  # a small one in the back
    assert choose_face([], 40) == (None, "no face found")


def test_reason_kinds() -> None:
    assert (
        reason_kind("face tilted 27.3° > faces.max_roll_deg=20")
        == "face tilted > faces.max_roll_deg=20"
    )
    assert reason_kind("several faces (2 of at least 40 px)") == "several faces"
    assert reason_kind("face too small (30 px < faces.min_face=40)") == "face too small"
    assert reason_kind("no face found") == "no face found"


def test_balance_weights_by_default_and_downsample() -> None:
    assert FacesConfig().balance == "weights"
    frame = pd.DataFrame({"path": [f"{i}" for i in range(9)], "label": ["a"] * 6 + ["b"] * 3})
    kept, info = balance(frame, "downsample", seed=1)
    assert kept["label"].value_counts().to_dict() == {"a": 3, "b": 3} and info["dropped"] == 3
    assert kept.equals(balance(frame, "downsample", seed=1)[0])  # reproducible
    weighted, info = balance(frame, "weights", seed=1)
    assert len(weighted) == 9 and info["class_weights"] == {"a": 0.75, "b": 1.5}
    assert weighted.groupby("label")["weight"].sum().round(6).tolist() == [4.5, 4.5]
