"""The served model scores a large request SCORE_BATCH images at a time, with the answers of one pass."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from visionops.serving import model as served


class _Recording(nn.Module):
    """Logits from the mean brightness of each image; records the batch sizes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        m = x.float().mean(dim=(1, 2, 3)) / 255.0
        return torch.stack([1 - m, m], dim=1) * 8


def _classifier(net: nn.Module) -> served.ImageClassifier:
    clf = served.ImageClassifier()
    clf.labels, clf.image_size, clf.channels, clf.tta = ["dark", "light"], 8, 1, []
    clf.encoder, clf.faces = None, None
    clf.unknown = {"score": "probability", "threshold": None}
    clf.network = net
    return clf


def test_a_request_larger_than_a_batch_goes_through_the_network_in_batches() -> None:
    images = np.random.default_rng(0).integers(0, 256, (600, 8, 8), dtype=np.uint8)
    net = _Recording()
    out = _classifier(net).predict(None, images)
    assert net.sizes == [served.SCORE_BATCH, served.SCORE_BATCH, 600 - 2 * served.SCORE_BATCH]
    expected = np.where(images.reshape(600, -1).mean(axis=1) / 255 > 0.5, "light", "dark")
    assert out["label"].tolist() == expected.tolist()
    assert (out["status"] == "ok").all()


def test_large_images_go_through_in_batches_bounded_by_pixels() -> None:
    from visionops.core.batching import INFERENCE_PIXELS, inference_batch_size

    assert inference_batch_size(32 * 32) == 256  # small images: the cap
    assert inference_batch_size(224 * 224) == INFERENCE_PIXELS // (224 * 224) == 41
    assert inference_batch_size(10_000 * 10_000) == 1
    net = _Recording()
    clf = _classifier(net)
    clf.image_size = 224
    images = np.random.default_rng(1).integers(0, 256, (100, 224, 224), dtype=np.uint8)
    out = clf.predict(None, images)
    assert net.sizes == [41, 41, 18] and len(out) == 100
