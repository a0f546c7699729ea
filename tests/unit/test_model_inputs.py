"""visionops.serving.model's input helpers: image lists from every container, and raw images from the
model layout. (The logged model and the registry on a real store: tests/integration/test_inference_registry.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from visionops.data.images import to_model_array
from visionops.serving.model import as_image_list, to_raw_images


def test_as_image_list_and_to_raw_images() -> None:
    batch = np.zeros((3, 8, 8), np.uint8)
    assert len(as_image_list(batch)) == 3
    assert [a.shape for a in as_image_list(np.zeros((8, 8), np.uint8))] == [(8, 8)]
    assert len(as_image_list(np.zeros((2, 8, 8, 3), np.uint8))) == 2
    assert [a.dtype for a in as_image_list([[[1, 2], [3, 4]]])] == [np.uint8]
    with pytest.raises(ValueError, match="column 'image'"):
        as_image_list(pd.DataFrame({"a": [1], "b": [2]}))
    with pytest.raises(ValueError, match="expected images of shape"):
        as_image_list(np.zeros((1, 2, 3, 4, 5), np.uint8))
    grey = np.arange(2 * 1 * 3 * 3, dtype=np.uint8).reshape(2, 1, 3, 3)
    np.testing.assert_array_equal(to_raw_images(grey), grey[:, 0])
    rgb = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    raw = to_raw_images(rgb)
    assert raw.shape == (2, 4, 4, 3)
    # Raw images go back to the model layout unchanged.
    np.testing.assert_array_equal(to_model_array(raw[1], 4, 3), rgb[1])
