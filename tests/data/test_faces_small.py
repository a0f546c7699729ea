"""Small photos with the face filling the frame (the AT&T/ORL layout: 92x112 grey photos), and the
"face too small" rule tied to the chip (``faces.max_upscale``) instead of a pixel count.

The small photos are made from the Yale face database: each photo cropped around its face (the box
dlib finds in the full photo, widened to ORL's 92:112 aspect) and shrunk to 92x112. The Yale tests
skip when the data set is absent (it is not shipped; expected at ../shared/datasets/yalefaces), and
fail there when VISIONOPS_REQUIRE_SHARED=1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from testkit import YALE, needs_shared
from visionops.core.config import FacesConfig, load_config
from visionops.data.face_detect import choose_face, face_size_rule
from visionops.data.faces import face_settings, photo_to_face

REPO = Path(__file__).resolve().parents[2]
needs_yale = needs_shared(YALE)
FACES_YAML = REPO / "conf" / "faces.yaml"
ORL = (92, 112)  # width, height of an AT&T/ORL photo
# Settings as models stored them before faces.max_upscale and faces.detect_min_side existed.
OLD_SETTINGS = {
    "version": 2,
    "detector": "dlib",
    "upsample": 1,
    "min_score": 0.5,
    "cnn_fallback": True,
    "cnn_upsample": 0,
    "detect_max_side": 1600,
    "min_face": 40,
    "margin": 0.25,
    "size": 150,
    "max_roll_deg": 20.0,
    "scale_factor": 1.1,
    "min_neighbors": 5,
}


@pytest.fixture(scope="module")
def settings() -> dict:
    return face_settings(load_config(FACES_YAML).faces)


@pytest.fixture(scope="module")
def yale(settings: dict) -> list[tuple[str, str, np.ndarray, tuple[int, int, int, int]]]:
    """(person, photo name, RGB photo, face box found in the full photo) of every Yale photo."""
    photos = []
    for rec in pd.read_csv(YALE / "labels.csv").to_dict("records"):
        with Image.open(YALE / rec["path"]) as img:
            rgb = np.asarray(img.convert("RGB"))
        face = photo_to_face(rgb, settings)
        assert face.box is not None, (rec["path"], face.reason)  # test_faces_yale checks all
        photos.append((rec["label"], Path(rec["path"]).stem, rgb, face.box))
    return photos


def orl_crop(rgb: np.ndarray, box: tuple[int, int, int, int], fill: float) -> np.ndarray:
    """The photo cut around ``box`` so the box spans ``fill`` of the width, at ORL's aspect, and
    shrunk to 92x112 (edge-replicated where the cut leaves the photo)."""
    x1, y1, x2, y2 = box
    width = (x2 - x1) / fill
    height = width * ORL[1] / ORL[0]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    pad = int(max(width, height))  # the cut may reach past the photo's edge
    padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    left, top = round(cx - width / 2) + pad, round(cy - height / 2) + pad
    cut = Image.fromarray(padded).crop((left, top, left + round(width), top + round(height)))
    return np.asarray(cut.resize(ORL, Image.Resampling.LANCZOS))


# fill: the share of the photo's width the dlib box of the face spans. At 0.5 the face (hair, ears
# and chin beside the box) fills most of a 92x112 frame, as in ORL; at 0.65 the frame cuts the
# forehead and chin. With the settings before detect_min_side and max_upscale, Yale lost 4 of its
# 164 photos at 0.5 (3 side-lit "no face found", one "face too small (36 px < faces.min_face=40)")
# and 1 at 0.65 (side-lit, "no face found").
@needs_yale
@pytest.mark.parametrize("fill", [0.5, 0.65])
def test_every_person_keeps_every_photo_at_92x112(yale: list, settings: dict, fill: float) -> None:
    kept: dict[str, int] = {}
    lost = []
    for person, name, rgb, box in yale:
        small = orl_crop(rgb, box, fill)
        face = photo_to_face(small, settings)
        if face.reason is not None:
            lost.append(f"{person}/{name}: {face.reason}")
            continue
        kept[person] = kept.get(person, 0) + 1
        x1, y1, x2, y2 = face.box
        # The face found is the one the photo was cut around: centred, and most of the frame wide.
        assert abs((x1 + x2) / 2 - ORL[0] / 2) < 15 and abs((y1 + y2) / 2 - ORL[1] / 2) < 20
        assert face.chip.shape == (150, 150, 3)
    # Every Yale photo is a frontal face a person would call usable (the side-lit ones included).
    assert lost == [], lost
    assert kept == {p: sum(1 for q, *_ in yale if q == p) for p, *_ in yale}


@needs_yale
def test_face_too_small_for_the_chip_found_and_refused(yale: list, settings: dict) -> None:
    """A small photo is searched enlarged, so a ~25 px face is found and refused as too small, and
    the reason says how much the chip would enlarge it."""
    person, name, rgb, box = yale[0]
    share = 25 / (box[2] - box[0])  # the face box becomes ~25 px: under the 34 px bound
    tiny = Image.fromarray(rgb).resize((round(320 * share), round(243 * share)))
    face = photo_to_face(np.asarray(tiny), settings)
    assert face.chip is None and face.reason is not None
    side = int(face.reason.split("(")[1].split(" px")[0])
    assert 20 <= side < 34, face.reason
    assert face.reason.endswith(
        f" px: the 150 px chip would enlarge it {np.ceil(1000 / side) / 10:.1f}x > "
        "faces.max_upscale=3)"
    )


@needs_yale
def test_old_settings_still_crop_as_before(yale: list, settings: dict) -> None:
    """A model stored with the old settings (min_face, no max_upscale) still crops; a full-size
    photo (not enlarged by either) gives the same face box and chip."""
    _, _, rgb, box = yale[1]
    old = photo_to_face(rgb, OLD_SETTINGS)
    new = photo_to_face(rgb, settings)
    assert old.reason is None and old.box == new.box == box
    assert np.array_equal(old.chip, new.chip)


def test_too_small_reason_names_the_chip_rule_or_the_explicit_setting() -> None:
    blank = np.zeros((240, 320, 3), np.uint8)  # a given rectangle skips detection
    new = face_settings(FacesConfig())
    assert face_size_rule(new).min_side == 34  # 150 / 1.5 / 3 = 33.3: 34 px and larger kept
    refused = photo_to_face(blank, new, box=(100, 100, 118, 118))
    assert refused == refused.__class__(
        None,
        None,
        "face too small (18 px: the 150 px chip would enlarge it 5.6x > faces.max_upscale=3)",
    )
    # The rule follows the chip: a 48 px chip shows the face on 32 px, so 11 px suffice.
    assert face_size_rule(face_settings(FacesConfig(size=48))).min_side == 11
    assert choose_face([(0, 0, 33, 33)], face_size_rule(new))[1] == (
        "face too small (33 px: the 150 px chip would enlarge it 3.1x > faces.max_upscale=3)"
    )
    # An explicit min_face (YAML written before max_upscale) and old models' settings keep the
    # fixed rule and its reason.
    explicit = face_settings(FacesConfig(min_face=40))
    for old in (explicit, OLD_SETTINGS):
        assert photo_to_face(blank, old, box=(100, 100, 130, 130)).reason == (
            "face too small (30 px < faces.min_face=40)"
        )


def test_search_sides_must_not_cross() -> None:
    with pytest.raises(ValueError, match=r"faces.detect_min_side \(2000\) must not exceed"):
        FacesConfig(detect_min_side=2000)
    assert FacesConfig(detect_min_side=2000, detect_max_side=0).detect_min_side == 2000
