import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from dogbreed.serving import handler
from dogbreed.serving.content_types import header
from dogbreed.serving.errors import BadRequest, NotAcceptable, PayloadTooLarge, RequestError, UnsupportedMediaType
from tests import hostile
from tests.conftest import DOGS10


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


HOSTILE = hostile.cases()


@pytest.mark.parametrize("case", HOSTILE, ids=[c.name for c in HOSTILE])
def test_hostile_bodies_get_their_status(case):
    """Issue 19's hostile bodies (tests/hostile.py; the HTTP test sends the same to both fronts)."""
    kind = case.content_type or header(case.headers, "content-type")
    try:
        decoded = handler.input_fn(case.body, kind, hostile.Headers(case.headers))
        handler.output_fn({"predictions": []}, header(case.headers, "accept"))
    except RequestError as exc:
        assert exc.status_code in case.statuses and exc.message, (exc.status_code, exc.message)
        return
    assert 200 in case.statuses and all(image.mode == "RGB" for image in decoded["images"])


@pytest.mark.parametrize("case", [c for c in HOSTILE if c.content_type == hostile.NPY and "6M" in c.name],
                         ids=lambda c: c.name)
def test_an_npy_of_6_million_values_in_a_shape_no_photo_has_is_refused_before_loading(case, monkeypatch):
    calls = []
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(RequestError) as info:
        handler.input_fn(case.body, case.content_type)
    assert info.value.status_code in (400, 413) and calls == []


def test_an_npy_of_6_million_values_in_a_photos_shape_is_a_photo():
    images = handler.input_fn(hostile.npy(np.full((2000, 3000), 70, np.uint8)), hostile.NPY)["images"]
    assert [image.size for image in images] == [(3000, 2000)]


def test_custom_attributes_are_read_in_any_case():
    for name in ("X-AMZN-SAGEMAKER-CUSTOM-ATTRIBUTES", "x-amzn-sagemaker-custom-attributes", handler.CUSTOM_ATTRIBUTES):
        assert handler.input_fn(_png(), "image/png", hostile.Headers({name: "top_k=2"}))["top_k"] == 2


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


def _assert_decodes_as_8_bit(encoded: dict) -> None:
    eight = np.asarray(handler.input_fn(encoded["8"], "image/png")["images"][0], dtype=np.int16)
    for name in ("16png", "16tiff"):
        kind = "image/tiff" if name.endswith("tiff") else "image/png"
        deep = np.asarray(handler.input_fn(encoded[name], kind)["images"][0], dtype=np.int16)
        assert deep.shape == eight.shape and np.abs(deep - eight).max() <= 1, name
        assert (deep == 255).mean() < 0.5  # not clipped white


def test_16_bit_images_decode_as_their_8_bit_equivalent():
    _assert_decodes_as_8_bit(_photo_8_and_16_bit())


def test_16_bit_versions_of_a_real_photo_decode_as_the_photo():
    """Pixel for pixel, hence the same answer (tests/integration/test_hostile_bodies.py asks both fronts)."""
    photos = sorted((DOGS10 / "test").glob("*/*.jpg"))[:2] if DOGS10.is_dir() else []
    if not photos:
        pytest.skip(f"no real photo: {DOGS10} (../shared/data/dogs10) not found")
    for path in photos:
        _assert_decodes_as_8_bit(_photo_8_and_16_bit(path))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_pngs_of_every_colour_type_decode_as_8_bit(channels):
    """Grey, grey+alpha, RGB and RGBA at 16 bits (opaque): each channel v -> v / 257."""
    grey = hostile.ramp()
    rgb = np.stack([grey, grey[::-1], grey[:, ::-1]], -1)
    opaque = np.full_like(grey, 65535)[..., None]
    array = {1: grey, 2: np.concatenate([grey[..., None], opaque], -1), 3: rgb, 4: np.concatenate([rgb, opaque], -1)}[channels]
    expected = (np.repeat(grey[..., None], 3, -1) if channels <= 2 else rgb) / 257.0
    decoded = np.asarray(handler.input_fn(hostile.png16(array), "image/png")["images"][0], dtype=np.float64)
    assert np.abs(decoded - expected).max() <= 1.0
    if channels in (1, 3):  # and as TIFF
        decoded = np.asarray(handler.input_fn(hostile.tiff16(array), "image/tiff")["images"][0], dtype=np.float64)
        assert np.abs(decoded - expected).max() <= 1.0


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


def test_predict_fn_frees_the_decoded_images_before_the_answer_is_written():
    """The caller holds ``data`` until its answer is written: a big request's pixels must not live that long."""
    import weakref

    class Model:
        meta = {"arch": "stub"}

        def answer(self, images, k, explain=False):
            return {"predictions": [[{"breed": "x", "probability": 1.0}] for _ in images], "dog": [{}] * len(images)}

    data = handler.input_fn(hostile.png("L", (3000, 2000), 90), "image/png")
    alive = weakref.ref(data["images"][0])
    answer = handler.predict_fn(data, Model())
    assert answer["predictions"] == [[{"breed": "x", "probability": 1.0}]] and alive() is None
