"""What travels with a trained model besides the network: the unknown threshold, enrolled embeddings,
face settings (see ``visionops.serving.model`` for how ``predict`` uses them)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from visionops.core.config import PipelineConfig
from visionops.data.preprocess import Split
from visionops.serving.tta import predict_proba
from visionops.serving.unknown import choose_threshold, distance_scores

log = logging.getLogger("visionops")


def split_probabilities(
    model: torch.nn.Module, split: Split, tta: list[str], batch_size: int = 256
) -> np.ndarray:
    """Class probabilities ``(N, C)`` of a split's images as the served model computes them (TTA)."""
    model = model.cpu().eval()
    parts = [
        predict_proba(model, torch.from_numpy(np.array(split.x[s : s + batch_size])), tta).numpy()
        for s in range(0, len(split.y), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def face_settings_for(cfg: PipelineConfig) -> dict[str, Any] | None:
    """The face settings a photo needs to become a chip like the training chips (None without faces)."""
    if not cfg.faces.enabled:
        return None
    from visionops.data.faces import face_settings

    return face_settings(cfg.faces)


def served_extras(
    cfg: PipelineConfig,
    model: torch.nn.Module,
    train: Split,
    val: Split,
    encoder: str | None,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``log_classifier`` keyword arguments beyond the network: unknown threshold, enrolled set, faces.

    ``train`` and ``val`` are what the model trained on (embeddings for an encoder model).
    ``held_out`` is ``(probabilities, labels)`` of images the model did not train on, for a
    probability threshold (an ensemble's out-of-fold probabilities: every image, each scored by
    the member that did not see it); None: the model's probabilities of ``val``. A distance
    threshold (encoder models) does not depend on the network and always comes from train and val.
    """
    s = cfg.serving
    extras: dict[str, Any] = {"faces": face_settings_for(cfg), "encoder": encoder}
    if encoder is not None:
        tx, ty = np.asarray(train.x, np.float32), np.asarray(train.y)
        vx, vy = np.asarray(val.x, np.float32), np.asarray(val.y)
        scores = distance_scores(tx, ty, vx, vy)
        # Validation faces are enrolled too once the threshold is chosen: more views of each person.
        extras["enrolled"] = np.concatenate([tx, vx])
        extras["network_example"] = vx[:2] if len(vx) else tx[:2]
        kind = "distance"
    elif s.unknown_threshold != "auto":  # off, or a fixed number: nothing to measure
        scores, kind = None, "probability"
    else:
        if held_out is None:
            probs, y = split_probabilities(model, val, list(cfg.train.tta)), np.asarray(val.y)
        else:
            probs, y = np.asarray(held_out[0]), np.asarray(held_out[1])
        right = probs.argmax(axis=1) == y if len(probs) else np.zeros(0, bool)
        scores = (
            probs.max(axis=1)[right] if right.any() else (probs.max(axis=1) if len(probs) else None)
        )
        kind = "probability"
    threshold = choose_threshold(s.unknown_threshold, s.unknown_quantile, scores, kind)
    extras["unknown"] = {
        "score": kind,
        "threshold": threshold,
        "setting": s.unknown_threshold,
        "quantile": s.unknown_quantile,
        "n_validation": int(0 if scores is None else len(scores)),
    }
    log.info(
        "unknown: %s threshold %s (serving.unknown_threshold=%s, quantile %s)",
        kind,
        threshold,
        s.unknown_threshold,
        s.unknown_quantile,
    )
    return extras
