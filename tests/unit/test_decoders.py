import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from dogbreed.serving import handler
from dogbreed.serving.errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType


def _png(mode="RGB", size=(30, 20)):
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def test_images_of_every_kind_decode_to_rgb():
    for mode in ("RGB", "L", "RGBA", "P"):
        data = handler.input_fn(_png(mode), "image/png")
        assert data["images"][0].mode == "RGB" and data["top_k"] == 5
    batch = json.dumps({"instances": [base64.b64encode(_png()).decode()] * 3, "top_k": 2})
    data = handler.input_fn(batch.encode(), "application/json")
    assert len(data["images"]) == 3 and data["top_k"] == 2
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 3, 16, 16), dtype=np.float32))
    assert len(handler.input_fn(buffer.getvalue(), "application/x-npy")["images"]) == 2


@pytest.mark.parametrize("body,kind,error", [
    (b"", "image/jpeg", BadRequest),
    (b"nope", "image/jpeg", BadRequest),
    (_png()[:50], "image/png", BadRequest),
    (_png(), "text/plain", UnsupportedMediaType),
    (b"{", "application/json", BadRequest),
    (b'{"image": "!!"}', "application/json", BadRequest),
    (b'{"instances": 5}', "application/json", BadRequest),
    (b"\x93NUMPY", "application/x-npy", BadRequest),
])
def test_bad_bodies_are_client_errors(body, kind, error):
    with pytest.raises(error) as info:
        handler.input_fn(body, kind)
    assert 400 <= info.value.status_code < 500 and info.value.message


def test_decompression_bomb_is_refused_before_decoding():
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    with pytest.raises(PayloadTooLarge):
        handler.input_fn(buffer.getvalue(), "image/png")


def test_top_k_from_attributes():
    assert handler.top_k_from("top_k=3", {}) == 3
    assert handler.top_k_from(None, {"top_k": 7}) == 7
    with pytest.raises(BadRequest):
        handler.top_k_from("top_k=0", {})
    assert handler.top_k_from("top_k=+4", {}) == 4 and handler.top_k_from(None, {"top_k": "2"}) == 2
    assert handler.top_k_from(None, {"top_k": 10**400}) == handler.MAX_TOP_K


@pytest.mark.parametrize("raw", [float("inf"), float("-inf"), float("nan"), True, False, 2.9, 3.0, "2.9", "1e999", "true",
                                 "", " ", "+-3", [3], {"k": 3}, "9" * 40])
def test_top_k_that_is_not_a_whole_number_is_a_400(raw):
    with pytest.raises(BadRequest) as info:
        handler.top_k_from(None, {"top_k": raw})
    assert info.value.status_code == 400 and "top_k" in info.value.message
    if isinstance(raw, str):
        with pytest.raises(BadRequest):
            handler.top_k_from(f"top_k={raw}", {})


def test_accept_is_honoured():
    assert handler.output_fn({"predictions": []}, "application/json")[1] == "application/json"
    assert handler.output_fn({"predictions": []}, "*/*")[1] == "application/json"
    with pytest.raises(NotAcceptable):
        handler.output_fn({"predictions": []}, "text/csv")
