"""Faces: Haar-cascade detection, crop and rejection, on a face composed from a real photograph.

Haar cascades find drawn faces poorly, so the faces here come from scikit-image's astronaut photo
(shipped inside the scikit-image package, nothing downloaded) and compositions of it: two copies
side by side (several faces), a shrunken copy (too small), a blank canvas (no face).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from visionops.config import FacesConfig
from visionops.data.faces import balance, choose_face, crop_faces, crop_square
from visionops.data.ingest import build_manifest
from visionops.data.sources import Item

data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def _photos(tmp_path: Path, astronaut: Image.Image) -> dict[str, Item]:
    canvas = Image.new("RGB", (1024, 512))
    canvas.paste(astronaut, (0, 0))
    canvas.paste(astronaut, (512, 0))
    photos = {
        "one": astronaut,
        "two": canvas,
        "small": astronaut.resize((128, 128)),
        "none": Image.new("RGB", (300, 300), (120, 140, 160)),
        "given": Image.new("RGB", (300, 300), (10, 200, 30)),  # no face, but the source gives a rectangle
    }
    items = {}
    for name, image in photos.items():
        path = tmp_path / "photos" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=92)
        items[name] = Item(str(path), "eileen", (50, 60, 150, 160) if name == "given" else None)
    return items


def test_crop_and_rejections(tmp_path: Path, astronaut: Image.Image) -> None:
    items = _photos(tmp_path, astronaut)
    cfg = FacesConfig(enabled=True, min_face=40, margin=0.2, size=96, balance="none")
    crops, report = crop_faces(build_manifest(list(items.values())), tmp_path / "faces", cfg)

    reasons = {Path(r["path"]).stem: r["reason"] for r in report["rejected"]}
    assert reasons["two"] == "several faces (2 of at least 40 px)"
    assert reasons["small"].startswith("face too small (") and "< faces.min_face=40" in reasons["small"]
    assert reasons["none"] == "no face found"
    assert set(crops["source_path"]) == {items["one"].path, items["given"].path}
    assert report == {**report, "photos": 5, "faces": 2}
    for path in crops["path"]:
        with Image.open(path) as img:
            assert img.size == (96, 96)
        assert Path(path).is_relative_to(tmp_path / "faces")
    given = crops.set_index("source_path").loc[items["given"].path]
    assert given["mean_intensity"] > 0 and given["box"] == "50,60,150,160"
    # The astronaut's face (roughly x 177-272, y 66-161 in the photo) is what was kept: skin tones, not
    # the dark space suit or background.
    face = np.asarray(Image.open(crops.set_index("source_path").loc[items["one"].path, "path"]))
    red, blue = face[24:72, 24:72, 0].mean(), face[24:72, 24:72, 2].mean()
    assert red > blue + 20


def test_crop_square_adds_margin_and_clips() -> None:
    img = Image.fromarray(np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8))
    out = crop_square(img.convert("RGB"), (40, 40, 60, 60), margin=0.5, size=16)
    assert out.size == (16, 16)
    edge = crop_square(img.convert("RGB"), (0, 0, 20, 20), margin=0.5, size=8)  # clipped at the border
    assert edge.size == (8, 8)


def test_choose_face_rules() -> None:
    assert choose_face([(0, 0, 50, 50)], 40) == ((0, 0, 50, 50), None)
    assert choose_face([(0, 0, 50, 50), (60, 0, 80, 20)], 40) == ((0, 0, 50, 50), None)  # a small one in the back
    assert choose_face([], 40) == (None, "no face found")


def test_balance_downsample_and_weights() -> None:
    frame = pd.DataFrame({"path": [f"{i}" for i in range(9)], "label": ["a"] * 6 + ["b"] * 3})
    kept, info = balance(frame, "downsample", seed=1)
    assert kept["label"].value_counts().to_dict() == {"a": 3, "b": 3} and info["dropped"] == 3
    assert kept.equals(balance(frame, "downsample", seed=1)[0])  # reproducible
    weighted, info = balance(frame, "weights", seed=1)
    assert len(weighted) == 9 and info["class_weights"] == {"a": 0.75, "b": 1.5}
    assert weighted.groupby("label")["weight"].sum().round(6).tolist() == [4.5, 4.5]
