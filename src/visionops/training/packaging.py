"""What travels with a trained model besides the network: the unknown threshold, enrolled embeddings,
face settings (see ``visionops.serving.model`` for how ``predict`` uses them)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from visionops.core.batching import inference_batch_size
from visionops.core.config import PipelineConfig
from visionops.data.preprocess import Split
from visionops.serving.tta import predict_proba
from visionops.serving.unknown import (
    STRANGERS_BAR,
    choose_threshold,
    distance_scores,
    distance_threshold,
    strangers_estimate,
)

log = logging.getLogger("visionops")


def split_probabilities(
    model: torch.nn.Module, split: Split, tta: list[str], batch_size: int = 256
) -> np.ndarray:
    """Class probabilities ``(N, C)`` of a split's images as the served model computes them (TTA)."""
    model = model.cpu().eval()
    if split.x.ndim == 4:  # images: fewer at a time when they are large
        batch_size = inference_batch_size(int(np.prod(split.x.shape[2:])), cap=batch_size)
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
        # Validation faces are enrolled too once the threshold is chosen: more views of each person.
        extras["enrolled"] = np.concatenate([tx, vx])
        extras["network_example"] = vx[:2] if len(vx) else tx[:2]
        extras["unknown"] = _distance_unknown(cfg, tx, ty, vx, vy)
        return extras
    if s.unknown_threshold != "auto":  # off, or a fixed number: nothing to measure
        scores = None
    else:
        if held_out is None:
            probs, y = split_probabilities(model, val, list(cfg.train.tta)), np.asarray(val.y)
        else:
            probs, y = np.asarray(held_out[0]), np.asarray(held_out[1])
        right = probs.argmax(axis=1) == y if len(probs) else np.zeros(0, bool)
        scores = (
            probs.max(axis=1)[right] if right.any() else (probs.max(axis=1) if len(probs) else None)
        )
    threshold = choose_threshold(s.unknown_threshold, s.unknown_quantile, scores, "probability")
    extras["unknown"] = {
        "score": "probability",
        "threshold": threshold,
        "setting": s.unknown_threshold,
        "quantile": s.unknown_quantile,
        "n_validation": int(0 if scores is None else len(scores)),
    }
    log.info(
        "unknown: probability threshold %s (serving.unknown_threshold=%s, quantile %s)",
        threshold,
        s.unknown_threshold,
        s.unknown_quantile,
    )
    return extras


def _distance_unknown(
    cfg: PipelineConfig, tx: np.ndarray, ty: np.ndarray, vx: np.ndarray, vy: np.ndarray
) -> dict[str, Any]:
    """The served model's ``unknown`` record of an embedding model: the distance threshold, the
    evidence ``auto`` chose it from, and the strangers' share estimated on the enrolled faces."""
    s = cfg.serving
    record: dict[str, Any] = {"score": "distance", "setting": s.unknown_threshold}
    if s.unknown_threshold == "auto":
        chosen = distance_threshold(distance_scores(tx, ty, vx, vy), s.unknown_quantile)
        record |= {**chosen, "quantile_setting": s.unknown_quantile}
    else:
        record |= {"threshold": choose_threshold(s.unknown_threshold, None, None, "distance")}
    if record["threshold"] is not None:
        estimate = strangers_estimate(
            np.concatenate([tx, vx]), np.concatenate([ty, vy]), record["threshold"]
        )
        record["strangers_estimate"] = estimate
        if estimate is not None and estimate["strangers_unknown"] < STRANGERS_BAR:
            log.warning(
                "unknown: at distance %.3f only %.0f%% of the enrolled people's faces are that far "
                "from every other person's: strangers may be named (a lower "
                "serving.unknown_threshold or more photos a person)",
                record["threshold"],
                100 * estimate["strangers_unknown"],
            )
    log.info("unknown: %s", record)
    return record
