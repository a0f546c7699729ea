"""Test-time augmentation: the views and the averaged probabilities.

(TTA as part of the packaged model, on a real MLflow store: tests/integration/test_tta_packaged.py.)
"""

from __future__ import annotations

import typing

import pytest
import torch
from torch import nn

from visionops.core.config import TrainConfig
from visionops.serving.tta import TTA_VIEWS, predict_proba, view_batches


def _not_flip_invariant_net() -> nn.Module:
    """Logits from a linear map of the pixels: mirroring the image changes them."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(1 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.float().flatten(1) / 255.0)

    return Net().eval()


def _batch(n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g)


def test_config_views_are_the_views_the_model_knows() -> None:
    (literal,) = typing.get_args(TrainConfig.model_fields["tta"].annotation)
    assert typing.get_args(literal) == TTA_VIEWS


def test_no_tta_is_the_plain_softmax() -> None:
    net, x = _not_flip_invariant_net(), _batch()
    with torch.no_grad():
        expected = torch.softmax(net(x), dim=1)
    torch.testing.assert_close(predict_proba(net, x, []), expected)


def test_hflip_averages_the_softmax_of_the_original_and_the_mirror() -> None:
    net, x = _not_flip_invariant_net(), _batch()
    mirrored = x[..., torch.arange(x.shape[-1] - 1, -1, -1)]  # columns reversed, by hand
    with torch.no_grad():
        p_orig, p_flip = torch.softmax(net(x), dim=1), torch.softmax(net(mirrored), dim=1)
    got = predict_proba(net, x, ["hflip"])
    torch.testing.assert_close(got, (p_orig + p_flip) / 2)
    assert (
        got - p_orig
    ).abs().max() > 1e-3  # the model is not flip-invariant: TTA changed the answer
    torch.testing.assert_close(got.sum(dim=1), torch.ones(len(x)))


def test_shift_views_move_the_image_by_one_pixel_each_way() -> None:
    x = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    x[0, 0, 3, 3] = 255
    views = view_batches(x, ["shift"])
    assert len(views) == 5 and torch.equal(views[0], x)
    assert all(v.shape == x.shape and v.dtype == torch.uint8 for v in views)
    bright = {tuple(torch.nonzero(v[0, 0]).flatten().tolist()) for v in views[1:]}
    assert bright == {(3, 2), (3, 4), (2, 3), (4, 3)}  # d = max(1, round(8 / 16)) = 1


def test_crop_view_zooms_into_the_centre() -> None:
    x = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    x[..., 1:15, 1:15] = 200  # a frame of 0 one pixel wide
    (_, zoomed) = view_batches(x, ["crop"])
    assert zoomed.shape == x.shape and zoomed.dtype == torch.uint8
    assert zoomed.float().mean() > x.float().mean()  # the dark frame is cropped away
    assert len(view_batches(x, ["hflip", "shift", "crop"])) == 1 + 1 + 4 + 1


def test_unknown_or_repeated_views_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown test-time augmentation views \\['vflip'\\]"):
        view_batches(_batch(), ["vflip"])
    with pytest.raises(ValueError, match="repeat"):
        predict_proba(_not_flip_invariant_net(), _batch(), ["hflip", "hflip"])
