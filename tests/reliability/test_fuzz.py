"""Hostile input: hypothesis fuzzes the decoding path (input_fn with arbitrary bytes, content types and header
names in any case); nothing but the documented client errors comes out, and nothing past the decoded-pixel budget
is ever decoded. The corpus it built, with issue 19's hostile bodies (:mod:`tests.hostile`), is replayed over HTTP
to each front (multi-model-server and native): every answer is a 4xx or a correct 200."""

from __future__ import annotations

import base64
import io
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dogbreed.serving import content_types as ct
from dogbreed.serving import decoders, handler
from dogbreed.serving.errors import RequestError
from dogbreed.serving.predictor import Predictor
from tests import hostile
from tests.conftest import free_port
from tests.serving_helpers import FRONTS, assert_same_ranking, local_server, post

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

# (body, content type, headers): what the fuzz tests drew, replayed over HTTP with the hostile cases
CORPUS: list[tuple[bytes, str, dict]] = []
TYPES = ["image/jpeg", "image/png", "application/x-image", "application/json", "application/x-npy", "image/webp",
         "text/csv", "", "image/jpeg; charset=utf-8", "APPLICATION/JSON"]


def _seed_images():
    out = []
    for fmt, mode in (("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB")):
        buffer = io.BytesIO()
        Image.effect_noise((48, 40), 50).convert(mode).save(buffer, fmt)
        out.append(buffer.getvalue())
    npy = io.BytesIO()
    np.save(npy, np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    out.append(npy.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated(draw):
    """A real image (or array) with bytes flipped, cut, or spliced: reaches deep into the decoders."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def json_bodies(draw):
    image = draw(st.one_of(mutated(), st.binary(max_size=64)))
    encoded = base64.b64encode(image).decode()
    if draw(st.booleans()):
        encoded = draw(st.text(max_size=40))
    payload = draw(st.sampled_from([
        {"image": encoded}, {"instances": [encoded]}, [encoded], {"instances": encoded}, {"image": None},
        {"image": encoded, "top_k": draw(st.one_of(st.integers(-3, 200), st.text(max_size=4), st.none(), st.booleans(),
                                                        st.floats(), st.sampled_from(["1e999", "2.9", "true"])))},
    ]))
    text = json.dumps(payload)
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode()


@st.composite
def big_integers(draw):
    """A JSON integer past Python's 4,300-digit limit, in ``top_k``, among the instances or anywhere else."""
    digits = ("-" if draw(st.booleans()) else "") + "1" + "0" * draw(st.integers(4300, 6000))
    image = base64.b64encode(draw(st.sampled_from(SEEDS[:2]))).decode()
    return draw(st.sampled_from([
        f'{{"image": "{image}", "top_k": {digits}}}', f'{{"instances": ["{image}", {digits}]}}', f"[{digits}]",
        f'{{"image": "{image}", "extra": {{"deep": [[{digits}]]}}}}', digits,
    ])).encode()


SIDES = st.one_of(st.integers(0, 4), st.integers(5, 3000), st.sampled_from([19_999, 20_000, 20_001, 65_535, 2**31 - 1]))


@st.composite
def claimed_sizes(draw):
    """An image header claiming any size (data for a row at most): refused from the header unless within bounds."""
    width, height = draw(SIDES), draw(SIDES)
    maker = draw(st.sampled_from([hostile.png_claiming, hostile.jpeg_claiming, hostile.bmp_claiming, "tiff"]))
    if maker == "tiff":
        return hostile.tiff16(hostile.ramp(2, 2), claim=(width, height))
    if maker is hostile.jpeg_claiming:
        width, height = min(width, 65_535), min(height, 65_535)
    return maker(width, height)


@st.composite
def thin_images(draw):
    """Real images of extreme aspect (what a resize of the shorter side blows up): a few bytes as PNG."""
    long, short = draw(st.integers(1, 30_000)), draw(st.integers(1, 3))
    size = (long, short) if draw(st.booleans()) else (short, long)
    return hostile.png(draw(st.sampled_from(["L", "1", "RGB"])), size)


@st.composite
def npy_arrays(draw):
    """An npy header of any shape and dtype, with its data where it is small (else the header alone)."""
    shape = tuple(draw(st.lists(st.one_of(st.integers(0, 70), SIDES, st.sampled_from([6_000_000, 2**40])), max_size=5)))
    dtype = draw(st.sampled_from(["|u1", "<u2", "<i8", "<f4", "<f8", ">f2", "|b1", "<c8", "|O", "<U3", "|V4"]))
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count * np.dtype(dtype).itemsize <= 200_000 and dtype not in ("|O", "|V4") and draw(st.booleans()):
        return hostile.npy(np.zeros(shape, np.dtype(dtype)))
    return hostile.npy_header(shape, dtype)


@st.composite
def deep_arrays(draw) -> np.ndarray:
    """16-bit grey or RGB pixels."""
    channels = draw(st.sampled_from([0, 3]))
    height, width = draw(st.integers(4, 40)), draw(st.integers(4, 40))  # within the aspect bound
    shape = (height, width, channels) if channels else (height, width)
    return np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 65536, shape, dtype=np.uint16)


@st.composite
def deep_images(draw):
    """16-bit grey or RGB images as PNG or TIFF: decoded as their 8-bit equivalent."""
    return (hostile.png16 if draw(st.booleans()) else hostile.tiff16)(draw(deep_arrays()))


def _any_case(draw, name: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)


bodies = st.one_of(st.binary(max_size=2048), mutated(), json_bodies(), big_integers(), claimed_sizes(), thin_images(),
                   npy_arrays(), deep_images())


def _within_the_budget(images) -> bool:
    return all(image.width * image.height <= decoders.MAX_PIXELS
               and max(image.size) <= decoders.MAX_ASPECT * min(image.size) for image in images)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=bodies, content_type=st.one_of(st.sampled_from(TYPES), st.text(max_size=20)), data=st.data())
def test_input_fn_raises_only_documented_client_errors(body, content_type, data):
    attributes = {_any_case(data.draw, handler.CUSTOM_ATTRIBUTES):
                  data.draw(st.sampled_from(["top_k=2", "top_k=0", "top_k=" + "9" * 5000, "k=x"]))}
    headers = attributes if data.draw(st.booleans()) else {}
    CORPUS.append((body, content_type, headers))
    try:
        decoded = handler.input_fn(body, content_type, hostile.Headers(headers))
    except RequestError as exc:
        assert 400 <= exc.status_code < 500 and exc.message
        return
    assert decoded["images"] and all(image.mode == "RGB" for image in decoded["images"]) and decoded["top_k"] >= 1
    assert _within_the_budget(decoded["images"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=claimed_sizes(), kind=st.sampled_from(["image/png", "image/jpeg", "image/bmp", "image/tiff"]))
def test_a_size_past_the_budget_is_refused_from_the_header(body, kind):
    """Whatever a header claims, a size past the pixel or side bound is a 413 and one past the aspect bound a 400
    that says so: refused from the header (there is nothing behind the claim: decoding it would be a 400 for a
    truncated image). What decodes is within the bounds."""
    from PIL import Image

    CORPUS.append((body, kind, {}))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(body)).size
    except Image.DecompressionBombError:  # over twice Pillow's own bound: ours is lower
        width = height = decoders.MAX_SIDE + 1
    except Exception:  # Pillow itself refuses the header: so does input_fn, below
        width = height = 1
    try:
        images = handler.input_fn(body, kind)["images"]
    except RequestError as exc:
        if width * height > decoders.MAX_PIXELS or max(width, height) > decoders.MAX_SIDE:
            assert exc.status_code == 413, exc.message
        elif min(width, height) > 0 and max(width, height) > decoders.MAX_ASPECT * min(width, height):
            assert exc.status_code == 400 and f"1:{decoders.MAX_ASPECT}" in exc.message, exc.message
        assert exc.status_code in (400, 413), exc.message
        return
    assert _within_the_budget(images)


@settings(max_examples=100, deadline=None)
@given(array=deep_arrays(), writer=st.sampled_from([hostile.png16, hostile.tiff16]))
def test_16_bit_images_decode_as_8_bit_ones(array, writer):
    body = writer(array)
    CORPUS.append((body, "image/png" if writer is hostile.png16 else "image/tiff", {}))
    pixels = np.asarray(handler.input_fn(body, "image/png")["images"][0], dtype=np.float64)  # Pillow sniffs the format
    expected = array / 257.0
    expected = np.repeat(expected[..., None], 3, axis=-1) if expected.ndim == 2 else expected
    assert pixels.shape == expected.shape and np.abs(pixels - expected).max() <= 1.0


def _corpus() -> list[tuple[bytes, str, dict]]:
    """The fuzzed bodies, then every hostile case (its headers as sent; no Content-Type: an empty one)."""
    cases = [(c.body, c.content_type or ct.header(c.headers, "content-type") or "", c.headers) for c in hostile.cases()]
    return CORPUS + cases


@pytest.mark.parametrize("front", FRONTS)
def test_the_corpus_replayed_over_http_gets_4xx_or_a_correct_200(trained, tmp_path, record, front):
    assert len(CORPUS) >= 100, "run with the fuzz test first (same module)"
    predictor = Predictor(trained["model_dir"])
    statuses = {"4xx": 0, "200": 0}
    corpus = _corpus()
    with local_server(trained["archive"], free_port(), tmp_path / "server.log", front=front) as (url, process):
        for body, content_type, headers in corpus:
            sendable = content_type.isascii() and content_type.isprintable() and "\n" not in content_type
            kind = (content_type if sendable else "") or "application/x-image"
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            status, answer, _ = post(url, body, kind, headers=headers)
            if status == 200:
                data = handler.input_fn(body, kind, hostile.Headers(headers))
                expected = predictor.top_k(data["images"], data["top_k"])
                assert_same_ranking(answer["predictions"], expected)
                statuses["200"] += 1
            else:
                assert 400 <= status < 500, (status, answer, content_type, body[:40])
                statuses["4xx"] += 1
        assert process.poll() is None
    record("hostile input", f"fuzzed and listed hostile bodies replayed over HTTP ({front})", len(corpus))
    record("hostile input", f"answered 4xx ({front})", statuses["4xx"])
    record("hostile input", f"answered 200, same breeds as in process ({front})", statuses["200"])
