"""Faces, the way a face service does it: find exactly one face per photo, check it, align it.

Detection (``faces.detector``): dlib's HOG detector, dlib's CNN (MMOD) detector when HOG finds
nothing (faces that fill the frame), or OpenCV's Haar cascade. Then dlib's 5-point landmarks, the
roll angle from the eye line (``faces.max_roll_deg``), and the aligned chip from
``dlib.get_face_chip`` (eyes level, ``faces.size`` square, ``faces.margin`` padding): with the
defaults 150 and 0.25 exactly what dlib's face-embedding ResNet expects.

``photo_to_face`` is the one path from a photo to a chip: ingest calls it through ``crop_faces`` and
the served model calls it with the ``face_settings`` stored beside the model, so training and
serving crop identically. A face rectangle given by the source (URL manifest ``x1,y1,x2,y2``) skips
detection but is still aligned with the landmarks found inside it.

Sunglasses are not filtered: there is no reliable offline detector for them with these models.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from visionops.core.config import FacesConfig
from visionops.core.constants import IMAGE_FORMATS
from visionops.core.errors import InputError
from visionops.core.storage import data_root, fingerprint
from visionops.data.face_detect import (
    Box,
    choose_face,
    detect_dlib,
    detect_haar,
    face_chip,
    face_size_rule,
    landmarks,
    roll_degrees,
)
from visionops.data.ingest import inspect_image

FACE_VERSION = (
    3  # bump when photo_to_face changes its output for the same settings (new crop cache)
)
_PER_PHOTO = (
    "detector",
    "upsample",
    "min_score",
    "cnn_fallback",
    "cnn_upsample",
    "detect_max_side",
    "detect_min_side",
    "max_upscale",
    "min_face",
    "margin",
    "size",
    "max_roll_deg",
    "scale_factor",
    "min_neighbors",
)


def face_settings(cfg: FacesConfig) -> dict[str, Any]:
    """JSON-able settings of ``photo_to_face`` that travel with the model (everything that changes a chip)."""
    return {"version": FACE_VERSION, **cfg.model_dump(include=set(_PER_PHOTO))}


@dataclass(frozen=True)
class FaceResult:
    """The face of one photo: an aligned chip, or the reason the photo is refused."""

    chip: np.ndarray | None  # aligned crop, uint8 (size, size, 3)
    box: tuple[int, int, int, int] | None  # (x1, y1, x2, y2) in the photo
    reason: str | None  # None when exactly one usable face; else why the photo is refused
    roll_deg: float | None = None


def photo_to_face(rgb: np.ndarray, settings: dict[str, Any], box: Box | None = None) -> FaceResult:
    """The aligned face of an RGB uint8 (H, W, 3) photo, or why there is none.

    ``box`` (a rectangle given by the source) replaces detection and the landmarks align the face
    inside it. The source vouches for that face, so its tilt is measured but not refused: landmarks
    on whatever a rectangle holds always give some angle, and a wrong one would drop a good photo.
    Refused: no face, several faces, a face too small for the chip (``max_upscale``, or under an
    explicit ``min_face``), a detected face tilted past ``max_roll_deg``. Settings stored by older
    models (``min_face``, no ``detect_min_side``) crop as they did when the model was trained.
    """
    rgb = _as_rgb(rgb)
    rule = face_size_rule(settings)
    if box is not None:
        boxes = [box]
    elif settings["detector"] == "haar":
        boxes = detect_haar(rgb, settings["scale_factor"], settings["min_neighbors"], rule.min_side)
    else:
        boxes, _ = detect_dlib(
            rgb,
            settings["upsample"],
            settings["cnn_fallback"],
            settings["cnn_upsample"],
            settings["detect_max_side"],
            settings["min_score"],
            settings.get("detect_min_side", 0),
        )
    face, reason = choose_face(boxes, rule)
    if face is None:
        return FaceResult(None, None, reason)
    shape = landmarks(rgb, face)
    roll = round(roll_degrees(shape), 1)
    clipped = _clip(face, rgb.shape)
    if box is None and abs(roll) > settings["max_roll_deg"]:
        return FaceResult(
            None,
            clipped,
            f"face tilted {abs(roll):.1f}° > faces.max_roll_deg={_num(settings['max_roll_deg'])}",
            roll,
        )
    return FaceResult(
        face_chip(rgb, shape, settings["size"], settings["margin"]), clipped, None, roll
    )


def reason_kind(reason: str) -> str:
    """A rejection reason without its measurement, for counting reasons per class."""
    if reason.startswith("face tilted"):
        return "face tilted > " + reason.split("> ", 1)[1]
    return re.sub(r" \(.*\)$", "", reason)


def faces_dir(cfg: FacesConfig) -> Path:
    """Crops are content-addressed under the data root, one folder per crop configuration."""
    key = fingerprint(face_settings(cfg))
    return Path(data_root().removeprefix("file://")) / "faces" / key[:16]


def crop_faces(
    manifest: pd.DataFrame, out_dir: Path, cfg: FacesConfig, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Manifest of the face chips (``source_path`` names the photo) and a report of rejected photos.

    Each photo's result is cached in ``out_dir`` by file hash (and given box), so a photo seen before
    with the same settings is neither decoded nor searched again. Undecodable rows are passed through
    unchanged, so validation still names them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = face_settings(cfg)
    rows, rejected, cached = [], [], 0
    per_class: dict[str, dict[str, Any]] = {}
    for rec in manifest.to_dict("records"):
        label = str(rec.get("label"))
        stats = per_class.setdefault(label, {"photos": 0, "kept": 0, "lost": Counter()})
        stats["photos"] += 1
        if not pd.isna(rec.get("decode_error")) and rec.get("decode_error"):
            rows.append({**rec, "source_path": rec["path"]})
            stats["kept"] += 1
            continue
        given = _parse_box(rec.get("box"))
        result, hit = _cached_face(rec, given, out_dir, settings)
        cached += hit
        if result["reason"]:
            rejected.append(
                {
                    "path": rec["path"],
                    "label": rec.get("label"),
                    "reason": result["reason"],
                    "roll_deg": result["roll_deg"],
                }
            )
            stats["lost"][reason_kind(result["reason"])] += 1
            continue
        stats["kept"] += 1
        crop = inspect_image(result["chip"])
        rows.append(
            {
                **rec,
                **crop,
                "path": result["chip"],
                "source_path": rec["path"],
                "roll_deg": result["roll_deg"],
            }
        )
    frame = pd.DataFrame(rows, columns=[*manifest.columns, "source_path", "roll_deg"])
    report: dict[str, Any] = {
        "photos": len(manifest),
        "faces": len(frame),
        "cached": cached,
        "settings": settings,
        "rejected": rejected,
        "per_class": {k: {**v, "lost": dict(v["lost"])} for k, v in sorted(per_class.items())},
    }
    frame, report["balance"] = balance(frame, cfg.balance, seed)
    return frame.reset_index(drop=True), report


def _cached_face(
    rec: dict[str, Any], given: Box | None, out_dir: Path, settings: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """``photo_to_face`` of one manifest row, through the per-photo cache (result JSON + chip PNG)."""
    stem = rec["sha256"][:32] + ("_" + "_".join(map(str, given)) if given else "")
    meta_file, chip_file = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    if meta_file.is_file():  # written after the chip: its presence means the chip is complete
        return json.loads(meta_file.read_text()), True
    with Image.open(rec["path"], formats=IMAGE_FORMATS) as img:
        rgb = np.asarray(img.convert("RGB"))
    face = photo_to_face(rgb, settings, box=given)
    result = {
        "reason": face.reason,
        "box": list(face.box) if face.box else None,
        "roll_deg": face.roll_deg,
        "chip": str(chip_file) if face.chip is not None else None,
    }
    # Written under names of this process and renamed: a crash leaves no half file, and two workers
    # cropping the same photo at once each rename a complete file of the same content.
    part = f".{os.getpid()}-{threading.get_ident()}.part"
    if face.chip is not None:
        tmp = chip_file.with_name(chip_file.name + part)
        Image.fromarray(face.chip).save(tmp, format="PNG")
        tmp.replace(chip_file)
    tmp_meta = meta_file.with_name(meta_file.name + part)
    tmp_meta.write_text(json.dumps(result))
    tmp_meta.replace(meta_file)
    return result, False


def balance(frame: pd.DataFrame, how: str, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``weights``: a ``weight`` column (inverse class frequency) for weighted sampling, nothing thrown
    away; ``downsample``: every class cut to the smallest (the old face service); ``none``: unchanged."""
    labels = frame["label"].astype(str)
    counts = labels.value_counts()
    if how == "none" or frame.empty:
        return frame, {"method": how}
    if how == "weights":
        frame = frame.assign(weight=(len(frame) / (len(counts) * labels.map(counts))).to_numpy())
        return frame, {
            "method": how,
            "class_weights": {
                k: round(len(frame) / (len(counts) * v), 4) for k, v in counts.items()
            },
        }
    smallest = int(counts.min())
    kept = frame.groupby(labels, group_keys=False).sample(n=smallest, random_state=seed)
    kept = frame.loc[sorted(kept.index)]
    return kept, {"method": how, "per_class": smallest, "dropped": int(len(frame) - len(kept))}


def _as_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]  # RGBA: the alpha channel says nothing about faces
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(
            f"photo_to_face needs an RGB uint8 (H, W, 3) array, got {img.dtype} {img.shape}"
        )
    return np.ascontiguousarray(img)  # dlib reads the buffer directly


def _clip(box: Box, shape: tuple[int, ...]) -> Box:
    h, w = shape[:2]
    return max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])


def _num(value: float) -> str:
    return f"{value:g}"


def _parse_box(value: Any) -> Box | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    return tuple(int(v) for v in str(value).split(","))  # type: ignore[return-value]
