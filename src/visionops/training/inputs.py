"""What a model trains on: uint8 images (most models) or frozen features (``face_embedding``).

One place for the difference, so that the train stage and every tuning trial build, feed and
package a model the same way: image models get ``NormalizedNet`` (per-channel statistics of the
training split); feature models get their head as is (it L2-normalises its input) and the cached
``features`` output instead of the images.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from visionops.core.config import ConfigError, PipelineConfig
from visionops.core.storage import StageOutput
from visionops.models import FEATURE_MODELS, build_from_config, is_feature_model
from visionops.models.wrappers import NormalizedNet


def check_feature_options(cfg: PipelineConfig) -> None:
    """Refuse settings that mean nothing for a head on frozen features, naming the key."""
    if not is_feature_model(cfg.model.name):
        return
    from visionops.data.embeddings import CHIP_SIZE

    name, problems = cfg.model.name, []
    if cfg.data.image_size != CHIP_SIZE or cfg.data.channels != 3:
        problems.append(
            f"data.image_size/data.channels: {name} embeds aligned {CHIP_SIZE}x{CHIP_SIZE} RGB face "
            f"chips: set data.image_size: {CHIP_SIZE}, data.channels: 3 (got "
            f"{cfg.data.image_size}, {cfg.data.channels})"
        )
    if cfg.train.augment.strength > 0:
        problems.append(
            f"train.augment.strength: must be 0 for {name} (it trains on embeddings, not images)"
        )
    if cfg.train.tta:
        problems.append(
            f"train.tta: must be none for {name} (test-time views are of images, not embeddings)"
        )
    if cfg.tune.n_trials > 0:
        for key in ("augment_strength", "width"):
            if getattr(cfg.tune, key) is not None:
                problems.append(
                    f"tune.{key}: must be null for {name} (searched: learning_rate, weight_decay, "
                    "dropout, batch_size, optimizer, label_smoothing)"
                )
    if problems:
        raise ConfigError(
            "invalid configuration for model.name " + repr(name) + ":\n  " + "\n  ".join(problems)
        )


def training_output(ctx: Any, cfg: PipelineConfig, preprocessed: StageOutput) -> StageOutput:
    """The output the model trains on: the preprocess output, or its cached features."""
    check_feature_options(cfg)
    if not is_feature_model(cfg.model.name):
        return preprocessed
    from visionops.data.embeddings import ensure_features

    return ensure_features(ctx.store(), preprocessed)


def build_network(cfg: PipelineConfig, num_classes: int, stats: dict[str, Any]) -> nn.Module:
    """The network as trained and served: normalisation built in for images, the bare head for features."""
    if is_feature_model(cfg.model.name):
        from visionops.data.embeddings import EMBEDDING_DIM

        return build_from_config(
            cfg.model, in_channels=EMBEDDING_DIM, image_size=1, num_classes=num_classes
        )
    net = build_from_config(
        cfg.model,
        in_channels=cfg.data.channels,
        image_size=cfg.data.image_size,
        num_classes=num_classes,
    )
    return NormalizedNet(net, stats["mean"], stats["std"])


def encoder_of(cfg: PipelineConfig) -> str | None:
    """The frozen encoder a model's inputs go through first (stored with the served model), or None."""
    return FEATURE_MODELS.get(cfg.model.name)
