"""Face detection and landmarks: dlib's HOG detector with its CNN (MMOD) detector as the fallback, or
OpenCV's Haar cascade; dlib's 5-point landmarks for the eye line (roll) and the aligned chip.

The dlib weights ship inside the ``face-recognition-models`` wheel (nothing is downloaded). That
package is located with ``find_spec`` and never imported: its ``__init__`` imports ``pkg_resources``,
which newer setuptools no longer provide. Each model is loaded once per process on first use (never
at import time, so importing this module costs nothing) and kept in a module-level cache.

Only the 5-point landmark model is used: the 68-point model was trained on iBUG 300-W, whose
licence excludes commercial use.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from visionops.core.errors import InputError

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in photo pixels
_CASCADE = "haarcascade_frontalface_default.xml"
_SMALLEST_SEARCHED = (
    20  # faces below min_face are still searched for, to say "too small" not "no face"
)
_WEIGHTS = {
    "cnn": "mmod_human_face_detector.dat",
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "embedding": "dlib_face_recognition_resnet_model_v1.dat",
}
# dlib's Python models hold scratch buffers per object, and the served model may be called from
# several threads: one lock per model keeps calls safe without loading a copy per thread.
_LOCKS = {name: threading.Lock() for name in ("hog", "cnn", "landmarks", "haar", "embedding")}


def models_dir() -> Path:
    """The folder of dlib's weights inside the installed face-recognition-models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "faces.detector=dlib needs the face-recognition-models package (pip install "
            "face-recognition-models==0.3.0): it holds dlib's face weights"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@lru_cache(maxsize=None)
def load_model(name: str) -> Any:
    """One dlib (or OpenCV) model per process: ``hog``, ``cnn``, ``landmarks``, ``embedding``, ``haar``."""
    if name == "haar":
        import cv2

        return cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADE)
    import dlib

    if name == "hog":
        return dlib.get_frontal_face_detector()
    path = models_dir() / _WEIGHTS[name]
    if not path.is_file():
        raise InputError(f"dlib weights missing: {path} (reinstall face-recognition-models==0.3.0)")
    loader = {
        "cnn": dlib.cnn_face_detection_model_v1,
        "landmarks": dlib.shape_predictor,
        "embedding": dlib.face_recognition_model_v1,
    }[name]
    return loader(str(path))


def _call(name: str, *args: Any) -> Any:
    model = load_model(name)
    with _LOCKS[name]:
        return model(*args)


def detect_dlib(
    rgb: np.ndarray,
    upsample: int,
    cnn_fallback: bool,
    cnn_upsample: int,
    max_side: int,
    min_score: float = 0.0,
    min_side: int = 0,
) -> tuple[list[Box], str]:
    """Face boxes from dlib's HOG detector, else from the CNN detector; also which one found them.

    HOG needs some context around a face and misses one that fills the frame; the CNN finds those but
    costs ~20x more, so it runs only on photos where HOG found nothing. Beside HOG's strongest face,
    weaker detections count as faces only from ``min_score``: HOG scores clutter (a badge, a pattern
    on a shirt) at 0.1-0.2 next to real faces at 0.5-1.5, while a lone face in poor light may score
    near 0 and is still kept. Photos larger than ``max_side`` are searched at that size (upsampling a
    12-megapixel photo costs seconds); photos whose shorter side is below ``min_side`` are searched
    enlarged to it, because both detectors have a smallest face (HOG ~80 px, the CNN ~80 px, halved
    by each upsampling) that a face filling a 92x112 photo may not reach. Boxes are mapped back to
    the photo.
    """
    scale = _search_scale(rgb.shape, max_side, min_side)
    small = _resized(rgb, scale)
    hog = load_model("hog")
    with _LOCKS["hog"]:
        rects, scores, _ = hog.run(small, upsample, 0.0)
    ranked = sorted(zip(scores, rects), key=lambda sr: -sr[0])
    found = [
        (r.left(), r.top(), r.right(), r.bottom())
        for i, (score, r) in enumerate(ranked)
        if i == 0 or score >= min_score
    ]
    how = "hog"
    if not found and cnn_fallback:
        found = [
            (m.rect.left(), m.rect.top(), m.rect.right(), m.rect.bottom())
            for m in _call("cnn", small, cnn_upsample)
        ]
        how = "cnn"
    return [tuple(int(round(v / scale)) for v in box) for box in found], how  # type: ignore[misc]


def _search_scale(shape: tuple[int, ...], max_side: int, min_side: int) -> float:
    """The factor a photo is resized by before searching: shrunk to ``max_side``, enlarged to
    ``min_side`` (its shorter side), else 1. Shrinking wins: it bounds the cost."""
    longest, shortest = max(shape[:2]), min(shape[:2])
    if max_side and longest > max_side:
        return max_side / longest
    if min_side and shortest < min_side:
        return min_side / shortest
    return 1.0


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return rgb
    from PIL import Image

    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def detect_haar(
    rgb: np.ndarray, scale_factor: float, min_neighbors: int, min_face: int
) -> list[Box]:
    """Face boxes found by OpenCV's Haar cascade (shipped inside the opencv wheel)."""
    grey = np.asarray(rgb.mean(axis=2), dtype=np.uint8) if rgb.ndim == 3 else rgb
    found = _call_haar(grey, scale_factor, min_neighbors, min(_SMALLEST_SEARCHED, min_face))
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]


def _call_haar(grey: np.ndarray, scale_factor: float, min_neighbors: int, smallest: int) -> Any:
    cascade = load_model("haar")
    with _LOCKS["haar"]:
        return cascade.detectMultiScale(
            grey, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(smallest, smallest)
        )


@dataclass(frozen=True)
class FaceSizeRule:
    """The smallest face kept (``min_side``: the detector box's side in photo pixels), and why.

    ``max_upscale`` set: derived from the chip, which shows the face on about ``chip/(1+2*margin)``
    px; a face is too small when that would enlarge it more than ``max_upscale`` times. Unset: an
    explicit ``faces.min_face``.
    """

    min_side: int
    chip: int = 0
    margin: float = 0.0
    max_upscale: float | None = None

    def too_small(self, side: int) -> str:
        """The rejection reason of a face ``side`` px across, with the setting it broke."""
        if self.max_upscale is None:
            return f"face too small ({side} px < faces.min_face={self.min_side})"
        # Rounded up: a face just past the bound (3.03x) must not read "3.0x > 3".
        factor = math.ceil(10 * self.chip / (1 + 2 * self.margin) / max(side, 1)) / 10
        return (
            f"face too small ({side} px: the {self.chip} px chip would enlarge it "
            f"{factor:.1f}x > faces.max_upscale={self.max_upscale:g})"
        )


def face_size_rule(settings: Mapping[str, Any]) -> FaceSizeRule:
    """The size rule of ``photo_to_face``'s settings: an explicit ``min_face`` wins (as in settings
    stored by models older than ``max_upscale``), else the smallest side the chip (``size``,
    ``margin``) enlarges at most ``max_upscale`` times."""
    if settings.get("min_face") is not None:
        return FaceSizeRule(int(settings["min_face"]))
    chip, margin, max_upscale = settings["size"], settings["margin"], settings["max_upscale"]
    # A side exactly at the bound is kept; the epsilon keeps float error from refusing it.
    smallest = math.ceil(chip / (1 + 2 * margin) / max_upscale - 1e-9)
    return FaceSizeRule(smallest, chip, margin, max_upscale)


def choose_face(boxes: list[Box], min_face: int | FaceSizeRule) -> tuple[Box | None, str | None]:
    """The one face to keep, or why the photo is rejected (no face, several faces, too small).

    Faces smaller than the rule's ``min_side`` beside one large face are people in the background:
    ignored. A plain ``int`` is an explicit ``faces.min_face``.
    """
    rule = min_face if isinstance(min_face, FaceSizeRule) else FaceSizeRule(min_face)
    big = [b for b in boxes if min(b[2] - b[0], b[3] - b[1]) >= rule.min_side]
    if len(big) == 1:
        return big[0], None
    if len(big) > 1:
        return None, f"several faces ({len(big)} of at least {rule.min_side} px)"
    if boxes:
        return None, rule.too_small(max(min(b[2] - b[0], b[3] - b[1]) for b in boxes))
    return None, "no face found"


def landmarks(rgb: np.ndarray, box: Box) -> Any:
    """dlib's 5 landmarks (a ``full_object_detection``) of the face inside ``box``."""
    import dlib

    return _call("landmarks", rgb, dlib.rectangle(*box))


def roll_degrees(shape: Any) -> float:
    """Angle of the line between the eye centres against the horizontal, in degrees (+: clockwise).

    The 5-point model's parts are: 0-1 the corners of the eye on the photo's right, 2-3 those of the
    eye on its left, 4 the bottom of the nose.
    """
    pts = [(p.x, p.y) for p in shape.parts()]
    right = ((pts[0][0] + pts[1][0]) / 2, (pts[0][1] + pts[1][1]) / 2)
    left = ((pts[2][0] + pts[3][0]) / 2, (pts[2][1] + pts[3][1]) / 2)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def face_chip(rgb: np.ndarray, shape: Any, size: int, padding: float) -> np.ndarray:
    """The face rotated eyes-level and scaled as dlib's embedding ResNet expects (``get_face_chip``)."""
    import dlib

    return np.ascontiguousarray(
        dlib.get_face_chip(rgb, shape, size=size, padding=padding), dtype=np.uint8
    )


def embed_chips(chips: list[np.ndarray]) -> np.ndarray:
    """float32 ``(N, 128)``: dlib's face descriptors of 150x150 chips made by ``face_chip`` (one batched call)."""
    model = load_model("embedding")
    with _LOCKS["embedding"]:
        return np.asarray(model.compute_face_descriptor(list(chips)), dtype=np.float32).reshape(
            len(chips), -1
        )
