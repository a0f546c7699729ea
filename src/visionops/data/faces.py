"""Faces: keep photos with exactly one face of at least ``faces.min_face`` pixels, crop it with a
margin, resize to ``faces.size``. OpenCV's Haar cascade ships inside the opencv-python-headless wheel
(``cv2.data.haarcascades``), so nothing is downloaded. A face rectangle given by the source (URL
manifest ``x1,y1,x2,y2``) is used instead of detection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from visionops.config import FacesConfig
from visionops.data.ingest import inspect_image
from visionops.storage import data_root, fingerprint

_CASCADE = "haarcascade_frontalface_default.xml"
_SMALLEST_SEARCHED = 20  # faces below min_face are still searched for, to say "too small" not "no face"


def faces_dir(cfg: FacesConfig) -> Path:
    """Crops are content-addressed under the data root, one folder per crop configuration."""
    key = fingerprint(cfg.model_dump(include={"min_face", "margin", "size", "scale_factor", "min_neighbors"}))
    return Path(data_root().removeprefix("file://")) / "faces" / key[:16]


def detect(grey: np.ndarray, cfg: FacesConfig) -> list[tuple[int, int, int, int]]:
    """Face rectangles ``(x1, y1, x2, y2)`` found by the Haar cascade in a uint8 grey image."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADE)
    found = cascade.detectMultiScale(grey, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors,
                                     minSize=(min(_SMALLEST_SEARCHED, cfg.min_face),) * 2)
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]


def choose_face(boxes: list[tuple[int, int, int, int]], min_face: int) -> tuple[tuple | None, str | None]:
    """The one face to keep, or why the photo is rejected (no face, several faces, too small)."""
    big = [b for b in boxes if min(b[2] - b[0], b[3] - b[1]) >= min_face]
    if len(big) == 1:
        return big[0], None
    if len(big) > 1:
        return None, f"several faces ({len(big)} of at least {min_face} px)"
    if boxes:
        side = max(min(b[2] - b[0], b[3] - b[1]) for b in boxes)
        return None, f"face too small ({side} px < faces.min_face={min_face})"
    return None, "no face found"


def crop_square(image: Image.Image, box: tuple[int, int, int, int], margin: float, size: int) -> Image.Image:
    """A square around the face's centre, ``margin`` of its side added on each side, clipped, resized."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left, top = max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2)))
    right, bottom = min(image.width, int(round(cx + side / 2))), min(image.height, int(round(cy + side / 2)))
    return image.crop((left, top, right, bottom)).resize((size, size), Image.Resampling.BILINEAR)


def _parse_box(value: Any) -> tuple[int, int, int, int] | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    return tuple(int(v) for v in str(value).split(","))  # type: ignore[return-value]


def crop_faces(manifest: pd.DataFrame, out_dir: Path, cfg: FacesConfig,
               seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Manifest of the face crops (``source_path`` names the photo) and a report of rejected photos.

    Undecodable rows are passed through unchanged, so validation still names them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, rejected = [], []
    for rec in manifest.to_dict("records"):
        if not pd.isna(rec.get("decode_error")) and rec.get("decode_error"):
            rows.append({**rec, "source_path": rec["path"]})
            continue
        with Image.open(rec["path"]) as img:
            rgb = img.convert("RGB")
        given = _parse_box(rec.get("box"))
        boxes = [given] if given else detect(np.asarray(rgb.convert("L")), cfg)
        box, reason = choose_face(boxes, cfg.min_face)
        if reason:
            rejected.append({"path": rec["path"], "label": rec.get("label"), "reason": reason})
            continue
        target = out_dir / f"{rec['sha256'][:24]}_{'_'.join(map(str, box))}.png"
        if not target.exists():
            tmp = target.with_name(target.name + ".part.png")
            crop_square(rgb, box, cfg.margin, cfg.size).save(tmp)
            tmp.replace(target)
        crop = inspect_image(str(target))
        rows.append({**rec, **crop, "path": str(target), "source_path": rec["path"]})
    frame = pd.DataFrame(rows, columns=[*manifest.columns, "source_path"])
    report: dict[str, Any] = {"photos": len(manifest), "faces": len(frame), "rejected": rejected}
    frame, report["balance"] = balance(frame, cfg.balance, seed)
    return frame.reset_index(drop=True), report


def balance(frame: pd.DataFrame, how: str, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``downsample``: every class cut to the smallest (as the face service did); ``weights``: a
    ``weight`` column (inverse class frequency) for weighted sampling; ``none``: unchanged."""
    labels = frame["label"].astype(str)
    counts = labels.value_counts()
    if how == "none" or frame.empty:
        return frame, {"method": how}
    if how == "weights":
        frame = frame.assign(weight=(len(frame) / (len(counts) * labels.map(counts))).to_numpy())
        return frame, {"method": how, "class_weights": {k: round(len(frame) / (len(counts) * v), 4)
                                                        for k, v in counts.items()}}
    smallest = int(counts.min())
    kept = frame.groupby(labels, group_keys=False).sample(n=smallest, random_state=seed)
    kept = frame.loc[sorted(kept.index)]
    return kept, {"method": how, "per_class": smallest, "dropped": int(len(frame) - len(kept))}
