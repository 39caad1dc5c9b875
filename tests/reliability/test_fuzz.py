"""Hostile input: hypothesis fuzzes the decoding path (input_fn with arbitrary bytes and content types);
nothing but the documented client errors comes out. The corpus it built is replayed over HTTP, to each front
(multi-model-server and native): every answer is a 4xx or a correct 200."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dogbreed.serving import handler
from dogbreed.serving.errors import RequestError
from dogbreed.serving.predictor import Predictor
from tests.conftest import free_port
from tests.serving_helpers import FRONTS, local_server, post

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CORPUS: list[tuple[bytes, str]] = []
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


bodies = st.one_of(st.binary(max_size=2048), mutated(), json_bodies())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=bodies, content_type=st.one_of(st.sampled_from(TYPES), st.text(max_size=20)))
def test_input_fn_raises_only_documented_client_errors(body, content_type):
    CORPUS.append((body, content_type))
    try:
        data = handler.input_fn(body, content_type)
    except RequestError as exc:
        assert 400 <= exc.status_code < 500 and exc.message
        return
    assert data["images"] and all(image.mode == "RGB" for image in data["images"]) and data["top_k"] >= 1


@pytest.mark.parametrize("front", FRONTS)
def test_the_corpus_replayed_over_http_gets_4xx_or_a_correct_200(trained, tmp_path, record, front):
    assert len(CORPUS) >= 100, "run with the fuzz test first (same module)"
    predictor = Predictor(trained["model_dir"])
    statuses = {"4xx": 0, "200": 0}
    with local_server(trained["archive"], free_port(), tmp_path / "server.log", front=front) as (url, process):
        for body, content_type in CORPUS:
            sendable = content_type.isascii() and content_type.isprintable() and "\n" not in content_type
            kind = content_type if sendable else "application/x-image"
            status, answer, _ = post(url, body, kind or "application/x-image")
            if status == 200:
                data = handler.input_fn(body, kind or "application/x-image")
                expected = predictor.top_k(data["images"], data["top_k"])
                breeds = [[r["breed"] for r in rows] for rows in answer["predictions"]]
                assert breeds == [[r["breed"] for r in rows] for rows in expected]
                statuses["200"] += 1
            else:
                assert 400 <= status < 500, (status, answer, content_type, body[:40])
                statuses["4xx"] += 1
        assert process.poll() is None
    record("hostile input", f"fuzzed bodies (hypothesis) replayed over HTTP ({front})", len(CORPUS))
    record("hostile input", f"answered 4xx ({front})", statuses["4xx"])
    record("hostile input", f"answered 200, same breeds as in process ({front})", statuses["200"])
