"""Test-time augmentation (TTA): a prediction is the mean of the softmax over views of each image.

TTA is a property of the packaged model: ``train.tta`` is stored in the model's
``preprocessing.json`` and applied by the served pyfunc's ``predict`` (``visionops.serving.model``),
the one call that evaluation, the gate, batch scoring and ``models:/<name>@champion`` all go
through, so what was gated is what is served.

Views (the original image is always one of them):

- ``hflip``: the mirror image. Wrong for digits, text and anything whose class changes when mirrored;
- ``shift``: four copies moved by about 1/16 of the side (at least one pixel) left, right, up
  and down, the uncovered border filled by repeating the edge;
- ``crop``: the central 87.5% of the image, resized back to full size (a slight zoom).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from visionops.core.constants import TTA_VIEWS

CROP_FRACTION = 0.875


def check_views(views: Sequence[str]) -> list[str]:
    """The views as a list, or a ValueError naming the unknown or repeated ones."""
    views = list(views)
    unknown = [v for v in views if v not in TTA_VIEWS]
    if unknown:
        raise ValueError(
            f"unknown test-time augmentation views {unknown}; known: {list(TTA_VIEWS)}"
        )
    if len(set(views)) != len(views):
        raise ValueError(f"test-time augmentation views repeat: {views}")
    return views


def view_batches(x: torch.Tensor, views: Sequence[str]) -> list[torch.Tensor]:
    """The batch ``x`` (uint8 ``(N, C, H, W)``) itself, then each view of it, all of the same shape."""
    views = check_views(views)
    if not views:
        return [x]
    # Imported here: a model without TTA is served without importing torchvision.
    from torchvision.transforms.v2 import functional as F

    h, w = x.shape[-2:]
    out = [x]
    for view in views:
        if view == "hflip":
            out.append(F.horizontal_flip(x))
        elif view == "shift":
            d = max(1, round(min(h, w) / 16))
            padded = F.pad(x, [d, d, d, d], padding_mode="edge")
            for top, left in ((d, 0), (d, 2 * d), (0, d), (2 * d, d)):
                out.append(F.crop(padded, top, left, h, w).contiguous())
        else:  # crop
            ch, cw = max(1, round(h * CROP_FRACTION)), max(1, round(w * CROP_FRACTION))
            out.append(
                F.resized_crop(x, (h - ch) // 2, (w - cw) // 2, ch, cw, [h, w], antialias=True)
            )
    return out


def predict_proba(
    network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, views: Sequence[str] = ()
) -> torch.Tensor:
    """Class probabilities ``(N, n_classes)``: the mean over the views of the softmax of the logits."""
    with torch.no_grad():
        return torch.stack([torch.softmax(network(v), dim=1) for v in view_batches(x, views)]).mean(
            dim=0
        )
