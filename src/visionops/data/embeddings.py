"""Frozen face embeddings: dlib's face-recognition ResNet on aligned 150x150 chips, 128-d per face.

Computed once per preprocessed image and stored as a fingerprinted ``features`` output of the run
(keyed on the preprocess fingerprint), so a second run on the same data, every tuning trial and the
train stage reuse them. The served ``face_embedding`` model computes the same embedding in
``predict`` (``embed_chips``), so what was trained on is what is served.
"""

from __future__ import annotations

import json
import logging
import shutil
from typing import Any

import numpy as np

log = logging.getLogger("visionops")

ENCODER = "dlib_face_v1"
EMBEDDING_DIM = 128
CHIP_SIZE = 150  # what dlib.get_face_chip produces and the ResNet was trained on
FEATURES_STAGE = "features"
FEATURES_VERSION = "1"
_BATCH = 64


def as_chips(x: np.ndarray) -> np.ndarray:
    """uint8 chips as dlib wants them, ``(N, 150, 150, 3)`` contiguous; accepts the ``(N, 3, H, W)`` layout too."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
        x = x.transpose(0, 2, 3, 1)
    if x.ndim != 4 or x.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or x.dtype != np.uint8:
        raise ValueError(
            f"face embeddings need aligned uint8 RGB chips of {CHIP_SIZE}x{CHIP_SIZE} "
            f"(data.image_size: {CHIP_SIZE}, data.channels: 3, faces.enabled: true), "
            f"got {x.dtype} {x.shape}"
        )
    return np.ascontiguousarray(x)


def embed_chips(x: np.ndarray) -> np.ndarray:
    """float32 ``(N, 128)`` embeddings of aligned chips ``(N, 150, 150, 3)`` or ``(N, 3, 150, 150)``."""
    chips = as_chips(x)
    out = np.zeros((len(chips), EMBEDDING_DIM), np.float32)
    from visionops.data.face_detect import embed_chips as dlib_embed

    for start in range(0, len(chips), _BATCH):
        out[start : start + _BATCH] = dlib_embed(list(chips[start : start + _BATCH]))
    return out


def features_fingerprint(preprocess_fingerprint: str) -> str:
    from visionops.core.storage import fingerprint

    return fingerprint(FEATURES_STAGE, FEATURES_VERSION, ENCODER, preprocess_fingerprint)


def ensure_features(store: Any, preprocessed: Any) -> Any:
    """The ``features`` output for a preprocess output: found (this run or an earlier one) or computed.

    Holds ``{split}_x.npy`` float32 ``(N, 128)``, ``{split}_y.npy``, ``label_map.json`` and
    ``stats.json`` (the preprocess folder's), so the trainer loads it like a preprocess output.
    """
    from visionops.data.preprocess import SPLITS

    fp = features_fingerprint(preprocessed.fingerprint)
    found = store.find(FEATURES_STAGE, fp)
    if found is not None:
        log.info("features: reusing %s", found.uri)
        return found
    folder = preprocessed.local_path()
    with store.writing(FEATURES_STAGE, fp) as pending:
        counts = {}
        for split in SPLITS:
            x = np.load(folder / f"{split}_x.npy", mmap_mode="r")
            np.save(pending.path / f"{split}_x.npy", embed_chips(x))
            shutil.copy(folder / f"{split}_y.npy", pending.path / f"{split}_y.npy")
            counts[split] = int(len(x))
        for name in ("label_map.json", "stats.json"):
            shutil.copy(folder / name, pending.path / name)
        pending.meta = {
            "encoder": ENCODER,
            "dim": EMBEDDING_DIM,
            "counts": counts,
            "preprocess_fingerprint": preprocessed.fingerprint,
        }
        (pending.path / "features.json").write_text(json.dumps(pending.meta, indent=2))
    log.info("features: %s embeddings of %s images", ENCODER, counts)
    return pending.output
