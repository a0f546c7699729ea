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


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), 90).save(buf, format="PNG")
    return buf.getvalue()


def test_a_request_is_read_within_its_budget_one_row_at_a_time() -> None:
    from visionops.serving.inputs import BadInput, Budget, as_rows

    budget = Budget(max_rows=4, max_pixels=2 * 100 * 100 + 50, max_side=64, min_side=8)
    rows = as_rows(
        [_png(100, 100), _png(4, 40), _png(100, 100), _png(100, 100), _png(10, 10)], budget
    )
    # Shrunk as decoded: 100 px -> 50 px (reduce by 2, the longer side within max_side=64).
    assert rows[0].shape == (50, 50)
    assert (
        isinstance(rows[1], BadInput) and "4x40 px is below validate.min_side=8" in rows[1].reason
    )
    assert rows[2].shape == (50, 50)
    assert isinstance(rows[3], BadInput) and "past the request's pixel budget" in rows[3].reason
    assert isinstance(rows[4], BadInput) and "serving.max_rows=4" in rows[4].reason
    assert budget.pixels == 2 * 100 * 100  # the refused rows cost nothing
    # Raw pixel rows count too, and an empty one is not an image.
    empty = as_rows([np.zeros((0, 0), np.uint8), np.zeros((9, 9), np.uint8)], Budget(min_side=1))
    assert isinstance(empty[0], BadInput) and "0x0 px" in empty[0].reason
    assert empty[1].shape == (9, 9)


def test_answers_in_an_http_server_have_null_for_missing_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from visionops.serving.model import in_http_server, json_safe

    frame = pd.DataFrame({"label": ["a", None], "probability": [0.9, np.nan], "n": [1, 2]})
    safe = json_safe(frame)
    assert json.dumps(safe.to_dict(orient="records"), allow_nan=False) == (
        '[{"label": "a", "probability": 0.9, "n": 1}, {"label": null, "probability": null, "n": 2}]'
    )
    assert frame["probability"].isna().sum() == 1  # the caller's frame is left as it was
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")
    assert in_http_server()
    monkeypatch.delenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT")
    assert not in_http_server()


def test_the_server_guard_makes_error_answers_strict_and_traceless() -> None:
    import json

    from visionops.serving.server import clean_body

    raw = (
        b'{"error_code": "BAD_REQUEST", "message": "bad", "stack_trace": "Traceback ... /srv/x.py"}'
    )
    assert json.loads(clean_body(400, raw)) == {"error_code": "BAD_REQUEST", "message": "bad"}
    assert clean_body(200, b'{"predictions": [{"p": NaN}]}') == b'{"predictions": [{"p": null}]}'
    assert clean_body(504, b"Request processing time exceeded limit") == (
        b"Request processing time exceeded limit"
    )
    long = json.dumps({"error_code": "X", "message": "d" * 10_000}).encode()
    assert len(json.loads(clean_body(400, long))["message"]) < 2100
