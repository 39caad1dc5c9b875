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


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npy_header_only(shape, dtype="|u1") -> bytes:
    """A .npy header announcing SHAPE with no data behind it: refused from the header, nothing allocated."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize("body,kind,error", [
    (b'{"image": "x", "top_k": ' + b"9" * 5000 + b"}", "application/json", BadRequest),  # past Python's digit limit
    (b'{"instances": [], "n": ' + b"1" * 4301 + b"}", "application/json", BadRequest),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", BadRequest),
    (_npy(np.zeros((0, 3, 16, 16), np.uint8)), "application/x-npy", BadRequest),
    (_npy(np.zeros((4, 0), np.uint8)), "application/x-npy", BadRequest),
    (_npy(np.zeros((1, 20000), np.uint8)), "application/x-npy", BadRequest),  # the aspect bound
    (_npy_header_only((100_000, 100_000, 3)), "application/x-npy", PayloadTooLarge),
    (_npy_header_only((65, 16, 16, 3)), "application/x-npy", PayloadTooLarge),
    (_npy_header_only((64, 3, 6000, 6000)), "application/x-npy", PayloadTooLarge),  # 64 x 36 MP: the request's budget
    (_npy_header_only((16, 16), "<c16"), "application/x-npy", BadRequest),
    (_npy_header_only((16, 16, 3)), "application/x-npy", BadRequest),  # the data it announces is missing
    (_npy(np.array([{"a": 1}], dtype=object)), "application/x-npy", BadRequest),
    (_png("L", (20000, 1)), "image/png", BadRequest),  # 100 bytes that would resize to gigapixels
    (_png("L", (1, 5000)), "image/png", BadRequest),
])
def test_hostile_bodies_are_client_errors(body, kind, error):
    with pytest.raises(error) as info:
        handler.input_fn(body, kind)
    assert 400 <= info.value.status_code < 500 and info.value.message


def test_npy_is_refused_from_its_header_before_allocating(monkeypatch):
    """An oversized shape never reaches np.load (which would allocate it)."""
    calls = []
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(PayloadTooLarge):
        handler.input_fn(_npy_header_only((50_000, 50_000)), "application/x-npy")
    assert calls == []


def test_panorama_within_the_aspect_bound_decodes():
    assert handler.input_fn(_png("RGB", (800, 100)), "image/png")["images"][0].size == (800, 100)


def _photo_8_and_16_bit(path=None):
    """An RGB photo's grey 8-bit version and the same pixels at 16 bits (v * 257): what a 16-bit scan holds."""
    if path is not None:
        grey = Image.open(path).convert("L")
    else:
        grey = Image.fromarray(np.add.outer(np.arange(48), np.arange(64)).astype(np.uint8) * 2)
    deep = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    encoded = {}
    for name, image in (("8", grey), ("16png", deep), ("16tiff", deep)):
        buffer = io.BytesIO()
        image.save(buffer, "TIFF" if name.endswith("tiff") else "PNG")
        encoded[name] = buffer.getvalue()
    return encoded


def test_16_bit_images_decode_as_their_8_bit_equivalent():
    from tests.conftest import DOGS10

    photos = sorted((DOGS10 / "test").rglob("*.jpg"))[:1] if DOGS10.is_dir() else []
    for path in [None, *photos]:  # a synthetic ramp everywhere, a real photo where ../shared is present
        encoded = _photo_8_and_16_bit(path)
        eight = np.asarray(handler.input_fn(encoded["8"], "image/png")["images"][0], dtype=np.int16)
        for name in ("16png", "16tiff"):
            kind = "image/tiff" if name.endswith("tiff") else "image/png"
            deep = np.asarray(handler.input_fn(encoded[name], kind)["images"][0], dtype=np.int16)
            assert deep.shape == eight.shape and np.abs(deep - eight).max() <= 1, name
            assert (deep == 255).mean() < 0.5  # not clipped white


def test_float_grayscale_in_unit_range_is_scaled():
    from dogbreed.images import to_rgb

    image = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32))
    assert np.asarray(to_rgb(image))[0, 0].tolist() == [128, 128, 128]


@pytest.mark.parametrize("kind", ["PCX", "ICO", "TGA", "PPM", "SGI"])
def test_only_the_formats_the_endpoint_reads_are_opened(kind):
    """Pillow knows many more readers (EPS runs Ghostscript); a body in any other format is a 400."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, kind)
    with pytest.raises(BadRequest) as info:
        handler.input_fn(buffer.getvalue(), "image/png")
    assert "JPEG" in info.value.message


def test_mms_transformer_reads_headers_in_any_case():
    from dogbreed.serving.content_types import header

    request = {"CONTENT-TYPE": "image/png", "aCcEpT": "application/json"}
    assert header(request, "content-type") == "image/png" and header(request, "Accept") == "application/json"
    assert header({}, "accept") is None and header(None, "accept") is None


def test_a_dark_16_bit_image_stays_dark():
    """Values under 256 in a 16-bit image are near black, not an 8-bit image's mid greys."""
    deep = Image.fromarray(np.full((24, 32), 200, dtype=np.uint16))
    buffer = io.BytesIO()
    deep.save(buffer, "PNG")
    assert np.asarray(handler.input_fn(buffer.getvalue(), "image/png")["images"][0]).max() <= 1


def _b64_png(size, truncate=False) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 60, 30)).save(buffer, "PNG")
    data = buffer.getvalue()
    return base64.b64encode(data[: len(data) // 2] if truncate else data).decode()


def test_the_request_budget_refuses_an_image_before_decoding_it(monkeypatch):
    """The third image would take the request past its budget: refused from its header (413), not decoded (a
    truncated body that is decoded is a 400)."""
    from dogbreed.serving import decoders

    monkeypatch.setattr(decoders, "MAX_REQUEST_PIXELS", 1_000_000)
    body = json.dumps({"instances": [_b64_png((800, 500)), _b64_png((800, 500)), _b64_png((800, 500), truncate=True)]})
    with pytest.raises(PayloadTooLarge):
        decoders.decode_json(body.encode())
    images, _ = decoders.decode_json(json.dumps({"instances": [_b64_png((800, 500))] * 2}).encode())
    assert len(images) == 2


def test_a_jpeg_counts_at_the_size_it_decodes_at(monkeypatch):
    """A 12 MP JPEG decoded at the model's draft scale (1/8 here) costs 0.19 MP of the budget, not 12."""
    from dogbreed.serving import decoders

    monkeypatch.setattr(decoders, "MAX_REQUEST_PIXELS", 1_000_000)
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (90, 60, 30)).save(buffer, "JPEG")
    body = json.dumps({"instances": [base64.b64encode(buffer.getvalue()).decode()] * 3}).encode()
    images, _ = decoders.decode_json(body, draft_size=256)
    assert [image.size for image in images] == [(500, 375)] * 3
    with pytest.raises(PayloadTooLarge):
        decoders.decode_json(body)  # at full size the first image alone is over the budget
