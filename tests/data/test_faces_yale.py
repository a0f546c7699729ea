"""Faces on real photographs: the Yale face database (15 people, 164 grey 320x243 photos).

Skipped when the data set is absent (it is not shipped; expected at ../shared/datasets/yalefaces),
failed there when VISIONOPS_REQUIRE_SHARED=1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from testkit import YALE, needs_shared
from visionops.core.config import FacesConfig, load_config
from visionops.data.face_detect import detect_dlib, landmarks, roll_degrees
from visionops.data.faces import crop_faces, face_settings, faces_dir, photo_to_face
from visionops.data.ingest import build_manifest, list_items
from visionops.data.validate import DataValidationError
from visionops.pipeline import stages as pipeline

REPO = Path(__file__).resolve().parents[2]
pytestmark = needs_shared(YALE)
FACES_YAML = REPO / "conf" / "faces.yaml"


@pytest.fixture(scope="module")
def settings() -> dict:
    return face_settings(load_config(FACES_YAML).faces)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(YALE / "images" / "subject01" / "glasses.png") as img:
        return img.convert("RGB")


def test_dlib_finds_exactly_one_face_in_every_yale_photo(tmp_path: Path) -> None:
    cfg = load_config(FACES_YAML, {"data.path": str(YALE / "labels.csv")})
    manifest = build_manifest(list_items(cfg.data))
    crops, report = crop_faces(manifest, faces_dir(cfg.faces), cfg.faces)
    assert report["rejected"] == [] and len(crops) == len(manifest) == 164
    assert (
        set(crops["width"]) == {150}
        and set(crops["height"]) == {150}
        and set(crops["mode"]) == {"RGB"}
    )
    assert crops["roll_deg"].abs().max() <= 20
    assert report["balance"]["method"] == "weights" and "weight" in crops
    again, report2 = crop_faces(
        manifest, faces_dir(cfg.faces), cfg.faces
    )  # the crop cache: nothing re-detected
    assert report2["cached"] == 164 and again["path"].tolist() == crops["path"].tolist()


def test_face_filling_the_frame_and_small_face_in_a_large_photo(
    photo: Image.Image, settings: dict
) -> None:
    whole = photo_to_face(np.asarray(photo), settings)
    assert whole.reason is None
    x1, y1, x2, y2 = whole.box
    cut = (
        x2 - x1
    ) // 5  # tighter than the detector's own box: HOG misses it, the CNN fallback finds it
    tight = np.asarray(photo)[y1 + cut : y2 - cut, x1 + cut : x2 - cut]
    assert detect_dlib(tight, 1, True, 0, 1600, 0.5)[1] == "cnn"
    found = photo_to_face(tight, settings)
    assert found.reason is None and found.chip.shape == (150, 150, 3)
    assert found.box[2] - found.box[0] >= 0.8 * tight.shape[1]  # the face is the frame

    canvas = Image.new("RGB", (1600, 1200), (90, 90, 90))
    canvas.paste(photo.resize((160, 121)), (700, 500))  # a ~65 px face in a 2-megapixel photo
    small = photo_to_face(np.asarray(canvas), settings)
    assert small.reason is None and small.chip.shape == (150, 150, 3)
    bx1, by1, bx2, by2 = small.box
    assert 700 < bx1 < bx2 < 860 and 500 < by1 < by2 < 621


def test_tilted_face_rejected_and_slight_tilt_aligned(photo: Image.Image, settings: dict) -> None:
    tilted = photo_to_face(
        np.asarray(photo.rotate(30, resample=Image.Resampling.BILINEAR)), settings
    )
    assert tilted.chip is None and tilted.reason is not None
    assert 25 < abs(tilted.roll_deg) < 35
    assert tilted.reason == f"face tilted {abs(tilted.roll_deg):.1f}° > faces.max_roll_deg=20"

    slight = photo_to_face(
        np.asarray(photo.rotate(10, resample=Image.Resampling.BILINEAR)), settings
    )
    assert slight.reason is None and 7 < abs(slight.roll_deg) < 13
    # On the chip, the eyes are level: measured with the landmarks of the face filling the chip.
    chip_roll = roll_degrees(landmarks(slight.chip, (0, 0, 150, 150)))
    assert abs(chip_roll) < 2.5, chip_roll


def test_two_faces_and_blank(photo: Image.Image, settings: dict) -> None:
    pair = Image.new("RGB", (640, 243))
    pair.paste(photo, (0, 0))
    pair.paste(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (320, 0))
    assert photo_to_face(np.asarray(pair), settings).reason == "several faces (2 of at least 34 px)"
    blank = photo_to_face(np.full((243, 320, 3), 128, np.uint8), settings)
    assert blank == blank.__class__(None, None, "no face found")


def test_haar_still_an_option(photo: Image.Image) -> None:
    face = photo_to_face(np.asarray(photo), face_settings(FacesConfig(detector="haar")))
    assert face.reason is None and face.chip.shape == (150, 150, 3)


@pytest.mark.integration  # the ingest, validate and preprocess stages, on an MLflow store
def test_a_person_left_too_small_is_dropped_or_stops_the_run_per_policy(
    tmp_path: Path, store: Path
) -> None:
    """Three people; five of subject03's photos tilted 30 degrees. Ingest keeps going and records
    why; validate drops subject03 (6 usable, 8 needed) with a line naming the reasons, and stops
    the run because one person of three is over validate.max_dropped_class_fraction; allowing a
    third, the run goes on without subject03 in any split; asking for 6, nobody is dropped and the
    first run's ingest output is reused."""
    rows = ["path,label"]
    for person in ("subject02", "subject03", "subject04"):
        for i, src in enumerate(sorted((YALE / "images" / person).glob("*.png"))):
            target = tmp_path / "photos" / person / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if person == "subject03" and i < 5:
                with Image.open(src) as img:
                    img.rotate(30, resample=Image.Resampling.BILINEAR).save(target)
            else:
                shutil.copy(src, target)
            rows.append(f"{person}/{src.name},{person}")
    (tmp_path / "photos" / "labels.csv").write_text("\n".join(rows) + "\n")

    def run(name: str, minimum: int, max_dropped: float = 0.2) -> dict:
        params = {
            "config": str(FACES_YAML),
            "overrides": {
                "data.path": str(tmp_path / "photos" / "labels.csv"),
                "validate.min_images_per_class": minimum,
                "validate.max_dropped_class_fraction": max_dropped,
            },
        }
        return pipeline.start(params, dag_id="faces_tests", airflow_run_id=name)

    why = (
        "subject03: 6 usable of 11 photos (5 face tilted > faces.max_roll_deg=20); "
        "needs validate.min_images_per_class=8"
    )
    first = run("first", 8)
    ingested = pipeline.ingest(first)
    with pytest.raises(DataValidationError) as err:
        pipeline.validate(first, ingested)
    assert why in str(err.value) and "validate.max_dropped_class_fraction=0.2" in str(err.value)

    second = run("second", 8, max_dropped=0.34)
    ingested = pipeline.ingest(second)
    assert ingested["reused"]  # same photos, same crop settings: the first run's output
    validated = pipeline.validate(second, ingested)
    assert validated["statistics"]["dropped_classes"] == {"subject03": why}
    assert any(why in w for w in validated["warnings"])
    splits = pd.read_parquet(Path(pipeline.preprocess(second, ingested)["uri"]) / "splits.parquet")
    assert set(splits["label"]) == {"subject02", "subject04"}

    third = run("third", 6)
    ingested = pipeline.ingest(third)
    assert pipeline.validate(third, ingested)["statistics"]["dropped_classes"] == {}
    folder = Path(ingested["uri"])
    report = json.loads((folder / "ingest_report.json").read_text())["faces"]
    assert len(report["rejected"]) == 5 and all(
        "face tilted" in r["reason"] for r in report["rejected"]
    )
    assert {Path(r["path"]).parent.name for r in report["rejected"]} == {"subject03"}
    crops = pd.read_parquet(folder / "manifest.parquet")
    assert len(crops) == 28 and crops["label"].value_counts()["subject03"] == 6
